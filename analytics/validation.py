"""The typed result of validation: every measure of every model and split, with its interval.

:class:`Validation` is what :func:`analytics.validate.validate` computes and what
it writes ``metrics.json``, ``metrics.csv`` and ``curves.json`` from, so the three
agree by construction; :meth:`Validation.from_json` reads them back (notebooks,
the report). In a notebook::

    v = cohortlab.load_study("study.toml").validation()
    v.summary                      # polars: model, split, measure, estimate, low, high, method, ...
    v.print_summary()              # a fixed-width table
    v.compare("fusion", "clinical")  # paired DeLong test per split
    v.curve("fusion", "external", "roc")

The measures of one split are a declarative table, :data:`MEASURES`: one row per
measure with its name (as in ``metrics.csv``), the function that computes it,
how its interval (or value) is obtained, and what it needs (a threshold,
bootstrap resamples, follow-up, risk groups). :func:`measure_split` runs the
table; a measure that cannot be computed on a split is left out with a note.

Numbers are held as written: floats rounded to 12 significant digits,
undefined values (NaN) as ``None``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import polars as pl

from analytics import stats
from analytics.splits import SPLITS
from analytics.stats.calibrate import RECALIBRATION_UNDEFINED
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.validate")


class ValidateError(CohortlabError, ValueError):
    """Metrics that cannot be computed as configured (no predictions, or models without them), or a
    metrics file that cannot be read back; the message names the file or key."""


# calibration measures kept (names as stats.calibration), and how each is computed
CALIBRATION = {
    "in_the_large": "calibration-in-the-large: intercept of logit(y) ~ offset(logit(p)), slope fixed at 1",
    "recalibration_intercept": "logistic recalibration logit(y) ~ a + b logit(p): a (rms::val.prob Intercept)",
    "recalibration_slope": "logistic recalibration logit(y) ~ a + b logit(p): b (rms::val.prob Slope)",
    "brier": "mean squared error",
    "ici": "loess (Austin & Steyerberg)",
    "e50": "loess (Austin & Steyerberg)",
    "e90": "loess (Austin & Steyerberg)",
}
THRESHOLD_CHOSEN_ON = "train (out-of-fold scores)"
# the summary's columns: the seven of every measure, then the level of its interval, the centre of a
# per-centre row, and a comparison's z and p (a log-rank row's p too)
SUMMARY_COLUMNS = ("model", "split", "measure", "estimate", "low", "high", "method", "level", "center", "z", "p")
SUMMARY_SCHEMA = {"model": pl.String, "split": pl.String, "measure": pl.String, "estimate": pl.Float64,
                  "low": pl.Float64, "high": pl.Float64, "method": pl.String, "level": pl.Float64,
                  "center": pl.String, "z": pl.Float64, "p": pl.Float64}
# metrics.csv: the summary's rows under these columns ("metric" is the summary's "measure")
CSV_COLUMNS = ("model", "split", "center", "metric", "estimate", "low", "high", "z", "p", "method")


# --- numbers as written ---------------------------------------------------------------------------------------


def clean(x: Any) -> float | None:
    """A number as metrics.json holds it: rounded to 12 significant digits; NaN and infinities as None."""
    if x is None:
        return None
    f = float(x)
    return float(f"{f:.12g}") if math.isfinite(f) else None


def jsonable(value: Any) -> Any:
    """JSON-safe and stable: NaN -> None, numpy scalars -> Python, floats rounded to 12 digits."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return clean(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _signed(x: Any) -> float | None:
    """A comparison's number: as :func:`clean`, but an infinity keeps its sign (written "inf" / "-inf")."""
    if isinstance(x, str) and x in ("inf", "-inf"):
        return float(x)
    if x is not None and math.isinf(float(x)):
        return float(x)
    return clean(x)


