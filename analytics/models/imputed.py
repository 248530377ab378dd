"""Multiple imputation inside a model's procedure (``[imputation] method = "mice"``).

:class:`ImputedLearner` wraps the learner the registry builds for a model entry and follows the same interface
(``fit``, ``predict_score``, ``risk_at``, ``chosen``, ``n_fits_``). Being part of the learner, the imputation is
refitted wherever the learner is: on each outer training fold, on the final fit and on each bootstrap replicate
of the internal validation (bootstrap, then impute: Wahl et al., BMC Med Res Methodol 2016;16:144).

``fit(data, y)``

* imputes the clinical columns of the training rows by chained equations (:func:`analytics.impute.impute`,
  van Buuren & Groothuis-Oudshoorn 2011) ``m`` times, with the outcome in the imputation models (the label; for
  a survival outcome the event indicator(s) and Nelson-Aalen cumulative hazard(s), never the raw time: White &
  Royston, Stat Med 2009;28:1982-1998) and the study's ``auxiliary`` columns as predictors only. Image-feature
  columns never enter the chains: the inner pipeline median-imputes them as before;
* fits the inner learner on each completed table (knots of splines placed once, on the observed values:
  :func:`analytics.models.formula.shared_knots`);
* for an unpenalised maximum-likelihood regression (``logistic`` with ``penalty = "none"``, ``cox`` without a
  penalizer) pools the m fits' coefficients by Rubin's rules (Rubin 1987; :func:`analytics.stats.rubin.pool`):
  the pooled coefficients are the model, and its coefficient table carries the Rubin columns and per-term D1
  tests (Li, Raghunathan & Rubin 1991). A pooled Cox model's baseline hazard is Breslow's at the pooled
  coefficients over the m completions stacked. Other learners keep their m fits; a penalised regression's table
  is the mean of the fits' estimates, flagged, without standard errors.

With ``validation_imputation = "with_outcome"``, the fit stage's internal and external patients are instead
imputed split by split, each split by chained equations of its own with its own outcomes
(:func:`complete_held_out`); out-of-fold and new patients are imputed without outcome as above.

Imputations made elsewhere (``[imputation] from``: :attr:`analytics.models.data.ModelData.completions`) take the
place of the chains, for the training rows and for new ones.

``predict_score(new)`` imputes the new rows ``m`` times with chained equations fitted on the training rows
WITHOUT the outcome (:func:`analytics.impute.impute_new`; Hoogland et al., Stat Med 2020;39:3591-3607), so a
held-out label is never read, and returns the mean over imputations of the risk: the pooled model's (pooled
regressions) or fit i's on completion i (others). For a survival model the score is the mean of the linear
predictors (risk scores) and :meth:`ImputedLearner.risk_at` the mean of the absolute risks. Rows without a
missing clinical value go through no chain (the same numbers either way).

The chains are seeded from the study's imputation seed and a stream drawn from the training patients' ids, so
each fold, replicate and final fit has its own stream and the results do not depend on the worker count.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from analytics.impute import Settings, impute, impute_new
from analytics.impute.study import outcome_columns
from analytics.models.data import Assembled, ModelData, ModelInputError
from analytics.models.learners import Learner
from pipeline.config import Model
from pipeline.config_imputation import ImputationSettings
from pipeline.formula import parse_formula

AUX_PREFIX = "aux:"
"""Auxiliary columns ride in the input table under this prefix; the wrapper strips them before any inner fit."""
# a saved model's files besides its fits (analytics.models.persist writes and reads them)
IMPUTATION_STATE = "imputation.json"  # what new patients' chains need: columns, levels, the chains' seed
IMPUTATION_ROWS = "imputation_rows.parquet"  # the development rows' clinical and auxiliary columns, no outcome

Build = Callable[[Model, int], Learner]


def pooled_kind(spec: Model) -> bool:
    """Whether ``spec`` is an unpenalised maximum-likelihood regression, whose pooled coefficients are the model."""
    grid, traits = set(spec.grid), spec.traits
    if traits.regression == "logit":
        return spec.params.get("penalty") == "none" and "pca" not in spec.params and "pca" not in grid
    if traits.regression == "cox" and not traits.competing:  # competing causes: one model per cause, not pooled
        return float(spec.params.get("penalizer", 0.0)) == 0.0 and not grid and "pca" not in spec.params
    return False


def wraps(spec: Model) -> bool:
    """Whether ``spec``'s learner imputes by chained equations: the study has ``[imputation] method = "mice"``
    and the model reads clinical columns through an input table (not bags, member scores or a published model)."""
    t = spec.traits
    return spec.imputation is not None and bool(spec.clinical) and not (t.bags or t.ensemble or t.published)


def not_in_imputation_model(spec: Model) -> list[str]:
    """The formula's spline and interaction terms: the chains impute main effects only, which biases these
    terms toward zero (the report says so)."""
    if spec.formula is None:
        return []
    return [t.label for t in parse_formula(spec.formula).terms
            if len(t.factors) > 1 or any(f.function == "rcs" for f in t.factors)]


def record(spec: Model, learner: Any) -> dict[str, Any] | None:
    """The fit record's ``imputation`` entry of a model fitted with an :class:`ImputedLearner` (None otherwise)."""
    s = spec.imputation
    if s is None or not isinstance(learner, ImputedLearner):
        return None
    return {"method": "mice", "m": learner.m, "maxit": s.maxit, "seed": spec.imputation_seed,
            "m_boot": s.m_boot, "validation_imputation": s.validation_imputation,
            "auxiliary": list(s.auxiliary), "methods": dict(s.methods), "donors": s.donors,
            "source": learner.source_, "pooled": learner.pooled_, "seconds": round(learner.chain_seconds_, 3),
            "fit_seconds": round(learner.seconds_, 3),
            "imputations": learner.imputations_, "not_in_imputation_model": not_in_imputation_model(spec)}


