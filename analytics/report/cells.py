"""What a cell of the report shows: numbers formatted, a missing number with the reason it is missing,
and the embedded-figure record every figure section returns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from analytics.validation import Estimate, SplitMetrics, Validation
from pipeline.errors import CohortlabError


class ReportError(CohortlabError, RuntimeError):
    """The report cannot be written; the message names the file."""


SPLIT_NAMES = MappingProxyType({"train": "train (out-of-fold)", "internal": "internal", "external": "external"})


# which patients a measure uses: those with a known label, or every patient with follow-up (survival
# measures; IPCW at a horizon)
COMPLETE_CASES = "complete cases (label known)"
FOLLOWED = "all with follow-up"
FOLLOWED_IPCW = "all with follow-up, IPCW"


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "–" for missing or non-finite values."""
    if x is None or isinstance(x, bool):
        return "–"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "–"
    return f"{f:.{digits}f}" if math.isfinite(f) else "–"


def fmt_interval(iv: Estimate | Mapping[str, Any] | None, digits: int = 3) -> str:
    """``estimate (low–high)``; the estimate alone when the interval is missing."""
    if not iv:
        return "–"
    if not isinstance(iv, Estimate):
        iv = Estimate(iv.get("estimate"), iv.get("low"), iv.get("high"))
    est = fmt(iv.estimate, digits)
    if iv.low is None or iv.high is None:
        return est
    return f"{est} ({fmt(iv.low, digits)}–{fmt(iv.high, digits)})"


def fmt_p(p: Any) -> str:
    """A p-value: three decimals, or "<0.001"."""
    if p is None:
        return "–"
    p = float(p)
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_count(k: int, n: int) -> str:
    """``k (x.x%)`` of ``n``."""
    return f"{k} ({100.0 * k / n:.1f}%)" if n else str(k)


NA = "–"
"""How a missing number is shown; its cell carries class ``na`` and the reason as its ``title``."""


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and, for numbers from metrics.json, the ``data-metric`` key.

    ``note`` says why a missing number (text :data:`NA`) is missing; the template shows it as the
    cell's ``title`` with class ``na``.
    """

    text: str
    metric: str | None = None
    cls: str = "num"
    note: str = ""


def na_cell(note: str, metric: str | None = None) -> Cell:
    """A missing number and why it is missing."""
    return Cell(NA, metric, note=note)


def noted(cell: Cell, note: str) -> Cell:
    """``cell`` with ``note`` as its reason when its number is missing; unchanged otherwise."""
    return replace(cell, note=cell.note or note) if cell.text == NA else cell


# measures taken at the training threshold, and what an undefined one lacks
THRESHOLD_MEASURES = MappingProxyType({
    "sensitivity": "no events on this split", "specificity": "no non-events on this split",
    "accuracy": "no patients with a known label", "ppv": "no patient predicted positive at the threshold",
    "npv": "no patient predicted negative at the threshold",
    "f1": "no events and no patient predicted positive at the threshold",
})


def split_notes(validation: Validation | None, model: str, split: str) -> list[str]:
    """Validation's notes on one model and split (``"model / split: ..."``), without the prefix."""
    if validation is None:
        return []
    prefix = f"{model} / {split}: "
    return [n.removeprefix(prefix) for n in validation.notes if n.startswith(prefix)]


def _mentions(note: str, name: str) -> bool:
    words = {"auc": ("AUC",), "auc_bootstrap": ("auc_ci", "bootstrap"), "c_index": ("concordance", "C-index"),
             "c_index_uno": ("Uno",), "ibs": ("integrated Brier",), "logrank_p": ("km_by_group", "log-rank")}
    if name.startswith("calibration_"):
        return "calibration" in note and "curve" not in note
    if name == "lp_calibration_slope":
        return "calibration slope" in note
    if name.startswith(("ici_t", "e50_t", "e90_t")):  # "calibration at 365 not computed (...)"
        t = name.split("_t", 1)[1]
        return f"calibration at {t} " in note or ("past the last follow-up" in note and f"{float(t)!r}" in note)
    if name in THRESHOLD_MEASURES:
        return "binary_metrics" in note or "threshold" in note
    if name.startswith(("auc_t", "brier_t", "auc_ipcw_t", "brier_ipcw_t", "ici_t", "e50_t", "e90_t")):
        return "horizon" in note or "AUC(t)" in note or "Brier(t)" in note or "IPCW" in note
    return any(w.lower() in note.lower() for w in words.get(name, (name,)))


def said_about(validation: Validation | None, model: str, split: str, name: str) -> bool:
    """Whether validation left a note on why ``name`` of one model and split was not computed."""
    return any(_mentions(n, name) for n in split_notes(validation, model, split))


