"""Validation of fitted models: every metric with its CI, per model and split.

Reads the ``predictions`` table written by ``fit`` and the cohort's outcomes;
computes a :class:`~analytics.validation.Validation` (the measures of each split
are the table :data:`analytics.validation.measures.MEASURES`), and writes from it the
``metrics`` table, ``metrics.csv`` / ``metrics.json`` and ``curves.json`` (ROC,
calibration, decision and survival curves for the report) into the report
folder. :func:`load_validation` reads them back.

Rules kept here:

* The classification threshold is chosen once, on the training patients'
  out-of-fold scores, by ``[validation] threshold_rule``; the same number is
  applied to the internal and external splits (never re-optimised on a test set).
* Survival risk groups are cut at quantiles of the training scores, then applied
  to every split.
* Same predictions and settings give byte-identical files (sorted keys, fixed seeds), whether each model's
  metrics were computed or read from the per-model cache (:mod:`analytics.validation.cache`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from analytics import stats
from analytics.cohort import load_cohort
from analytics.splits import SPLITS
from analytics.stats.cox_validation import baseline_survival_difference, calibration_slope
from analytics.stats.thresholds import Rule
from analytics.validation.cache import ValidationCache, code_digest, digest, frame_digest
from analytics.validation.competing import (
    NO_KM_GROUPS,
    cause_label,
    competing_setup,
    internal_cause,
)
from analytics.validation.competing_added import competing_added_value
from analytics.validation.internal import InternalMetrics, internal_digest, internal_metrics, read_record
from analytics.validation.measures import SplitInputs, SplitMetrics, measure_split
from analytics.validation.metrics_table import METRICS_TABLE, write_metrics_table  # noqa: F401
from analytics.validation.multicentre import check_settings, study_multicentre
from analytics.validation.pooled import imputed_digest, imputed_scores
from analytics.validation.records import (
    AddedValue,
    CenterMetrics,
    Cutpoints,
    ModelMetrics,
    PairedComparison,
    Threshold,
    added_value_inputs,
    paired_comparisons,
)
from analytics.validation.result import Validation
from analytics.validation.subgroups import subgroup_metrics
from analytics.validation.updated_models import save_updated_models, updating_digest
from analytics.validation.values import Estimate, ValidateError, clean, jsonable, safe
from pipeline import atomic, store
from pipeline.config import StudyConfig
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.validate")

__all__ = ["ValidateError", "ValidateResult", "Validation", "inputs_digest", "load_validation", "validate"]


@dataclass
class ValidateResult:
    report_dir: Path
    skipped: bool = False
    models: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # partial validation: what was not validated, and why
    validation: Validation | None = None  # what was computed (None when skipped: see load_validation)

    def __str__(self) -> str:
        head = f"metrics: {self.report_dir / 'metrics.json'}"
        partial = [f"left out: {x}" for x in self.left_out]
        if self.skipped:
            return "\n".join([head + " (up to date; nothing recomputed)", *partial])
        return "\n".join([head, *self.headline, *partial, *(f"note: {n}" for n in self.notes)])


# --- helpers -------------------------------------------------------------------------------


def _dca_grid(spec: list[float]) -> np.ndarray:
    start, stop, step = spec
    n = int(round((stop - start) / step)) + 1
    return np.round(start + step * np.arange(n), 10)


def outcome_columns(study: StudyConfig, columns: Sequence[str]) -> list[str]:
    """The cohort columns the metrics are computed from: ids, labels, centre, split, follow-up where the cohort
    has it, and the ``[validation] subgroups`` columns."""
    cols = ["patient_id", "label", "center", "split"] + [c for c in ("time", "event") if c in columns]
    return cols + [c for c in study.validation.subgroups if c not in cols and c in columns]


def inputs_digest(study: StudyConfig, preds: pl.DataFrame, outcomes: pl.DataFrame) -> str:
    """What the metrics depend on: predictions, outcomes, validation settings, and the internal-validation
    replicates' sha256 recorded by fit."""
    h = hashlib.sha256()
    h.update(preds.write_csv().encode())
    h.update(outcomes.write_csv().encode())
    h.update(study.validation.model_dump_json().encode())
    h.update(str(study.study.seed).encode())
    replicated = internal_digest(study.models_dir, sorted(set(preds.get_column("model").to_list())))
    if replicated:  # the replicates and final-model scores the internal validation reads (none: digest as before)
        h.update(replicated.encode())
    h.update(imputed_digest(study, sorted(set(preds.get_column("model").to_list()))).encode())  # "": as before
    if study.validation.internal_external:  # the left-out centres' scores (analytics.iecv_files)
        from analytics.iecv_files import iecv_digest

        h.update(iecv_digest(study.models_dir, sorted(set(preds.get_column("model").to_list()))).encode())
    h.update(updating_digest(study, sorted(set(preds.get_column("model").to_list()))).encode())  # "": no updating
    return h.hexdigest()


