"""Internal validation of each model's whole procedure on its training patients, from the replicates fit made.

``cohortlab fit`` with ``[validation] internal`` set refits every model's procedure on B resamples of its n
training patients (or the folds of repeated k-fold cross-validation) and saves each replicate's scores, with
the final model's own scores of the n patients (:mod:`analytics.models.replicates`). This module reads them back
(sha256-checked) and computes, per model:

* the optimism-corrected measures of ``rms::validate`` (:func:`analytics.stats.internal.optimism`: binary
  ``validate.lrm`` indexes, survival ``validate.cph`` indexes and the IPCW Brier score at the study's horizons),
  by the optimism bootstrap (Efron 1983; Harrell, Lee & Mark 1996), repeated cross-validation or .632+ (Efron &
  Tibshirani 1997);
* an interval for each corrected estimate (:func:`corrected_interval`; which one, and its measured coverage, is
  written beside it);
* the bias-corrected calibration curve of ``rms::calibrate`` (binary: lowess, with its mean absolute error;
  survival: Kaplan-Meier groups at each horizon, ``calibrate.cph(cmethod = "KM")``).

``[validation] internal = "ncv"`` (binary models) is nested cross-validation instead (Bates, Hastie & Tibshirani,
JASA 2024; :func:`analytics.stats.nested_cv.nested_cv`): the AUC and Brier score with an interval whose coverage
was measured; the plan is rebuilt from the saved training labels and the recorded seed, folds and repeats.

It never imports the fit stage: what it needs is on disk, named by the model's manifest.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analytics.models.artifacts import FitRecord
from analytics.models.replicates import Apparent, ReplicateError, load_apparent, load_replicates
from analytics.stats.internal import (
    InternalValidation,
    calibration_corrected,
    calibration_corrected_survival,
    optimism,
)
from analytics.stats.nested_cv import nested_cv, nested_cv_plan
from analytics.stats.resampling import Replicate
from analytics.validation.values import Estimate, _mapping, _required, clean, safe

# rms's index names -> the metrics.csv names (existing names where cohortlab has the measure already)
MEASURE_NAMES = {
    "Dxy": "somers_dxy", "AUC": "auc", "C": "c_index", "R2": "r2_nagelkerke",
    "Intercept": "calibration_recalibration_intercept", "Emax": "calibration_emax", "B": "calibration_brier",
    "D": "discrimination_d", "U": "unreliability_u", "Q": "quality_q", "g": "g_index", "gp": "gp_index",
}
SLOPE_NAMES = {"binary": "calibration_recalibration_slope", "survival": "lp_calibration_slope"}

# the interval the corrected estimates carry, and what bench/coverage.py measured of it (the lead updates both
# when the interval changes: corrected_interval is the one place it is computed)
INTERVAL_METHOD = "location-shifted bootstrap CI (Noma et al. 2021)"
INTERVAL_COVERAGE = ("measured coverage of its 95% interval for the AUC: 68-93% against the 95% target "
                     "(bench/coverage.py, 200 replications, B = 100); under the null 99% exclude 0.5, because the "
                     "corrected AUC is biased upwards under strong overfitting: too narrow")
# the other training-split intervals the report shows, as measured by the same script
OOF_DELONG_COVERAGE = ("conditional on the fitted procedure; too narrow for the estimate of future performance "
                       "(measured coverage 85-93.5% of the 95% interval, and 10-15% exclude 0.5 under the null; "
                       "bench/coverage.py)")
# nested cross-validation ("ncv"): its interval and what bench/coverage.py measured of it (README's table)
NCV_METHOD = "nested cross-validation interval (Bates, Hastie & Tibshirani 2024)"
NCV_COVERAGE = "coverage measured by bench/coverage.py: 93.5-98% (AUC)"
SURVIVAL_GROUP_SIZE = 150  # rms::calibrate.cph's m: patients per Kaplan-Meier group (fewer in small cohorts)


def method_label(internal: Mapping[str, Any]) -> str:
    """``optimism-bootstrap B=200``, ``.632+ B=200`` or ``cv 5×2`` (folds × repeats) from a manifest record."""
    method = str(internal.get("method"))
    if method == "ncv":
        return f"nested CV {internal.get('folds')}×{internal.get('repeats')} (Bates, Hastie & Tibshirani 2024)"
    if method == "cv":
        return f"cv {internal.get('folds')}×{internal.get('repeats')}"
    if method == ".632+":
        return f".632+ B={internal.get('B')}"
    return f"optimism-bootstrap B={internal.get('B')}"


def measure_name(index: str, endpoint: str) -> str:
    """The metrics.csv name of one of rms's indexes (``AUC`` -> ``auc``, ``Brier(t=5)`` -> ``brier_t5``)."""
    if index == "Slope":
        return SLOPE_NAMES[endpoint]
    if index.startswith("Brier(t=") and index.endswith(")"):
        return f"brier_t{index[len('Brier(t='):-1]}"
    if index.startswith("AUC(t=") and index.endswith(")"):  # competing causes: AUC(t) of the cause
        return f"auc_t{index[len('AUC(t='):-1]}"
    return MEASURE_NAMES.get(index, index.lower())