def missing_reason(model: str, split: str, name: str, sm: SplitMetrics | None,
                   validation: Validation | None = None) -> str:
    """Why metrics.csv's ``name`` has no number for one model and split: the data's reason (one class, no
    follow-up, no threshold ...) or validation's note on it."""
    if sm is None:
        return f"{model} has no predictions on the {split} split"
    notes = split_notes(validation, model, split)
    said = [n for n in notes if _mentions(n, name)]
    if measure_basis(name) == COMPLETE_CASES:
        if sm.n == 0 and sm.n_survival is not None:
            return "a survival model: its score is a risk, not a probability of the label (see its C-index)"
        if sm.n == 0:
            return "no patients with a known label on this split"
        if sm.n_positive in (0, sm.n):
            return f"not defined: one class only ({sm.n_positive} events among {sm.n} patients)"
        mm = validation.models.get(model) if validation is not None else None
        if name in THRESHOLD_MEASURES:
            if mm is not None and mm.threshold is None:
                return "no threshold: the training predictions had one class"
            return "; ".join(said) or f"not defined: {THRESHOLD_MEASURES[name]}"
        if name == "auc_bootstrap" and validation is not None and int(validation.settings.get("n_boot", 1)) == 0:
            return "no bootstrap ([validation] n_boot = 0)"
    elif sm.n_survival is None:
        return "no survival measures: fewer than three patients with follow-up, or no event, on this split"
    elif name == "lp_calibration_slope" and split == "train":
        return "computed on held-out patients only (the model's own linear predictor on new patients)"
    elif name == "logrank_p" and (validation is None or validation.models.get(model) is None
                                  or validation.models[model].risk_cutpoints is None):
        return "no risk groups: no training scores to cut them at"
    if said:
        return "; ".join(said)
    if notes:
        return "not computed; validation noted: " + "; ".join(notes)
    return "not defined for these predictions and outcomes"


def few_classes(n: int, events: int) -> str:
    """Why an AUC or calibration of ``n`` patients with ``events`` events is missing."""
    if n == 0:
        return "no patients"
    if events in (0, n):
        return f"not defined: one class only ({events} events among {n} patients)"
    return "not estimable on so few patients"


def metric_cell(model: str, split: str, name: str, split_metrics: SplitMetrics | None,
                validation: Validation | None = None) -> Cell:
    """The formatted value of metrics.csv's ``name`` for one model and split (``–`` and why when absent)."""
    key = f"{model}|{split}|{name}"
    e = split_metrics.get(name) if split_metrics is not None else None
    if name in ("n", "n_positive", "n_survival", "n_events"):
        cell = Cell(NA if e is None or e.estimate is None else str(int(e.estimate)), key)
    elif name.startswith("calibration_"):
        cell = Cell(fmt(estimate_value(e)), key)
    elif name == "logrank_p":
        cell = Cell(fmt_p(estimate_value(e)), key)
    else:
        cell = Cell(fmt_interval(e), key)
    if cell.text == NA:
        return replace(cell, note=missing_reason(model, split, name, split_metrics, validation))
    return cell


def measure_basis(name: str) -> str:
    """Which patients a measure of metrics.csv uses: the complete cases (known label) for the binary
    measures; every patient with follow-up for the survival ones, with IPCW at a horizon."""
    if name in ("n_survival", "n_events", "c_index", "logrank_p", "lp_calibration_slope") \
            or name.startswith(("ici_t", "e50_t", "e90_t")):
        return FOLLOWED
    if name in ("c_index_uno", "ibs") or "_ipcw_t" in name or name.startswith(("auc_t", "brier_t", "ipa_t")):
        return FOLLOWED_IPCW
    return COMPLETE_CASES


def estimate_value(e: Estimate | None) -> float | None:
    return e.estimate if e is not None else None


@dataclass(frozen=True)
class Embedded:
    """An embedded figure: element id, data URI, alt text and caption."""

    id: str
    uri: str
    alt: str
    caption: str


def dims(v: Any) -> str:
    """Sizes and spacings as ``16×64×64``; anything else as :func:`compact`."""
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return "×".join(compact(x) for x in v)
    return compact(v)


def compact(v: Any, limit: int = 6) -> str:
    """A parameter value in a few words: long lists show their length and first items."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        if len(v) > limit:
            return f"{len(v)} items ({', '.join(compact(x) for x in v[:3])}, …)"
        return "[" + ", ".join(compact(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {compact(x)}" for k, x in sorted(v.items())) + "}"
    text = str(v)
    return text if len(text) <= 80 else text[:77] + "…"


def kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={compact(v)}" for k, v in sorted(d.items())) or "none"