def _signed_json(x: float | None) -> Any:
    return ("inf" if x > 0 else "-inf") if x is not None and math.isinf(x) else x


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def fmt_number(x: float | None, decimals: int = 3) -> str:
    """``x`` with ``decimals`` decimals, "-" when there is none."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.{decimals}f}"


def safe(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """``fn(*args, **kwargs)`` and None; or None and why, when it cannot be computed (one class, too few events).

    Numerical warnings (e.g. bootstrap resamples that lacked a class) go to the
    log rather than the console.
    """
    name = getattr(fn, "__name__", str(fn))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out: tuple[Any, str | None] = fn(*args, **kwargs), None
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            out = None, f"{name}: {exc}"
    for w in caught:
        log.info("%s: %s", name, w.message)
    return out


# --- typed values ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """One measure's value: the estimate, its interval (``low``/``high`` None when there is none) and how
    it was obtained (``method``: "delong", "wilson", "bootstrap-percentile", "no CI", "count", ...)."""

    estimate: float | None
    low: float | None = None
    high: float | None = None
    method: str = ""
    level: float | None = None

    @classmethod
    def of(cls, iv: stats.Interval) -> Estimate:
        """An interval from :mod:`analytics.stats`, as written."""
        return cls(clean(iv.estimate), clean(iv.low), clean(iv.high), iv.method, clean(iv.level))

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> Estimate:
        d = _mapping(d, where, source)
        return cls(_number(d, "estimate", where, source), clean(d.get("low")), clean(d.get("high")),
                   str(d.get("method", "")), clean(d.get("level")))

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "method": self.method,
                "level": self.level}

    def text(self, decimals: int = 3) -> str:
        """``0.812 (0.701-0.923)``; ``0.812 (no CI)`` without an interval."""
        bounds = (f"{fmt_number(self.low, decimals)}-{fmt_number(self.high, decimals)}"
                  if self.low is not None and self.high is not None else "no CI")
        return f"{fmt_number(self.estimate, decimals)} ({bounds})"


@dataclass(frozen=True)
class LogRank:
    """The log-rank test across the risk groups of one split."""

    statistic: float | None
    df: int | None
    p: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "df": self.df, "p": self.p}


@dataclass(frozen=True)
class SplitMetrics:
    """Every measure of one model on one split.

    ``estimates`` holds the measures with intervals (auc, sensitivity, f1,
    c_index, ...) in the order of :data:`MEASURES`; ``calibration`` the
    calibration summaries (None when not computed); ``logrank`` the test across
    risk groups.
    """

    n: int
    n_positive: int
    estimates: Mapping[str, Estimate] = field(default_factory=dict)
    calibration: Mapping[str, float | None] | None = None
    logrank: LogRank | None = None
    # patients with follow-up (time and event) and their events: what the survival measures use
    n_survival: int | None = None
    n_events: int | None = None

    def get(self, measure: str) -> Estimate | None:
        """The measure named as in metrics.csv (``n``, ``auc``, ``calibration_brier``, ``logrank_p`` ...), or None."""
        if measure in ("n", "n_positive"):
            return Estimate(float(getattr(self, measure)), method="count")
        if measure in ("n_survival", "n_events"):
            value = getattr(self, measure)
            return None if value is None else Estimate(float(value), method="count")
        if measure.startswith("calibration_"):
            key = measure.removeprefix("calibration_")
            if self.calibration is None or key not in self.calibration:
                return None
            return Estimate(self.calibration[key], method=CALIBRATION.get(key, ""))
        if measure == "logrank_p":
            return None if self.logrank is None else Estimate(self.logrank.p, method="log-rank")
        return self.estimates.get(measure)

    def names(self) -> list[str]:
        """The measures present, in metrics.csv order."""
        known = [row.name for row in MEASURES]
        present = [name for name in known if self.get(name) is not None]
        extra = [k for k in self.estimates if k not in known]
        extra += [f"calibration_{k}" for k in (self.calibration or {}) if f"calibration_{k}" not in known]
        counts = ["n_survival", "n_events"] if self.n_survival is not None else []
        return ["n", "n_positive", *counts, *present, *extra]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "n_positive": self.n_positive}
        if self.n_survival is not None:
            out["n_survival"], out["n_events"] = self.n_survival, self.n_events
        out.update({k: e.to_dict() for k, e in self.estimates.items()})
        if self.calibration is not None:
            out["calibration"] = dict(self.calibration)
        if self.logrank is not None:
            out["logrank"] = self.logrank.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> SplitMetrics:
        d = _mapping(d, where, source)
        estimates: dict[str, Estimate] = {}
        order = {row.name: i for i, row in enumerate(MEASURES)}
        for key in sorted((k for k, v in d.items() if isinstance(v, dict) and "estimate" in v),
                          key=lambda k: (order.get(k, len(order)), k)):
            estimates[key] = Estimate.from_dict(d[key], f"{where}.{key}", source)
        calibration = None
        if "calibration" in d:
            cal = _mapping(d["calibration"], f"{where}.calibration", source)
            keys = [k for k in CALIBRATION if k in cal] + sorted(k for k in cal if k not in CALIBRATION)
            calibration = {k: clean(cal[k]) for k in keys}
        logrank = None
        if "logrank" in d:
            lr = _mapping(d["logrank"], f"{where}.logrank", source)
            logrank = LogRank(clean(lr.get("statistic")), None if lr.get("df") is None else int(lr["df"]), clean(lr.get("p")))
        n_surv = _count(d, "n_survival", where, source) if "n_survival" in d else None
        n_events = _count(d, "n_events", where, source) if "n_events" in d else None
        return cls(_count(d, "n", where, source), _count(d, "n_positive", where, source), estimates, calibration, logrank,
                   n_surv, n_events)


@dataclass(frozen=True)
class CenterMetrics:
    """Patients, events and AUC (DeLong CI) of one model in one centre and split."""

    n: int
    n_positive: int
    auc: Estimate | None = None
    # survival models: Harrell's C on the centre's patients with follow-up
    c_index: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "n_positive": self.n_positive}
        if self.auc is not None:
            out["auc"] = self.auc.to_dict()
        if self.c_index is not None:
            out["c_index"] = self.c_index.to_dict()
        return out


@dataclass(frozen=True)
class SubgroupMetrics:
    """One model on one subgroup of one split: patients, events, AUC (DeLong CI) and calibration-in-the-large.

    ``variable`` is the cohort column that defines the subgroups (``[validation]
    subgroups``), ``group`` the subgroup's label: a level of the column, an
    interval of its values between the configured cuts (``"< 60"``, ``">= 60"``),
    or ``"missing"``. ``auc`` and ``in_the_large`` are None when the subgroup
    has one class (or too few patients to estimate them).
    """

    model: str
    split: str
    variable: str
    group: str
    n: int
    n_positive: int
    auc: Estimate | None = None
    in_the_large: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "split": self.split, "variable": self.variable, "group": self.group,
                "n": self.n, "n_positive": self.n_positive,
                "auc": None if self.auc is None else self.auc.to_dict(), "in_the_large": self.in_the_large}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> SubgroupMetrics:
        d = _mapping(d, where, source)
        for key in ("model", "split", "variable", "group"):
            _required(d, key, where, source)
        auc = Estimate.from_dict(d["auc"], f"{where}.auc", source) if d.get("auc") is not None else None
        return cls(str(d["model"]), str(d["split"]), str(d["variable"]), str(d["group"]), _count(d, "n", where, source),
                   _count(d, "n_positive", where, source), auc, clean(d.get("in_the_large")))


def _fmt_cut(x: float) -> str:
    return f"{x:g}"


def subgroup_labels(values: pl.Series, cuts: Sequence[float]) -> pl.Series:
    """Each patient's subgroup label: the value itself as text (no ``cuts``), else its interval between the
    cuts (``"< 60"``, ``"60 to < 70"``, ``">= 70"``); ``"missing"`` where the value is missing."""
    if not cuts:
        labels = values.cast(pl.String)
    else:
        x = values.cast(pl.Float64).to_numpy()
        edges = [f"< {_fmt_cut(cuts[0])}"]
        edges += [f"{_fmt_cut(a)} to < {_fmt_cut(b)}" for a, b in zip(cuts, cuts[1:])]
        edges.append(f">= {_fmt_cut(cuts[-1])}")
        idx = np.searchsorted(np.asarray(cuts, dtype=float), np.where(np.isnan(x), 0.0, x), side="right")
        labels = pl.Series(values.name, [None if np.isnan(v) else edges[i] for v, i in zip(x, idx)], dtype=pl.String)
    return labels.fill_null("missing").alias(values.name)


def subgroup_order(labels: Iterable[str], cuts: Sequence[float]) -> list[str]:
    """Subgroup labels in reading order: intervals from low to high (``cuts``), else sorted; "missing" last."""
    present = set(labels)
    if cuts:
        order = [f"< {_fmt_cut(cuts[0])}", *(f"{_fmt_cut(a)} to < {_fmt_cut(b)}" for a, b in zip(cuts, cuts[1:])),
                 f">= {_fmt_cut(cuts[-1])}"]
        out = [g for g in order if g in present]
    else:
        out = sorted(g for g in present if g != "missing")
    return out + (["missing"] if "missing" in present else [])


def subgroup_metrics(preds: pl.DataFrame, outcomes: pl.DataFrame, subgroups: Mapping[str, Sequence[float]],
                     level: float, models: Sequence[str] | None = None) -> list[SubgroupMetrics]:
    """Every model's n, events, AUC (DeLong CI) and calibration-in-the-large per split and subgroup.

    ``preds``: model, patient_id, split, score; ``outcomes``: patient_id, label and
    the ``subgroups`` columns; ``subgroups``: column -> cuts (empty: by level).

    Raises
    ------
    ValidateError
        A subgroup column that is not in the cohort.
    """
    missing = [c for c in subgroups if c not in outcomes.columns]
    if missing:
        raise ValidateError(f"[validation] subgroups: no cohort column {', '.join(repr(c) for c in missing)} "
                            f"(the cohort's columns: {', '.join(outcomes.columns)})")
    for column, cuts in subgroups.items():
        if cuts and not outcomes.schema[column].is_numeric():
            raise ValidateError(f"[validation] subgroups.{column}: cuts need a numeric column; {column!r} holds "
                                f"{outcomes.schema[column]} values (leave cuts out to group by its levels)")
    frame = (preds.select("model", "patient_id", "split", "score")
             .join(outcomes.select("patient_id", "label", *subgroups), on="patient_id", how="inner")
             .filter(pl.col("label").is_not_null()))
    names = list(models) if models is not None else list(dict.fromkeys(frame.get_column("model").to_list()))
    out = []
    for variable, cuts in subgroups.items():
        labelled = frame.with_columns(subgroup_labels(frame.get_column(variable), cuts).alias("_group"))
        order = subgroup_order(labelled.get_column("_group").unique().to_list(), cuts)
        for model in names:
            for split in SPLITS:
                part = labelled.filter((pl.col("model") == model) & (pl.col("split") == split))
                for group in order:
                    rows = part.filter(pl.col("_group") == group)
                    if rows.height == 0:
                        continue
                    y = rows.get_column("label").to_numpy().astype(int)
                    score = rows.get_column("score").to_numpy().astype(float)
                    auc: Estimate | None = None
                    citl: float | None = None
                    if len(np.unique(y)) == 2:
                        iv, _ = safe(stats.auc_ci, y, score, method="delong", level=level)
                        auc = (Estimate.of(iv) if iv is not None
                               else Estimate(clean(stats.auc(y, score)), None, None, "no CI", clean(level)))
                        cal, _ = safe(stats.calibration, y, score)
                        citl = clean(cal["in_the_large"]) if cal is not None else None
                    out.append(SubgroupMetrics(model, split, variable, group, int(len(y)), int(y.sum()), auc, citl))
    return out


@dataclass(frozen=True)
class Threshold:
    """The classification threshold, chosen once on the training patients' out-of-fold scores."""

    value: float | None
    rule: str
    chosen_on: str = THRESHOLD_CHOSEN_ON