# --- one model -------------------------------------------------------------------------------


def _split_metrics(
    y: np.ndarray, score: np.ndarray, thr: float | None, study: StudyConfig, seed: int,
    time: np.ndarray | None, event: np.ndarray | None, cut: np.ndarray | None,
    survival_score: np.ndarray | None = None, horizons: Sequence[float] = (),
    horizon_risk: np.ndarray | None = None, label_horizon: float | None = None,
    grid: Sequence[float] = (), grid_risk: np.ndarray | None = None, cause: int | None = None,
    discrimination_only: bool = False,
) -> tuple[SplitMetrics, dict[str, Any], list[str]]:
    """The measures of :data:`analytics.validation.measures.MEASURES` on one split, its curves, and notes on what
    could not be computed. ``time``/``event`` align with ``survival_score`` when given (every patient with
    follow-up, labelled or not), else with ``score``. ``label_horizon``: a binary model's label horizon, for
    its IPCW evaluation on every patient with follow-up."""
    v = study.validation
    inputs = SplitInputs.of(y, score, level=v.level, n_boot=v.n_boot, seed=seed, dca_thresholds=_dca_grid(v.dca_thresholds),
                            threshold=thr, time=time, event=event, cut=cut, survival_score=survival_score,
                            horizons=horizons, horizon_risk=horizon_risk, label_horizon=label_horizon,
                            grid=grid, grid_risk=grid_risk, cause=cause, discrimination_only=discrimination_only)
    metrics, curves = measure_split(inputs)
    return metrics, curves, inputs.notes


def _linear_predictor(study: StudyConfig, name: str) -> bool:
    """Whether a survival model's score is a Cox linear predictor (every survival kind but the forest)."""
    return any(m.name == name and m.traits.linear_predictor for m in study.models)


def lp_calibration(time: np.ndarray, event: np.ndarray, lp: np.ndarray, horizons: Sequence[float],
                   risk: np.ndarray, level: float) -> tuple[dict[str, Estimate], list[str]]:
    """External validation of a Cox-type model (Royston & Altman 2013, BMC Med Res Methodol 13:33), as
    measures of metrics.json, and notes on what could not be computed.

    ``lp_calibration_slope``: :func:`analytics.stats.cox_validation.calibration_slope` (1 = no over- or
    under-fitting), with its Wald interval. ``baseline_survival_diff_t{t}``:
    :func:`analytics.stats.cox_validation.baseline_survival_difference`, the validation patients' baseline
    survival at ``t`` minus the development one recovered from the saved risk ``1 - exp(-H0(t) exp(lp))``.
    """
    out: dict[str, Estimate] = {}
    notes: list[str] = []
    ok = np.isfinite(time) & np.isfinite(event) & np.isfinite(lp)
    time, event, lp, risk = time[ok], event[ok].astype(np.int64), lp[ok], risk[ok]
    if event.sum() < 2:
        return out, ["calibration slope of the linear predictor not computed (fewer than 2 events)"]
    slope, why = safe(calibration_slope, time, event, lp, level=level)
    if slope is not None:
        out["lp_calibration_slope"] = Estimate(clean(slope.estimate), clean(slope.low), clean(slope.high),
                                               "Cox regression on the linear predictor (Wald CI)", clean(level))
    else:
        notes.append(f"calibration slope of the linear predictor not computed ({why})")
    for t, diff in zip(horizons, baseline_survival_difference(time, event, lp, horizons, risk)):
        if diff is not None:
            out[f"baseline_survival_diff_t{t:g}"] = Estimate(clean(diff), None, None,
                                                             "S0 validation (Breslow, offset lp) − S0 development",
                                                             clean(level))
    return out, notes


def _endpoint(study: StudyConfig, name: str) -> str:
    """A model's endpoint (``binary`` for predictions of a model no longer in study.toml)."""
    return study.endpoint(name) if any(m.name == name for m in study.models) else "binary"


def _wide_risks(frame: pl.DataFrame | None, at: str) -> tuple[list[float], dict[str, list[float]]]:
    """Saved absolute risks (long: patient_id, ``at``, risk) as the sorted times and each patient's risks at them."""
    if frame is None or frame.height == 0:
        return [], {}
    times = sorted(set(frame.get_column(at).to_list()))
    wide = frame.sort(at).group_by("patient_id", maintain_order=True).agg(pl.col("risk"))
    return times, {p: list(r) for p, r in zip(wide["patient_id"].to_list(), wide["risk"].to_list())}


