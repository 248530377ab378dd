"""ComBat harmonisation of image features across centres, as a step of a model's pipeline.

ComBat (Johnson, Li & Rabinovic, "Adjusting batch effects in microarray
expression data using empirical Bayes methods", Biostatistics 2007; for
imaging features Fortin et al., "Harmonization of cortical thickness
measurements across scanners and sites", NeuroImage 2018) models each feature
of patient j in batch i as ``x = alpha + X beta + gamma_i + delta_i * e``:
a grand mean, the effects of protected covariates, an additive and a
multiplicative batch effect. The batch effects are estimated per feature and
shrunk towards their batch's mean over features by empirical Bayes (normal
prior on gamma, inverse-gamma prior on delta^2), then removed.

:class:`ComBat` is the first step of a harmonised model's pipeline
(:mod:`analytics.models.classical`), so whatever fits the pipeline (an outer or
inner fold, the final refit) fits it on its own training rows only. Its fit is
``neuroCombat`` (Fortin's maintained implementation) on those rows; its
estimates are kept and applied to any later rows by :meth:`ComBat.transform`:
standardise with the training grand mean, pooled variance and covariate
effects, remove the batch's ``gamma*`` and ``delta*``, rescale.

A batch (centre) not seen in training, such as an external centre, is
harmonised from its own features, unsupervised: against the training
standardisation, its ``gamma`` and ``delta`` are estimated from the rows of
that batch being transformed, with the same empirical-Bayes shrinkage (its
hyper-priors from its own features, as ComBat estimates a training batch's;
from the training batches' priors where one patient leaves no variance).
Labels are never read. The transform keeps nothing of the rows it sees, so the
fitted pipeline does not depend on held-out patients.

The centre (``batch``) and protected covariates reach the step as carried
columns of the model's input table (names starting ``harmonize:``): the step
reads them and drops them, so the rest of the pipeline sees only its inputs.

Small samples: a training centre with fewer than two patients cannot have its
variance estimated; it is left out of the fit and harmonised like a new
centre (and recorded in ``small_batches_``). Image-feature columns constant on
the training rows are passed through unchanged (``constant_``). Missing
feature values are filled with the training median first (ComBat needs
complete data; the pipeline would impute the median next anyway).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

PREFIX = "harmonize:"
BATCH_COLUMN = f"{PREFIX}batch"
MIN_BATCH = 2  # patients a training centre needs for its variance


def covariate_column(name: str) -> str:
    """The carried column of protected covariate ``name``."""
    return f"{PREFIX}covariate:{name}"


@dataclass(frozen=True)
class HarmonizeSpec:
    """A model's ``harmonize``, ``batch`` and ``harmonize_covariates`` (None when it is not harmonised)."""

    batch: str = "center"
    covariates: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: Any) -> HarmonizeSpec | None:
        if getattr(spec, "harmonize", "none") != "combat":
            return None
        return cls(spec.batch, tuple(spec.harmonize_covariates))


def carried_columns(spec: Any, cohort: Any) -> dict[str, np.ndarray]:
    """The batch and covariate columns a harmonised model carries in its input table (empty if none).

    Numeric covariates are float64 (NaN missing); others are strings (NaN missing).

    Raises
    ------
    ValueError
        The batch or a covariate is not a cohort column, or the batch is missing for a patient.
    """
    h = HarmonizeSpec.of(spec)
    if h is None:
        return {}
    frame = cohort.frame
    if h.batch not in frame.columns:
        raise ValueError(f"batch = \"{h.batch}\" is not a column of cohort {cohort.name} "
                         f"(it returns {', '.join(frame.columns)})")
    batch = frame[h.batch]
    if batch.null_count():
        ids = [p for p, v in zip(cohort.patient_ids, batch.to_list()) if v is None]
        raise ValueError(f"batch column {h.batch} of cohort {cohort.name} is NULL for {len(ids)} patient(s) "
                         f"({', '.join(ids[:8])})")
    out: dict[str, np.ndarray] = {BATCH_COLUMN: np.array([str(v) for v in batch.to_list()], dtype=object)}
    if not h.covariates:
        return out
    absent = [c for c in h.covariates if c not in frame.columns]
    if absent:
        raise ValueError(f"harmonize_covariates {absent} are not columns of cohort {cohort.name}")
    types = cohort.variable_types(list(h.covariates))
    for col in h.covariates:
        values = frame[col]
        if types[col] in ("numeric", "integer", "binary") and (values.dtype.is_numeric() or str(values.dtype) == "Boolean"):
            out[covariate_column(col)] = np.array([np.nan if v is None else float(v) for v in values.to_list()])
        elif types[col] == "date":
            raise ValueError(f"harmonize covariate {col} is a date; derive a number from it in the cohort SQL")
        else:
            out[covariate_column(col)] = np.array([np.nan if v is None else str(v) for v in values.to_list()],
                                                  dtype=object)
    return out


