"""The validation report: one self-contained HTML file per study, ``<report_dir>/index.html``.

What it reads (it writes nothing but the report):

* ``metrics.json`` / ``curves.json`` from :mod:`analytics.validate`, read back
  as a :class:`~analytics.validation.Validation` (every number in the
  performance, comparison and survival tables comes from it, formatted, never
  recomputed);
* the store: patients, feature-set provenance, failed embedding items, the
  ``variables`` dictionary and the ``predictions`` table (for the ROC curves and
  their bootstrap bands, and the calibration rugs);
* the cohort (:func:`analytics.cohort.load_cohort`): participant flow, Table 1,
  missing data;
* model manifests ``<study>/models/<name>/manifest.json`` when ``fit`` wrote
  them (else the ``study.toml`` entries), and ``<report_dir>/explain/manifest.json``.

Figures are PNGs embedded as base64 ``data:`` URIs, the CSS is inline and
there are no scripts, so the file reads offline and prints (print CSS starts
each section on a new page and keeps table rows and figures whole). Every
performance cell carries ``data-metric="model|split|metric"`` (metric names as
in ``metrics.csv``; per-centre cells ``model|center:<centre>/<split>|metric``)
so the numbers can be checked against ``metrics.json``. A number that is not
defined for the data (one class, constant predictions, a model no better than
chance ...) is shown as "–" in an element of class ``na`` whose ``title`` says why.
Same inputs give a byte-identical file: no time stamps, PNGs without
software metadata, seeded bootstraps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2
import numpy as np
import polars as pl
from markupsafe import Markup
from tqdm.auto import tqdm

from analytics import figures, tripod
from analytics.models.artifacts import FitRecord
from analytics.splits import SPLITS
from analytics.stats.roc_band import BAND_SPECIFICITIES, roc_band
from analytics.stats.thresholds import roc_curve
from analytics.validation import Estimate, PairedComparison, SplitMetrics, ValidateError, Validation
from pipeline import atomic, store
from pipeline.config import StudyConfig
from pipeline.errors import CohortlabError
from pipeline.model_kinds import traits_of

log = logging.getLogger("cohortlab.report")

TEMPLATES = Path(__file__).resolve().parent / "templates"
SPLIT_NAMES = MappingProxyType({"train": "train (out-of-fold)", "internal": "internal", "external": "external"})
# Sections and their stable element ids (tests and the TRIPOD table link to them).
SECTIONS = (
    ("sec-study", "Study and data"),
    ("sec-features", "Feature sets"),
    ("sec-models", "Models"),
    ("sec-performance", "Performance"),
    ("sec-roc", "ROC curves"),
    ("sec-calibration", "Calibration"),
    ("sec-decision", "Decision curves"),
    ("sec-comparison", "Model comparison"),
    ("sec-added-value", "Added value"),
    ("sec-subgroups", "Subgroups"),
    ("sec-survival", "Survival"),
    ("sec-explanations", "Explanations"),
    ("sec-failed", "Failed inputs"),
    ("sec-tripod", "TRIPOD+AI checklist"),
)
# (metric name as in metrics.csv, row label); intervals unless the name says otherwise
METRIC_ROWS = (
    ("n", "Patients"),
    ("n_positive", "Events (label 1)"),
    ("auc", "AUC, DeLong CI"),
    ("auc_bootstrap", "AUC, bootstrap CI"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("accuracy", "Accuracy"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("calibration_in_the_large", "Calibration-in-the-large"),
    ("calibration_recalibration_intercept", "Recalibration intercept"),
    ("calibration_recalibration_slope", "Recalibration slope"),
    ("calibration_brier", "Brier score"),
    ("calibration_ici", "ICI"),
    ("n_survival", "Patients with follow-up"),
    ("n_events", "Events (follow-up)"),
    ("c_index", "C-index (Harrell)"),
    ("c_index_uno", "C-index (Uno, IPCW)"),
    ("ibs", "Integrated Brier score, IPCW"),
    ("logrank_p", "Log-rank p (risk groups)"),
)
# survival models, per horizon t: (metrics.csv prefix, row label)
HORIZON_ROWS = (("auc", "AUC({t}), IPCW"), ("brier", "Brier({t}), IPCW"))
# binary models on a censored endpoint, at the label's horizon t: (metrics.csv prefix, row label)
IPCW_ROWS = (("auc_ipcw", "AUC({t}), IPCW, all with follow-up"), ("brier_ipcw", "Brier({t}), IPCW, all with follow-up"))
# which patients a measure uses: those with a known label, or every patient with follow-up (survival
# measures; IPCW at a horizon)
COMPLETE_CASES = "complete cases (label known)"
FOLLOWED = "all with follow-up"
FOLLOWED_IPCW = "all with follow-up, IPCW"
EXPLAIN_TYPES = MappingProxyType({".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                                  ".svg": "image/svg+xml"})


class ReportError(CohortlabError, RuntimeError):
    """The report cannot be written; the message names the file."""


# --- number formatting ---------------------------------------------------------------------------


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
    if name in THRESHOLD_MEASURES:
        return "binary_metrics" in note or "threshold" in note
    if name.startswith(("auc_t", "brier_t", "auc_ipcw_t", "brier_ipcw_t", "ici_t", "e50_t", "e90_t")):
        return "horizon" in note or "AUC(t)" in note or "Brier(t)" in note or "IPCW" in note
    return any(w.lower() in note.lower() for w in words.get(name, (name,)))


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
    elif name == "logrank_p" and (validation is None or validation.models.get(model) is None
                                  or validation.models[model].risk_cutpoints is None):
        return "no risk groups: no training scores to cut them at"
    if said:
        return "; ".join(said)
    if notes:
        return "not computed; validation noted: " + "; ".join(notes)
    return "not defined for these predictions and outcomes"


def _few_classes(n: int, events: int) -> str:
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
        cell = Cell(fmt(_estimate(e)), key)
    elif name == "logrank_p":
        cell = Cell(fmt_p(_estimate(e)), key)
    else:
        cell = Cell(fmt_interval(e), key)
    if cell.text == NA:
        return replace(cell, note=missing_reason(model, split, name, split_metrics, validation))
    return cell


# --- reading the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """Everything the report reads from one study run."""

    study: StudyConfig
    validation: Validation | None
    curves: dict[str, Any]
    predictions: pl.DataFrame
    store_patients: pl.DataFrame
    feature_sets: pl.DataFrame
    coverage: dict[str, int]
    failed: pl.DataFrame
    variables: pl.DataFrame
    cohort: Any | None
    cohort_error: str | None
    manifests: dict[str, FitRecord]
    explain: dict[str, Any] | None
    warnings: tuple[str, ...] = ()


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None


def _model_names(study: StudyConfig, validation: Validation | None, predictions: pl.DataFrame) -> list[str]:
    present = set(validation.models if validation is not None else ()) | set(predictions.get_column("model").to_list())
    ordered = [m.name for m in study.models if m.name in present]
    return ordered + sorted(present - set(ordered))


def read_sources(study: StudyConfig) -> Sources:
    """Read metrics, curves, the store, the cohort, model and explanation manifests of ``study``."""
    from analytics.cohort import CohortError, feature_coverage, load_cohort
    from analytics.splits import SplitError

    out = study.report_dir
    metrics = _read_json(out / "metrics.json")
    curves = _read_json(out / "curves.json") or {}
    try:
        validation = (Validation.from_dict(metrics, str(out / "metrics.json"), order=[m.name for m in study.models],
                                           curves=curves) if metrics is not None else None)
    except ValidateError as exc:
        raise ReportError(str(exc)) from None
    explain = _read_json(out / "explain" / "manifest.json")
    warnings: list[str] = []
    con = store.connect(study.store_path, read_only=True)
    try:
        patients = store.query(con, "SELECT patient_id, center FROM patients ORDER BY patient_id")
        fsets = store.feature_sets(con)
        failed = store.failed_items(con)
        variables = store.query(con, "SELECT name, type, unit, role, label, n_missing FROM variables ORDER BY name")
        predictions = store.read_predictions(con)
        cohort, cohort_error = None, None
        if study.cohort is not None:
            try:
                cohort = load_cohort(study)
            except (CohortError, SplitError) as exc:
                cohort_error = str(exc)
                warnings.append(f"the cohort could not be loaded: {exc}")
        coverage: dict[str, int] = {}
        if cohort is not None and fsets.height:
            refs = [f"{name}:instances" for name in fsets.get_column("name").to_list()]
            cov = feature_coverage(con, cohort.patient_ids, refs)
            coverage = {r["features"].split(":")[0]: int(r["patients"]) for r in cov.to_dicts()}
    finally:
        con.close()
    from analytics.models.persist import read_record

    manifests: dict[str, FitRecord] = {}
    for m in study.models:
        # every file of the model's folder checked against the store's sha256 first (one line naming a
        # changed file, or a folder an older cohortlab pickled)
        record = read_record(study.models_dir / m.name, study.store_path)
        if record is not None:
            manifests[m.name] = record
    if validation is not None and cohort is not None:
        if validation.cohort_hash not in (None, cohort.hash):
            warnings.append("the cohort has changed since the metrics were computed (cohort hash differs); "
                            "run `cohortlab validate` again")
        if predictions.height and validation.inputs_digest != _inputs_digest(study, predictions, cohort):
            warnings.append("the predictions or settings have changed since the metrics were computed; "
                            "run `cohortlab validate` again")
    return Sources(study, validation, curves, predictions, patients, fsets, coverage, failed, variables, cohort,
                   cohort_error, manifests, explain, tuple(warnings))


def _inputs_digest(study: StudyConfig, predictions: pl.DataFrame, cohort: Any) -> str:
    """validate's digest of its inputs, recomputed to tell whether metrics.json is current."""
    from analytics.validate import inputs_digest, outcome_columns

    cols = outcome_columns(study, cohort.frame.columns)
    return inputs_digest(study, predictions, cohort.frame.select(cols).rename({"split": "cohort_split"}))