def _horizon_risks(study: StudyConfig, name: str) -> tuple[list[float], dict[str, list[float]]]:
    """A survival model's saved horizons and its absolute risk at each, by patient."""
    from analytics.models.persist import read_horizon_risks

    return _wide_risks(read_horizon_risks(study.models_dir / name, study.store_path), "horizon")


def _grid_risks(study: StudyConfig, name: str) -> tuple[list[float], dict[str, list[float]]]:
    """A survival model's saved risk grid (times up to the last horizon) and its absolute risk at each, by patient."""
    from analytics.models.persist import read_risk_grid

    return _wide_risks(read_risk_grid(study.models_dir / name, study.store_path), "time")


def _center_auc(y: np.ndarray, score: np.ndarray, level: float) -> Estimate:
    """DeLong AUC of one centre; the estimate alone when its variance cannot be estimated."""
    iv, _ = safe(stats.auc_ci, y, score, level=level)
    return Estimate.of(iv) if iv is not None else Estimate(clean(stats.auc(y, score)), None, None, "no CI", clean(level))


def _cache_common(study: StudyConfig, outcomes: pl.DataFrame) -> str:
    """What every model's metrics depend on: the outcomes, the ``[validation]`` settings and seed, the code
    (:func:`analytics.validation.cache.code_digest`)."""
    return digest("common", frame_digest(outcomes), study.validation.model_dump_json(), str(study.study.seed),
                  code_digest())


def model_key(study: StudyConfig, name: str, preds: pl.DataFrame, common: str) -> str:
    """The cache key of one model's metrics: everything :func:`_model_metrics` reads (its predictions, its saved
    horizon and grid risks, its imputed scores, its endpoint and kind, its study.toml entry) and ``common``."""
    from analytics.models.persist import read_horizon_risks, read_risk_grid

    is_surv = _endpoint(study, name) == "survival"
    spec = next((m.model_dump_json() for m in study.models if m.name == name), "-")
    risks = read_horizon_risks(study.models_dir / name, study.store_path) if is_surv else None
    grid = read_risk_grid(study.models_dir / name, study.store_path) if is_surv else None
    return digest("model", name, _endpoint(study, name), str(_linear_predictor(study, name)), spec, common,
                  frame_digest(preds), frame_digest(risks), frame_digest(grid), *filter(None, [imputed_digest(study, [name])]))