def _quiet_neurocombat(dat: np.ndarray, covars: pd.DataFrame, continuous: list[str]) -> dict[str, Any]:
    """``neuroCombat`` (parametric empirical Bayes, no reference batch) with its progress prints silenced."""
    from neuroCombat import neuroCombat

    # its convergence check divides by the previous iterate, which is exactly 0 for a feature whose batch
    # mean is 0 (post-ReLU embedding channels): an infinite first change, then the next iteration goes on
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(divide="ignore", invalid="ignore"):
        return neuroCombat(dat=dat, covars=covars, batch_col="batch", continuous_cols=continuous or None)


def _eb_batch(s: np.ndarray, fallback: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, str]:
    """ComBat's parametric empirical-Bayes ``gamma*``, ``delta*`` of one batch from its standardised rows.

    ``s``: ``(n, p)`` rows of the batch, standardised with the training estimates. As ComBat does for a
    training batch, the normal prior of gamma (mean, variance) and the inverse-gamma prior of delta (a, b)
    are moment estimates over the batch's features; with one row (no variance) the delta prior is
    ``fallback`` (the training batches' mean a, b). Returns ``gamma*``, ``delta*`` and where the priors came from.
    """
    from neuroCombat.neuroCombat import aprior, bprior, it_sol

    n = s.shape[0]
    gamma_hat = s.mean(axis=0)
    gamma_bar, t2 = float(gamma_hat.mean()), float(gamma_hat.var(ddof=1))
    source = "own features"
    if n >= MIN_BATCH:
        delta_hat = s.var(axis=0, ddof=1)
        delta_hat[delta_hat == 0] = 1.0  # as ComBat: a feature without spread in the batch is not rescaled
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = float(aprior(delta_hat)), float(bprior(delta_hat))
        if not (np.isfinite(a) and np.isfinite(b) and a > 1):
            (a, b), source = fallback, "own features; scale prior of the training centres"
    else:
        (a, b), source = fallback, "own features; scale prior of the training centres (one patient)"
        delta_hat = np.full(s.shape[1], b / (a - 1.0))  # the prior mean as the starting value
    if not (t2 > 0):  # every feature's gamma alike: the prior mean is gamma itself, any t2 leaves it there
        t2 = 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_star, delta_star = it_sol(s.T, gamma_hat, delta_hat, gamma_bar, t2, a, b)
    return np.asarray(gamma_star, dtype=np.float64), np.asarray(delta_star, dtype=np.float64), source


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat harmonisation of ``features`` across the carried batch column (see module notes).

    Parameters
    ----------
    features
        The image-feature columns to harmonise (others pass through).
    covariates
        Carried covariate columns whose effects ComBat protects (numeric: linear; others: one-hot,
        the first sorted level the reference, as neuroCombat encodes them; a level not seen in
        training counts as the reference). Missing values: the training median (most frequent level).
    batch
        The carried batch column (dropped from the output with every ``harmonize:`` column).

    Attributes
    ----------
    batches_
        The training batches, sorted; ``n_batch_`` their training patients.
    grand_mean_, var_pooled_, beta_
        The training standardisation: grand mean, pooled variance and covariate effects (per kept feature).
    gamma_star_, delta_star_
        Per training batch, the empirical-Bayes additive and multiplicative effects.
    constant_
        Feature columns constant on the training rows (passed through).
    small_batches_
        Training batches with fewer than two patients (harmonised as new batches).
    """

    def __init__(self, features: Sequence[str] = (), covariates: Sequence[str] = (),
                 batch: str = BATCH_COLUMN) -> None:
        self.features = features
        self.covariates = covariates
        self.batch = batch

    # --- the design of the protected covariates

    def _covariate_design(self, X: pd.DataFrame) -> np.ndarray:
        parts = []
        for col in self.covariates:
            if col in self.levels_:
                values = X[col].to_numpy(dtype=object)
                values = np.where(pd.isna(values), self.fill_[col], values).astype(str)
                parts += [(values == lv).astype(np.float64) for lv in self.levels_[col][1:]]
            else:
                values = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=np.float64)
                values = np.where(np.isnan(values), self.fill_[col], values)
                # neuroCombat holds continuous covariates as float32: the same values here and there
                parts.append(values.astype(np.float32).astype(np.float64))
        return np.column_stack(parts) if parts else np.zeros((len(X), 0))

    def _features(self, X: pd.DataFrame) -> np.ndarray:
        F = X[list(self.features)].to_numpy(dtype=np.float64, copy=True)
        missing = np.isnan(F)
        if missing.any():
            F[missing] = np.broadcast_to(self.medians_, F.shape)[missing]
        return F

    # --- fit and transform

    def fit(self, X: pd.DataFrame, y: Any = None) -> ComBat:
        """Fit ComBat (neuroCombat) on the rows of ``X``; ``y`` is ignored (labels are never read)."""
        features = list(self.features)
        if not features:
            raise ValueError("ComBat harmonisation needs image-feature columns")
        batch = X[self.batch].astype(str).to_numpy()
        with warnings.catch_warnings():  # an all-missing column (in an inner fold): its median is NaN, filled 0
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(X[features].to_numpy(dtype=np.float64), axis=0)
        self.medians_ = np.where(np.isnan(medians), 0.0, medians)
        self.levels_: dict[str, list[str]] = {}
        self.fill_: dict[str, Any] = {}
        for col in self.covariates:
            values = X[col]
            if values.dtype == object:
                present = values.dropna().astype(str)
                if present.empty:
                    raise ValueError(f"harmonize covariate {col.removeprefix(covariate_column(''))} has no value on "
                                     "the training patients")
                counts = present.value_counts()
                self.fill_[col] = str(sorted(counts[counts == counts.max()].index)[0])
                self.levels_[col] = sorted(set(present) | {self.fill_[col]})
            else:
                numbers = pd.to_numeric(values, errors="coerce")
                if numbers.notna().sum() == 0:
                    raise ValueError(f"harmonize covariate {col.removeprefix(covariate_column(''))} has no value on "
                                     "the training patients")
                self.fill_[col] = float(numbers.median())
        F = self._features(X)
        self.constant_ = [f for f, c in zip(features, np.ptp(F, axis=0) == 0 if len(F) else []) if c]
        keep = np.array([f not in self.constant_ for f in features], dtype=bool)
        self.keep_ = keep
        levels, counts = np.unique(batch, return_counts=True)
        self.small_batches_ = {str(b): int(c) for b, c in zip(levels, counts) if c < MIN_BATCH}
        rows = ~np.isin(batch, list(self.small_batches_))
        if rows.sum() < MIN_BATCH or int(keep.sum()) < 2:
            raise ValueError(
                f"ComBat needs at least {MIN_BATCH} training patients in a centre and 2 non-constant image "
                f"features; the training rows hold {dict(zip(levels.tolist(), counts.tolist()))} patients per "
                f"centre and {int(keep.sum())} non-constant features (set harmonize = \"none\" or pool centres)")
        D = self._covariate_design(X)[rows]
        names = [f"c{k}" for k in range(D.shape[1])]
        covars = pd.DataFrame({"batch": batch[rows], **{n: D[:, k] for k, n in enumerate(names)}})
        if D.shape[1] and np.linalg.matrix_rank(np.column_stack([pd.get_dummies(covars["batch"]).to_numpy(float), D])) \
                < D.shape[1] + len(np.unique(batch[rows])):
            raise ValueError("the harmonize covariates are collinear with the centres on the training patients "
                             "(a covariate constant within centres, or a level in one centre only)")
        out = _quiet_neurocombat(F[rows][:, keep].T, covars, names)
        est = out["estimates"]
        self.batches_ = [str(b) for b in est["batches"]]
        self.n_batch_ = {str(b): int(c) for b, c in zip(levels, counts) if c >= MIN_BATCH}
        self.grand_mean_ = np.asarray(est["stand.mean"], dtype=np.float64)[:, 0]
        self.var_pooled_ = np.asarray(est["var.pooled"], dtype=np.float64)[:, 0]
        mod_mean = np.asarray(est["mod.mean"], dtype=np.float64)
        # the covariate effects: neuroCombat keeps only their fitted values (mod.mean = D beta)
        self.beta_ = (np.linalg.lstsq(D, mod_mean.T, rcond=None)[0] if D.shape[1]
                      else np.zeros((0, int(keep.sum()))))
        self.gamma_star_ = np.asarray(est["gamma.star"], dtype=np.float64)
        self.delta_star_ = np.asarray(est["delta.star"], dtype=np.float64)
        self.prior_ = (float(np.mean(est["a_prior"])), float(np.mean(est["b_prior"])))
        return self

    def _standardise(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept features of ``X``, their training-standardised values and the mean removed."""
        F = self._features(X)
        D = self._covariate_design(X)
        # a sum over the covariates per row (not a matrix product): a row's result does not depend on the others
        mean = self.grand_mean_ + (D[:, :, None] * self.beta_[None, :, :]).sum(axis=1)
        return F, (F[:, self.keep_] - mean) / np.sqrt(self.var_pooled_), mean

    def new_batch_estimates(self, X: pd.DataFrame) -> dict[str, dict[str, Any]]:
        """The batches of ``X`` not fitted in training, each estimated from its own rows of ``X`` (no labels).

        Returns ``batch -> {"n", "priors", "gamma", "delta"}`` (``gamma``/``delta``: the per-feature effects).
        """
        batch = X[self.batch].astype(str).to_numpy()
        _, s, _ = self._standardise(X)
        out = {}
        for b in sorted(set(batch) - set(self.batches_)):
            rows = batch == b
            gamma, delta, source = _eb_batch(s[rows], self.prior_)
            out[b] = {"n": int(rows.sum()), "priors": source, "gamma": gamma, "delta": delta}
        return out

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Harmonised features; every ``harmonize:`` column dropped. Nothing of ``X`` is kept."""
        batch = X[self.batch].astype(str).to_numpy()
        F, s, mean = self._standardise(X)
        new = self.new_batch_estimates(X)
        adjusted = np.empty_like(s)
        for b in np.unique(batch):
            rows = batch == b
            if b in new:
                gamma, delta = new[b]["gamma"], new[b]["delta"]
            else:
                i = self.batches_.index(b)
                gamma, delta = self.gamma_star_[i], self.delta_star_[i]
            adjusted[rows] = (s[rows] - gamma) / np.sqrt(delta)
        F[:, self.keep_] = adjusted * np.sqrt(self.var_pooled_) + mean
        out = X.drop(columns=[c for c in X.columns if str(c).startswith(PREFIX)])
        out = out.copy()
        out[list(self.features)] = F
        return out

    def summary(self) -> dict[str, Any]:
        """What was fitted: training centres and their patients, constant features, small centres, covariates."""
        return {"method": "ComBat, parametric empirical Bayes (neuroCombat)",
                "training_centres": dict(self.n_batch_), "small_centres": dict(self.small_batches_),
                "constant_features": list(self.constant_), "features": len(self.features),
                "covariates": [c.removeprefix(covariate_column("")) for c in self.covariates]}


def combat_step(pipeline: Any) -> ComBat | None:
    """The fitted :class:`ComBat` step of a model pipeline, or None."""
    steps = getattr(pipeline, "named_steps", {})
    step = steps.get("harmonize") if hasattr(steps, "get") else None
    return step if isinstance(step, ComBat) else None


def _centre_r2(F: np.ndarray, batch: np.ndarray) -> float:
    """Mean over features of the share of variance explained by the centre (one-way ANOVA eta squared)."""
    total = ((F - F.mean(axis=0)) ** 2).sum(axis=0)
    between = np.zeros(F.shape[1])
    for b in np.unique(batch):
        rows = batch == b
        between += rows.sum() * (F[rows].mean(axis=0) - F.mean(axis=0)) ** 2
    ok = total > 0
    return float(np.mean(between[ok] / total[ok])) if ok.any() else 0.0


def record(pipeline: Any, table: pd.DataFrame, patient_ids: Sequence[str], split: Sequence[str],
           train: np.ndarray) -> dict[str, Any] | None:
    """The harmonisation artefact of a fitted model: what was fitted, the new centres, and a PCA before/after.

    ``table``: the model's input rows (training and held-out patients with inputs); ``train``: which of
    them the final model was fitted on. The PCA (2 components) is fitted on the training rows, after
    standardising with their means and SDs, once on the features as read and once harmonised; every row
    is projected. Held-out rows are harmonised together, as when they were scored.
    """
    step = combat_step(pipeline)
    if step is None:
        return None
    from sklearn.decomposition import PCA

    features = list(step.features)
    batch = table[step.batch].astype(str).to_numpy()
    before = step._features(table)
    after = np.empty_like(before)
    train = np.asarray(train, dtype=bool)
    for rows in (train, ~train):
        if rows.any():
            after[rows] = step.transform(table.iloc[np.flatnonzero(rows)])[features].to_numpy(dtype=np.float64)
    held = table.iloc[np.flatnonzero(~train)]
    new = step.new_batch_estimates(held) if len(held) else {}
    out: dict[str, Any] = {**step.summary(), "new_centres": {
        b: {"n": v["n"], "priors": v["priors"], "estimated_from": "its own image features, without labels"}
        for b, v in new.items()}}
    pcs: dict[str, Any] = {"patient_id": list(patient_ids), "center": batch.tolist(), "split": list(split)}
    centre_r2 = {}
    for stage, F in (("before", before), ("after", after)):
        mu, sd = F[train].mean(axis=0), F[train].std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        Z = (F - mu) / sd
        k = int(min(2, train.sum() - 1, Z.shape[1]))
        pca = PCA(n_components=k, svd_solver="full").fit(Z[train])
        coords = pca.transform(Z)
        for c in range(2):
            pcs[f"{stage}_pc{c + 1}"] = [round(float(v), 6) for v in (coords[:, c] if c < k else np.zeros(len(Z)))]
        pcs[f"{stage}_variance"] = [round(float(v), 6) for v in pca.explained_variance_ratio_]
        centre_r2[stage] = {"all": round(_centre_r2(Z, batch), 6), "train": round(_centre_r2(Z[train], batch[train]), 6)}
    out["pca"] = pcs
    out["centre_r2"] = centre_r2
    return out


def centre_note(artefact: Mapping[str, Any]) -> str:
    """One sentence on centres not seen in training (empty when there were none)."""
    new = artefact.get("new_centres") or {}
    if not new:
        return ""
    names = ", ".join(f"{b} ({v['n']} patients)" for b, v in new.items())
    return (f"Centre{'s' if len(new) > 1 else ''} {names} had no training patients: "
            f"{'their' if len(new) > 1 else 'its'} ComBat batch parameters were estimated from "
            f"{'their' if len(new) > 1 else 'its'} own image features, unsupervised (no labels), against the "
            "training standardisation, with the same empirical-Bayes shrinkage.")




def record_fit(learner: Any, data: Any, predictions: Any) -> dict[str, Any] | None:
    """:func:`record` for a fitted model: its input rows of the patients it predicted (``predictions``:
    ``patient_id``, ``split``), the final model's training patients being those of the train split."""
    pipeline = getattr(learner, "pipeline_", None)
    if combat_step(pipeline) is None or data.table is None:
        return None
    row = {p: i for i, p in enumerate(data.patient_ids)}
    ids = predictions["patient_id"].to_list()
    split = predictions["split"].to_list()
    rows = data.take(np.array([row[p] for p in ids], dtype=np.int64))
    return record(pipeline, rows.table, ids, split, np.array([s == "train" for s in split]))




def harmonised_inputs(pipeline: Any, table: pd.DataFrame, split: np.ndarray,
                      available: np.ndarray) -> tuple[pd.DataFrame, Any]:
    """A harmonised model's input table with its features harmonised, and the pipeline after its ComBat step.

    Rows are harmonised as the fitted model scored them: the training rows, then the held-out rows
    together (a new centre's parameters come from all its patients with inputs); rows without inputs
    are left as they are. For explanations in the space the classifier sees.
    """
    step = combat_step(pipeline)
    if step is None:
        return table, pipeline
    out = table.drop(columns=[c for c in table.columns if str(c).startswith(PREFIX)]).copy()
    train = np.asarray(split) == "train"
    for rows in (available & train, available & ~train):
        idx = np.flatnonzero(rows)
        if len(idx):
            done = step.transform(table.iloc[idx])
            out.loc[out.index[idx], list(step.features)] = done[list(step.features)].to_numpy()
    return out, pipeline[1:]


__all__ = ["BATCH_COLUMN", "ComBat", "HarmonizeSpec", "carried_columns", "centre_note", "combat_step",
           "harmonised_inputs", "record", "record_fit"]
