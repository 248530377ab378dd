"""Validation of a model fitted on multiply imputed data: the measures of each split pooled over the imputations.

``cohortlab fit`` with ``[imputation]`` saves, beside such a model, its score of every patient in each of the m
completed data sets (``imputed_predictions.parquet``; a survival model also its risks at the horizons,
``imputed_horizon_risks.parquet``); the store's predictions hold their mean. Validation evaluates each completed
version of a split and pools the results (Wood, Royston & White, Biom J 2015;57:614-632;
:mod:`analytics.stats.pooled_performance`):

* the headline measures by Rubin's rules with their within-imputation variances: ``auc`` (logit scale, DeLong),
  ``c_index`` (logit scale, infinitesimal jackknife), ``calibration_in_the_large``,
  ``calibration_recalibration_intercept`` and ``calibration_recalibration_slope`` (glm variances) and
  ``calibration_brier`` (the variance of a mean); each :class:`~analytics.validation.values.Estimate` carries ``m``
  and ``fmi`` (the fraction of missing information);
* every other measure that each completed version gives (sensitivity ... at the training threshold, ICI, AUC(t),
  Brier(t), Uno's C ...) as its mean over the imputations, without an interval: ``m`` set, ``fmi`` None, and the
  method says so;
* what is not evaluated per imputation (bootstrap intervals, the integrated Brier score, the log-rank test, the
  curves, per-centre rows, comparisons and added value) stays computed on the mean score; a split measure of that
  kind says so in its method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from analytics.stats.pooled_performance import (
    PooledStatistic,
    pooled_auc,
    pooled_brier,
    pooled_c_index,
    pooled_calibration,
    pooled_mean,
)
from analytics.validation.cache import frame_digest
from analytics.validation.measures import SplitMetrics
from analytics.validation.values import Estimate, ValidateError, clean, safe
from pipeline.config import StudyConfig

# the pooled statistics under their metrics.csv names
HEADLINE = {"auc": "auc", "in_the_large": "calibration_in_the_large",
            "recalibration_intercept": "calibration_recalibration_intercept",
            "recalibration_slope": "calibration_recalibration_slope", "brier": "calibration_brier", "c_index": "c_index"}
_COUNTS = ("n", "n_positive", "n_survival", "n_events", "logrank_p")
_COLUMNS = ("patient_id", "imp", "score")


def _read(study: StudyConfig, name: str) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """A model's imputed scores and horizon risks as ``fit`` saved them (checked against the store's sha256), or
    None."""
    from analytics.models.persist import IMPUTED_PREDICTIONS, read_imputed_horizon_risks, read_imputed_predictions

    folder = study.models_dir / name
    if not (folder / IMPUTED_PREDICTIONS).exists():  # most models: no need to read (and check) the whole folder
        return None, None
    scores = read_imputed_predictions(folder, study.store_path)
    if scores is None or scores.height == 0:
        return None, None
    return scores, read_imputed_horizon_risks(folder, study.store_path)


def imputed_digest(study: StudyConfig, names: Sequence[str]) -> str:
    """sha256 of the imputed scores and horizon risks of ``names``; ``""`` when none has any (keys stay as they were
    for a study without imputation)."""
    parts = []
    for name in names:
        scores, risks = _read(study, name)
        if scores is not None:
            parts.append(f"{name}:{frame_digest(scores)}:{frame_digest(risks)}")
    return "\n".join(parts)


@dataclass(frozen=True)
class ImputedScores:
    """A model's scores in each of its m completed data sets, and what validates one completed version of a split.

    Attributes
    ----------
    name : str
    imps : tuple of int
        The imputation numbers (1..m).
    wide : polars.DataFrame
        ``patient_id`` and one score column per imputation.
    risks : dict or None
        ``(patient_id, imp) -> {horizon: risk}`` of a survival model.
    light : StudyConfig
        The study with ``n_boot = 0``: each completed version is measured without bootstrap resamples.
    """

    name: str
    imps: tuple[int, ...]
    wide: pl.DataFrame
    risks: dict[tuple[str, int], dict[float, float]] | None
    light: StudyConfig

    @property
    def m(self) -> int:
        return len(self.imps)

    def matrix(self, ids: Sequence[str]) -> np.ndarray | None:
        """The (m, n) scores of ``ids`` (None when a patient lacks one in some imputation)."""
        if not len(ids):
            return None
        got = pl.DataFrame({"patient_id": list(ids)}, schema={"patient_id": pl.String}).join(
            self.wide, on="patient_id", how="left", maintain_order="left")
        values = got.select([str(k) for k in self.imps]).to_numpy().astype(np.float64).T
        return values if np.isfinite(values).all() else None

    def horizon_risks(self, ids: Sequence[str], horizons: Sequence[float]) -> list[np.ndarray | None]:
        """Per imputation, the (n, horizons) risks of ``ids`` (None where some is missing)."""
        out: list[np.ndarray | None] = []
        for k in self.imps:
            rows = [[(self.risks or {}).get((p, k), {}).get(float(t), math.nan) for t in horizons] for p in ids]
            arr = np.asarray(rows, dtype=np.float64).reshape(len(ids), len(horizons))
            out.append(arr if self.risks is not None and np.isfinite(arr).all() else None)
        return out

    def pool(self, metrics: SplitMetrics, notes: list[str], part: pl.DataFrame, fpart: pl.DataFrame,
             measure: Callable[..., tuple[SplitMetrics, Any, list[str]]], *args: Any,
             **bound: Any) -> tuple[SplitMetrics, list[str]]:
        """One split's measures pooled over the imputations.

        Parameters
        ----------
        metrics, notes
            The split's measures on the mean score, and their notes.
        part, fpart
            The split's labelled rows and its rows with follow-up (``patient_id``, ``label``).
        measure, *args, **bound
            ``measure(*args, study=, score=, survival_score=, horizon_risk=, **bound)`` measures one completed
            version of the split (the validate stage's ``_split_metrics``; ``bound`` holds ``time``, ``event``,
            ``cause`` and ``horizons`` among the rest).

        Returns
        -------
        SplitMetrics, list of str
        """
        level = float(self.light.validation.level)
        ids, fids = part.get_column("patient_id").to_list(), fpart.get_column("patient_id").to_list()
        scores, fscores = self.matrix(ids), self.matrix(fids)
        if (ids and scores is None) or (fids and fscores is None):
            return metrics, [*notes, f"no score in every imputation for some patients of {self.name} (imputed_predictions"
                             ".parquet); measures computed on the mean score, not pooled: refit the model"]
        again, kw = partial(measure, *args, **bound), bound
        pooled: dict[str, PooledStatistic] = {}
        why: list[str] = []

        def attempt(fn: Callable[..., Any], *args: Any) -> None:
            res, err = safe(fn, *args, level=level)
            if res is None:
                why.append(f"not pooled over the imputations ({err})")
            else:
                pooled.update(res if isinstance(res, dict) else {res.name: res})

        y = part.get_column("label").to_numpy().astype(np.float64)
        if scores is not None and "auc" in metrics.estimates:
            attempt(pooled_auc, y, scores)
        if scores is not None and metrics.calibration is not None:
            attempt(pooled_calibration, y, scores)
            attempt(pooled_brier, y, scores)
        if fscores is not None and "c_index" in metrics.estimates:
            event = np.asarray(kw["event"], dtype=np.float64)
            hit = event if kw.get("cause") is None else (event == kw["cause"]).astype(np.float64)
            attempt(pooled_c_index, np.asarray(kw["time"], dtype=np.float64), hit, fscores)
        horizons = kw.get("horizons") or ()
        risks = self.horizon_risks(fids, horizons) if horizons else [None] * self.m
        # each completed version without risk groups (the log-rank p is not pooled) nor bootstrap resamples
        runs = [again(study=self.light, score=scores[j] if scores is not None else np.empty(0), cut=None,
                      survival_score=None if fscores is None else fscores[j], horizon_risk=risks[j])[0]
                for j in range(self.m)]
        estimates = dict(metrics.estimates)
        calibration = dict(metrics.calibration or {})
        for name in metrics.names():
            if name in _COUNTS:
                continue
            est = self._pooled(name, pooled, runs, level)
            if est is None:
                kept = metrics.get(name)
                if name not in estimates or kept is None:
                    continue  # a calibration number on the mean score, without a method to say so
                est = replace(kept, method=f"{kept.method}; on the mean score over m={self.m} imputations (not pooled)")
            estimates[name] = est
            if name.startswith("calibration_"):
                calibration[name.removeprefix("calibration_")] = est.estimate
        return (replace(metrics, estimates=estimates, calibration=calibration or None),
                [*notes, *sorted(set(why))])

    def _pooled(self, name: str, pooled: dict[str, PooledStatistic], runs: list[SplitMetrics],
                level: float) -> Estimate | None:
        """A measure pooled by Rubin's rules, else as its mean over the imputations, else None."""
        key = next((k for k, v in HEADLINE.items() if v == name and k in pooled), None)
        if key is not None:
            p = pooled[key]
            return Estimate(clean(p.estimate), clean(p.low), clean(p.high), p.method, clean(level), p.m, clean(p.fmi))
        values = [None if (e := r.get(name)) is None else e.estimate for r in runs]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        p = pooled_mean(name, [float(v) for v in values if v is not None], level)
        return Estimate(clean(p.estimate), None, None, p.method, clean(level), p.m, None)