def _model_metrics(
    name: str, preds: pl.DataFrame, outcomes: pl.DataFrame, study: StudyConfig
) -> tuple[ModelMetrics, dict[str, Any], list[str]]:
    v = study.validation
    joined = preds.join(outcomes, on="patient_id", how="inner")
    has_surv = "time" in joined.columns and "event" in joined.columns
    # survival measures use every patient with follow-up, labelled or not; binary ones the labelled
    followed = joined.filter(pl.col("time").is_not_null() & pl.col("event").is_not_null()) if has_surv else joined
    is_surv = _endpoint(study, name) == "survival"
    # a survival model's score is a risk, not a probability of the label: no binary measures for it
    frame = joined.filter(pl.col("label").is_not_null() & (not is_surv))
    horizons, risk_of = _horizon_risks(study, name) if is_surv else ([], {})
    grid, grid_of = _grid_risks(study, name) if is_surv and horizons else ([], {})
    # a binary model's label "event by label_horizon": also evaluated with IPCW on every patient with follow-up
    label_horizon = v.label_horizon if has_surv and not is_surv else None
    notes: list[str] = []
    # competing causes: every follow-up measure is of the cause of interest (``event`` holds status codes)
    cause, label_horizon = competing_setup(study, name, has_surv, is_surv, label_horizon, notes)
    curves: dict[str, Any] = {}
    train = frame.filter(pl.col("split") == "train")
    thr: float | None = None
    cut: np.ndarray | None = None
    threshold: Threshold | None = None
    cutpoints: Cutpoints | None = None
    spec = study.model(name)
    if spec.traits.published:
        # a published model has no out-of-fold scores: its own threshold, or threshold-free measures only
        if spec.threshold is not None:
            thr = float(spec.threshold)
            threshold = Threshold(thr, "given", "study.toml")
        elif not is_surv:
            notes.append(f"{name}: a published model without a threshold in study.toml; threshold-free measures only")
    elif train.height and train.get_column("label").n_unique() == 2:
        ytr = train.get_column("label").to_numpy().astype(int)
        str_ = train.get_column("score").to_numpy()
        # the rule was checked when study.toml was read
        thr = float(stats.threshold(ytr, str_, rule=cast(Rule, v.threshold_rule), target=v.threshold_target))
        rule = v.threshold_rule if v.threshold_target is None else f"{v.threshold_rule} >= {v.threshold_target:g}"
        threshold = Threshold(clean(thr), rule)
        cut = stats.risk_cutpoints(str_, v.risk_quantiles)
        cutpoints = Cutpoints(tuple(clean(q) for q in v.risk_quantiles), tuple(clean(x) for x in cut))
    elif not is_surv:
        notes.append(f"{name}: no two-class training predictions; no threshold chosen")
    if has_surv and (is_surv or cut is None):
        # risk groups cut at quantiles of the training (out-of-fold) scores of every patient with follow-up
        str_ = followed.filter(pl.col("split") == "train").get_column("score").to_numpy()
        if len(str_):
            cut = stats.risk_cutpoints(str_, v.risk_quantiles)
            cutpoints = Cutpoints(tuple(clean(q) for q in v.risk_quantiles), tuple(clean(x) for x in cut))
    if cause is not None and cut is not None and is_surv:  # risk groups by KM would show 1 - KM as the risk
        notes.append(f"{name}: {NO_KM_GROUPS}")
    splits: dict[str, SplitMetrics] = {}
    for i, split in enumerate(SPLITS):
        part = frame.filter(pl.col("split") == split)
        fpart = followed.filter(pl.col("split") == split) if has_surv else part.head(0)
        if part.height == 0 and fpart.height == 0:
            continue
        y = part.get_column("label").to_numpy().astype(int)
        score = part.get_column("score").to_numpy().astype(float)
        time = fpart.get_column("time").cast(pl.Float64).to_numpy() if has_surv else None
        event = fpart.get_column("event").cast(pl.Float64).to_numpy() if has_surv else None
        sscore = fpart.get_column("score").to_numpy().astype(float) if has_surv else None
        hrisk = None
        if horizons and has_surv:
            hrisk = np.array([risk_of.get(p, [np.nan] * len(horizons)) for p in fpart.get_column("patient_id")],
                             dtype=np.float64).reshape(-1, len(horizons))
            if not np.isfinite(hrisk).all():
                hrisk = None
                notes.append(f"{name} / {split}: no saved risk at the horizons for some patients; refit the model")
        grisk = None
        if hrisk is not None and grid:
            grisk = np.array([grid_of.get(p, [np.nan] * len(grid)) for p in fpart.get_column("patient_id")],
                             dtype=np.float64).reshape(-1, len(grid))
            if not np.isfinite(grisk).all():
                grisk = None
                notes.append(f"{name} / {split}: no saved risk on the time grid for some patients; refit the model "
                             "(no integrated Brier score)")
        elif hrisk is not None:
            notes.append(f"{name} / {split}: no saved risk grid (fitted by an earlier version); run `cohortlab fit` "
                         "again for the integrated Brier score")
        ipcw_t = label_horizon
        if ipcw_t is not None:
            # IPCW reweights the followed patients to stand for the censored ones; a binary model scores its
            # unlabelled training patients nowhere (out-of-fold scores are of labelled ones), so on that
            # split the scored patients are the complete cases again: no IPCW evaluation there
            unscored = (outcomes.filter((pl.col("cohort_split") == split) & pl.col("time").is_not_null()
                                        & pl.col("event").is_not_null())
                        .join(fpart.select("patient_id"), on="patient_id", how="anti"))
            lacking = unscored.filter(pl.col("label").is_null()).height
            if lacking:
                ipcw_t = None
                notes.append(f"{name} / {split}: no IPCW evaluation at the label horizon {label_horizon:g}: "
                             f"{lacking} patients with follow-up but no label have no score from this model")
        m, c, n = _split_metrics(y, score, thr, study, study.study.seed + i, time, event, cut, sscore, horizons, hrisk,
                                 ipcw_t, () if cause is not None else grid, None if cause is not None else grisk,
                                 cause=cause, discrimination_only=cause is not None and spec.competing is not None)
        if (imputed := imputed_scores(study, name)) is not None:  # fitted on multiple imputations: pooled over them
            m, n = imputed.pool(m, n, part, fpart, _split_metrics, y, thr=thr, seed=study.study.seed + i, time=time, event=event,
                                cut=cut, horizons=horizons, label_horizon=ipcw_t, cause=cause,
                                discrimination_only=cause is not None and spec.competing is not None)
        if is_surv and split != "train" and hrisk is not None and _linear_predictor(study, name) and cause is None:
            assert time is not None and event is not None and sscore is not None  # hrisk implies follow-up
            extra, why = lp_calibration(time, event, sscore, horizons, hrisk, v.level)
            m = replace(m, estimates={**m.estimates, **extra})
            n = n + why
        splits[split] = m
        curves[split] = c
        notes += [f"{name} / {split}: {x}" for x in n]
    # heterogeneity across centres, per split: training out-of-fold scores and held-out scores come from
    # different models (fold models, the final refit), so they are never pooled
    centers: dict[str, dict[str, CenterMetrics]] = {}
    for center in sorted((followed if is_surv else frame).get_column("center").unique().drop_nulls().to_list()):
        per_split: dict[str, CenterMetrics] = {}
        for split in SPLITS:
            if is_surv:  # n_positive: events
                part = followed.filter((pl.col("center") == center) & (pl.col("split") == split))
                if part.height == 0:
                    continue
                t, e = part.get_column("time").cast(pl.Float64).to_numpy(), part.get_column("event").cast(pl.Float64).to_numpy()
                if cause is not None:  # the cause of interest's events (other causes censor it)
                    e = (e == cause).astype(np.float64)
                c_index, _ = safe(stats.concordance, t, e, part.get_column("score").to_numpy(), level=v.level,
                                  interval="ij")
                per_split[split] = CenterMetrics(int(part.height), int(e.sum()), None,
                                                 Estimate.of(c_index) if c_index is not None else None)
                continue
            part = frame.filter((pl.col("center") == center) & (pl.col("split") == split))
            if part.height == 0:
                continue
            y = part.get_column("label").to_numpy().astype(int)
            score = part.get_column("score").to_numpy().astype(float)
            auc = _center_auc(y, score, v.level) if len(np.unique(y)) == 2 else None
            per_split[split] = CenterMetrics(int(len(y)), int(y.sum()), auc)
        centers[str(center)] = per_split
    return ModelMetrics(splits, centers, threshold, cutpoints), curves, notes