@dataclass(frozen=True)
class Cutpoints:
    """Score cut-points of the survival risk groups: quantiles of the training scores."""

    quantiles: tuple[float | None, ...]
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class ModelMetrics:
    """One model: its measures per split (in split order), per centre and split, and its threshold."""

    splits: Mapping[str, SplitMetrics]
    centers: Mapping[str, Mapping[str, CenterMetrics]] = field(default_factory=dict)
    threshold: Threshold | None = None
    risk_cutpoints: Cutpoints | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "splits": {s: m.to_dict() for s, m in self.splits.items()},
            "centers": {c: {s: m.to_dict() for s, m in per.items()} for c, per in self.centers.items()},
        }
        if self.threshold is not None:
            out["threshold"] = {"value": self.threshold.value, "rule": self.threshold.rule,
                                "chosen_on": self.threshold.chosen_on}
        if self.risk_cutpoints is not None:
            out["risk_cutpoints"] = {"quantiles": list(self.risk_cutpoints.quantiles),
                                     "values": list(self.risk_cutpoints.values)}
        return out


@dataclass(frozen=True)
class PairedComparison:
    """A paired DeLong comparison of two models' AUCs on the patients of one split (``auc_a - auc_b``)."""

    a: str
    b: str
    split: str
    n: int
    difference: float | None
    z: float | None
    p: float | None
    low: float | None
    high: float | None
    auc_a: float | None
    auc_b: float | None
    level: float | None
    method: str

    @classmethod
    def of(cls, a: str, b: str, split: str, n: int, cmp: stats.Comparison) -> PairedComparison:
        return cls(a, b, split, int(n), _signed(cmp.difference), _signed(cmp.z), _signed(cmp.p), _signed(cmp.low),
                   _signed(cmp.high), _signed(cmp.auc_a), _signed(cmp.auc_b), _signed(cmp.level), cmp.method)

    @classmethod
    def from_dict(cls, c: Mapping[str, Any], a: str, b: str, split: str) -> PairedComparison:
        """From its entry in metrics.json; ``a``, ``b`` and ``split`` stand where the entry leaves them out."""
        return cls(str(c.get("a", a)), str(c.get("b", b)), str(c.get("split", split)), int(c.get("n") or 0),
                   _signed(c.get("difference")), _signed(c.get("z")), _signed(c.get("p")), _signed(c.get("low")),
                   _signed(c.get("high")), _signed(c.get("auc_a")), _signed(c.get("auc_b")), _signed(c.get("level")),
                   str(c.get("method", "")))

    def reversed(self) -> PairedComparison:
        """The same test read the other way round (``auc_b - auc_a``)."""
        return PairedComparison(self.b, self.a, self.split, self.n, _neg(self.difference), _neg(self.z), self.p,
                                _neg(self.high), _neg(self.low), self.auc_b, self.auc_a, self.level, self.method)

    def to_stats(self) -> stats.Comparison:
        """As :class:`analytics.stats.Comparison` (NaN where a value is undefined)."""
        return stats.Comparison(_nan(self.difference), _nan(self.z), _nan(self.p), _nan(self.low), _nan(self.high),
                                _nan(self.auc_a), _nan(self.auc_b), _nan(self.level), self.method)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "split": self.split, "n": self.n,
                **{k: _signed_json(getattr(self, k)) for k in _COMPARISON_NUMBERS}, "method": self.method}


_COMPARISON_NUMBERS = ("difference", "z", "p", "low", "high", "auc_a", "auc_b", "level")


def paired_comparisons(preds: pl.DataFrame, outcomes: pl.DataFrame, a: str, b: str,
                       level: float) -> list[PairedComparison]:
    """DeLong comparisons of models ``a`` and ``b`` per split, on the labelled patients both scored.

    ``preds``: model, patient_id, split, score; ``outcomes``: patient_id, label. A split
    with fewer than three such patients or one class, or where the test cannot be
    computed, is left out.
    """
    wide = (
        preds.filter(pl.col("model") == a).select("patient_id", "split", pl.col("score").alias("a"))
        .join(preds.filter(pl.col("model") == b).select("patient_id", pl.col("score").alias("b")), on="patient_id")
        .join(outcomes.select("patient_id", "label"), on="patient_id")
        .filter(pl.col("label").is_not_null())
    )
    out = []
    for split in SPLITS:
        part = wide.filter(pl.col("split") == split)
        y = part.get_column("label").to_numpy().astype(int)
        if part.height < 3 or len(np.unique(y)) < 2:
            continue
        cmp, _ = safe(stats.compare_auc, y, part.get_column("a").to_numpy(), part.get_column("b").to_numpy(),
                      method="delong", level=level)
        if cmp is not None:
            out.append(PairedComparison.of(a, b, split, part.height, cmp))
    return out


@dataclass(frozen=True)
class AddedValue:
    """What model ``new`` adds to model ``old`` on the patients of one split that both scored.

    ``auc_difference``: paired DeLong comparison (``auc_new - auc_old``). ``nri``, ``nri_categorical``,
    ``idi`` and ``lr_test``: the ``as_dict()`` of :func:`analytics.stats.nri` (continuous; categorical over
    ``cutoffs``), :func:`analytics.stats.idi` and :func:`analytics.stats.lr_test`; ``reclassification``:
    :func:`analytics.stats.reclassification` (old model's groups in rows). ``lr_test`` is on the training
    split only, from the final models' fitted probabilities; ``lr_test_reason`` says why there is none.
    ``None`` where not computed.
    """

    new: str
    old: str
    split: str
    n: int
    n_positive: int
    auc_difference: PairedComparison | None = None
    nri: Mapping[str, Any] | None = None
    nri_categorical: Mapping[str, Any] | None = None
    idi: Mapping[str, Any] | None = None
    reclassification: Mapping[str, Any] | None = None
    cutoffs: tuple[float, ...] = ()
    lr_test: Mapping[str, Any] | None = None
    lr_test_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"new": self.new, "old": self.old, "split": self.split, "n": self.n, "n_positive": self.n_positive,
                "auc_difference": None if self.auc_difference is None else self.auc_difference.to_dict(),
                "nri": self.nri, "nri_categorical": self.nri_categorical, "idi": self.idi,
                "reclassification": self.reclassification, "cutoffs": list(self.cutoffs),
                "lr_test": self.lr_test, "lr_test_reason": self.lr_test_reason}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> AddedValue:
        d = _mapping(d, where, source)
        for key in ("new", "old", "split"):
            _required(d, key, where, source)
        c = d.get("auc_difference")
        cmp = None
        if c is not None:
            c = _mapping(c, f"{where}.auc_difference", source)
            cmp = PairedComparison.from_dict(c, d["new"], d["old"], d["split"])
        opt = lambda k: None if d.get(k) is None else dict(_mapping(d[k], f"{where}.{k}", source))  # noqa: E731
        return cls(str(d["new"]), str(d["old"]), str(d["split"]), int(d.get("n") or 0), int(d.get("n_positive") or 0),
                   cmp, opt("nri"), opt("nri_categorical"), opt("idi"), opt("reclassification"),
                   tuple(float(x) for x in d.get("cutoffs") or ()), opt("lr_test"),
                   None if d.get("lr_test_reason") is None else str(d["lr_test_reason"]))

    def rows(self) -> Iterator[tuple[str, Estimate, float | None, float | None]]:
        """(measure, estimate, z, p) for metrics.csv: the NRIs (and their components), the IDI, the LR test."""
        lvl = None if self.nri is None else self.nri.get("level")
        for key, name in (("nri", "nri"), ("nri_categorical", "nri_categorical")):
            r = getattr(self, key)
            if r is None:
                continue
            yield name, Estimate(r.get("estimate"), r.get("low"), r.get("high"), f"{r.get('method')} (improveProb)",
                                 r.get("level")), r.get("z"), r.get("p")
            for part in ("events", "nonevents"):
                c = r.get(part) or {}
                yield f"{name}_{part}", Estimate(c.get("estimate"), None, None, "improveProb", lvl), c.get("z"), c.get("p")
        if self.idi is not None:
            r = self.idi
            yield "idi", Estimate(r.get("estimate"), r.get("low"), r.get("high"), "asymptotic (improveProb)",
                                  r.get("level")), r.get("z"), r.get("p")
        if self.lr_test is not None:
            r = self.lr_test
            yield "lr_statistic", Estimate(r.get("statistic"), None, None, f"LRT df={r.get('df')}"), None, r.get("p")