# --- the result ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InternalRow:
    """One index in ``rms::validate``'s layout, with the interval of its corrected value."""

    index: str  # rms's name (Dxy, AUC, Slope, Brier(t=5) ...)
    measure: str  # the metrics.csv name
    original: float | None  # the final model on its own training patients (apparent)
    training: float | None  # mean over replicates, on their resamples
    test: float | None  # mean over replicates, on the original patients (cv: the left-out fold)
    optimism: float | None
    corrected: float | None
    low: float | None
    high: float | None
    n: int  # replicates whose index was defined

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _ROW_KEYS}


_ROW_KEYS = ("index", "measure", "original", "training", "test", "optimism", "corrected", "low", "high", "n")


@dataclass(frozen=True)
class NestedRow:
    """One measure of nested cross-validation (:func:`analytics.stats.nested_cv.nested_cv`): the bias-corrected
    estimate and its interval, its standard error, the plain cross-validated value and the bias removed."""

    index: str  # AUC | Brier
    measure: str  # the metrics.csv name
    estimate: float | None
    low: float | None
    high: float | None
    se: float | None
    cv: float | None  # the fold-averaged cross-validated value (outer fits)
    ncv: float | None  # the mean of the inner fits' terms
    bias: float | None
    se_naive: float | None  # the naive interval's standard error, s / sqrt(n)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _NESTED_KEYS}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> NestedRow:
        d = _mapping(d, where, source)
        return cls(str(_required(d, "index", where, source)), str(d.get("measure", "")),
                   *(clean(d.get(k)) for k in _NESTED_KEYS[2:]))


_NESTED_KEYS = ("index", "measure", "estimate", "low", "high", "se", "cv", "ncv", "bias", "se_naive")


@dataclass(frozen=True)
class CorrectedCurve:
    """A bias-corrected calibration curve (``rms::calibrate``): binary on the probability scale (lowess), a survival
    model's at one horizon on the survival scale (Kaplan-Meier groups of its predicted survival).

    ``predicted``: the grid (binary) or each group's mean predicted survival; ``apparent``: the final model's
    observed proportion (lowess) or Kaplan-Meier survival; ``corrected``: apparent - optimism. ``mae``: mean
    absolute error of the corrected curve (binary: at every patient's prediction, rms's ``print.calibrate``;
    survival: |corrected - predicted| averaged over groups); ``q90`` the 0.9 quantile of it (binary).
    """

    horizon: float | None
    predicted: tuple[float | None, ...]
    apparent: tuple[float | None, ...]
    corrected: tuple[float | None, ...]
    mae: float | None
    q90: float | None
    used: int  # replicates that contributed

    def to_dict(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "predicted": list(self.predicted), "apparent": list(self.apparent),
                "corrected": list(self.corrected), "mae": self.mae, "q90": self.q90, "used": self.used}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> CorrectedCurve:
        d = _mapping(d, where, source)
        return cls(clean(d.get("horizon")), tuple(clean(x) for x in _required(d, "predicted", where, source)),
                   tuple(clean(x) for x in _required(d, "apparent", where, source)),
                   tuple(clean(x) for x in _required(d, "corrected", where, source)), clean(d.get("mae")),
                   clean(d.get("q90")), int(d.get("used") or 0))