def _comparisons(preds: pl.DataFrame, outcomes: pl.DataFrame, study: StudyConfig, models: list[str],
                 cache: ValidationCache | None = None, keys: Mapping[str, str] | None = None,
                 force: bool = False) -> list[PairedComparison]:
    """Paired DeLong comparisons of the configured pairs (all pairs when none are), among ``models``; a pair's
    comparisons come from ``cache`` when both models' ``keys`` (:func:`model_key`) are unchanged."""
    pairs = [tuple(p) for p in study.validation.compare] or list(combinations(models, 2))
    out = []
    for a, b in pairs:
        if a not in models or b not in models:
            continue  # only in a partial validation, which lists the pair as left out
        key = digest("comparison", keys[a], keys[b]) if cache is not None and keys is not None else None
        hit = None if key is None or cache is None or force else cache.comparisons(a, b, key)
        if hit is None:
            hit = paired_comparisons(preds, outcomes, a, b, study.validation.level)
            if key is not None and cache is not None:
                cache.put_comparisons(a, b, key, hit)
        out += hit
    return out


def lr_test_reason(study: StudyConfig, new: str, old: str) -> str | None:
    """Why the likelihood-ratio test of ``old`` nested in ``new`` does not apply; None when it does.

    It applies to maximum-likelihood logistic regressions only (``kind = "logistic"`` with
    ``params.penalty = "none"``, or ``params.C = inf`` and no ``C`` grid), without PCA, whose inputs nest
    (``old``'s feature sets and input scores among ``new``'s, and its clinical variables too; for formulas,
    every term of ``old``'s model matrix spanned by ``new``'s: :func:`pipeline.formula.unspanned_terms`).
    """
    from analytics.models.artifacts import ml_regression_reason

    specs = {m.name: m for m in study.models}
    a, b = specs[new], specs[old]
    for m in (a, b):
        if (reason := ml_regression_reason(m)) is not None:
            return reason
    if a.formula is not None or b.formula is not None:
        # nesting of the model matrices' columns, term by term (age is nested in rcs(age, 4))
        from analytics.models.formula import main_effects
        from pipeline.formula import parse_formula, unspanned_terms

        def terms(m: Any) -> Any:  # None: no clinical term (a model of scores or features only)
            text = m.formula or (main_effects(m.clinical) if m.clinical else None)
            return None if text is None else parse_formula(text)

        big, small = terms(a), terms(b)
        inputs = (("features", a.features, b.features), ("scores", a.scores, b.scores))
        extra = [f"{what} {sorted(set(o) - set(n))}" for what, n, o in inputs if not set(o) <= set(n)]
        if small is not None:
            lacking = [t.label for t in small.terms] if big is None else unspanned_terms(small, big)
            if lacking:
                extra.append(f"terms {lacking}")
        if extra:
            return f"the inputs are not nested: {old} has {', '.join(extra)} that {new} lacks"
        same_terms = (big is None) == (small is None) and (big is None or not unspanned_terms(big, small))
        if all(set(o) == set(n) for _, n, o in inputs) and same_terms:
            return f"{new} and {old} have the same inputs"
        return None
    parts = (("features", a.features, b.features), ("clinical", a.clinical, b.clinical),
             ("scores", a.scores, b.scores))
    extra = [f"{what} {sorted(set(o) - set(n))}" for what, n, o in parts if not set(o) <= set(n)]
    if extra:
        return f"the inputs are not nested: {old} has {', '.join(extra)} that {new} lacks"
    if all(set(o) == set(n) for _, n, o in parts):
        return f"{new} and {old} have the same inputs"
    return None


