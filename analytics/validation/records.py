"""What validation records per model beyond its splits' measures: per-centre metrics, the training
threshold and risk cut-points, paired DeLong comparisons and the added value of one model over another."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from analytics import stats
from analytics.splits import SPLITS
from analytics.validation.measures import SplitMetrics
from analytics.validation.values import (
    THRESHOLD_CHOSEN_ON,
    Estimate,
    _mapping,
    _nan,
    _neg,
    _required,
    _signed,
    _signed_json,
    safe,
)


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
    ``None`` where not computed. ``horizons`` (survival models with competing causes): per horizon, ``time`` and
    the ``auc`` and ``brier`` rows of :func:`analytics.stats.competing_contrast.time_contrasts` (``new - old``
    with paired influence-function SEs); ``n_positive`` then counts the cause's events.
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
    horizons: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"new": self.new, "old": self.old, "split": self.split, "n": self.n, "n_positive": self.n_positive,
                "auc_difference": None if self.auc_difference is None else self.auc_difference.to_dict(),
                "nri": self.nri, "nri_categorical": self.nri_categorical, "idi": self.idi,
                "reclassification": self.reclassification, "cutoffs": list(self.cutoffs),
                "lr_test": self.lr_test, "lr_test_reason": self.lr_test_reason,
                # only with horizons: binary pairs' records read as before
                **({"horizons": [dict(h) for h in self.horizons]} if self.horizons else {})}

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
                   None if d.get("lr_test_reason") is None else str(d["lr_test_reason"]),
                   tuple(dict(_mapping(h, f"{where}.horizons[{i}]", source))
                         for i, h in enumerate(d.get("horizons") or ())))

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
        for h in self.horizons:
            for key, what in (("auc", "AUC(t)"), ("brier", "Brier(t)")):
                r = h.get(key) or {}
                yield f"delta_{key}_t{float(h['time']):g}", Estimate(
                    r.get("delta"), r.get("low"), r.get("high"),
                    f"new - old {what}, paired influence functions (riskRegression Score contrasts)",
                    r.get("level")), r.get("z"), r.get("p")


def added_value_inputs(preds: pl.DataFrame, outcomes: pl.DataFrame, new: str, old: str) -> pl.DataFrame:
    """patient_id, split, label, ``new``, ``old``: the labelled patients both models scored."""
    return (
        preds.filter(pl.col("model") == new).select("patient_id", "split", pl.col("score").alias("new"))
        .join(preds.filter(pl.col("model") == old).select("patient_id", pl.col("score").alias("old")), on="patient_id")
        .join(outcomes.select("patient_id", "label"), on="patient_id")
        .filter(pl.col("label").is_not_null() & pl.col("new").is_not_null() & pl.col("old").is_not_null())
    )
