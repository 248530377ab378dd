"""What ``cohortlab fit`` reports: one :class:`ModelReport` per model, gathered in a :class:`FitResult`.

Besides the records, the summaries the fit stage computes for them from a model's predictions: patients per
split, the out-of-fold AUC (binary models; :func:`analytics.stats.auc`) or Harrell's C (survival models;
Harrell et al., *Stat Med* 1996;15:361-387), and how its hyper-parameters were chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from analytics.cohort import Cohort
from analytics.models import tuning
from analytics.models.data import dropped_text
from analytics.splits import SPLITS
from pipeline.config import Model


@dataclass(frozen=True)
class ModelReport:
    """What happened to one model."""

    name: str
    kind: str
    status: str  # fitted | up to date
    counts: dict[str, int]
    oof_auc: float | None
    chosen: dict[str, Any]
    missing: dict[str, list[str]]
    unlabelled: list[str]
    seconds: float
    folder: Path
    dropped: dict[str, str] = field(default_factory=dict)  # input column -> why it was left out
    optimistic: str | None = None  # why its training (out-of-fold) estimate is not nested, when it should be
    oof_c: float | None = None  # survival models: Harrell's C of the out-of-fold risks
    fits: int | None = None  # estimators fitted (outer folds and final refit, inner tuning fits included)


@dataclass(frozen=True)
class FitResult:
    """Every model's report, with the cohort and folds they were fitted on."""

    cohort: str
    cohort_counts: dict[str, int]
    outer_folds: int
    seed: int
    models: list[ModelReport] = field(default_factory=list)
    models_dir: Path | None = None
    left_out: tuple[str, ...] = ()  # instance files of the models' feature sets that failed their check (named)

    def model(self, name: str) -> ModelReport:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def __str__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.cohort_counts.items())
        lines = [f"fit: cohort {self.cohort} ({counts}); {self.outer_folds} outer folds, seed {self.seed}"]
        if not self.models:
            return lines[0] + "\nno models in study.toml"
        header = ("model", "kind", "status", *SPLITS, "OOF AUC", "chosen", "fits", "seconds")
        rows: list[tuple[str, ...]] = [header]
        for m in self.models:
            chosen = ", ".join(f"{k}={_short(v)}" for k, v in sorted(m.chosen.items())
                               if k not in ("coefficients", "seed"))
            rows.append((m.name, m.kind, m.status, *(str(m.counts.get(s, 0)) for s in SPLITS),
                         f"{m.oof_auc:.3f}" if m.oof_auc is not None
                         else (f"C {m.oof_c:.3f}" if m.oof_c is not None else "-"),
                         chosen or "-", "-" if m.fits is None else str(m.fits), f"{m.seconds:.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines += [f"warning: instance file left out (its source is not in the bags): {p}" for p in self.left_out]
        lines += [f"warning: {dropped_text(m.name, m.dropped)}" for m in self.models if m.dropped]
        lines += [f"warning: model '{m.name}': training estimate not nested, optimistic ({m.optimistic})"
                  for m in self.models if m.optimistic]
        n_cohort = sum(self.cohort_counts.values())
        lines += [f"warning: {text}" for m in self.models if (text := short_of_cohort(m, n_cohort))]
        lacking = [(m.name, k, v) for m in self.models for k, v in m.missing.items() if v]
        if lacking:
            lines.append("patients without a model's inputs (no prediction from that model):")
            lines += [f"  {name}: {key}: {len(ids)} ({', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''})"
                      for name, key, ids in lacking]
        lines += self._without_outcome()
        if self.models_dir is not None:
            lines.append(f"models saved under {self.models_dir}")
        return "\n".join(lines)


    def _without_outcome(self) -> list[str]:
        """Training patients without a model's outcome (a label; follow-up for a survival model): those no
        model used, then per model those that only some models used (e.g. a patient censored before a
        binary label's horizon, whom the survival models use)."""
        per = {m.name: set(m.unlabelled) for m in self.models}
        unused = sorted(set.intersection(*per.values())) if per else []
        lines = [f"unlabelled training patients (not used): {len(unused)} ({', '.join(unused[:8])})"] if unused else []
        partly = [(name, sorted(ids.difference(unused))) for name, ids in per.items() if ids.difference(unused)]
        if partly:
            lines.append("training patients without a model's outcome (not used by that model):")
            for name, ids in partly:
                users = [m for m, other in per.items() if not other & set(ids)]
                used = f"; used by {', '.join(users)}" if users else ""
                lines.append(f"  {name}: {len(ids)} ({', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}){used}")
        return lines


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)


def jsonable(v: Any) -> Any:
    """``v`` with string keys, lists for tuples and Python numbers for numpy scalars (for a manifest)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def oof_c(frame: pl.DataFrame, cohort: Cohort, targets: np.ndarray, cause: int | None = None) -> float | None:
    """Harrell's C of a survival model's out-of-fold risks (training patients); ``cause``: ``targets`` hold
    competing-risk status codes and the C is of that cause's events (other causes censor them)."""
    from analytics.models.survival import harrell_c

    row = {p: i for i, p in enumerate(cohort.patient_ids)}
    oof = frame.filter(pl.col("split") == "train")
    idx = np.array([row[p] for p in oof["patient_id"].to_list()], dtype=np.int64)
    event = targets[idx, 1] if cause is None else (targets[idx, 1] == cause).astype(np.float64)
    if len(idx) == 0 or event.sum() == 0:
        return None
    return harrell_c(targets[idx, 0], event.astype(np.int64), oof["score"].to_numpy())


def oof_auc(frame: pl.DataFrame, labels: Mapping[str, float]) -> float | None:
    """The AUC of a binary model's out-of-fold scores (training patients); None with one class."""
    from analytics import stats

    oof = frame.filter(pl.col("split") == "train")
    y = np.array([labels[p] for p in oof["patient_id"].to_list()], dtype=np.float64)
    if len(np.unique(y)) < 2:
        return None
    return float(stats.auc(y.astype(np.int64), oof["score"].to_numpy()))


def split_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Predicted patients per split."""
    return {s: int((frame["split"] == s).sum()) for s in SPLITS}


def short_of_cohort(m: ModelReport, n_cohort: int, shown: int = 8) -> str | None:
    """One line when a model predicts fewer patients than its cohort for lack of inputs (``None`` otherwise)."""
    absent = sorted({p for ids in m.missing.values() for p in ids})
    if not absent:
        return None
    inputs = ", ".join(k for k, v in m.missing.items() if v)
    more = f" and {len(absent) - shown} more" if len(absent) > shown else ""
    return (f"model '{m.name}': {len(absent)} of the cohort's {n_cohort} patients have no prediction, "
            f"lacking {inputs} ({', '.join(absent[:shown])}{more})")


def tuning_record(spec: Model, inner_auc: float | None, fits: int | None = None,
                  seconds: float | None = None) -> dict[str, Any]:
    """How a model's hyper-parameters were chosen: the grid searched, where it came from, the inner CV, the
    inner-fold algorithm; and what fitting it cost: ``fits`` (estimators fitted over the outer folds and the
    final refit, inner tuning fits included) and ``fit_seconds`` (wall time of those fits)."""
    grid, source = tuning.searched_grid(spec.kind, spec.grid, spec.params)
    points = len(tuning.grid_points(grid)) if grid else 0
    out = {"grid": grid, "source": source, "points": points, "searched": inner_auc is not None,
           "inner_folds": int(spec.params.get("inner_folds", tuning.DEFAULT_INNER_FOLDS)) if points > 1 else None,
           "criterion": tuning.CRITERION if points > 1 else None}
    if points > 1:
        out["folds_version"] = tuning.FOLDS_VERSION
    if fits is not None:
        out["fits"] = int(fits)
    if seconds is not None:
        out["fit_seconds"] = round(float(seconds), 2)
    return out


__all__ = ["FitResult", "ModelReport", "jsonable", "oof_auc", "oof_c", "short_of_cohort", "split_counts",
           "tuning_record"]