# --- study and data ---------------------------------------------------------------------------------------------


def flow(patients: pl.DataFrame, frame: pl.DataFrame | None, predictions: pl.DataFrame,
         models: Sequence[str], survival: bool = False, endpoint: str = "binary") -> dict[str, Any]:
    """Participant flow by centre: store → cohort → with an outcome → analysed by each model; then per split.

    With ``survival`` (a survival endpoint or model), a patient with a time and an event has an outcome
    whether or not it has a label. Per split, the events are the labels' positives, or for a survival
    ``endpoint`` the events.

    Returns
    -------
    dict
        ``centers``; ``rows``: (stage, counts per centre, total); ``splits``:
        per split, counts ``n (events)`` per centre and total.
    """
    centers = sorted(set(patients.get_column("center").to_list()))

    def counts(ids: Iterable[str], center_of: Mapping[str, str]) -> list[int]:
        per = {c: 0 for c in centers}
        for pid in ids:
            per[center_of[pid]] = per.get(center_of[pid], 0) + 1
        return [per[c] for c in centers]

    center_of = dict(zip(patients.get_column("patient_id").to_list(), patients.get_column("center").to_list()))
    rows: list[dict[str, Any]] = []
    store_counts = counts(center_of, center_of)
    rows.append({"stage": "Patients in the store", "counts": store_counts, "total": sum(store_counts)})
    splits: list[dict[str, Any]] = []
    if frame is not None:
        cohort_ids = frame.get_column("patient_id").to_list()
        c = counts(cohort_ids, center_of)
        rows.append({"stage": "Selected by the cohort SQL", "counts": c, "total": sum(c)})
        followed = survival and "time" in frame.columns and "event" in frame.columns
        known = pl.col("label").is_not_null()
        if followed:
            known = known | (pl.col("time").is_not_null() & pl.col("event").is_not_null())
        labelled = frame.filter(known)
        lab_ids = labelled.get_column("patient_id").to_list()
        c = counts(lab_ids, center_of)
        stage = "With a known outcome (label, or time and event)" if followed else "With a known outcome (label)"
        rows.append({"stage": stage, "counts": c, "total": sum(c)})
        event_col = "event" if followed and endpoint == "survival" else "label"
        lab = set(lab_ids)
        for model in models:
            ids = [p for p in predictions.filter(pl.col("model") == model).get_column("patient_id").to_list() if p in lab]
            c = counts(ids, center_of)
            rows.append({"stage": f"Analysed by {model} (inputs available)", "counts": c, "total": sum(c), "model": model})
        for split in SPLITS:
            part = labelled.filter(pl.col("split") == split)
            if part.height == 0:
                continue
            cells = []
            for ctr in centers + [None]:
                sub = part if ctr is None else part.filter(pl.col("center") == ctr)
                n, k = sub.height, int(sub.get_column(event_col).sum() or 0)
                cells.append(f"{n} ({k})" if n else "–")
            splits.append({"split": SPLIT_NAMES[split], "cells": cells})
    return {"centers": centers, "rows": rows, "splits": splits}


def missing_data(frame: pl.DataFrame, variables: pl.DataFrame) -> list[dict[str, Any]]:
    """Missing values per cohort variable: in the store's manifest, in the cohort, and per split."""
    meta = {r["name"]: r for r in variables.to_dicts()}
    # the cohort's reserved columns are renamed manifest variables: find them by role
    for col, role in (("label", "outcome"), ("time", "time"), ("event", "event")):
        named = [r for r in variables.to_dicts() if r["role"] == role]
        if col not in meta and len(named) == 1:
            meta[col] = {**named[0], "label": f"{named[0].get('label') or named[0]['name']}"}
    present = [s for s in SPLITS if (frame.get_column("split") == s).any()]
    rows = []
    for col in frame.columns:
        if col in ("patient_id", "center", "split"):
            continue
        s = frame.get_column(col)
        miss = s.is_null()
        if s.dtype.is_float():
            miss = miss | s.is_nan().fill_null(False)
        m = meta.get(col, {})
        label = m.get("label") or m.get("name") or col
        per_split = []
        for split in present:
            sel = (frame.get_column("split") == split)
            per_split.append(fmt_count(int((miss & sel).sum()), int(sel.sum())))
        rows.append({
            "variable": col if m.get("name", col) == col else f"{col} = {m['name']}", "label": label,
            "type": m.get("type") or str(s.dtype), "role": m.get("role") or "",
            "store": "–" if m.get("n_missing") is None else str(m["n_missing"]),
            "cohort": fmt_count(int(miss.sum()), frame.height), "splits": per_split,
        })
    return rows


# --- feature sets and models -----------------------------------------------------------------------------------------


def weights_text(weights: str) -> tuple[str, bool]:
    """How the weights are shown, and whether they are random (flagged)."""
    w = (weights or "").strip()
    if w.lower() == "random":
        return "random, untrained weights (features carry no pretrained knowledge)", True
    if w.lower() in ("none", ""):
        return "none (hand-crafted features)", False
    return w, False


def feature_set_rows(frame: pl.DataFrame, study: StudyConfig, coverage: Mapping[str, int],
                     n_cohort: int | None) -> list[dict[str, Any]]:
    """Provenance of each feature set in the store, and those defined in study.toml but not embedded yet."""
    rows = []
    stored = set()
    resolution_keys = ("mpp", "magnification", "tile_size", "overlap", "tissue_threshold", "mode", "spacing",
                       "input_size", "window", "margin_mm", "bin_width")
    for r in frame.to_dicts():
        stored.add(r["name"])
        params = store.feature_set_params(r)
        res = [f"{k} {_dims(params[k])}" for k in resolution_keys if params.get(k) is not None]
        other = [f"{k}={_compact(v)}" for k, v in sorted(params.items()) if k not in resolution_keys]
        text, random = weights_text(r["weights"])
        cov = coverage.get(r["name"])
        rows.append({
            "name": r["name"], "modality": r["modality"], "encoder": r["encoder"], "weights": text, "random": random,
            "dim": "–" if r["dim"] is None else str(r["dim"]), "resolution": ", ".join(res) or "–",
            "params": ", ".join(other) or "–", "code_version": r["code_version"],
            "done": int(r["done"] or 0), "failed": int(r["failed"] or 0),
            "instances": "–" if r["instances"] is None else str(r["instances"]),
            "coverage": "–" if cov is None or not n_cohort else fmt_count(cov, n_cohort), "stored": True,
        })
    for fs in study.feature_sets:
        if fs.name in stored:
            continue
        text, random = weights_text(fs.weights)
        res = []
        for k in resolution_keys:
            v = getattr(fs, k, None)
            if v is not None and k in fs.model_fields_set | {"tissue_threshold"} and not (k == "overlap" and v == 0):
                res.append(f"{k} {_dims(v)}")
        rows.append({
            "name": fs.name, "modality": fs.modality, "encoder": fs.encoder, "weights": text, "random": random,
            "dim": "–", "resolution": ", ".join(res) or "–", "params": _compact(fs.params) if fs.params else "–",
            "code_version": "–", "done": 0, "failed": 0, "instances": "–", "coverage": "–", "stored": False,
        })
    return rows


def _dims(v: Any) -> str:
    """Sizes and spacings as ``16×64×64``; anything else as :func:`_compact`."""
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return "×".join(_compact(x) for x in v)
    return _compact(v)


def _compact(v: Any, limit: int = 6) -> str:
    """A parameter value in a few words: long lists show their length and first items."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        if len(v) > limit:
            return f"{len(v)} items ({', '.join(_compact(x) for x in v[:3])}, …)"
        return "[" + ", ".join(_compact(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_compact(x)}" for k, x in sorted(v.items())) + "}"
    text = str(v)
    return text if len(text) <= 80 else text[:77] + "…"


MIL_SHOWN = ("pooling", "hidden", "attention_dim", "dropout", "lr", "epochs", "best_epoch", "class_weight",
             "max_instances")


def _kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_compact(v)}" for k, v in sorted(d.items())) or "none"


def manifest_facts(man: FitRecord) -> list[tuple[str, str]]:
    """The parts of a fitted model's record a reader needs (no time stamps, hashes or library dumps)."""
    out: list[tuple[str, str]] = [("Chosen hyper-parameters", _kv(man.chosen or {}))]
    folds = man.fold_chosen or []
    if folds:
        per = [_kv({k: v for k, v in f.items() if k != "fold"}) for f in folds]
        if len(set(per)) > 1:
            out.append(("Per outer fold", "; ".join(f"fold {f.get('fold', i)}: {t}" for i, (f, t) in enumerate(zip(folds, per)))))
    if man.inner_auc is not None:
        out.append(("Inner cross-validated AUC of the choice", fmt(man.inner_auc)))
    k = man.outer_folds.get("k")
    if k:
        seed = "–" if man.seed is None else man.seed
        out.append(("Out-of-fold training predictions", f"{k} outer folds, seed {seed}"))
    nesting = man.nesting or {}
    if nesting.get("optimistic"):
        why = nesting.get("reason") or "an input model's estimate is optimistic"
        out.append(("Training estimate", f"not nested: optimistic ({why})"))
    elif nesting.get("nested"):
        out.append(("Training estimate", "nested cross-fitting: in each outer fold the input models were refitted, "
                                         "and cross-fitted by inner folds, on the training patients outside it"))
    cols = man.columns or {}
    parts = []
    if cols.get("numeric"):
        parts.append(f"numeric (median imputation, standardised): {', '.join(cols['numeric'])}")
    if cols.get("categorical"):
        parts.append(f"categorical (most frequent level imputed, one-hot): {', '.join(cols['categorical'])}")
    if cols.get("features"):
        blocks = sorted({c.rsplit(":", 1)[0] for c in cols["features"]})
        parts.append(f"image features: {len(cols['features'])} columns ({', '.join(blocks)})")
    if parts:
        out.append(("Input columns and preprocessing", "; ".join(parts) + " — fitted on training patients only"))
    if man.mil:
        out.append(("MIL network", _kv({k: v for k, v in man.mil.items() if k in MIL_SHOWN})))
    if man.missing:
        out.append(("Patients without inputs", _compact(man.missing)))
    fitted_on = man.cohort_hash
    if fitted_on:  # a digest of the cohort and the model's feature blocks
        out.append(("Cohort and inputs digest", fitted_on[:16]))
    version = man.versions.get("cohortlab")
    if version:
        out.append(("Fitted with", f"cohortlab {version}"))
    return out