@dataclass(frozen=True)
class InternalMetrics:
    """A model's internal validation: the rms table, the failed replicates and why, the corrected calibration.

    ``label`` is the method as written in the summary's ``method`` column (``optimism-bootstrap B=200``);
    ``interval_method`` / ``interval_note`` say which interval the corrected values carry and its measured
    coverage; ``input_scores`` how a second-stage model's input scores were made (None otherwise).
    """

    method: str
    label: str
    endpoint: str
    n: int
    replicates: int
    failed: int
    reasons: Mapping[str, int]
    rows: tuple[InternalRow, ...]
    level: float
    interval_method: str
    interval_note: str
    calibration: tuple[CorrectedCurve, ...] = ()
    notes: tuple[str, ...] = ()
    input_scores: str | None = None
    nested: tuple[NestedRow, ...] = ()  # "ncv": its measures (``rows`` is empty then)

    def row(self, measure: str) -> InternalRow | None:
        """The row of one measure (metrics.csv name or rms's index name), or None."""
        return next((r for r in self.rows if measure in (r.measure, r.index)), None)

    def summary_rows(self) -> Iterator[tuple[str, Estimate]]:
        """(measure, estimate) of the summary, split ``train``: per index its apparent, optimism and corrected
        values (method ``<label>: apparent`` ...; the corrected one with its interval), then the replicates and
        the failed ones (counts). Nested cross-validation: per measure its estimate and interval (method
        ``<label>``)."""
        for nr in self.nested:
            iv = nr.low is not None and nr.high is not None
            yield nr.measure, Estimate(nr.estimate, nr.low, nr.high, self.label, self.level if iv else None)
        for r in self.rows:
            yield r.measure, Estimate(r.original, method=f"{self.label}: apparent")
            yield r.measure, Estimate(r.optimism, method=f"{self.label}: optimism")
            iv = r.low is not None and r.high is not None
            yield r.measure, Estimate(r.corrected, r.low, r.high,
                                      f"{self.label}: corrected" + (f", {self.interval_method}" if iv else ""),
                                      self.level if iv else None)
        yield "replicates", Estimate(float(self.replicates), method=f"{self.label}: count")
        yield "replicates_failed", Estimate(float(self.failed), method=f"{self.label}: count")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "label": self.label, "endpoint": self.endpoint, "n": self.n,
                "replicates": self.replicates, "failed": self.failed, "reasons": dict(self.reasons),
                "level": self.level, "interval_method": self.interval_method, "interval_note": self.interval_note,
                "table": [r.to_dict() for r in self.rows], "calibration": [c.to_dict() for c in self.calibration],
                "notes": list(self.notes), "input_scores": self.input_scores,
                # only for "ncv", so that the other methods' metrics.json stays as it was
                **({"nested": [r.to_dict() for r in self.nested]} if self.nested else {})}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> InternalMetrics:
        d = _mapping(d, where, source)
        rows = []
        for i, r in enumerate(_required(d, "table", where, source)):
            r = _mapping(r, f"{where}.table[{i}]", source)
            rows.append(InternalRow(str(_required(r, "index", f"{where}.table[{i}]", source)), str(r.get("measure", "")),
                                    clean(r.get("original")), clean(r.get("training")), clean(r.get("test")),
                                    clean(r.get("optimism")), clean(r.get("corrected")), clean(r.get("low")),
                                    clean(r.get("high")), int(r.get("n") or 0)))
        curves = tuple(CorrectedCurve.from_dict(c, f"{where}.calibration[{i}]", source)
                       for i, c in enumerate(d.get("calibration") or []))
        return cls(str(_required(d, "method", where, source)), str(d.get("label", "")), str(d.get("endpoint", "")),
                   int(d.get("n") or 0), int(d.get("replicates") or 0), int(d.get("failed") or 0),
                   {str(k): int(v) for k, v in _mapping(d.get("reasons") or {}, f"{where}.reasons", source).items()},
                   tuple(rows), float(d.get("level") or 0.95), str(d.get("interval_method", "")),
                   str(d.get("interval_note", "")), curves, tuple(str(n) for n in d.get("notes") or []),
                   None if d.get("input_scores") is None else str(d["input_scores"]),
                   tuple(NestedRow.from_dict(r, f"{where}.nested[{i}]", source)
                         for i, r in enumerate(d.get("nested") or [])))


# --- computing it ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectedInterval:
    """The interval of each corrected index (by rms's index name), how it is made and its measured coverage."""

    low: Mapping[str, float]
    high: Mapping[str, float]
    method: str
    note: str


def corrected_interval(result: InternalValidation, level: float) -> CorrectedInterval:
    """The interval the corrected estimates carry: the one place it is chosen.

    Now the location-shifted bootstrap of Noma, Shinozaki, Iba, Teramukai & Furukawa (Stat Methods Med Res
    2021;30:2361-2374; :meth:`analytics.stats.internal.InternalValidation.interval`): NaN for ``"cv"`` and for
    indexes constant on the resamples. Its coverage, measured by ``bench/coverage.py``, is
    :data:`INTERVAL_COVERAGE`.
    """
    frame = result.interval(level)
    names = frame["index"].to_list()
    return CorrectedInterval(dict(zip(names, frame["low"].to_list(), strict=True)),
                             dict(zip(names, frame["high"].to_list(), strict=True)), INTERVAL_METHOD, INTERVAL_COVERAGE)


