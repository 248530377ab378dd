"""Every model's patients, events, AUC (DeLong CI) and calibration-in-the-large per subgroup of the
``[validation] subgroups`` columns: levels of a column, or intervals between configured cuts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from analytics import stats
from analytics.splits import SPLITS
from analytics.validation.values import Estimate, ValidateError, _count, _mapping, _required, clean, safe


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