def _lr_test(study: StudyConfig, new: str, old: str, outcomes: pl.DataFrame,
             ) -> tuple[dict[str, Any] | None, str | None]:
    """LR test from the final models' fitted probabilities on the labelled training patients both score (saved
    by ``fit`` in each model's record, with its number of coefficients)."""
    from analytics.models.persist import load_model

    fitted: dict[str, pl.DataFrame] = {}
    free: dict[str, int] = {}
    for name in (new, old):
        fm = load_model(study.models_dir / name, study.store_path)
        k, frame = fm.record.free_parameters, fm.fitted
        if k is None or frame is None:
            return None, (f"LR test not computed: model {name} was saved without its training fit; "
                          "run `cohortlab fit` to refit it")
        fitted[name], free[name] = frame, k
    frame = (fitted[new].rename({"score": "new"})
             .join(fitted[old].rename({"score": "old"}), on="patient_id")
             .join(outcomes.select("patient_id", "label"), on="patient_id")
             .filter(pl.col("label").is_not_null() & pl.col("new").is_not_null() & pl.col("old").is_not_null()))
    df = free[new] - free[old]
    if df < 1:
        return None, f"{new} has no more coefficients than {old} ({df:+d})"
    y = frame.get_column("label").to_numpy().astype(int)
    res, err = safe(stats.lr_test, y, frame.get_column("old").to_numpy(), frame.get_column("new").to_numpy(), df)
    return (jsonable(res.as_dict()), None) if res is not None else (None, f"LR test not computed: {err}")


def _added_value(preds: pl.DataFrame, outcomes: pl.DataFrame, study: StudyConfig,
                 models: list[str]) -> tuple[list[AddedValue], list[str]]:
    """ΔAUC (DeLong), NRI (continuous; categorical at ``risk_cutoffs``), IDI and reclassification per split
    of each ``[validation] added_value`` pair, and the LR test on the training fit; notes on what is missing."""
    v = study.validation
    cuts = tuple(float(c) for c in v.risk_cutoffs)
    out: list[AddedValue] = []
    notes: list[str] = []
    for new, old in (tuple(p) for p in v.added_value):
        if new not in models or old not in models:
            continue  # only in a partial validation, which lists the pair as left out
        if study.endpoint(new) != "binary" or study.endpoint(old) != "binary":
            notes.append(f"added value {new} over {old}: for binary-outcome models only (NRI and IDI need risks)")
            continue
        reason = lr_test_reason(study, new, old)
        lr: dict[str, Any] | None = None
        if reason is None:
            try:
                lr, reason = _lr_test(study, new, old, outcomes)
            except (CohortlabError, OSError, AttributeError, KeyError, ValueError) as exc:
                # a saved model missing or unreadable: the rest of the added value stands
                reason = f"LR test not computed: {exc}"
        wide = added_value_inputs(preds, outcomes, new, old)
        comparisons = {c.split: c for c in paired_comparisons(preds, outcomes, new, old, v.level)}
        for split in SPLITS:
            part = wide.filter(pl.col("split") == split)
            if part.height == 0:
                continue
            y = part.get_column("label").to_numpy().astype(int)
            p_new = part.get_column("new").to_numpy().astype(float)
            p_old = part.get_column("old").to_numpy().astype(float)
            where = f"added value {new} over {old} / {split}"
            results: dict[str, Any] = {}
            for key, fn, kw in (("nri", stats.nri, {"level": v.level}),
                                ("nri_categorical", stats.nri, {"cutoffs": cuts, "level": v.level}),
                                ("idi", stats.idi, {"level": v.level}),
                                ("reclassification", stats.reclassification, {"cutoffs": cuts})):
                if key in ("nri_categorical", "reclassification") and not cuts:
                    continue
                res, err = safe(fn, y, p_old, p_new, **kw)
                if res is None:
                    notes.append(f"{where}: {key} not computed: {err}")
                results[key] = None if res is None else jsonable(res if isinstance(res, dict) else res.as_dict())
            out.append(AddedValue(
                new, old, split, int(part.height), int(y.sum()), comparisons.get(split), results.get("nri"),
                results.get("nri_categorical"), results.get("idi"), results.get("reclassification"), cuts,
                lr if split == "train" else None, reason if split == "train" else None))
    return out, notes