def key(spec: Model) -> str | None:
    """The part of the fit key the imputation settings make (None when the model does not impute by chained
    equations): changed settings refit the model."""
    s = spec.imputation
    if s is None or not wraps(spec):
        return None
    return json.dumps({"m": s.m, "maxit": s.maxit, "seed": spec.imputation_seed, "auxiliary": s.auxiliary,
                       "methods": s.methods, "m_boot": s.m_boot, "donors": s.donors, "from": s.from_,
                       "validation_imputation": s.validation_imputation}, sort_keys=True)


def auxiliary_of(learner: Any) -> list[str]:
    """The auxiliary columns a fitted (or loaded) :class:`ImputedLearner` imputes with; none for other learners."""
    if not isinstance(learner, ImputedLearner):
        return []
    return [c.removeprefix(AUX_PREFIX) for c in getattr(learner, "aux_", [])]


def with_auxiliary(spec: Model, frame: pl.DataFrame, assembled: Assembled, source: str,
                   names: Sequence[str] | None = None) -> Assembled:
    """``assembled`` with the auxiliary columns of ``frame`` (the cohort, row-aligned) added to its table as
    ``aux:<name>``: the chains read them, no model does. ``names``: those columns (default: the study's
    ``[imputation] auxiliary`` when ``spec``'s learner imputes; a saved model's: :func:`auxiliary_of`)."""
    data = assembled.data
    if names is None:
        s = spec.imputation
        names = list(s.auxiliary) if s is not None and wraps(spec) else []
    if not names or data.table is None:
        return assembled
    lacking = [c for c in names if c not in frame.columns]
    if lacking:
        raise ModelInputError(f"[imputation] auxiliary: no column {', '.join(map(repr, lacking))} in {source}")
    table = data.table.copy()
    for c in names:
        col = frame[c]
        if col.dtype.is_numeric() or col.dtype == pl.Boolean:
            table[AUX_PREFIX + c] = col.cast(pl.Float64).fill_null(np.nan).to_numpy()
        else:
            table[AUX_PREFIX + c] = np.array([np.nan if v is None else str(v) for v in col.to_list()], dtype=object)
    return replace(assembled, data=replace(data, table=table))