def added_value_inputs(preds: pl.DataFrame, outcomes: pl.DataFrame, new: str, old: str) -> pl.DataFrame:
    """patient_id, split, label, ``new``, ``old``: the labelled patients both models scored."""
    return (
        preds.filter(pl.col("model") == new).select("patient_id", "split", pl.col("score").alias("new"))
        .join(preds.filter(pl.col("model") == old).select("patient_id", pl.col("score").alias("old")), on="patient_id")
        .join(outcomes.select("patient_id", "label"), on="patient_id")
        .filter(pl.col("label").is_not_null() & pl.col("new").is_not_null() & pl.col("old").is_not_null())
    )


# --- the measures of one split: a table ------------------------------------------------------------------------


Need = Literal["threshold", "bootstrap", "survival", "risk_groups", "horizons"]


@dataclass
class SplitInputs:
    """What the measures of one model on one split are computed from, and the notes they leave.

    ``threshold`` and ``cut`` are the training-chosen threshold and risk
    cut-points (None when the training predictions had one class);
    ``survival`` the follow-up of the patients who have it: time, event, score.
    """

    y: np.ndarray
    score: np.ndarray
    level: float
    n_boot: int
    seed: int
    dca_thresholds: np.ndarray
    threshold: float | None = None
    survival: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    cut: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict, repr=False)
    # survival models: absolute risk 1 - S(t|x) of the survival rows at each horizon (columns)
    horizons: tuple[float, ...] = ()
    horizon_risk: np.ndarray | None = None
    # binary models on a censored endpoint: the horizon of the label ("event by t"), at which the predicted
    # probabilities of the survival rows are evaluated with IPCW
    label_horizon: float | None = None
    # survival models: absolute risk of the survival rows on a grid of times up to the last horizon (the
    # integrated Brier score)
    grid: tuple[float, ...] = ()
    grid_risk: np.ndarray | None = None

    @classmethod
    def of(cls, y: np.ndarray, score: np.ndarray, *, level: float, n_boot: int, seed: int,
           dca_thresholds: np.ndarray, threshold: float | None = None, time: np.ndarray | None = None,
           event: np.ndarray | None = None, cut: np.ndarray | None = None,
           survival_score: np.ndarray | None = None, horizons: Sequence[float] = (),
           horizon_risk: np.ndarray | None = None, label_horizon: float | None = None,
           grid: Sequence[float] = (), grid_risk: np.ndarray | None = None) -> SplitInputs:
        """Inputs of one split; follow-up is used when at least three patients have it and one has an event.

        ``time`` and ``event`` align with ``score``, or, when given, with ``survival_score``: the scores of
        every patient with follow-up, labelled or not (``horizon_risk`` and ``grid_risk`` align with these too).
        """
        survival = None
        risk = None
        on_grid = None
        if time is not None and event is not None:
            base = score if survival_score is None else survival_score
            ok = ~(np.isnan(time) | np.isnan(event))
            if ok.sum() >= 3 and event[ok].sum() >= 1:
                survival = (time[ok], event[ok], base[ok])
                risk = None if horizon_risk is None else np.asarray(horizon_risk)[ok]
                on_grid = None if grid_risk is None else np.asarray(grid_risk)[ok]
        return cls(y, score, level, n_boot, seed, dca_thresholds, threshold, survival, cut,
                   horizons=tuple(float(t) for t in horizons), horizon_risk=risk,
                   label_horizon=None if label_horizon is None else float(label_horizon),
                   grid=tuple(float(t) for t in grid), grid_risk=on_grid)

    def has(self, need: Need) -> bool:
        if need == "threshold":
            return self.threshold is not None
        if need == "bootstrap":
            return self.n_boot > 0
        if need == "survival":
            return self.survival is not None
        if need == "horizons":
            return self.survival is not None and self.horizon_risk is not None and bool(self.horizons)
        return self.survival is not None and self.cut is not None

    def call(self, fn: Callable[..., Any], *args: Any, key: str | None = None, note: str = "{}", **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or None and a note (``note`` formatted with why) when it cannot be computed.

        ``key`` shares one call among the measures it gives (one note, however many measures).
        """
        if key is not None and key in self.shared:
            return self.shared[key]
        value, why = safe(fn, *args, **kwargs)
        if why is not None:
            self.notes.append(note.format(why))
        if key is not None:
            self.shared[key] = value
        return value

    def binary(self) -> dict[str, stats.Interval] | None:
        """Sensitivity ... F1 at the training threshold (one call for all six)."""
        return self.call(stats.binary_metrics, self.y, self.score, self.threshold, key="binary", level=self.level,
                         n_boot=self.n_boot, seed=self.seed)

    def calibration(self) -> dict[str, float] | None:
        """Calibration summaries; a recalibration fit without an estimate (constant predictions, separated
        classes) leaves its intercept and slope out, with a note saying why."""
        if "calibration" in self.shared:
            return self.shared["calibration"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value: dict[str, float] | None = stats.calibration(self.y, self.score)
            except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
                value = None
                self.notes.append(f"calibration: {exc}")
        for w in caught:
            text = str(w.message)
            if text.startswith(RECALIBRATION_UNDEFINED):
                self.notes.append(f"calibration: {text}")
            else:
                log.info("calibration: %s", text)
        self.shared["calibration"] = value
        return value

    def km(self) -> stats.KMResult | None:
        """Kaplan-Meier curves and the log-rank test of the risk groups cut at the training cut-points."""
        assert self.survival is not None and self.cut is not None
        time, event, score = self.survival
        groups = np.searchsorted(self.cut, score, side="right")
        labels = stats.survival.group_labels(len(self.cut) + 1)
        return self.call(stats.km_by_group, time, event, groups, key="km",
                         labels={i: labels[i] for i in range(len(labels))}, level=self.level)


Value = stats.Interval | Estimate | LogRank | float | None


@dataclass(frozen=True)
class MeasureRow:
    """One measure: its name (as in metrics.csv), the function that computes it from a split's inputs, how
    its interval (or value) is obtained, and what it needs beyond two classes.

    The function returns an interval (written with its bounds), a number (a
    calibration summary), a :class:`LogRank`, or None (not available here).
    """

    name: str
    compute: Callable[[SplitInputs], Value]
    ci: str
    needs: tuple[Need, ...] = ()


def _auc(d: SplitInputs) -> Value:
    iv = d.call(stats.auc_ci, d.y, d.score, method="delong", level=d.level, note="AUC without a CI ({})")
    return iv if iv is not None else Estimate(clean(stats.auc(d.y, d.score)), None, None, "no CI", clean(d.level))


def _auc_bootstrap(d: SplitInputs) -> Value:
    return d.call(stats.auc_ci, d.y, d.score, method="bootstrap", level=d.level, n_boot=d.n_boot, seed=d.seed)


def _binary(name: str) -> Callable[[SplitInputs], Value]:
    def compute(d: SplitInputs) -> Value:
        return (d.binary() or {}).get(name)
    return compute


def _calibration(name: str) -> Callable[[SplitInputs], Value]:
    def compute(d: SplitInputs) -> Value:
        return (d.calibration() or {}).get(name)
    return compute


def _c_index(d: SplitInputs) -> Value:
    assert d.survival is not None
    time, event, score = d.survival
    return d.call(stats.concordance, time, event, score, level=d.level, n_boot=d.n_boot, seed=d.seed)


def _logrank(d: SplitInputs) -> Value:
    km = d.km()
    if km is None:
        return None
    return LogRank(clean(km.logrank["statistic"]), int(km.logrank["df"]), clean(km.logrank["p"]))


MEASURES: tuple[MeasureRow, ...] = (
    MeasureRow("auc", _auc, "delong (no CI when its variance cannot be estimated)"),
    MeasureRow("auc_bootstrap", _auc_bootstrap, "bootstrap-percentile, stratified", ("bootstrap",)),
    *(MeasureRow(k, _binary(k), "wilson", ("threshold",)) for k in ("sensitivity", "specificity", "accuracy", "ppv", "npv")),
    MeasureRow("f1", _binary("f1"), "bootstrap-percentile, stratified (none when n_boot = 0)", ("threshold",)),
    *(MeasureRow(f"calibration_{k}", _calibration(k), text) for k, text in CALIBRATION.items()),
    MeasureRow("c_index", _c_index, "bootstrap-percentile (none when n_boot = 0)", ("survival",)),
    MeasureRow("logrank_p", _logrank, "log-rank", ("risk_groups",)),
)


def _roc_curve(d: SplitInputs) -> dict[str, Any]:
    roc = d.call(stats.roc_curve, d.y, d.score, note="ROC curve not drawn ({})")
    if roc is None:
        return {}
    return {"roc": {"fpr": (1.0 - roc.get_column("specificity")).to_list(),
                    "tpr": roc.get_column("sensitivity").to_list(),
                    "threshold": roc.get_column("threshold").to_list()}}


def _calibration_curve(d: SplitInputs) -> dict[str, Any]:
    cc = d.call(stats.calibration_curve, d.y, d.score, level=d.level, note="calibration curve not drawn ({})")
    return {} if cc is None else {"calibration": cc.as_dict()}


def _decision_curve(d: SplitInputs) -> dict[str, Any]:
    nb = d.call(stats.net_benefit, d.y, d.score, d.dca_thresholds, n_boot=min(d.n_boot, 500), level=d.level,
                seed=d.seed, note="decision curve not drawn ({})")
    return {} if nb is None else {"decision": nb.to_dict(as_series=False)}


def _km_curves(d: SplitInputs) -> dict[str, Any]:
    if not d.has("risk_groups"):
        return {}
    km = d.km()
    if km is None:
        return {}
    return {"km": km.curves.to_dict(as_series=False), "km_summary": km.summary.to_dict(as_series=False)}


def horizon_name(measure: str, t: float) -> str:
    """Name of a measure at a horizon, as in metrics.csv: ``auc_t5``, ``brier_t2.5``."""
    return f"{measure}_t{t:g}"


def _survival_model_measures(d: SplitInputs) -> dict[str, Estimate]:
    """Uno's C; AUC(t) and Brier(t) at each horizon (IPCW); ICI, E50 and E90 of the smooth calibration at
    each horizon (no interval), for a survival model's risks."""
    assert d.survival is not None and d.horizon_risk is not None
    time, event, score = d.survival
    out: dict[str, Estimate] = {}
    uno = d.call(stats.concordance, time, event, score, method="uno", level=d.level, n_boot=d.n_boot, seed=d.seed,
                 note="Uno's C not computed ({})")
    if uno is not None:
        out["c_index_uno"] = Estimate.of(uno)
    times = np.asarray(d.horizons, dtype=np.float64)
    # a horizon past the last follow-up has no controls (AUC) and no censoring weight (Brier)
    usable = times < time.max()
    if not usable.all():
        d.notes.append(f"horizons {times[~usable].tolist()} at or past the last follow-up ({time.max():g}): "
                       "no AUC(t) or Brier(t) there")
    if not usable.any():
        return out
    risk = d.horizon_risk[:, usable]
    auc = d.call(stats.time_auc, time, event, risk, times[usable], level=d.level, key="time_auc",
                 note="AUC(t) not computed ({})")
    brier = d.call(stats.brier, time, event, risk, times[usable], level=d.level, key="brier_t",
                   note="Brier(t) not computed ({})")
    for j, t in enumerate(times[usable]):
        if auc is not None:
            out[horizon_name("auc", t)] = Estimate.of(auc.at(t))
        if brier is not None:
            out[horizon_name("brier", t)] = Estimate.of(brier.at(t))
        cal = d.call(stats.calibration_at, time, event, risk[:, j], t, key=f"calibration_at_{t:g}",
                     note=f"calibration at {t:g} not computed ({{}})")
        if cal is not None:
            for k in ("ici", "e50", "e90"):
                out[horizon_name(k, t)] = Estimate(clean(getattr(cal, k)), None, None,
                                                   "smooth calibration at t (Austin, Harrell & van Klaveren 2020)",
                                                   clean(d.level))
    ibs = _ibs(d)
    if ibs is not None:
        out["ibs"] = ibs
    return out


def _ibs(d: SplitInputs) -> Estimate | None:
    """Integrated Brier score of a survival model's risks on the saved grid (:func:`analytics.stats.integrated_brier`:
    IPCW, Graf et al. 1999, as riskRegression's ``ibs``), over ``[0, last grid time]``; over the grid times
    before the split's last follow-up when the grid reaches past it (the method says up to where)."""
    assert d.survival is not None
    if d.grid_risk is None or not d.grid:
        return None
    time, event, _ = d.survival
    grid = np.asarray(d.grid, dtype=np.float64)
    usable = grid < time.max()
    if not usable.any():
        d.notes.append(f"integrated Brier score not computed: the risk grid starts past the last follow-up ({time.max():g})")
        return None
    if not usable.all():
        d.notes.append(f"integrated Brier score over [0, {grid[usable][-1]:g}] only: the risk grid reaches past the "
                       f"last follow-up ({time.max():g})")
    value = d.call(stats.integrated_brier, time, event, d.grid_risk[:, usable], grid[usable],
                   note="integrated Brier score not computed ({})")
    if value is None:
        return None
    return Estimate(clean(value), None, None,
                    f"IPCW integrated Brier score over [0, {grid[usable][-1]:g}], step integral on "
                    f"{int(usable.sum())} grid times (Graf 1999; riskRegression ibs)", clean(d.level))


def ipcw_name(measure: str, t: float) -> str:
    """Name of a binary model's IPCW measure at its label's horizon, as in metrics.csv: ``auc_ipcw_t5``."""
    return f"{measure}_ipcw_t{t:g}"


def _ipcw_label_measures(d: SplitInputs) -> dict[str, Estimate]:
    """A binary model on a censored endpoint, evaluated at its label's horizon ``t`` on every patient with
    follow-up: the predicted probability is read as the risk of an event by ``t``; AUC(t) (cumulative/dynamic,
    IPCW; Uno et al. 2007, Hung & Chiang 2010) and Brier(t) (IPCW, Graf et al. 1999), as
    :func:`analytics.stats.time_auc` and :func:`analytics.stats.brier`. Patients censored before ``t`` count
    through the censoring weights instead of being dropped (complete cases)."""
    assert d.survival is not None and d.label_horizon is not None
    time, event, prob = d.survival
    t = d.label_horizon
    if t >= time.max():
        d.notes.append(f"label horizon {t:g} at or past the last follow-up ({time.max():g}): no IPCW AUC(t) or Brier(t)")
        return {}
    where = f"every patient with follow-up, {len(time)} ({int(event.sum())} events)"
    out: dict[str, Estimate] = {}
    estimators = (("auc", "AUC", stats.time_auc, "cumulative/dynamic AUC(t) (Uno 2007, Hung & Chiang 2010)"),
                  ("brier", "Brier", stats.brier, "Brier(t) (Graf 1999)"))
    for measure, label, fn, method in estimators:
        res = d.call(fn, time, event, prob, [t], level=d.level, note=f"IPCW {label} at {t:g} not computed ({{}})")
        if res is not None:
            iv = res.at(t)
            out[ipcw_name(measure, t)] = Estimate(clean(iv.estimate), clean(iv.low), clean(iv.high),
                                                 f"IPCW at t={t:g} on {where}; {method}, influence-function CI",
                                                 clean(d.level))
    return out


def _horizon_curves(d: SplitInputs) -> dict[str, Any]:
    """Per horizon: the time-dependent ROC curve (cases: event by t; controls: event-free past t; IPCW)
    and the observed (Kaplan-Meier) vs predicted risk by tenth of predicted risk."""
    assert d.survival is not None and d.horizon_risk is not None
    time, event, _ = d.survival
    out: dict[str, Any] = {}
    for j, t in enumerate(d.horizons):
        if t >= time.max():
            continue
        r = d.horizon_risk[:, j]
        roc = d.call(time_roc_curve, time, event, r, t, note=f"time-dependent ROC at {t:g} not drawn ({{}})")
        cal = d.call(km_calibration_points, time, event, r, t, note=f"calibration at {t:g} not drawn ({{}})")
        smooth = d.shared.get(f"calibration_at_{t:g}")
        out[f"t{t:g}"] = {"horizon": float(t), "time_roc": roc, "calibration_at": cal,
                          "calibration_smooth": None if smooth is None else smooth.curve.to_dict(as_series=False)}
    result: dict[str, Any] = {"horizons": out} if out else {}
    main = d.horizons[0]
    if main < time.max():  # decision curve at the main (first) horizon
        nb = d.call(stats.net_benefit_survival, time, event, d.horizon_risk[:, 0], main, d.dca_thresholds,
                    note=f"decision curve at {main:g} not drawn ({{}})")
        if nb is not None:
            result["decision_at"] = {"horizon": float(main), **nb.to_dict(as_series=False)}
    return result


def _km_risk(time: np.ndarray, event: np.ndarray, t: float) -> float:
    """Kaplan-Meier estimate of the risk of an event by ``t`` (1 - S(t))."""
    s = 1.0
    for u in np.unique(time[(event == 1) & (time <= t)]):
        at_risk = (time >= u).sum()
        s *= 1.0 - ((time == u) & (event == 1)).sum() / at_risk
    return 1.0 - s


def time_roc_curve(time: np.ndarray, event: np.ndarray, risk: np.ndarray, t: float) -> dict[str, list[float]]:
    """Cumulative/dynamic ROC curve at ``t`` with inverse-probability-of-censoring weights.

    Cases: event at or before ``t``, weighted ``1 / G(T_i-)``; controls: time past ``t``, weighted
    ``1 / G(t)`` (``G`` the Kaplan-Meier of censoring). The area under it is the IPCW AUC(t) of
    Uno et al. (2007) and Hung & Chiang (2010).
    """
    from analytics.stats.survival import censoring_km

    g_times, g_surv = censoring_km(time, event)

    def g_before(u: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(g_times, u, side="left") - 1
        return np.where(idx >= 0, g_surv[np.clip(idx, 0, None)], 1.0)

    def g_at(u: float) -> float:
        idx = np.searchsorted(g_times, u, side="right") - 1
        return float(g_surv[idx]) if idx >= 0 else 1.0

    case = (time <= t) & (event == 1)
    ctrl = time > t
    if not case.any() or not ctrl.any():
        raise ValueError(f"no {'cases' if not case.any() else 'controls'} at {t:g}")
    w_case = 1.0 / g_before(time[case])
    w_ctrl = np.full(int(ctrl.sum()), 1.0 / g_at(t))
    cuts = np.unique(np.concatenate([risk[case], risk[ctrl]]))[::-1]
    tpr = [0.0] + [float(w_case[risk[case] >= c].sum() / w_case.sum()) for c in cuts]
    fpr = [0.0] + [float(w_ctrl[risk[ctrl] >= c].sum() / w_ctrl.sum()) for c in cuts]
    return {"fpr": fpr, "tpr": tpr, "threshold": [float("inf"), *map(float, cuts)]}


def km_calibration_points(time: np.ndarray, event: np.ndarray, risk: np.ndarray, t: float,
                          groups: int = 10) -> dict[str, list[float]]:
    """Mean predicted risk by ``t`` against the Kaplan-Meier observed risk, per group of predicted risk
    (at most ``groups`` groups of equal size)."""
    order = np.argsort(risk, kind="stable")
    parts = [p for p in np.array_split(order, min(groups, max(1, len(risk) // 5))) if len(p)]
    return {"predicted": [float(risk[p].mean()) for p in parts],
            "observed": [_km_risk(time[p], event[p], t) for p in parts],
            "n": [int(len(p)) for p in parts]}


# the curves of one split for the report's figures (a failure leaves a note, as a measure's does)
CURVES: tuple[Callable[[SplitInputs], dict[str, Any]], ...] = (_roc_curve, _calibration_curve, _decision_curve, _km_curves)


def measure_split(d: SplitInputs) -> tuple[SplitMetrics, dict[str, Any]]:
    """Every measure of :data:`MEASURES` that applies to the split, and its curves; notes go to ``d.notes``.

    Survival measures use every patient with follow-up (``d.survival``), labelled or not; with fewer than
    two label classes only they are computed.
    """
    n, k = int(len(d.y)), int(d.y.sum())
    n_surv = None if d.survival is None else int(len(d.survival[0]))
    n_events = None if d.survival is None else int(np.sum(d.survival[1]))
    two_classes = len(np.unique(d.y)) >= 2
    if not two_classes and len(d.y):  # no labels at all (a survival model): nothing binary to note
        d.notes.append("only one class: AUC, calibration and thresholds metrics not computed")
        if d.survival is None:
            return SplitMetrics(n, k), {}
    estimates: dict[str, Estimate] = {}
    calibration: dict[str, float | None] = {}
    logrank: LogRank | None = None
    for row in MEASURES:
        if not all(d.has(need) for need in row.needs):
            continue
        if not two_classes and not ({"survival", "risk_groups"} & set(row.needs)):
            continue
        value = row.compute(d)
        if value is None:
            continue
        if isinstance(value, LogRank):
            logrank = value
        elif isinstance(value, stats.Interval):
            estimates[row.name] = Estimate.of(value)
        elif isinstance(value, Estimate):
            estimates[row.name] = value
        else:
            calibration[row.name.removeprefix("calibration_")] = clean(value)
    if d.has("horizons"):
        estimates.update(_survival_model_measures(d))
    if d.survival is not None and d.label_horizon is not None and d.horizon_risk is None:
        estimates.update(_ipcw_label_measures(d))
    curves: dict[str, Any] = {}
    for draw in CURVES:
        if two_classes or draw is _km_curves:
            curves.update(draw(d))
    if d.has("horizons"):
        curves.update(_horizon_curves(d))
    return (SplitMetrics(n, k, estimates, calibration or None, logrank, n_surv, n_events),
            jsonable(curves))


# --- the result ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """Validated metrics of a study's models: typed values per model and split, comparisons, curves.

    Attributes
    ----------
    study, cohort, cohort_hash
        What was validated.
    inputs_digest, code_version, settings
        What the metrics depend on (predictions, outcomes, ``[validation]``
        settings and seed) and the code that computed them.
    models
        :class:`ModelMetrics` by model name, in study order.
    comparisons
        Stored paired DeLong comparisons (the configured pairs, else all).
    notes
        What could not be computed, and why.
    subgroups
        :class:`SubgroupMetrics` of every model per split and subgroup of the
        ``[validation] subgroups`` columns (metrics.json ``"subgroups"``).
    added_value
        :class:`AddedValue` of each ``[validation] added_value`` pair per split
        (metrics.json ``"added_value"``).
    curves
        ROC, calibration, decision and Kaplan-Meier curves: model -> split ->
        kind -> data (as ``curves.json``); :meth:`curve` gives one as a frame.
    predictions, outcomes
        The scores (model, patient_id, split, score) and labels (patient_id,
        label) the metrics come from, when known: :meth:`compare` computes a
        comparison that was not stored from them.
    """

    study: str
    cohort: str | None
    cohort_hash: str | None
    inputs_digest: str | None
    code_version: str | None
    settings: Mapping[str, Any]
    models: Mapping[str, ModelMetrics]
    comparisons: tuple[PairedComparison, ...] = ()
    notes: tuple[str, ...] = ()
    subgroups: tuple[SubgroupMetrics, ...] = ()
    curves: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    predictions: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    outcomes: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    added_value: tuple[AddedValue, ...] = ()

    def __repr__(self) -> str:
        splits = [s for s in SPLITS if any(s in m.splits for m in self.models.values())]
        return (f"<Validation of {self.study!r}, cohort {self.cohort!r}: {len(self.models)} models, splits "
                f"{', '.join(splits)}; {len(self.comparisons)} comparisons, {len(self.notes)} notes>")

    @property
    def level(self) -> float:
        """Confidence level of the intervals."""
        return float(self.settings.get("level", 0.95))

    def get(self, model: str, split: str, measure: str) -> Estimate | None:
        """One measure of one model on one split (names as in metrics.csv), or None when absent."""
        m = self.models.get(model)
        sm = m.splits.get(split) if m is not None else None
        return sm.get(measure) if sm is not None else None

    # --- the long table -------------------------------------------------------------------------------

    def rows(self) -> Iterator[dict[str, Any]]:
        """One dict per summary row: per model, its splits' measures, its threshold, its per-centre rows;
        then the comparisons."""
        def row(model: str, split: str, measure: str, e: Estimate, center: str | None = None,
                z: float | None = None, p: float | None = None) -> dict[str, Any]:
            return {"model": model, "split": split, "measure": measure, "estimate": e.estimate, "low": e.low,
                    "high": e.high, "method": e.method, "level": e.level, "center": center, "z": z, "p": p}

        for model, m in self.models.items():
            for split, sm in m.splits.items():
                for name in sm.names():
                    e = sm.get(name)
                    assert e is not None
                    yield row(model, split, name, e, p=e.estimate if name == "logrank_p" else None)
            if m.threshold is not None:
                yield row(model, "train", "threshold", Estimate(m.threshold.value, method=m.threshold.rule))
            for center, per_split in m.centers.items():
                for split, cm in per_split.items():
                    yield row(model, split, "n", Estimate(float(cm.n), method="count"), center=center)
                    yield row(model, split, "n_positive", Estimate(float(cm.n_positive), method="count"), center=center)
                    if cm.auc is not None:
                        yield row(model, split, "auc", cm.auc, center=center)
                    if cm.c_index is not None:
                        yield row(model, split, "c_index", cm.c_index, center=center)
        for c in self.comparisons:
            yield row(f"{c.a} vs {c.b}", c.split, "auc_difference",
                      Estimate(c.difference, c.low, c.high, "delong", c.level), z=c.z, p=c.p)
        compared = {(c.a, c.b, c.split) for c in self.comparisons}
        for av in self.added_value:
            diff = av.auc_difference
            if diff is not None and (diff.a, diff.b, diff.split) not in compared:
                yield row(f"{diff.a} vs {diff.b}", diff.split, "auc_difference",
                          Estimate(diff.difference, diff.low, diff.high, "delong", diff.level), z=diff.z, p=diff.p)
            for name, e, z, p in av.rows():
                yield row(f"{av.new} vs {av.old}", av.split, name, e, z=z, p=p)

    @cached_property
    def summary(self) -> pl.DataFrame:
        """Every measure as one row: model, split, measure, estimate, low, high, method; then level (of
        the interval), center (per-centre rows; else null), z and p (comparisons, whose model is
        ``"a vs b"`` and measure ``auc_difference``; a log-rank row's p). Counts (``n``,
        ``n_positive``) are rows too, with method "count"."""
        return pl.DataFrame(list(self.rows()), schema=SUMMARY_SCHEMA, orient="row")

    # --- files --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's content."""
        return {
            "study": self.study, "cohort": self.cohort, "cohort_hash": self.cohort_hash,
            "inputs_digest": self.inputs_digest, "code_version": self.code_version,
            "settings": dict(self.settings),
            "models": {name: m.to_dict() for name, m in self.models.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "notes": list(self.notes),
            "subgroups": [g.to_dict() for g in self.subgroups],
            "added_value": [a.to_dict() for a in self.added_value],
        }

    def to_csv(self) -> str:
        """metrics.csv's text: the summary's rows; every float written in full (the shortest text that reads
        back as the same float)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        numeric = {c for c, t in SUMMARY_SCHEMA.items() if t == pl.Float64}
        for r in self.rows():
            r = {**r, "metric": r["measure"]}
            writer.writerow(["" if r[c] is None else repr(float(r[c])) if c in numeric else r[c] for c in CSV_COLUMNS])
        return buf.getvalue()

    @classmethod
    def from_dict(cls, data: Any, source: str = "metrics.json", *, order: Sequence[str] | None = None,
                  curves: Mapping[str, Any] | None = None, predictions: pl.DataFrame | None = None,
                  outcomes: pl.DataFrame | None = None) -> Validation:
        """The object of a parsed metrics.json; models in ``order`` first (the study's), the rest sorted.

        Raises
        ------
        ValidateError
            A required key is missing or of the wrong type (the message names ``source`` and the key).
        """
        data = _mapping(data, "", source)
        raw_models = _mapping(_required(data, "models", "", source), "models", source)
        names = [n for n in (order or []) if n in raw_models] + sorted(n for n in raw_models if n not in (order or []))
        models = {}
        for name in names:
            where = f"models.{name}"
            m = _mapping(raw_models[name], where, source)
            splits_raw = _mapping(_required(m, "splits", where, source), f"{where}.splits", source)
            splits = {s: SplitMetrics.from_dict(splits_raw[s], f"{where}.splits.{s}", source)
                      for s in [*SPLITS, *sorted(k for k in splits_raw if k not in SPLITS)] if s in splits_raw}
            centers = {}
            for center, per in sorted(_mapping(m.get("centers", {}), f"{where}.centers", source).items()):
                per = _mapping(per, f"{where}.centers.{center}", source)
                centers[center] = {
                    s: CenterMetrics(_count(per[s], "n", f"{where}.centers.{center}.{s}", source),
                                     _count(per[s], "n_positive", f"{where}.centers.{center}.{s}", source),
                                     Estimate.from_dict(per[s]["auc"], f"{where}.centers.{center}.{s}.auc", source)
                                     if "auc" in per[s] else None,
                                     Estimate.from_dict(per[s]["c_index"], f"{where}.centers.{center}.{s}.c_index",
                                                        source) if "c_index" in per[s] else None)
                    for s in SPLITS if s in per}
            threshold = None
            if "threshold" in m:
                t = _mapping(m["threshold"], f"{where}.threshold", source)
                threshold = Threshold(clean(t.get("value")), str(t.get("rule", "")), str(t.get("chosen_on", "")))
            cut = None
            if "risk_cutpoints" in m:
                rc = _mapping(m["risk_cutpoints"], f"{where}.risk_cutpoints", source)
                cut = Cutpoints(tuple(clean(q) for q in rc.get("quantiles", [])), tuple(clean(x) for x in rc.get("values", [])))
            models[name] = ModelMetrics(splits, centers, threshold, cut)
        comparisons = []
        for i, c in enumerate(data.get("comparisons", [])):
            c = _mapping(c, f"comparisons[{i}]", source)
            for key in ("a", "b", "split"):
                _required(c, key, f"comparisons[{i}]", source)
            comparisons.append(PairedComparison.from_dict(c, c["a"], c["b"], c["split"]))
        subgroups = tuple(SubgroupMetrics.from_dict(g, f"subgroups[{i}]", source)
                          for i, g in enumerate(data.get("subgroups") or []))
        added_value = tuple(AddedValue.from_dict(a, f"added_value[{i}]", source)
                            for i, a in enumerate(data.get("added_value") or []))
        return cls(str(data.get("study", "")), data.get("cohort"), data.get("cohort_hash"), data.get("inputs_digest"),
                   data.get("code_version"), dict(data.get("settings") or {}), models, tuple(comparisons),
                   tuple(str(n) for n in data.get("notes", [])), subgroups, dict(curves or {}), predictions, outcomes,
                   added_value)

    @classmethod
    def from_json(cls, path: str | Path, curves: str | Path | None = None, *, order: Sequence[str] | None = None,
                  predictions: pl.DataFrame | None = None, outcomes: pl.DataFrame | None = None) -> Validation:
        """Read ``metrics.json`` (and ``curves.json`` beside it, or ``curves``) back into the object.

        ``order``: model names in the study's order (metrics.json keeps them
        sorted). ``predictions``/``outcomes``: see the class attributes.

        Raises
        ------
        ValidateError
            The file is missing, not JSON, or lacks a key (named).
        """
        path = Path(path)
        data = _read(path, missing=f"{path}: no metrics yet; run `cohortlab validate` first")
        curves_path = Path(curves) if curves is not None else path.with_name("curves.json")
        curve_data = _read(curves_path, missing=None) if curves_path.exists() or curves is not None else {}
        return cls.from_dict(data, str(path), order=order, curves=curve_data, predictions=predictions,
                             outcomes=outcomes)

    # --- reading it ---------------------------------------------------------------------------------------

    def compare(self, a: str, b: str) -> dict[str, stats.Comparison]:
        """The paired DeLong comparison of models ``a`` and ``b`` (``auc_a - auc_b``) per split.

        From the stored comparisons when the pair (either way round) was
        compared; else computed from :attr:`predictions` with
        :func:`analytics.stats.compare_auc`.

        Raises
        ------
        ValidateError
            An unknown model, or a pair neither stored nor computable (no predictions held).
        """
        for name in (a, b):
            if name not in self.models:
                raise ValidateError(f"compare: no model {name!r}; the models are {', '.join(self.models) or 'none'}")
        found = [c for c in self.comparisons if (c.a, c.b) == (a, b)]
        found += [c.reversed() for c in self.comparisons if (c.a, c.b) == (b, a)]
        if not found:
            if self.predictions is None or self.outcomes is None:
                raise ValidateError(f"compare: {a} vs {b} was not stored, and there are no predictions to compute "
                                    "it from (use Study.validation(), which holds them)")
            found = paired_comparisons(self.predictions, self.outcomes, a, b, self.level)
        by_split = {c.split: c for c in found}
        return {s: by_split[s].to_stats() for s in SPLITS if s in by_split}

    def curve(self, model: str, split: str, kind: str) -> pl.DataFrame:
        """One curve as a frame: ``roc`` (fpr, tpr, threshold), ``decision``, ``km``, ``km_summary``,
        ``calibration`` (the loess curve) or ``calibration_bins`` (binned, with Wilson CIs)."""
        per = self.curves.get(model, {}).get(split, {})
        key = "calibration" if kind == "calibration_bins" else kind
        if key not in per:
            have = sorted(per) + (["calibration_bins"] if "calibration" in per else [])
            raise ValidateError(f"no {kind!r} curve for {model} / {split}; there are: {', '.join(have) or 'none'}")
        data = per[key]
        if kind == "calibration":
            return pl.DataFrame(data["smoothed"])
        if kind == "calibration_bins":
            return pl.DataFrame(data["binned"])
        return pl.DataFrame(data)

    def summary_text(self, measures: Iterable[str] | None = None, decimals: int = 3) -> str:
        """:meth:`print_summary`'s text."""
        level = f"{self.level * 100:g}%"
        keep = set(measures) if measures is not None else None
        body = self.summary.filter(pl.col("center").is_null() & ~pl.col("model").str.contains(" vs ", literal=True)
                                   & ~pl.col("measure").is_in(["n", "n_positive", "threshold"]))
        if keep is not None:
            body = body.filter(pl.col("measure").is_in(sorted(keep)))
        header = [("study", self.study), ("cohort", f"{self.cohort}" + (f" (hash {self.cohort_hash[:12]})" if self.cohort_hash else "")),
                  ("n", self._n_text()), ("models", ", ".join(self.models) or "none"), ("CI level", level),
                  ("bootstrap", f"{self.settings.get('n_boot', '-')} resamples"),
                  ("threshold rule", f"{self.settings.get('threshold_rule', '-')}, chosen on {THRESHOLD_CHOSEN_ON}")]
        width = max(len(k) for k, _ in header)
        lines = ["<cohortlab.Validation>", *(f"{k:>{width + 2}} = {v}" for k, v in header), "", "---"]
        lines += _table(["model", "split", "measure", "estimate", f"lower {level}", f"upper {level}", "method"],
                        [[r["model"], r["split"], r["measure"], fmt_number(r["estimate"], decimals),
                          fmt_number(r["low"], decimals), fmt_number(r["high"], decimals), r["method"]]
                         for r in body.iter_rows(named=True)], numeric={3, 4, 5})
        if self.comparisons:
            lines += ["---", "Paired comparisons, AUC a - AUC b (DeLong)"]
            lines += _table(["a", "b", "split", "n", "AUC a", "AUC b", "difference", f"lower {level}", f"upper {level}",
                             "z", "p"],
                            [[c.a, c.b, c.split, str(c.n), fmt_number(c.auc_a, decimals), fmt_number(c.auc_b, decimals),
                              fmt_number(c.difference, decimals), fmt_number(c.low, decimals),
                              fmt_number(c.high, decimals), fmt_number(c.z, 2), _fmt_p(c.p)] for c in self.comparisons],
                            numeric=set(range(3, 11)))
        if self.notes:
            lines += ["---", f"{len(self.notes)} note(s): what could not be computed, and why (Validation.notes)"]
        return "\n".join(lines) + "\n"

    def print_summary(self, measures: Iterable[str] | None = None, decimals: int = 3, file: IO[str] | None = None) -> None:
        """Print the study, cohort and patients, then one line per model, split and measure with its
        interval, then the paired comparisons (``measures``: only these)."""
        print(self.summary_text(measures, decimals), end="", file=file)

    def _n_text(self) -> str:
        """Patients validated per split (a range when models differ, e.g. some lack inputs)."""
        parts, total = [], 0
        for split in SPLITS:
            ns = sorted({m.splits[split].n for m in self.models.values() if split in m.splits})
            if ns:
                parts.append(f"{split} {ns[0]}" if len(ns) == 1 else f"{split} {ns[0]}-{ns[-1]}")
                total += ns[-1]
        return f"{total} ({', '.join(parts)})" if parts else "0"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    """Fixed-width lines: text columns left-aligned, numbers right-aligned, two spaces apart."""
    widths = [max([len(head[i]), *(len(r[i]) for r in rows)]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(head), *(line(r) for r in rows)]


# --- reading helpers ------------------------------------------------------------------------------------------


def _read(path: Path, missing: str | None) -> Any:
    if not path.exists():
        raise ValidateError(missing or f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValidateError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None


def _mapping(d: Any, where: str, source: str) -> Mapping[str, Any]:
    if not isinstance(d, dict):
        raise ValidateError(f"{source}: key '{where or '(top level)'}' must be an object, not {type(d).__name__}")
    return d


def _required(d: Mapping[str, Any], key: str, where: str, source: str) -> Any:
    if key not in d:
        raise ValidateError(f"{source}: key '{where + '.' if where else ''}{key}' is missing")
    return d[key]


def _number(d: Mapping[str, Any], key: str, where: str, source: str) -> float | None:
    x = _required(d, key, where, source)
    if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
        raise ValidateError(f"{source}: key '{where}.{key}' must be a number or null, not {x!r}")
    return clean(x)


def _count(d: Any, key: str, where: str, source: str) -> int:
    x = _required(_mapping(d, where, source), key, where, source)
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValidateError(f"{source}: key '{where}.{key}' must be a whole number, not {x!r}")
    return x


__all__ = [
    "CALIBRATION", "CURVES", "MEASURES", "SUMMARY_COLUMNS", "CenterMetrics", "Cutpoints", "Estimate", "LogRank",
    "MeasureRow", "ModelMetrics", "PairedComparison", "SplitInputs", "SplitMetrics", "Threshold", "ValidateError",
    "Validation", "measure_split", "paired_comparisons", "AddedValue", "added_value_inputs",
]