def _survival_m(n: int) -> int:
    """Patients per Kaplan-Meier group: rms's 150, fewer (at least 4 groups) in cohorts under 600 patients."""
    return max(1, min(SURVIVAL_GROUP_SIZE, n // 4))


def _curves(apparent: Apparent, reps: Sequence[Replicate], survival: bool) -> tuple[list[CorrectedCurve], list[str]]:
    """The bias-corrected calibration curves (binary: one; survival: one per horizon), and why any is missing."""
    out: list[CorrectedCurve] = []
    notes: list[str] = []
    used = sum(r.error is None for r in reps)
    if not survival:
        cal, why = safe(calibration_corrected, apparent.y.astype(np.int64), apparent.score, reps)
        if cal is None or used == 0:
            return out, [f"bias-corrected calibration curve not computed ({why or 'every replicate failed'})"]
        c = cal.curve
        out.append(CorrectedCurve(None, _clean(c["predicted"]), _clean(c["apparent"]), _clean(c["corrected"]),
                                  clean(cal.mae), clean(cal.q90), used))
        return out, notes
    if apparent.risk is None or apparent.horizons.size == 0:
        return out, ["bias-corrected survival calibration not computed (the model predicts no absolute risk)"]
    y = apparent.y.reshape(-1, 2)
    m = _survival_m(y.shape[0])
    for j, u in enumerate(apparent.horizons.tolist()):
        cal, why = safe(calibration_corrected_survival, y, apparent.risk, reps, u, horizon=j, m=m)
        if cal is None or cal.failed == cal.replicates:
            notes.append(f"bias-corrected calibration at t = {u:g} not computed "
                         f"({why or 'no replicate with 5 or more events and risks'})")
            continue
        g = cal.groups
        pred, corr = g["predicted"].to_numpy(), g["corrected"].to_numpy()
        err = np.abs(corr - pred)
        err = err[np.isfinite(err)]
        out.append(CorrectedCurve(float(u), _clean(g["predicted"]), _clean(g["observed"]), _clean(g["corrected"]),
                                  clean(float(err.mean())) if err.size else None, None,
                                  cal.replicates - cal.failed))
    return out, notes


def _clean(values: Any) -> tuple[float | None, ...]:
    return tuple(clean(x) for x in np.asarray(values, dtype=np.float64).tolist())


def internal_metrics(models_dir: Path, record: FitRecord, level: float = 0.95,
                     cause: int | None = None) -> InternalMetrics | None:
    """A model's internal validation from the replicates ``cohortlab fit`` saved (None when it saved none).

    Parameters
    ----------
    models_dir
        The study's models folder.
    record
        The model's fit record (``<models>/<model>/manifest.json``).
    level
        Level of the corrected estimates' intervals.
    cause
        Competing causes: the code of the cause of interest. A survival model's training status codes and
        cumulative incidence of the cause at the horizons are then validated by AUC(t) and Brier(t) of the cause
        (:func:`analytics.stats.competing_internal.optimism_competing`); no calibration curve (its Kaplan-Meier
        groups would show 1 - KM as the risk).

    Raises
    ------
    analytics.models.replicates.ReplicateError
        A replicate or the apparent-scores file is missing, unreadable or not the one fit recorded (names it).
    """
    internal = record.internal
    if not internal:
        return None
    if internal.get("method") == "ncv":
        return _nested_metrics(models_dir, record, internal, level)
    reps = load_replicates(models_dir, record)
    apparent = load_apparent(models_dir, record)
    method = str(internal.get("method", "bootstrap"))
    survival = apparent.y.ndim == 2
    endpoint = "survival" if survival else "binary"
    y: Any = apparent.y if survival else apparent.y.astype(np.int64)
    horizons = apparent.horizons.tolist() if survival and apparent.risk is not None else []
    notes: list[str] = []
    competing = cause is not None and survival
    with warnings.catch_warnings():
        if all(r.error is not None for r in reps):  # every index is NaN by construction: no warnings about it
            warnings.simplefilter("ignore", RuntimeWarning)
        if competing:
            from analytics.stats.competing_internal import optimism_competing

            if not horizons or apparent.risk is None:
                return None  # no cumulative incidence saved: nothing of the cause to validate
            assert cause is not None
            yy = apparent.y.reshape(-1, 2)
            result: InternalValidation = optimism_competing(yy[:, 0], yy[:, 1].astype(np.int64), apparent.risk, reps, horizons,
                                        cause, method)  # type: ignore[arg-type]
        else:
            result = optimism(y, apparent.score, reps, endpoint, horizons, method,  # type: ignore[arg-type]
                              apparent_risk=apparent.risk if horizons else None)
    interval = corrected_interval(result, level)
    rows = []
    for r in result.table.iter_rows(named=True):
        low, high = clean(interval.low.get(r["index"], math.nan)), clean(interval.high.get(r["index"], math.nan))
        rows.append(InternalRow(r["index"], measure_name(r["index"], endpoint), clean(r["original"]),
                                clean(r["training"]), clean(r["test"]), clean(r["optimism"]), clean(r["corrected"]),
                                low if high is not None else None, high if low is not None else None, int(r["n"])))
    curves: list[CorrectedCurve]
    if competing:
        curves, why = [], ["no bias-corrected calibration curve with competing causes (its Kaplan-Meier groups "
                           "would show 1 - KM as the cumulative incidence)"]
    else:
        curves, why = _curves(apparent, reps, survival)
    notes += why
    if result.failed:
        notes.append(f"{result.failed} of {result.replicates} replicates failed: "
                     + "; ".join(f"{k} ({v})" for k, v in result.reasons.items()))
    return InternalMetrics(method, method_label(internal), endpoint, int(apparent.score.size), result.replicates,
                           result.failed, dict(result.reasons), tuple(rows), float(level), interval.method,
                           interval.note, tuple(curves), tuple(notes),
                           None if internal.get("input_scores") is None else str(internal["input_scores"]))


def _nested_metrics(models_dir: Path, record: FitRecord, internal: Mapping[str, Any],
                    level: float) -> InternalMetrics:
    """Nested cross-validation of a binary model (Bates, Hastie & Tibshirani 2024): the plan rebuilt from the saved
    training labels and the recorded seed, folds and repeats (checked against each replicate's rows), then
    :func:`analytics.stats.nested_cv.nested_cv`. A survival model has no replicates, only the reason."""
    label = method_label(internal)
    if internal.get("skipped"):
        return InternalMetrics("ncv", label, "survival", int(internal.get("n") or 0), 0, 0, {}, (), float(level),
                               NCV_METHOD, NCV_COVERAGE, notes=(str(internal["skipped"]),))
    reps = load_replicates(models_dir, record)
    apparent = load_apparent(models_dir, record)
    y = apparent.y.astype(np.int64)
    plan = nested_cv_plan(y, int(internal["folds"]), int(internal["repeats"]), int(internal["seed"]))
    if len(reps) != len(plan.fits) or any(not np.array_equal(r.index, plan.train_rows(i)) for i, r in enumerate(reps)):
        raise ReplicateError(f"model {record.name}: the nested cross-validation replicates were not fitted on the plan "
                             "of the saved labels and recorded seed; run `cohortlab fit` to refit them")
    frame = nested_cv(y, reps, plan, level)
    rows = tuple(NestedRow(r["index"], measure_name("B" if r["index"] == "Brier" else r["index"], "binary"),
                           *(clean(r[k]) for k in _NESTED_KEYS[2:])) for r in frame.iter_rows(named=True))
    failed = sum(r.error is not None for r in reps)
    reasons = dict(sorted(Counter(r.error for r in reps if r.error is not None).items()))
    notes = ([f"{failed} of {len(reps)} replicates failed: " + "; ".join(f"{k} ({v})" for k, v in reasons.items())]
             if failed else [])
    return InternalMetrics("ncv", label, "binary", int(y.size), len(reps), failed, reasons, (), float(level),
                           NCV_METHOD, NCV_COVERAGE, notes=tuple(notes),
                           input_scores=None if internal.get("input_scores") is None else str(internal["input_scores"]),
                           nested=rows)


def read_record(models_dir: Path, model: str) -> FitRecord | None:
    """A model's fit record from ``<models>/<model>/manifest.json`` (None when there is none)."""
    path = Path(models_dir) / model / "manifest.json"
    if not path.is_file():
        return None
    return FitRecord.from_json(path.read_bytes(), path)


def internal_digest(models_dir: Path, models: Sequence[str]) -> str:
    """What the internal validation of ``models`` depends on beyond the predictions: each record's replicate and
    apparent-scores sha256 (empty when no model has replicates)."""
    parts = []
    for name in models:
        record = read_record(models_dir, name)
        if record is not None and record.internal:
            parts.append(f"{name}:{record.internal.get('digest')}:{record.internal.get('apparent')}")
    return ";".join(parts)


__all__ = ["INTERVAL_COVERAGE", "INTERVAL_METHOD", "NCV_COVERAGE", "NCV_METHOD", "NestedRow", "OOF_DELONG_COVERAGE", "CorrectedCurve", "CorrectedInterval",
           "InternalMetrics", "InternalRow", "corrected_interval", "internal_digest", "internal_metrics",
           "measure_name", "method_label", "read_record"]