def imputed_scores(study: StudyConfig, name: str) -> ImputedScores | None:
    """Model ``name``'s imputed scores (None when it was not fitted on multiple imputations).

    Raises
    ------
    ValidateError
        The file lacks a column, holds a patient twice in one imputation, or fewer than two imputations (named).
    """
    scores, risks = _read(study, name)
    if scores is None:
        return None
    where = study.models_dir / name / "imputed_predictions.parquet"
    lacking = [c for c in _COLUMNS if c not in scores.columns]
    if lacking:
        raise ValidateError(f"{where}: no column {', '.join(lacking)} (it has {', '.join(scores.columns)})")
    dup = scores.filter(pl.struct("patient_id", "imp").is_duplicated())
    if dup.height:
        row = dup.row(0, named=True)
        raise ValidateError(f"{where}: patient {row['patient_id']} has two scores in imputation {row['imp']}")
    imps = tuple(sorted(int(k) for k in scores.get_column("imp").unique().to_list()))
    if len(imps) < 2:
        raise ValidateError(f"{where}: scores of {len(imps)} imputation(s); pooling needs at least 2")
    wide = (scores.select(pl.col("patient_id").cast(pl.String), pl.col("imp").cast(pl.Int64).cast(pl.String),
                          pl.col("score").cast(pl.Float64))
            .pivot(on="imp", index="patient_id", values="score"))
    by: dict[tuple[str, int], dict[float, float]] | None = None
    if risks is not None and risks.height:
        by = {}
        for p, k, t, r in risks.select("patient_id", "imp", "horizon", "risk").iter_rows():
            by.setdefault((str(p), int(k)), {})[float(t)] = float(r)
    light = study.model_copy(update={"validation": study.validation.model_copy(update={"n_boot": 0})})
    return ImputedScores(name, imps, wide, by, light)