# --- tables <-> chain frames -------------------------------------------------------------------------------


def _chain_frame(table: pd.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    """The columns the chains read (clinical, then auxiliary without their prefix), typed for polars."""
    cols = []
    for c in names:
        values = table[c]
        name = c.removeprefix(AUX_PREFIX)
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            cols.append(pl.Series(name, values.to_numpy(dtype=np.float64), dtype=pl.Float64, nan_to_null=True))
        else:
            cols.append(pl.Series(name, [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                                         for v in values], dtype=pl.String))
    return pl.DataFrame(cols)


def _filled(table: pd.DataFrame, rows: np.ndarray, completed: pl.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``table`` with ``columns`` of ``rows`` replaced by the completed values."""
    out = table.copy()
    for c in columns:
        values = completed[c]
        if pd.api.types.is_numeric_dtype(out[c]):
            new = values.cast(pl.Float64).to_numpy()
        else:
            new = np.array([str(v) for v in values.to_list()], dtype=object)
        col = out[c].to_numpy(copy=True)
        col[rows] = new
        out[c] = col
    return out


def _outcome(y: np.ndarray) -> pl.DataFrame:
    """The outcome's columns for the imputation models (:func:`analytics.impute.study.outcome_columns`)."""
    y = np.asarray(y)
    if y.ndim == 2:
        return outcome_columns(pl.DataFrame({"time": y[:, 0].astype(np.float64),
                                             "event": y[:, 1].astype(np.int64)}))
    return pl.DataFrame({"label": y.astype(np.int64)})


def _incomplete_rows(frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Positions of the rows missing a value of ``columns``."""
    if frame.height == 0 or not columns:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(frame.select(pl.any_horizontal(pl.col(list(columns)).is_null())).to_series().to_numpy())


def stream_seed(seed: int, ids: Sequence[str]) -> int:
    """The chains' seed for a fit on the patients ``ids`` (in order): one stream per fold, replicate and final fit."""
    text = str(seed) + "\x1e" + "\x1f".join(map(str, ids))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class ImputedLearner:
    """A model entry's learner fitted on ``m`` completed data sets (see the module notes).

    Parameters
    ----------
    spec
        The model entry (its ``imputation`` set: the study's ``[imputation]``, method mice).
    seed
        The learner's seed (each inner fit gets it).
    m
        Imputations (``m``, or ``m_boot`` for an internal-validation replicate).
    build
        Builds one inner learner (the registry's factory for the kind).
    """

    def __init__(self, spec: Model, seed: int, m: int, build: Build) -> None:
        settings = spec.imputation
        if settings is None:
            raise ValueError(f"model '{spec.name}': no [imputation] settings")
        self.kind = spec.kind
        self.spec = spec
        self.seed = seed
        self.m = int(m)
        self.settings: ImputationSettings = settings
        self.chain_seed = int(spec.imputation_seed)
        self.pooled_ = "rubin" if pooled_kind(spec) else "mean_risk"
        self.build = build
        build(spec, seed)  # fails early on unknown parameters, as the inner learner would
        self._cache: tuple[tuple[str, ...], list[pd.DataFrame] | None] | None = None

    # --- what is pickled to workers: no cached completions ---
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def _settings(self, seed: int, columns: Sequence[str], levels: dict[str, list[str]]) -> Settings:
        methods: dict[str, str] = {k: str(v) for k, v in self.settings.methods.items() if k in columns}
        return Settings(m=self.m, maxit=self.settings.maxit, seed=seed, methods=methods, donors=self.settings.donors,
                        levels={k: v for k, v in levels.items() if k in columns})

    def fit(self, data: ModelData, y: np.ndarray) -> ImputedLearner:
        """Impute the training rows m times (with the outcome), fit the inner learner on each completion."""
        from analytics.models.formula import rcs_knots, shared_knots

        t0 = time.perf_counter()
        if data.table is None or data.columns is None:
            raise ValueError(f"a {self.kind} model needs an input table")
        table, columns = data.table, data.columns
        aux = [c for c in table.columns if c.startswith(AUX_PREFIX)]
        self.clinical_ = list(columns.clinical)
        self.aux_ = aux
        self.levels_ = {c: list(lv) for c, lv in columns.levels}
        base = table.drop(columns=aux)
        dev = _chain_frame(table, [*self.clinical_, *aux])
        self.chains_seed_ = stream_seed(self.chain_seed, data.patient_ids)
        given = data.completions
        self.imputations_, self.chain_seconds_ = 0, 0.0
        if given is not None:
            completed = [t.drop(columns=[c for c in aux if c in t.columns]) for t in given]
            self.m, self.source_ = len(completed), "from"
        else:
            self.source_ = "chains"
            if len(_incomplete_rows(dev, self.clinical_)) == 0:  # nothing to impute: every completion is the table itself
                completed = [base] * self.m
            else:
                outcome = _outcome(y)
                clash = [c for c in outcome.columns if c in dev.columns]
                if clash:
                    raise ValueError(f"clinical column(s) {clash} clash with the outcome columns of the imputation "
                                     "models; rename them in the cohort SQL")
                frame = pl.concat([dev, outcome], how="horizontal")
                t_chains = time.perf_counter()
                imp = impute(frame, self._settings(self.chains_seed_, frame.columns, self.levels_))
                self.chain_seconds_ = time.perf_counter() - t_chains
                self.imputations_ = self.m
                rows = np.arange(len(base))
                completed = [_filled(base, rows, imp.complete(i), self.clinical_) for i in range(1, self.m + 1)]
        # the development rows, without outcome, are what new patients' chains are fitted on
        self.development_ = dev
        splines = parse_formula(columns.formula).splines if columns.formula else {}
        knots = {v: tuple(float(x) for x in rcs_knots(base[v].dropna().to_numpy(dtype=np.float64), k, v))
                 for v, k in splines.items() if v in base.columns}
        fits: list[Any] = []
        with shared_knots(knots):
            for i, t in enumerate(completed):
                if i > 0 and t is completed[0]:
                    fits.append(fits[0])  # the same completion: the same fit
                    continue
                fits.append(self.build(self.spec, self.seed).fit(self._inner_data(data, t), y))
        self.fits_ = fits
        self.n_fits_ = sum(int(getattr(f, "n_fits_", 1)) for f in {id(f): f for f in fits}.values())
        self.dropped_ = dict(getattr(fits[0], "dropped_", None) or {})
        self.columns_ = getattr(fits[0], "columns_", None)
        self.inner_auc_ = getattr(fits[0], "inner_auc_", None)
        self.tables_: Any = False
        self.model_fit_: Any = None
        self._pool(data, completed, y)
        self.seconds_ = time.perf_counter() - t0
        return self

    @staticmethod
    def _inner_data(data: ModelData, table: pd.DataFrame) -> ModelData:
        # the completed table stands for the imputations made elsewhere, if any
        return replace(data, table=table, completions=None)

    # --- pooling -----------------------------------------------------------------------------------------
    def _pool(self, data: ModelData, completed: Sequence[pd.DataFrame], y: np.ndarray) -> None:
        """Rubin's rules over the fits' coefficients (pooled regressions), or the mean of their estimates."""
        from analytics.models import pooling

        datas = [self._inner_data(data, t) for t in completed]
        if self.pooled_ == "rubin":
            pooled = pooling.rubin_model(self.fits_, datas, y)
            if pooled is None:  # the fits' coefficients do not line up (e.g. a level absent from one completion)
                self.pooled_ = "mean_risk"
            else:
                self.model_fit_, self.tables_ = pooled
                return
        self.tables_ = pooling.mean_tables(self.fits_, datas, y) or False

    # --- prediction --------------------------------------------------------------------------------------
    def completions(self, data: ModelData) -> list[pd.DataFrame] | None:
        """The m completed tables of new rows (their outcome never read), or None when no clinical value is
        missing (every completion is the table itself)."""
        ids = tuple(data.patient_ids)
        if self._cache is not None and self._cache[0] == ids:
            return self._cache[1]
        if data.table is None:
            raise ValueError(f"a {self.kind} model needs an input table")
        given = data.completions
        table = data.table.drop(columns=[c for c in data.table.columns if c.startswith(AUX_PREFIX)])
        out: list[pd.DataFrame] | None
        if given is not None:
            out = [t.drop(columns=[c for c in t.columns if c.startswith(AUX_PREFIX)]) for t in given]
        else:
            # auxiliary columns the new rows lack (a cohort scored by `predict` may not return them) leave the
            # new patients' chains
            aux = [c for c in self.aux_ if c in data.table.columns]
            dev = self.development_.drop([c.removeprefix(AUX_PREFIX) for c in self.aux_ if c not in aux])
            new = _chain_frame(data.table, [*self.clinical_, *aux])
            missing_rows = _incomplete_rows(new, self.clinical_)
            if len(missing_rows) == 0:
                out = None
            else:
                settings = self._settings(self.chains_seed_, dev.columns, self.levels_)
                # each patient's draws come from its own stream (keyed by its id): its values do not depend on
                # who else is scored in the same call
                imp = impute_new(dev, new[missing_rows.tolist()], settings,
                                 ids=[data.patient_ids[i] for i in missing_rows.tolist()])
                out = [_filled(table, missing_rows, imp.complete(i), self.clinical_) for i in range(1, self.m + 1)]
        self._cache = (ids, out)
        return out

    def impute_own(self, data: ModelData, y: np.ndarray) -> list[pd.DataFrame] | None:
        """The m completions of one validation split by chained equations of its own, with its outcome (``[imputation]
        validation_imputation = "with_outcome"``); None when none of its clinical values is missing."""
        assert data.table is not None
        aux = [c for c in self.aux_ if c in data.table.columns]
        frame = _chain_frame(data.table, [*self.clinical_, *aux])
        if len(_incomplete_rows(frame, self.clinical_)) == 0:
            return None
        frame = pl.concat([frame, _outcome(y)], how="horizontal")
        settings = self._settings(stream_seed(self.chain_seed, ("with_outcome", *data.patient_ids)), frame.columns,
                                  self.levels_)
        imp = impute(frame, settings)
        table = data.table.drop(columns=[c for c in data.table.columns if c.startswith(AUX_PREFIX)])
        return [_filled(table, np.arange(len(table)), imp.complete(i), self.clinical_) for i in range(1, self.m + 1)]

    def _per_imputation(self, data: ModelData, predict: Callable[[Any, ModelData], np.ndarray]) -> np.ndarray:
        tables = self.completions(data)
        assert data.table is not None
        plain = data.table.drop(columns=[c for c in data.table.columns if c.startswith(AUX_PREFIX)])
        out = []
        for i in range(self.m):
            rows = self._inner_data(data, plain if tables is None else tables[i])
            model = self.model_fit_ if self.model_fit_ is not None else self.fits_[i]
            out.append(np.asarray(predict(model, rows), dtype=np.float64))
        return np.stack(out)

    def predict_imputed(self, data: ModelData) -> np.ndarray:
        """``(m, n)``: the score of each row on each completion (the pooled model's, or fit i's on completion i)."""
        return self._per_imputation(data, lambda f, d: f.predict_score(d))

    def risk_at_imputed(self, data: ModelData, horizons: Sequence[float]) -> np.ndarray:
        """``(m, n, len(horizons))``: absolute risk on each completion."""
        return self._per_imputation(data, lambda f, d: f.risk_at(d, horizons))

    def predict_score(self, data: ModelData) -> np.ndarray:
        """The mean over imputations of each row's predicted probability (binary) or risk score (survival)."""
        return self.predict_imputed(data).mean(axis=0)

    def risk_at(self, data: ModelData, horizons: Sequence[float]) -> np.ndarray:
        """The mean over imputations of each row's absolute risk at the horizons."""
        if not hasattr(self.fits_[0], "risk_at"):
            raise TypeError(f"risk_at: a {self.kind} model predicts no risk over time")
        return self.risk_at_imputed(data, horizons).mean(axis=0)

    def attention(self, data: ModelData) -> list[np.ndarray]:
        raise TypeError("attention: a model imputed by chained equations reads no instance bags")

    @property
    def chosen(self) -> dict[str, Any]:
        return dict(self.fits_[0].chosen)

    @property
    def saved_fits(self) -> list[Any]:
        """What the model folder keeps: the pooled fit (pooled regressions) or the m fits."""
        return [self.model_fit_] if self.model_fit_ is not None else list(self.fits_)

    @classmethod
    def loaded(cls, spec: Model, fits: Sequence[Any], development: pl.DataFrame, state: dict[str, Any]) -> ImputedLearner:
        """A fitted learner rebuilt from a model folder: its fits, development rows and imputation record."""
        out = cls.__new__(cls)
        out.kind, out.spec, out.seed = spec.kind, spec, int(state.get("learner_seed", 0))
        out.m = int(state["m"])
        out.settings = ImputationSettings.model_validate({
            "method": "mice", "m": max(out.m, 2), "maxit": state["maxit"], "seed": state["seed"],
            "methods": state.get("methods", {}), "donors": state.get("donors", 5), "m_boot": state.get("m_boot", 5),
            "auxiliary": state.get("auxiliary", [])})
        out.chain_seed = int(state["seed"])
        out.pooled_ = str(state["pooled"])
        out.build = None  # type: ignore[assignment]
        out._cache = None
        out.clinical_ = list(state["clinical"])
        out.aux_ = [AUX_PREFIX + c for c in state.get("auxiliary", [])]
        out.levels_ = {k: list(v) for k, v in state.get("levels", {}).items()}
        out.chains_seed_ = int(state["chains_seed"])
        out.development_ = development
        out.source_ = str(state.get("source", "chains"))
        out.imputations_, out.chain_seconds_ = int(state.get("imputations", 0)), float(state.get("seconds", 0.0))
        out.seconds_ = float(state.get("fit_seconds", 0.0))
        if out.pooled_ == "rubin":
            out.model_fit_, out.fits_ = fits[0], [fits[0]] * out.m
        else:
            out.model_fit_, out.fits_ = None, list(fits)
        out.n_fits_, out.tables_ = 0, False
        out.dropped_, out.columns_, out.inner_auc_ = {}, getattr(fits[0], "columns_", None), None
        return out

    def state(self) -> dict[str, Any]:
        """What a model folder needs besides the fits and development rows to predict new patients."""
        return {"clinical": self.clinical_, "levels": self.levels_, "chains_seed": str(self.chains_seed_),
                "learner_seed": self.seed}


def complete_held_out(learner: Any, data: ModelData, held: np.ndarray, split: np.ndarray, outcome: np.ndarray) -> None:
    """With ``validation_imputation = "with_outcome"``, complete the held-out rows ``held`` of ``data`` split by split,
    each split by chained equations of its own with its own outcomes (``outcome``: the fit's labels, NaN where
    unknown, or times and events); rows without an outcome are completed as new patients. The learner then
    predicts ``data.take(held)`` from these completions. Nothing is done for any other learner or setting."""
    if (not isinstance(learner, ImputedLearner) or learner.settings.validation_imputation != "with_outcome"
            or learner.source_ != "chains" or len(held) == 0):
        return
    rows_data = data.take(held)
    assert rows_data.table is not None
    y = np.asarray(outcome)[held]
    known = np.isfinite(y).all(axis=1) if y.ndim == 2 else np.isfinite(y)
    base = learner.completions(rows_data)  # the rows without an outcome: as new patients
    plain = rows_data.table.drop(columns=[c for c in rows_data.table.columns if c.startswith(AUX_PREFIX)])
    tables = [t.copy() for t in base] if base is not None else [plain.copy() for _ in range(learner.m)]
    for s in sorted(set(np.asarray(split)[held].tolist())):
        rows = np.flatnonzero((np.asarray(split)[held] == s) & known)
        if len(rows) == 0:
            continue
        part = rows_data.take(rows)
        assert part.table is not None
        own = learner.impute_own(part, y[rows])
        for i in range(learner.m):
            for c in learner.clinical_:
                col = tables[i][c].to_numpy(copy=True)
                col[rows] = (plain[c].to_numpy()[rows] if own is None else own[i][c].to_numpy())
                tables[i][c] = col
    learner._cache = (tuple(rows_data.patient_ids), tables)


class PerImputation:
    """Each predicted patient's score (and absolute risks) on each completion, as fit collects them.

    A learner that is not an :class:`ImputedLearner` is passed through (nothing is collected). The mean over
    imputations is what the learner's ``predict_score`` / ``risk_at`` return, so the predictions table keeps it.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.scores: dict[int, np.ndarray] = {}  # row -> (m,) scores
        self.risks: dict[int, np.ndarray] = {}  # row -> (m, horizons) risks

    def score(self, learner: Any, data: ModelData, rows: np.ndarray) -> np.ndarray:
        if not isinstance(learner, ImputedLearner):
            return np.asarray(learner.predict_score(data))
        per = learner.predict_imputed(data)
        for j, r in enumerate(rows):
            self.scores[int(r)] = per[:, j]
        return per.mean(axis=0)

    def risk(self, learner: Any, data: ModelData, rows: np.ndarray, at: Sequence[float], horizons: int) -> np.ndarray:
        if not isinstance(learner, ImputedLearner):
            return np.asarray(learner.risk_at(data, at))
        per = learner.risk_at_imputed(data, at)
        for j, r in enumerate(rows):
            self.risks[int(r)] = per[:, j, :horizons]
        return per.mean(axis=0)

    def frames(self, name: str, ids: Sequence[str], split: np.ndarray, fold: Sequence[int | None], keep: np.ndarray,
               horizons: Sequence[float]) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        """``imputed_predictions`` (model, patient_id, split, fold, imp, score) and, for a survival model,
        ``imputed_horizon_risks`` (model, patient_id, imp, horizon, risk) of the kept rows; None when nothing
        was imputed."""
        if not self.scores:
            return None, None
        rows = [int(i) for i in keep if int(i) in self.scores]
        m = len(self.scores[rows[0]])
        preds = pl.DataFrame({
            "model": [name] * (len(rows) * m), "patient_id": [ids[i] for i in rows for _ in range(m)],
            "split": [str(split[i]) for i in rows for _ in range(m)],
            "fold": [fold[i] for i in rows for _ in range(m)],
            "imp": [k + 1 for _ in rows for k in range(m)],
            "score": np.concatenate([self.scores[i] for i in rows]),
        }, schema=IMPUTED_PREDICTION_SCHEMA)
        if not self.risks or not horizons:
            return preds, None
        h = len(horizons)
        risks = pl.DataFrame({
            "model": [name] * (len(rows) * m * h), "patient_id": [ids[i] for i in rows for _ in range(m * h)],
            "imp": [k + 1 for _ in rows for k in range(m) for _ in range(h)],
            "horizon": [float(t) for _ in rows for _ in range(m) for t in horizons],
            "risk": np.concatenate([self.risks[i].reshape(-1) for i in rows]),
        }, schema=IMPUTED_RISK_SCHEMA)
        return preds, risks


IMPUTED_PREDICTION_SCHEMA = {"model": pl.String, "patient_id": pl.String, "split": pl.String, "fold": pl.Int32,
                             "imp": pl.Int32, "score": pl.Float64}
IMPUTED_RISK_SCHEMA = {"model": pl.String, "patient_id": pl.String, "imp": pl.Int32, "horizon": pl.Float64,
                       "risk": pl.Float64}


__all__ = ["IMPUTATION_ROWS", "IMPUTATION_STATE", "IMPUTED_PREDICTION_SCHEMA", "IMPUTED_RISK_SCHEMA", "PerImputation", "auxiliary_of", "complete_held_out", "AUX_PREFIX", "ImputedLearner", "key", "not_in_imputation_model", "pooled_kind", "record",
           "stream_seed", "with_auxiliary", "wraps"]