def left_out(study: StudyConfig, present: set[str]) -> tuple[list[str], list[str]]:
    """Models of study.toml without predictions, and what leaving them out drops (one line each)."""
    missing = [m.name for m in study.models if m.name not in present]
    lines = [f"model {name}: no predictions (not fitted, or `cohortlab fit` was interrupted)" for name in missing]
    for a, b in (tuple(p) for p in study.validation.compare):
        lacking = [n for n in (a, b) if n in missing]
        if lacking:
            lines.append(f"comparison {a} vs {b}: {' and '.join(lacking)} not validated")
    return missing, lines


def validate(study: StudyConfig, force: bool = False, progress: bool = True, partial: bool = False) -> ValidateResult:
    """Compute every metric for every model and split; write files and the ``metrics`` table.

    Skips the work when ``metrics.json`` already holds metrics for the same
    predictions, outcomes and settings (unless ``force``). Otherwise each model's
    metrics and each pair's comparisons are taken from the cache of
    :mod:`analytics.validation.cache` when their own inputs are unchanged (a model
    added, or one model's new predictions, computes only those); ``force``
    recomputes every one (and refreshes the cache).

    Parameters
    ----------
    partial
        Validate the models that have predictions when some of study.toml's do
        not (an interrupted ``fit``); what is left out, configured comparisons
        included, is listed in the result and in ``metrics.json`` notes.

    Raises
    ------
    ValidateError
        No predictions at all; or, unless ``partial``, models without predictions (named).
    """
    out_dir = study.report_dir
    result = ValidateResult(out_dir)
    con = store.connect(study.store_path, read_only=True)
    try:
        preds = store.read_predictions(con)
    finally:
        con.close()
    if preds.height == 0:
        raise ValidateError(f"{study.store_path}: no predictions yet; run `cohortlab fit` first")
    # predictions of models since removed from study.toml are left out
    present = set(preds.get_column("model").to_list())
    missing, dropped = left_out(study, present)
    if missing and not partial:
        raise ValidateError(
            f"{study.store_path}: no predictions for model(s) {', '.join(missing)} of {study.root / 'study.toml'} "
            f"(not fitted, or `cohortlab fit` was interrupted): run `cohortlab fit`, or validate the others with "
            f"`cohortlab validate --partial`")
    result.left_out = dropped
    models = [m.name for m in study.models if m.name in present]
    if not models:
        raise ValidateError(f"{study.store_path}: no predictions for any model of {study.root / 'study.toml'}; "
                            "run `cohortlab fit` first")
    preds = preds.filter(pl.col("model").is_in(models))
    # the saved model folders are checked against the store's sha256 before anything is validated: a
    # changed file, or one an older cohortlab pickled, stops here (one line naming the file)
    from analytics.models.persist import check_models

    check_models(study.models_dir, study.store_path, models)
    cohort = load_cohort(study)
    groups = study.validation.subgroups
    absent = [c for c in groups if c not in cohort.frame.columns]
    if absent:
        raise ValidateError(f"{study.root / 'study.toml'}: [validation] subgroups: no column "
                            f"{', '.join(repr(c) for c in absent)} in cohort {cohort.name!r} "
                            f"(its columns: {', '.join(cohort.frame.columns)})")
    cols = outcome_columns(study, cohort.frame.columns)
    outcomes = cohort.frame.select(cols).rename({"split": "cohort_split"})
    check_settings(study, outcomes)  # a misspelt centre stops here, before anything is computed or written
    digest = inputs_digest(study, preds, outcomes)
    metrics_file = out_dir / "metrics.json"
    if not force and metrics_file.exists():
        try:
            if json.loads(metrics_file.read_text()).get("inputs_digest") == digest:
                result.skipped = True
                return result
        except json.JSONDecodeError:
            pass
    models_metrics: dict[str, ModelMetrics] = {}
    internal: dict[str, InternalMetrics] = {}
    curves: dict[str, Any] = {}
    # each model's metrics (and each pair's comparisons) come from the cache when their inputs are unchanged
    cache = ValidationCache(study.root / "cache" / "validation")
    common = _cache_common(study, outcomes)
    keys: dict[str, str] = {}
    for name in tqdm(models, desc="validating", unit="model", disable=not progress, leave=False):
        m_preds = preds.filter(pl.col("model") == name)
        keys[name] = model_key(study, name, m_preds, common)
        hit = None if force else cache.model(name, keys[name])
        if hit is not None:
            m, c, notes = hit.metrics, hit.curves, list(hit.notes)
        else:
            m, c, notes = _model_metrics(name, m_preds, outcomes, study)
            cache.put_model(name, keys[name], m, c, notes)
        models_metrics[name] = m
        record = read_record(study.models_dir, name)
        # competing causes: AUC(t) and Brier(t) of the cause (or why not) instead of the single-event indexes
        internal_code, no_internal = (None, None) if record is None or not record.internal else internal_cause(
            study, name, str(record.internal.get("method")))
        if no_internal is not None:
            result.notes.append(f"model {name}: {no_internal}")
            record = None
        # the replicates `cohortlab fit` made ([validation] internal); a file not the one recorded stops here
        im = None if record is None else internal_metrics(study.models_dir, record, study.validation.level,
                                                          cause=internal_code)
        if im is not None:
            internal[name] = im
            result.notes += [f"model {name}, internal validation: {n}" for n in im.notes]
        curves[name] = c
        result.notes += notes
        for split in SPLITS:
            auc = m.splits[split].get("auc") if split in m.splits else None
            if auc is not None:
                result.headline.append(f"  {name:<14} {split:<9} AUC {auc.text()}")
            elif (_endpoint(study, name) == "survival" and split in m.splits
                  and (c_index := m.splits[split].get("c_index")) is not None):
                result.headline.append(f"  {name:<14} {split:<9} C   {c_index.text()}")
    # comparisons, added value and subgroups are of binary scores; survival models have their own measures
    binary_models = [m for m in models if _endpoint(study, m) == "binary"]
    added, added_notes = _added_value(preds, outcomes, study, binary_models)
    # competing causes: ΔAUC(t) and ΔBrier(t) of the cause between two survival models (empty otherwise)
    surv_added, surv_notes = competing_added_value(preds, outcomes, study, models,
                                                   lambda name: _horizon_risks(study, name))
    added += surv_added
    result.notes += added_notes + surv_notes
    # two or more external centres: per-centre measures, their meta-analysis, updating (analytics.validation.multicentre)
    multicentre, multi_notes = study_multicentre(study, preds, outcomes, models, cohort.frame)
    multi_notes += save_updated_models(study, multicentre)  # [validation] updating: models/<model>-updated-<centre>
    result.notes += multi_notes
    validation = Validation(
        study=study.study.name, cohort=cohort.name, cohort_hash=cohort.hash, inputs_digest=digest,
        code_version=store.code_version(), settings=jsonable({**study.validation.model_dump(), "seed": study.study.seed}),
        models=models_metrics, comparisons=tuple(_comparisons(preds, outcomes, study, binary_models, cache, keys, force)),
        notes=tuple([f"left out of this partial validation: {x}" for x in dropped] + result.notes),
        subgroups=tuple(subgroup_metrics(preds, outcomes, {c: g.cuts for c, g in groups.items()},
                                         study.validation.level, binary_models)),
        curves=jsonable(curves), predictions=preds.select("model", "patient_id", "split", "score"),
        outcomes=outcomes.select("patient_id", "label"), added_value=tuple(added), internal=internal,
        multicentre=multicentre, cause=cause_label(study))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_dir / "metrics.json", validation.to_dict(), indent=1)
    # grows with the patients: no spaces after "," and ":" (8% smaller), each float the text that reads back to it
    atomic.write_text(out_dir / "curves.json", json.dumps(validation.curves, sort_keys=True, separators=(",", ":")))
    atomic.write_text(out_dir / "metrics.csv", validation.to_csv())
    write_metrics_table(study.store_path, validation, {im.label for im in internal.values()})
    result.models = models
    result.validation = validation
    return result


def load_validation(study: StudyConfig) -> Validation:
    """The study's validated metrics as written (``metrics.json``, ``curves.json``), models in study order,
    with the predictions and labels that :meth:`Validation.compare` computes unstored pairs from.

    Raises
    ------
    ValidateError
        No metrics yet, or a file that cannot be read (named).
    """
    metrics_file = study.report_dir / "metrics.json"
    if not metrics_file.exists():
        raise ValidateError(f"{metrics_file}: no metrics yet; run `cohortlab validate` first")
    con = store.connect(study.store_path, read_only=True)
    try:
        preds = store.read_predictions(con)
    finally:
        con.close()
    outcomes = load_cohort(study).frame.select("patient_id", "label")
    return Validation.from_json(metrics_file, order=[m.name for m in study.models],
                                predictions=preds.select("model", "patient_id", "split", "score"), outcomes=outcomes)