def class_weights(manifests: Mapping[str, FitRecord]) -> list[str]:
    """Models whose records show a class weighting (``model: weighting``)."""
    out = []
    for name, man in sorted(manifests.items()):
        for source in (man.chosen or {}, man.mil or {}, man.config.get("params") or {}):
            if source.get("class_weight"):
                out.append(f"{name}: {_compact(source['class_weight'])}")
                break
    return out


def _planned_tuning(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The tuning a model entry of study.toml asks for (its grid, else its kind's default), before any fit."""
    from analytics.models import tuning

    if not entry:
        return {}
    params = entry.get("params") or {}
    grid, source = tuning.searched_grid(entry.get("kind", ""), entry.get("grid") or {}, params)
    points = len(tuning.grid_points(grid)) if grid else 0
    return {"grid": grid, "source": source, "points": points, "searched": None,
            "inner_folds": int(params.get("inner_folds", tuning.DEFAULT_INNER_FOLDS)) if points > 1 else None}


def tuning_text(tuning: Mapping[str, Any], chosen: Mapping[str, Any] | None) -> str:
    """The grid a model searched (or will search), where it came from, how, and the values chosen."""
    grid = tuning.get("grid") or {}
    if not grid:
        return "none (fixed)"
    space = "; ".join(f"{k} ∈ {{{', '.join(_compact(x) for x in v)}}}" for k, v in grid.items())
    source = {"default": "default grid of the model kind", "study.toml": "grid from study.toml"}.get(
        str(tuning.get("source")), "grid")
    folds = tuning.get("inner_folds")
    if (tuning.get("points") or 0) <= 1:
        how = "a single value: nothing searched"
    elif tuning.get("searched") is None:
        how = f"searched by {folds}-fold inner cross-validation on mean AUC when fitted"
    elif not tuning.get("searched"):
        how = "not searched: too few training patients of a class for inner cross-validation; the first value used"
    else:
        how = f"searched by {folds}-fold inner cross-validation of the training patients, mean AUC"
    text = f"{space} ({source}; {how})"
    picked = [f"{k} = {_compact(chosen[k])}" for k in grid if chosen and k in chosen]
    return text + (f"; chosen {', '.join(picked)}" if picked else "")


def _dropped_line(dropped: Mapping[str, str] | None) -> str:
    from analytics.models.data import dropped_summary

    return dropped_summary(dropped) if dropped else ""


def model_rows(study: StudyConfig, models: Sequence[str], validation: Validation | None,
               manifests: Mapping[str, FitRecord]) -> list[dict[str, Any]]:
    """Type, inputs, tuning, threshold rule and value of each model (its fit record first, else study.toml)."""
    defined = {m.name: m for m in study.models}
    rows = []
    for name in models:
        m = defined.get(name)
        man = manifests.get(name)
        entry = m.model_dump() if m is not None else {}
        # a record holds the features and clinical columns it was fitted on; scores and members are in the entry
        fitted_on = {"features": man.features, "clinical": man.clinical} if man is not None else {}
        inputs = []
        for key, label in (("features", "image features"), ("clinical", "clinical"), ("scores", "scores of"),
                           ("members", "members")):
            vals = fitted_on.get(key, entry.get(key)) or []
            if vals:
                inputs.append(f"{label}: {', '.join(map(str, vals))}")
        tuning = (man.tuning if man is not None else None) or _planned_tuning(entry)
        mm = validation.models.get(name) if validation is not None else None
        thr = mm.threshold if mm is not None else None
        cut = mm.risk_cutpoints if mm is not None else None
        rows.append({
            "name": name, "kind": man.kind if man is not None else entry.get("kind", "–"), "inputs": inputs or ["–"],
            "grid": tuning_text(tuning, man.chosen if man is not None else None),
            "dropped": _dropped_line(man.dropped if man is not None else None),
            "params": _compact(entry.get("params")) if entry.get("params") else "–",
            "manifest": manifest_facts(man) if man is not None else [],
            "has_manifest": name in manifests,
            "threshold_rule": thr.rule if thr else "–", "threshold_on": thr.chosen_on if thr else "",
            "threshold": noted(Cell(fmt(thr.value if thr else None), f"{name}|train|threshold"),
                               "a survival model: risk groups instead of a threshold"
                               if m is not None and study.endpoint(m) == "survival" else
                               "no threshold: the training predictions had one class" if mm is not None else
                               "not validated yet"),
            "cutpoints": ", ".join(f"q{q:g} = {fmt(v)}" for q, v in zip(cut.quantiles, cut.values)) if cut else "–",
        })
    return rows


# --- performance ---------------------------------------------------------------------------------------------------


def training_estimates(manifests: Mapping[str, FitRecord]) -> dict[str, dict[str, Any]]:
    """How each second-stage model's training (out-of-fold) estimate was made, from its record's ``nesting``.

    ``{"text": ..., "optimistic": bool, "reason": ...}`` per model whose inputs are
    other models' scores: "nested" (input models refitted within each outer fold),
    or "not nested: optimistic" (its out-of-fold predictions may have seen the labels they predict).
    """
    out = {}
    for name, man in manifests.items():
        nesting = man.nesting or {}
        if nesting.get("optimistic"):
            out[name] = {"text": "not nested: optimistic", "optimistic": True, "reason": nesting.get("reason")}
        elif nesting.get("nested"):
            out[name] = {"text": "nested", "optimistic": False, "reason": None}
    return out


def _flag_training(cells: list[Cell], splits: Sequence[str], flagged: bool) -> list[Cell]:
    return [replace(c, cls=f"{c.cls} flag") if flagged and s == "train" else c
            for c, s in zip(cells, splits)]


def performance(models: Sequence[str], validation: Validation,
                training: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Headline AUC table (models × splits) and one detailed table per model (metrics × splits).

    ``training`` (:func:`training_estimates`) marks second-stage models' training
    estimates: nested, or not nested and optimistic (in red).
    """
    training = training or {}
    mm = validation.models
    empty: Mapping[str, SplitMetrics] = {}
    splits = [s for s in SPLITS if any(s in (mm[m].splits if m in mm else empty) for m in models)]
    headline = []
    for model in models:
        sp = mm[model].splits if model in mm else empty
        flagged = bool((training.get(model) or {}).get("optimistic"))
        headline.append({"model": model, "training": training.get(model), "cells": _flag_training(
            [metric_cell(model, s, "auc", sp[s], validation) if s in sp else
             na_cell(missing_reason(model, s, "auc", None)) for s in splits], splits, flagged)})
    detail = []
    for model in models:
        sp = mm[model].splits if model in mm else empty
        flagged = bool((training.get(model) or {}).get("optimistic"))
        rows = []
        horizon_rows = [(f"{prefix}_t{t}", label.format(t=t)) for t in _horizons_of(sp)
                        for prefix, label in HORIZON_ROWS]
        horizon_rows += [(f"{prefix}_t{t}", label.format(t=t)) for t in _horizons_of(sp, ("auc_ipcw_t", "brier_ipcw_t"))
                         for prefix, label in IPCW_ROWS]
        for name, label in (*METRIC_ROWS, *horizon_rows):
            cells = [metric_cell(model, s, name, sp[s], validation) if s in sp else
                     na_cell(missing_reason(model, s, name, None)) for s in splits]
            # a measure computed but undefined on every split (e.g. NPV without predicted negatives) keeps its row
            if all(c.text == NA for c in cells) and not any(sp[s].get(name) is not None for s in splits if s in sp):
                continue
            rows.append({"label": label, "method": _method(name, sp), "cells": _flag_training(cells, splits, flagged),
                         "basis": measure_basis(name), "measure": name})
        # say which patients each number uses when a table mixes complete-case and follow-up measures
        mixed = len({r["basis"] == COMPLETE_CASES for r in rows}) > 1
        detail.append({"model": model, "training": training.get(model), "rows": rows, "basis": mixed,
                       "ipcw": any("_ipcw_t" in r["measure"] for r in rows)})
    centers = []
    for model in models:
        for ctr, per_split in sorted((mm[model].centers if model in mm else {}).items()):
            for split in SPLITS:
                e = per_split.get(split)
                if e is None:
                    continue
                key = f"{model}|center:{ctr}/{split}"
                centers.append({
                    "model": model, "center": ctr, "split": SPLIT_NAMES[split],
                    "n": Cell(str(e.n), f"{key}|n"),
                    "events": Cell(str(e.n_positive), f"{key}|n_positive"),
                    "auc": noted(Cell(fmt_interval(e.auc), f"{key}|auc"),
                                 f"a survival model: no AUC of the label (C-index {fmt_interval(e.c_index)})"
                                 if e.c_index is not None else _few_classes(e.n, e.n_positive)),
                })
    return {"splits": [SPLIT_NAMES[s] for s in splits], "split_keys": splits, "headline": headline,
            "detail": detail, "centers": centers}


def measure_basis(name: str) -> str:
    """Which patients a measure of metrics.csv uses: the complete cases (known label) for the binary
    measures; every patient with follow-up for the survival ones, with IPCW at a horizon."""
    if name in ("n_survival", "n_events", "c_index", "logrank_p"):
        return FOLLOWED
    if name in ("c_index_uno", "ibs") or "_ipcw_t" in name or name.startswith(("auc_t", "brier_t")):
        return FOLLOWED_IPCW
    return COMPLETE_CASES


def _horizons_of(splits: Mapping[str, SplitMetrics], prefixes: Sequence[str] = ("auc_t", "brier_t")) -> list[str]:
    """The horizons (as written in measure names, ``auc_t12`` -> ``12``) of a model's AUC(t)/Brier(t)
    (``prefixes``: of other measures at a horizon, e.g. ``auc_ipcw_t``)."""
    found: dict[float, str] = {}
    for sm in splits.values():
        for k in sm.estimates:
            for prefix in prefixes:
                if k.startswith(prefix):
                    try:
                        found[float(k[len(prefix):])] = k[len(prefix):]
                    except ValueError:
                        pass
    return [found[t] for t in sorted(found)]


def horizon_blocks(models: Sequence[str], curves: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per survival model and split: time-dependent ROC and calibration at each horizon, one figure."""
    out = []
    for model in models:
        for split in SPLITS:
            c = curves.get(model, {}).get(split, {}) or {}
            per = c.get("horizons") or {}
            if not per:
                continue
            rocs = [(f"t = {h['horizon']:g}", h["time_roc"]["fpr"], h["time_roc"]["tpr"])
                    for h in per.values() if h.get("time_roc")]
            cal = [(f"t = {h['horizon']:g}", h["calibration_at"]["predicted"], h["calibration_at"]["observed"])
                   for h in per.values() if h.get("calibration_at")]
            smooth = [(f"t = {h['horizon']:g}", h["calibration_smooth"]["predicted"], h["calibration_smooth"]["observed"])
                      for h in per.values() if h.get("calibration_smooth")]
            dec = c.get("decision_at")
            decision = None if not dec else (f"Decision curve at t = {dec['horizon']:g}", dec["threshold"],
                                             [np.nan if x is None else x for x in dec["net_benefit"]],
                                             [np.nan if x is None else x for x in dec["treat_all"]])
            if not rocs and not cal:
                continue
            fig = figures.horizon_figure(f"{model} · {SPLIT_NAMES[split]}", rocs, cal, smooth, decision)
            out.append({"model": model, "split": split, "figure": Embedded(
                f"fig-horizons-{model}-{split}", figures.data_uri(fig),
                f"Time-dependent ROC and calibration of {model}, {split}",
                f"{model}, {SPLIT_NAMES[split]}: cumulative/dynamic ROC curves at each horizon (cases: event by t; "
                "controls: event-free after t; inverse-probability-of-censoring weights); mean predicted risk "
                "against the Kaplan-Meier risk by t per tenth of predicted risk (points) and the smooth calibration "
                "curve (lines); the decision curve at the main horizon (Kaplan-Meier risk among the treated).")})
    return out


def _method(name: str, splits: Mapping[str, SplitMetrics]) -> str:
    for sm in splits.values():
        v = sm.estimates.get(name)
        if v is not None and v.method:
            return v.method
    return {"n": "count", "n_positive": "count",
            "calibration_in_the_large": "intercept with the slope fixed at 1 (offset logit(p))",
            "calibration_recalibration_intercept": "logistic recalibration a + b·logit(p): a (rms::val.prob Intercept)",
            "calibration_recalibration_slope": "logistic recalibration a + b·logit(p): b (rms::val.prob Slope)",
            "calibration_brier": "mean squared error",
            "calibration_ici": "loess (Austin & Steyerberg)", "logrank_p": "log-rank"}.get(name, "")


def comparisons(validation: Validation) -> list[dict[str, Any]]:
    """The stored paired DeLong comparisons, one row each."""
    rows = []
    for c in validation.comparisons:
        key = f"{c.a} vs {c.b}|{c.split}"
        why = UNDEFINED_COMPARISON
        rows.append({
            "a": c.a, "b": c.b, "split": c.split, "split_name": SPLIT_NAMES.get(c.split, c.split),
            "n": str(c.n),
            "auc_a": noted(Cell(fmt(c.auc_a), f"{key}|auc_a"), why), "auc_b": noted(Cell(fmt(c.auc_b), f"{key}|auc_b"), why),
            "difference": noted(Cell(fmt_interval(Estimate(c.difference, c.low, c.high)), f"{key}|auc_difference"), why),
            "z": noted(Cell(fmt(c.z, 2), f"{key}|z"), why), "p": noted(Cell(fmt_p(c.p), f"{key}|p"), why),
            "raw": c,
        })
    return rows


UNDEFINED_COMPARISON = ("not defined: the difference has no variance (the two models rank these patients alike, "
                        "or a model's predictions are constant)")


def added_value_blocks(validation: Validation) -> list[dict[str, Any]]:
    """One block per ``[validation] added_value`` pair: a row per split (ΔAUC, NRI, IDI with CIs and p),
    the LR test or why there is none, and the reclassification tables. Cells carry
    ``<new> vs <old>|<split>|<metric>`` as in metrics.csv (``<metric>_p`` for p-values)."""
    blocks: dict[tuple[str, str], dict[str, Any]] = {}
    for av in validation.added_value:
        b = blocks.setdefault((av.new, av.old), {"new": av.new, "old": av.old, "cutoffs": list(av.cutoffs),
                                                 "rows": [], "tables": [], "lr": None, "lr_reason": None})
        key = f"{av.new} vs {av.old}|{av.split}"
        prefix = f"added value {av.new} over {av.old} / {av.split}: "
        said = {n.removeprefix(prefix).split(" ", 1)[0]: n.removeprefix(prefix)
                for n in validation.notes if n.startswith(prefix)}
        one_class = _few_classes(av.n, av.n_positive) if av.n_positive in (0, av.n) else ""

        def iv(d: Mapping[str, Any] | None, name: str, key: str = key, one_class: str = one_class,
               said: Mapping[str, str] = said) -> tuple[Cell, Cell]:
            if d is None:
                why = one_class or said.get(name) or "not computed"
                return na_cell(why), na_cell(why)
            why = "not defined: no patient was reclassified (a standard error of 0)"
            return (noted(Cell(fmt_interval(Estimate(d.get("estimate"), d.get("low"), d.get("high"))), f"{key}|{name}"),
                          why), noted(Cell(fmt_p(d.get("p")), f"{key}|{name}_p"), why))

        def part(d: Mapping[str, Any] | None, which: str, name: str, key: str = key, one_class: str = one_class,
                 said: Mapping[str, str] = said) -> Cell:
            c = (d or {}).get(which)
            why = (one_class or said.get(name) or "not computed") if d is None else f"no {which} on this split"
            return noted(Cell(fmt((c or {}).get("estimate")), f"{key}|{name}_{which}" if c else None), why)

        c = av.auc_difference
        no_dauc = one_class or "no paired DeLong comparison on this split (fewer than three patients, or not computable)"
        dauc = (noted(Cell(fmt_interval(Estimate(c.difference, c.low, c.high)), f"{key}|auc_difference"),
                      UNDEFINED_COMPARISON),
                noted(Cell(fmt_p(c.p), f"{key}|auc_difference_p"), UNDEFINED_COMPARISON)) if c is not None else (
            na_cell(no_dauc), na_cell(no_dauc))
        b["rows"].append({
            "split": av.split, "split_name": SPLIT_NAMES.get(av.split, av.split), "n": str(av.n),
            "n_positive": str(av.n_positive), "auc_difference": dauc, "nri": iv(av.nri, "nri"),
            "nri_events": part(av.nri, "events", "nri"), "nri_nonevents": part(av.nri, "nonevents", "nri"),
            "nri_categorical": iv(av.nri_categorical, "nri_categorical"), "idi": iv(av.idi, "idi"),
        })
        if av.split == "train":
            if av.lr_test is not None:
                lr = av.lr_test
                b["lr"] = {"statistic": Cell(fmt(lr.get("statistic"), 2), f"{key}|lr_statistic"),
                           "df": str(lr.get("df")), "p": Cell(fmt_p(lr.get("p")), f"{key}|lr_statistic_p")}
            b["lr_reason"] = av.lr_test_reason
        if av.reclassification is not None:
            cuts = list(av.cutoffs)
            bounds = [0.0, *cuts, 1.0]
            groups = [f"{bounds[i]:g}–{bounds[i + 1]:g}" for i in range(len(bounds) - 1)]
            b["tables"].append({"split_name": SPLIT_NAMES.get(av.split, av.split), "groups": groups,
                                "events": av.reclassification.get("events"),
                                "nonevents": av.reclassification.get("nonevents")})
    return list(blocks.values())


# --- figures --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Embedded:
    """An embedded figure: element id, data URI, alt text and caption."""

    id: str
    uri: str
    alt: str
    caption: str


def _scored(preds: pl.DataFrame, frame: pl.DataFrame | None) -> pl.DataFrame:
    if frame is None or preds.height == 0:
        return pl.DataFrame(schema={"model": pl.String, "patient_id": pl.String, "split": pl.String,
                                    "score": pl.Float64, "label": pl.Int8})
    cols = ["patient_id", "label"] + [c for c in ("time", "event") if c in frame.columns]
    return preds.join(frame.select(cols), on="patient_id", how="inner").filter(pl.col("label").is_not_null())


def _arrays(scored: pl.DataFrame, model: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    part = scored.filter((pl.col("model") == model) & (pl.col("split") == split))
    return part.get_column("label").to_numpy().astype(int), part.get_column("score").to_numpy().astype(float)


def roc_figures(models: Sequence[str], scored: pl.DataFrame, validation: Validation, seed: int,
                progress: bool = True) -> tuple[list[Embedded], list[Embedded]]:
    """One figure per split with all models overlaid, and one figure per model with bootstrap bands."""
    settings = validation.settings
    level, n_boot = float(settings.get("level", 0.95)), int(settings.get("n_boot", 2000))
    per_model: list[Embedded] = []
    overview: dict[str, list[tuple[str, np.ndarray, np.ndarray, str]]] = {}
    for model in tqdm(models, desc="ROC bands", unit="model", disable=not progress, leave=False):
        panels = []
        for i, split in enumerate(SPLITS):
            y, s = _arrays(scored, model, split)
            if y.size == 0 or len(np.unique(y)) < 2:
                continue
            roc = roc_curve(y, s)
            fpr = 1.0 - roc.get_column("specificity").to_numpy()[::-1]
            tpr = roc.get_column("sensitivity").to_numpy()[::-1]
            auc = validation.get(model, split, "auc")
            label = f"AUC {fmt_interval(auc)}"
            low = high = None
            if n_boot > 0:
                low, high = roc_band(y, s, BAND_SPECIFICITIES, n_boot=n_boot, level=level, seed=seed + i)
            panels.append(figures.RocPanel(split, fpr, tpr, label, BAND_SPECIFICITIES if n_boot > 0 else None, low, high))
            overview.setdefault(split, []).append((model, fpr, tpr, f"{model}: {fmt(_estimate(auc))}"))
        if panels:
            png = figures.roc_figure(f"{model}: ROC curves", panels, level)
            per_model.append(Embedded(f"fig-roc-{model}", figures.data_uri(png), f"ROC curves of {model}",
                                    f"{model}: empirical ROC curves per split; shaded, the pointwise {level:.0%} "
                                    f"CI of sensitivity at fixed specificities ({n_boot} stratified bootstrap "
                                    "resamples, pROC ci.se); legend: AUC with DeLong CI."))
    overlays = [Embedded(f"fig-roc-split-{split}", figures.data_uri(figures.roc_split_figure(split, overview[split])),
                         f"ROC curves of all models, {SPLIT_NAMES[split]}",
                         f"All models on the {SPLIT_NAMES[split]} split, each on the patients it scored "
                         "(legend: AUC, as in the performance table).")
                for split in SPLITS if split in overview]
    return overlays, per_model


def _estimate(e: Estimate | None) -> float | None:
    return e.estimate if e is not None else None


def calibration_figures(models: Sequence[str], curves: Mapping[str, Any], scored: pl.DataFrame,
                        validation: Validation) -> list[Embedded]:
    """Calibration plots per model: loess curve, binned points with Wilson CIs, prediction rug."""
    out = []
    for model in models:
        panels = []
        for split in SPLITS:
            cal = curves.get(model, {}).get(split, {}).get("calibration")
            if not cal:
                continue
            sm = cal.get("smoothed", [])
            bn = cal.get("binned", [])
            cm = {k: _estimate(validation.get(model, split, f"calibration_{k}"))
                  for k in ("in_the_large", "recalibration_intercept", "recalibration_slope", "brier")}
            _, s = _arrays(scored, model, split)
            label = (f"calibration-in-the-large {fmt(cm['in_the_large'])}\nrecalibration: intercept "
                     f"{fmt(cm['recalibration_intercept'])}, slope {fmt(cm['recalibration_slope'])}\n"
                     f"Brier {fmt(cm['brier'])}")
            panels.append(figures.CalibrationPanel(
                split,
                np.array([r["prob"] for r in sm], dtype=float), np.array([r["observed"] for r in sm], dtype=float),
                np.array([r["mean_prob"] for r in bn], dtype=float), np.array([r["observed"] for r in bn], dtype=float),
                np.array([r["low"] for r in bn], dtype=float), np.array([r["high"] for r in bn], dtype=float),
                s, label))
        if panels:
            png = figures.calibration_figure(f"{model}: calibration", panels)
            out.append(Embedded(f"fig-calibration-{model}", figures.data_uri(png), f"Calibration plots of {model}",
                              f"{model}: observed proportion against predicted probability; line, loess smoother; points, "
                              "deciles of predicted risk with Wilson CIs; ticks at the bottom, the predictions."))
    return out


def _floats(values: Sequence[Any]) -> np.ndarray:
    """A JSON list of numbers (null for undefined) as a float array with NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def decision_figures(models: Sequence[str], curves: Mapping[str, Any], level: float) -> list[Embedded]:
    """Decision curves per model and split, with the bootstrap band of the model's net benefit."""
    out = []
    for model in models:
        panels = []
        for split in SPLITS:
            d = curves.get(model, {}).get(split, {}).get("decision")
            if not d:
                continue
            col = {k: _floats(v) for k, v in d.items()}
            panels.append(figures.DecisionPanel(split, col["threshold"], col["net_benefit"], col["treat_all"],
                                                col["treat_none"], col.get("low"), col.get("high")))
        if panels:
            png = figures.decision_figure(f"{model}: decision curves", panels, level)
            out.append(Embedded(f"fig-decision-{model}", figures.data_uri(png), f"Decision curves of {model}",
                              f"{model}: net benefit over threshold probabilities against treating all and treating none "
                              f"(Vickers & Elkin 2006); shaded, the bootstrap {level:.0%} CI of the model's net benefit."))
    return out


def km_at_risk(curve_rows: pl.DataFrame, times: np.ndarray) -> list[int]:
    """Numbers at risk at ``times`` from a group's KM table (lifelines' at-risk counts at each observed time)."""
    t = curve_rows.get_column("time").to_numpy()
    n = curve_rows.get_column("at_risk").to_numpy()
    idx = np.searchsorted(t, times, side="left")
    return [int(n[i]) if i < t.size else 0 for i in idx]


def survival_blocks(models: Sequence[str], curves: Mapping[str, Any], validation: Validation,
                    time_label: str) -> list[dict[str, Any]]:
    """Per model and split: KM figure with numbers at risk, group summary and log-rank p."""
    out = []
    for model in models:
        for split in SPLITS:
            c = curves.get(model, {}).get(split, {})
            if not c.get("km"):
                continue
            km = pl.DataFrame(c["km"])
            summ = pl.DataFrame(c.get("km_summary") or {"group": [], "n": [], "events": [], "median": []})
            names = summ.get_column("group").to_list() if summ.height else sorted(set(km.get_column("group").to_list()))
            groups, at_risk = [], {}
            times = figures.at_risk_times(float(km.get_column("time").max()))
            for g in names:
                rows = km.filter(pl.col("group") == g).sort("time")
                groups.append(figures.KMGroup(g, rows.get_column("time").to_numpy(), rows.get_column("survival").to_numpy(),
                                              rows.get_column("low").to_numpy(), rows.get_column("high").to_numpy()))
                at_risk[g] = km_at_risk(rows, times)
            sm = validation.models[model].splits.get(split) if model in validation.models else None
            p_cell = metric_cell(model, split, "logrank_p", sm, validation)
            fig = figures.km_figure(f"{model} · {SPLIT_NAMES[split]}", groups, times, at_risk,
                                    f"log-rank p {p_cell.text}", time_label)
            out.append({
                "model": model, "split": split, "split_name": SPLIT_NAMES[split],
                "figure": Embedded(f"fig-km-{model}-{split}", figures.data_uri(fig), f"Kaplan-Meier curves of {model}, {split}",
                                 f"{model}, {SPLIT_NAMES[split]}: Kaplan-Meier curves by risk group (cut at training "
                                 "quantiles of the score), pointwise CIs, numbers at risk below."),
                "times": [f"{t:g}" for t in times], "at_risk": [(g, at_risk[g]) for g in names],
                "groups": [{"group": r["group"], "n": r["n"], "events": r["events"],
                            "median": "not reached" if r["median"] is None else fmt(r["median"], 1)}
                           for r in summ.to_dicts()],
                "logrank": p_cell, "c_index": metric_cell(model, split, "c_index", sm, validation),
            })
    return out


def forest(rows: Sequence[Mapping[str, Any]], level: float) -> Embedded | None:
    """Forest plot of the paired AUC differences."""
    raw: list[tuple[Mapping[str, Any], PairedComparison]] = [(r, r["raw"]) for r in rows]
    items = [figures.ForestRow(f"{r['a']} − {r['b']}", r["split"], c.difference, c.low, c.high, fmt_p(c.p))
             for r, c in raw if c.difference is not None and c.low is not None and c.high is not None]
    if not items:
        return None
    return Embedded("fig-forest", figures.data_uri(figures.forest_figure(items, level)), "Forest plot of AUC differences",
                  f"Difference in AUC between paired models with {level:.0%} CIs (DeLong); colour marks the split.")


def explanation_figures(report_dir: Path, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """Figures listed in ``explain/manifest.json``, embedded, grouped into SHAP, attention and other."""
    groups: dict[str, list[dict[str, Any]]] = {"shap": [], "attention": [], "other": []}
    problems: list[str] = []
    if manifest is None:
        return {"computed": False, **groups, "problems": problems, "notes": []}
    base = (report_dir / "explain").resolve()
    for i, item in enumerate(manifest.get("figures", [])):
        rel = str(item.get("path", ""))
        path = (base / rel).resolve()
        kind = str(item.get("kind", ""))
        if not path.is_relative_to(base):
            problems.append(f"explain/manifest.json figures[{i}]: path {rel!r} leaves the explain folder; skipped")
            continue
        mime = EXPLAIN_TYPES.get(path.suffix.lower())
        if mime is None or not path.is_file():
            problems.append(f"explain/manifest.json figures[{i}]: {rel!r} is missing or not PNG/JPEG/SVG; skipped")
            continue
        uri = f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        low = kind.lower()
        group = ("shap" if low.startswith("shap") else
                 "attention" if any(w in low for w in ("attention", "heatmap", "tiles")) else "other")
        groups[group].append({
            "id": f"fig-explain-{i}", "uri": uri, "model": item.get("model", ""), "kind": kind,
            "patient": item.get("patient_id") or "", "caption": item.get("caption", ""),
            "alt": f"{kind} of {item.get('model', '')}" + (f" for {item['patient_id']}" if item.get("patient_id") else ""),
        })
    notes = [str(n) for n in manifest.get("notes", [])] if isinstance(manifest.get("notes"), list) else []
    return {"computed": True, **groups, "problems": problems, "notes": notes}


BUDGET_WORDS = MappingProxyType({
    "max_rows": "up to {} held-out patients explained per model (a seeded sample above)",
    "background": "background: a k-means summary of the training patients in {} weighted centres",
    "nsamples": "{} coalitions per patient (Kernel SHAP)",
    "max_units": "image blocks as single players above {} inputs",
    "max_background": "background: up to {} training patients",
    "top_k": "{} tiles per gallery row",
})


def explain_budget(manifest: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The sample budget each model's explanations were made with (``explain/manifest.json``), one row per budget."""
    if not isinstance(manifest, Mapping) or not isinstance(manifest.get("models"), Mapping):
        return []
    groups: dict[str, list[str]] = {}
    for model, rec in manifest["models"].items():
        budget = rec.get("budget") if isinstance(rec, Mapping) else None
        if not isinstance(budget, Mapping) or not budget:
            continue
        method = {"kernel": "Kernel SHAP", "tree": "tree SHAP", "linear": "linear SHAP",
                  "attention": "attention"}.get(str(rec.get("explainer", "")), str(rec.get("explainer", "")))
        parts = [words.format(budget[k]) for k, words in BUDGET_WORDS.items() if k in budget]
        groups.setdefault(f"{method}: {'; '.join(parts)}", []).append(str(model))
    return [{"models": ", ".join(models), "text": text} for text, models in groups.items()]


def decision_overlays(models: Sequence[str], scored: pl.DataFrame, settings: Mapping[str, Any],
                      curves: Mapping[str, Any] | None = None) -> list[Embedded]:
    """One decision-curve figure per split: every model, treat-all and treat-none, on the patients that all
    the split's models scored (so that treat-all is one line). With ``curves`` (curves.json), only the
    models validation drew a decision curve for on that split (predicted probabilities of the binary outcome)."""
    from analytics.stats.decision import net_benefit

    start, stop, step = (float(x) for x in settings.get("dca_thresholds", (0.05, 0.95, 0.05)))
    grid = np.round(start + step * np.arange(int(round((stop - start) / step)) + 1), 10)
    out = []
    for split in SPLITS:
        eligible = [m for m in models if curves is None or (curves.get(m) or {}).get(split, {}).get("decision")]
        part = scored.filter((pl.col("split") == split) & pl.col("model").is_in(eligible))
        present = [m for m in eligible if m in set(part.get_column("model").to_list())]
        if not present:
            continue
        wide = (part.pivot(on="model", index=["patient_id", "label"], values="score")
                .drop_nulls(subset=present).sort("patient_id"))
        y = wide.get_column("label").to_numpy().astype(int)
        if wide.height < 3 or len(np.unique(y)) < 2:
            continue
        lines, base = [], None
        for model in present:
            nb = net_benefit(y, wide.get_column(model).to_numpy().astype(float), grid, n_boot=0)
            base = nb if base is None else base
            lines.append((model, nb.get_column("net_benefit").to_numpy()))
        assert base is not None
        note = f"{wide.height} patients scored by all {len(present)} models, {int(y.sum())} events"
        png = figures.decision_split_figure(split, base.get_column("threshold").to_numpy(), lines,
                                            base.get_column("treat_all").to_numpy(),
                                            base.get_column("treat_none").to_numpy(), note)
        out.append(Embedded(f"fig-decision-split-{split}", figures.data_uri(png), f"Decision curves of all models, {SPLIT_NAMES[split]}",
                            f"All models on the {SPLIT_NAMES[split]} split: net benefit over threshold probabilities "
                            f"against treating all and treating none (Vickers & Elkin 2006), on the {note}."))
    return out


# --- subgroups ---------------------------------------------------------------------------------------------------


def subgroup_blocks(models: Sequence[str], validation: Validation, level: float) -> list[dict[str, Any]]:
    """Per split: a table of every model's n, events, AUC (DeLong CI) and calibration-in-the-large per
    subgroup, and a forest plot of the AUCs. Cells carry ``model|subgroup:<variable>=<group>/<split>|<measure>``."""
    out = []
    rank = {m: i for i, m in enumerate(models)}
    for split in SPLITS:
        rows = sorted((g for g in validation.subgroups if g.split == split and g.model in rank),
                      key=lambda g: rank[g.model])  # stable: subgroup order as validated
        if not rows:
            continue
        table, forest_rows = [], []
        for g in rows:
            key = f"{g.model}|subgroup:{g.variable}={g.group}/{split}"
            table.append({"model": g.model, "variable": g.variable, "group": g.group,
                          "n": Cell(str(g.n), f"{key}|n"), "events": Cell(str(g.n_positive), f"{key}|n_positive"),
                          "auc": noted(Cell(fmt_interval(g.auc), f"{key}|auc"), _few_classes(g.n, g.n_positive)),
                          "in_the_large": noted(Cell(fmt(g.in_the_large), f"{key}|in_the_large"),
                                                _few_classes(g.n, g.n_positive))})
            if g.auc is not None and g.auc.estimate is not None:
                forest_rows.append(figures.SubgroupRow(f"{g.model} · {g.variable} {g.group}", g.auc.estimate, g.auc.low,
                                                       g.auc.high, f"{g.n} / {g.n_positive}",
                                                       figures.model_color(rank[g.model])))
        figure = None
        if forest_rows:
            png = figures.subgroup_forest_figure(f"AUC by subgroup · {SPLIT_NAMES[split]}", forest_rows, level)
            figure = Embedded(f"fig-subgroups-{split}", figures.data_uri(png), f"AUC by subgroup, {SPLIT_NAMES[split]}",
                              f"AUC with {level:.0%} DeLong CIs per model and subgroup on the {SPLIT_NAMES[split]} split; "
                              "right margin: patients / events; subgroups with one class have no AUC.")
        out.append({"split": split, "split_name": SPLIT_NAMES[split], "rows": table, "figure": figure})
    return out


# --- fitted models: sample size, nomograms --------------------------------------------------------------------------

def _loaded(kind: Any) -> bool:
    """Whether the report loads a ``kind`` model's saved artefact (a pipeline or a meta-learner)."""
    traits = traits_of(kind) if isinstance(kind, str) else None
    return traits is not None and traits.saved in ("pipeline", "meta")


def load_fitted(study: StudyConfig, models: Sequence[str], manifests: Mapping[str, FitRecord]) -> dict[str, Any]:
    """The saved models of ``models`` whose manifests exist and whose kind the report reads; a folder that
    cannot be loaded is left out (logged)."""
    from analytics.models.persist import ArtifactError, LegacyModelError, PersistError, load_model

    out = {}
    for name in models:
        record = manifests.get(name)
        if record is None or not _loaded(record.kind):
            continue
        try:
            out[name] = load_model(study.models_dir / name, study.store_path)
        except (ArtifactError, LegacyModelError):
            raise  # a changed or pickled model file is never passed over in silence
        except (PersistError, OSError, ValueError, KeyError) as exc:
            log.info("report: model %s not loaded: %s", name, exc)
    return out


def parameter_count(fitted: Any) -> tuple[int | None, str]:
    """Candidate predictor parameters of a fitted model (:func:`analytics.models.persist.parameter_count`)."""
    from analytics.models.persist import parameter_count as count

    return count(fitted)


def sample_size_rows(models: Sequence[str], validation: Validation, fitted: Mapping[str, Any],
                     manifests: Mapping[str, FitRecord]) -> list[dict[str, Any]]:
    """Each model's training patients and events against the Riley et al. (BMJ 2020) minimum sample size:
    prevalence from the training patients, R²cs anticipated from the out-of-fold AUC (Riley et al. 2021),
    parameters after one-hot encoding and PCA. ``short`` flags a training set below the required n."""
    from analytics.stats import sample_size

    out = []
    for name in models:
        record = manifests.get(name)
        kind = record.kind if record is not None else "–"
        sm = validation.models[name].splits.get("train") if name in validation.models else None
        row: dict[str, Any] = {"model": name, "kind": kind, "n": "–", "events": "–", "parameters": "–", "auc": "–",
                               "r2": "–", "c1": "–", "c2": "–", "c3": "–", "required": "–", "short": False, "note": ""}
        out.append(row)
        traits = traits_of(kind)  # None: a kind this version does not know
        if traits is not None and not traits.trainable:
            row["note"] = "averages its members' scores: no parameters of its own"
            continue
        if traits is not None and traits.survival:
            row["note"] = "a time-to-event model: these criteria are for a binary outcome"
            continue
        if traits is not None and traits.bags:
            row["note"] = "a neural network on instance bags: the criteria are for regression models"
        if sm is None:
            row["note"] = row["note"] or "no training predictions"
            continue
        row["n"], row["events"] = str(sm.n), str(sm.n_positive)
        auc = sm.get("auc")
        row["auc"] = fmt(_estimate(auc))
        if name not in fitted:
            row["note"] = row["note"] or "no saved model to count parameters from"
            continue
        p, how = parameter_count(fitted[name])
        if p is None:
            row["note"] = how
            continue
        row["parameters"] = f"{p}"
        row["parameters_how"] = how
        if sm.n == 0 or not 0 < sm.n_positive < sm.n or auc is None or auc.estimate is None:
            row["note"] = "needs both classes and an out-of-fold AUC in the training patients"
            continue
        try:
            req = sample_size(sm.n_positive / sm.n, p, auc=auc.estimate)
        except ValueError as exc:
            row["note"] = f"not computable: {exc}"
            continue
        row.update(r2=fmt(req.r2_cs), c1=str(req.criterion_1), c2=str(req.criterion_2), c3=str(req.criterion_3),
                   required=str(req.n), short=sm.n < req.n)
        if traits is not None and traits.flexible:
            row["note"] = "criteria derived for regression models: a lower bound for a flexible learner"
    return out


def nomogram_figures(study: StudyConfig, models: Sequence[str], fitted: Mapping[str, Any], cohort: Any,
                     predictions: pl.DataFrame, variables: pl.DataFrame) -> tuple[list[Embedded], list[str]]:
    """A nomogram of each fitted logistic model on clinical variables and scores (axes over the training
    patients' values, in the variables' units), and why a logistic model has none."""
    from analytics.models.data import SCORE_PREFIX, assemble, input_models
    from analytics.nomogram import NomogramError, nomogram, nomogram_figure

    out: list[Embedded] = []
    notes: list[str] = []
    units = {r["name"]: (r.get("label") or r["name"]) + (f" ({r['unit']})" if r.get("unit") else "")
             for r in variables.to_dicts()}
    for name in models:
        fm = fitted.get(name)
        if fm is None or not fm.spec.traits.nomogram:
            continue
        if fm.spec.features:
            notes.append(f"{name}: no nomogram (image features have no per-variable scale)")
            continue
        if cohort is None:
            notes.append(f"{name}: no nomogram (the cohort could not be loaded)")
            continue
        inputs = input_models(fm.spec)
        scores = {m: dict(zip(rows.get_column("patient_id").to_list(), rows.get_column("score").to_list()))
                  for m in inputs for rows in [predictions.filter(pl.col("model") == m)]}
        try:
            assembled = assemble(fm.spec, cohort, scores)
            train = (np.asarray(cohort.split) == "train") & assembled.available
            table = assembled.data.table.loc[train].reset_index(drop=True)
            labels = {c: units.get(c, c) for c in table.columns}
            labels.update({c: f"Score of {c.removeprefix(SCORE_PREFIX)}" for c in table.columns if c.startswith(SCORE_PREFIX)})
            nom = nomogram(name, fm.learner.pipeline_, table, labels)
        except (NomogramError, CohortlabError, ValueError, KeyError) as exc:
            notes.append(f"{name}: no nomogram ({exc})")
            continue
        out.append(Embedded(f"fig-nomogram-{name}", figures.data_uri(nomogram_figure(nom, f"{name}: nomogram")),
                            f"Nomogram of {name}",
                            f"{name}: nomogram of the final logistic model. Read each predictor's points on the top "
                            "scale, add them, and read the predicted risk below the total; coefficients are "
                            "back-transformed from the standardised scale to the variables' units, axes span the "
                            "training patients' values, a missing value counts as the training median (most "
                            "frequent level)."))
    return out, notes


def harmonization_blocks(study: StudyConfig, models: Sequence[str]) -> list[dict[str, Any]]:
    """Per ComBat-harmonised model: the centre effect before and after on a PCA scatter, and what was fitted.

    Read from the model folder's ``harmonize.json`` (written at fit time); a model without one is left out.
    """
    from analytics.models.harmonize import centre_note
    from analytics.models.persist import read_harmonization

    out = []
    for name in models:
        rec = read_harmonization(study.models_dir / name, study.store_path)
        if not rec or "pca" not in rec:
            continue
        pca, r2 = rec["pca"], rec.get("centre_r2", {})
        panels = [figures.HarmonizationPanel(
            f"{stage.capitalize()} ComBat",
            np.column_stack([pca[f"{stage}_pc1"], pca[f"{stage}_pc2"]]), pca.get(f"{stage}_variance", []),
            float(r2.get(stage, {}).get("all", float("nan")))) for stage in ("before", "after")]
        png = figures.harmonization_figure(f"{name}: centre effect on the image features", pca["center"],
                                           pca["split"], panels)
        centres = ", ".join(f"{c} ({n})" for c, n in rec.get("training_centres", {}).items())
        fig = Embedded(f"fig-harmonization-{name}", figures.data_uri(png), f"Centre effect before and after ComBat, {name}",
                       f"{name}: first two principal components of the image features (PCA fitted on the training "
                       "patients, features standardised by their training means and SDs), before and after ComBat; "
                       "colour: centre, shape: split. Centre R²: the mean share of a feature's variance explained "
                       "by the centre, over all patients shown.")
        out.append({"model": name, "figure": fig, "method": rec.get("method", "ComBat"), "centres": centres,
                    "covariates": ", ".join(rec.get("covariates", [])) or "none",
                    "r2_before": fmt(r2.get("before", {}).get("all")), "r2_after": fmt(r2.get("after", {}).get("all")),
                    "small": ", ".join(f"{c} ({n})" for c, n in rec.get("small_centres", {}).items()),
                    "constant": len(rec.get("constant_features", [])), "features": rec.get("features"),
                    "new_centres": centre_note(rec)})
    return out


# --- assembling -------------------------------------------------------------------------------------------------------


def build_context(src: Sources, progress: bool = True) -> dict[str, Any]:
    """Every table, figure and text of the report, from the sources of one run."""
    study = src.study
    validation = src.validation
    models = _model_names(study, validation, src.predictions)
    frame = src.cohort.frame if src.cohort is not None else None
    ctx: dict[str, Any] = {
        "title": study.report.title or f"{study.study.name}: validation report",
        "study": study.study, "sections": SECTIONS, "warnings": list(src.warnings),
        "metrics_present": validation is not None, "models": models,
        "code_version": (validation.code_version if validation is not None else None) or store.code_version(),
        "inputs_digest": validation.inputs_digest if validation is not None else "",
        "settings": dict(validation.settings) if validation is not None else {},
        "notes": list(validation.notes) if validation is not None else [],
    }
    # study and data
    ctx["flow"] = flow(src.store_patients, frame, src.predictions, models,
                       survival=any(src.study.endpoint(m) == "survival" for m in src.study.models)
                       or src.study.study.endpoint == "survival", endpoint=src.study.study.endpoint)
    ctx["cohort_error"] = src.cohort_error
    if src.cohort is not None:
        prov = src.cohort.provenance()
        ctx["cohort"] = {"name": prov["cohort"], "file": Path(prov["file"]).name, "sql": src.cohort.sql.strip(),
                         "params": _compact(prov["params"]) if prov["params"] else "none",
                         "split": _split_text(study), "hash": prov["hash"], "n": len(src.cohort)}
        ctx["table1"] = Markup(src.cohort.table1().to_html())
        ctx["missing"] = missing_data(frame, src.variables)
        ctx["missing_splits"] = [SPLIT_NAMES[s] for s in SPLITS if (frame.get_column("split") == s).any()]
    else:
        ctx["cohort"] = None
    # feature sets, models
    fs_rows = feature_set_rows(src.feature_sets, study, src.coverage, len(src.cohort) if src.cohort is not None else None)
    ctx["feature_sets"] = fs_rows
    ctx["random_sets"] = [r["name"] for r in fs_rows if r["random"]]
    ctx["model_rows"] = model_rows(study, models, validation, src.manifests)
    ctx["harmonization"] = harmonization_blocks(study, models)
    # binary models' figures and summaries; survival models (scores are risks) have the survival section
    binary = [m for m in models if not any(s.name == m and study.endpoint(s) == "survival" for s in study.models)]
    fitted = load_fitted(study, binary, src.manifests)
    ctx["sample_size"] = sample_size_rows(binary, validation, fitted, src.manifests) if validation is not None else []
    ctx["nomograms"], ctx["nomogram_notes"] = nomogram_figures(study, binary, fitted, src.cohort, src.predictions,
                                                                src.variables)
    # performance and figures
    scored = _scored(src.predictions, frame)
    level = validation.level if validation is not None else float(study.validation.level)
    ctx["level"] = level
    if validation is not None:
        ctx["performance"] = performance(models, validation, training_estimates(src.manifests))
        ctx["roc_overview"], ctx["roc"] = roc_figures(binary, scored, validation, study.study.seed, progress)
        ctx["calibration"] = calibration_figures(binary, src.curves, scored, validation)
        ctx["decision"] = decision_figures(binary, src.curves, level)
        ctx["decision_overlays"] = decision_overlays(binary, scored, validation.settings, src.curves)
        ctx["subgroups"] = subgroup_blocks(binary, validation, level)
        ctx["comparisons"] = comparisons(validation)
        ctx["added_value"] = added_value_blocks(validation)
        ctx["forest"] = forest(ctx["comparisons"], level)
        time_label = _time_label(src.variables, frame)
        ctx["survival"] = survival_blocks(models, src.curves, validation, time_label)
        ctx["horizons"] = horizon_blocks(models, src.curves)
    else:
        ctx.update(performance=None, roc_overview=[], roc=[], calibration=[], decision=[], decision_overlays=[],
                   subgroups=[], comparisons=[], added_value=[],
                   forest=None, survival=[], horizons=[])
    enabled = study.explain.enabled
    ctx["explain"] = explanation_figures(study.report_dir, src.explain if enabled else None)
    ctx["explain"].update(enabled=enabled, budget=explain_budget(src.explain) if enabled else [])
    ctx["failed"] = src.failed.to_dicts()
    ctx["tripod"] = tripod.checklist(_facts(src, models, ctx))
    return ctx


def _split_text(study: StudyConfig) -> str:
    s = study.split
    if s.column:
        return f"taken from the cohort column '{s.column}'"
    ext = ", ".join(s.external_centers) or "none"
    return (f"external = patients of centre(s) {ext}; internal = a stratified, seeded (seed {s.seed}) hold-out of "
            f"{s.internal_fraction:.0%} of the development centres; train = the rest (patient-level)")


def _time_label(variables: pl.DataFrame, frame: pl.DataFrame | None) -> str:
    for r in variables.to_dicts():
        if r.get("role") == "time":
            unit = f" ({r['unit']})" if r.get("unit") else ""
            return f"{r.get('label') or r['name']}{unit}"
    return "Time"


def _facts(src: Sources, models: Sequence[str], ctx: Mapping[str, Any]) -> tripod.RunFacts:
    """What the TRIPOD+AI items can be filled with from this run."""
    study = src.study
    validation = src.validation
    frame = src.cohort.frame if src.cohort is not None else None
    centers = ctx["flow"]["centers"]
    per_analysis = []
    for model in models:
        splits = validation.models[model].splits if validation is not None and model in validation.models else {}
        for split in SPLITS:
            if split in splits:
                sm = splits[split]
                per_analysis.append(f"{model}/{split}: {sm.n} patients, {sm.n_positive} events")
    missing_vars = [f"{r['label']} {r['cohort']}" for r in ctx.get("missing", []) if not r["cohort"].startswith("0 ")]
    fs_text = "; ".join(
        f"{r['name']} ({r['modality']}, {r['encoder']}, weights: {r['weights']}, {r['resolution']})" for r in ctx["feature_sets"])
    model_text = "; ".join(
        f"{r['name']}: {r['kind']} on {'; '.join(r['inputs'])}; tuning {r['grid']}"
        + (f"; left out {r['dropped']}" if r["dropped"] else "") for r in ctx["model_rows"])
    thr = sorted({f"{r['threshold_rule']} ({r['threshold_on']})" for r in ctx["model_rows"] if r["threshold_rule"] != "–"})
    training = {m: t for m, t in training_estimates(src.manifests).items() if m in models}
    excluded = []
    if frame is not None:
        rows = ctx["flow"]["rows"]
        excluded.append(f"{rows[0]['total'] - rows[1]['total']} not selected by the cohort SQL")
        excluded.append(f"{rows[1]['total'] - rows[2]['total']} without an outcome")
        for r in rows[3:]:
            excluded.append(f"{rows[2]['total'] - r['total']} without the inputs of {r['model']}")
    return tripod.RunFacts(
        centers=tuple(centers), external_centers=tuple(study.split.external_centers),
        cohort=(ctx["cohort"] or {}).get("name"), cohort_params=(ctx["cohort"] or {}).get("params"),
        n_store=ctx["flow"]["rows"][0]["total"],
        n_cohort=len(src.cohort) if src.cohort is not None else None,
        n_labelled=int(frame.get_column("label").is_not_null().sum()) if frame is not None else None,
        n_events=int(frame.get_column("label").sum() or 0) if frame is not None else None,
        split_rule=(ctx["cohort"] or {}).get("split") or _split_text(study),
        feature_sets=fs_text, random_weights=tuple(ctx["random_sets"]), models=model_text,
        threshold_rules=tuple(thr), per_analysis=tuple(per_analysis), missing=tuple(missing_vars),
        excluded=tuple(excluded), has_metrics=validation is not None,
        has_centers=bool(ctx["performance"] and ctx["performance"]["centers"]),
        has_survival=bool(ctx["survival"]), has_survival_models=bool(ctx.get("horizons")),
        has_comparisons=bool(ctx["comparisons"]),
        has_added_value=bool(ctx["added_value"]),
        code_version=ctx["code_version"], manifests=tuple(sorted(src.manifests)),
        n_failed=len(ctx["failed"]), has_table1=src.cohort is not None, class_weights=tuple(class_weights(src.manifests)),
        level=ctx["level"],
        n_boot=int((validation.settings if validation is not None else {}).get("n_boot", study.validation.n_boot)),
        nested=tuple(m for m, t in training.items() if not t["optimistic"]),
        not_nested=tuple(m for m, t in training.items() if t["optimistic"]),
        subgroups=tuple(dict.fromkeys(g.variable for g in validation.subgroups)) if validation is not None else (),
        sample_size=tuple(f"{r['model']}: {r['n']} training patients, {r['required']} required"
                          + (" (below the requirement)" if r["short"] else "")
                          for r in ctx.get("sample_size", []) if r["required"] != "–"),
    )


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (autoescaped, strict about undefined names)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["fmt_p"] = fmt_p
    return env


def render(ctx: Mapping[str, Any]) -> str:
    """The report's HTML for a context from :func:`build_context`."""
    return environment().get_template("report.html.j2").render(**ctx)


# --- writing, or not when nothing changed ----------------------------------------------------------------------------

DIGEST_MARK = "<!-- report inputs "  # the last line of index.html: the digest of what it was rendered from
_DIGEST_LINE = re.compile(r"<!-- report inputs ([0-9a-f]{64}) -->\s*$")


@dataclass(frozen=True)
class ReportOutcome:
    """The report file, and whether it was left as it was (its inputs had not changed)."""

    path: Path
    skipped: bool = False

    def __str__(self) -> str:
        return f"{self.path}" + (" (unchanged: same inputs as when it was rendered; not rendered again)"
                                 if self.skipped else "")


def _renderer_files() -> list[Path]:
    """The code and templates that turn the sources into HTML (a change to any of them re-renders)."""
    package = Path(__file__).resolve().parent
    return sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".css"))


def inputs_digest(src: Sources) -> str:
    """sha256 of everything :func:`build_context` reads: files, store tables, cohort, settings and code.

    The study folder's own location is left out: a moved study whose
    contents are unchanged is not rendered again.
    """
    from importlib.metadata import version

    study = src.study
    h = hashlib.sha256()

    def add(label: str, data: bytes | str) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        h.update(f"{label}:{len(raw)}:".encode())
        h.update(raw)

    add("study", study.model_dump_json(exclude={"root"}))
    for name in ("metrics.json", "curves.json", "explain/manifest.json"):
        path = study.report_dir / name
        add(name, path.read_bytes() if path.is_file() else b"-")
    for i, item in enumerate((src.explain or {}).get("figures", []) if isinstance(src.explain, dict) else []):
        path = study.report_dir / "explain" / str(item.get("path", "")) if isinstance(item, dict) else None
        add(f"figure {i}", path.read_bytes() if path is not None and path.is_file() else b"-")
    for label, frame in (("predictions", src.predictions), ("patients", src.store_patients),
                         ("feature_sets", src.feature_sets), ("failed", src.failed), ("variables", src.variables)):
        add(label, frame.write_ndjson())
    add("coverage", json.dumps(src.coverage, sort_keys=True))
    add("cohort", src.cohort.hash if src.cohort is not None else f"none: {src.cohort_error}")
    add("manifests", json.dumps({k: r.to_dict() for k, r in src.manifests.items()}, sort_keys=True, default=str))
    add("warnings", "\n".join(src.warnings))
    add("code", store.code_version())
    for path in _renderer_files():
        add(str(path.relative_to(TEMPLATES.parent)), path.read_bytes())
    for lib in ("jinja2", "matplotlib", "numpy", "polars"):
        add(lib, version(lib))
    return h.hexdigest()


def rendered_digest(path: Path) -> str | None:
    """The inputs digest recorded at the end of an existing report, else None."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 200))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = _DIGEST_LINE.search(tail)
    return found.group(1) if found else None


def write_report(study: StudyConfig, force: bool = False, progress: bool = True) -> ReportOutcome:
    """Write ``<report_dir>/index.html`` for ``study``, unless the existing one was rendered from the same inputs.

    The file is written to a temporary name and renamed when complete; its
    last line records :func:`inputs_digest`, which the next call compares
    (``force`` renders regardless).
    """
    src = read_sources(study)
    for w in src.warnings:
        log.warning("%s", w)
    target = study.report_dir / "index.html"
    atomic.remove_stale_temporaries(study.report_dir)
    digest = inputs_digest(src)
    if not force and rendered_digest(target) == digest:
        log.info("report unchanged (same inputs): %s", target)
        return ReportOutcome(target, skipped=True)
    html = render(build_context(src, progress=progress)) + f"{DIGEST_MARK}{digest} -->\n"
    atomic.write_text(target, html)
    log.info("report written: %s (%d bytes)", target, len(html.encode("utf-8")))
    return ReportOutcome(target)
