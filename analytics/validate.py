"""Validation of fitted models: every metric with its CI, per model and split.

Reads the ``predictions`` table written by ``fit`` and the cohort's outcomes;
computes a :class:`~analytics.validation.Validation` (the measures of each split
are the table :data:`analytics.validation.MEASURES`), and writes from it the
``metrics`` table, ``metrics.csv`` / ``metrics.json`` and ``curves.json`` (ROC,
calibration, decision and survival curves for the report) into the report
folder. :func:`load_validation` reads them back.

Rules kept here:

* The classification threshold is chosen once, on the training patients'
  out-of-fold scores, by ``[validation] threshold_rule``; the same number is
  applied to the internal and external splits (never re-optimised on a test set).
* Survival risk groups are cut at quantiles of the training scores, then applied
  to every split.
* Same predictions and settings give byte-identical files (sorted keys, fixed seeds).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from analytics import stats
from analytics.cohort import load_cohort
from analytics.splits import SPLITS
from analytics.validation import (
    CenterMetrics,
    Cutpoints,
    Estimate,
    ModelMetrics,
    PairedComparison,
    SplitInputs,
    SplitMetrics,
    Threshold,
    ValidateError,
    Validation,
    clean,
    jsonable,
    measure_split,
    paired_comparisons,
    safe,
    subgroup_metrics,
)
from pipeline import atomic, store
from pipeline.config import Study

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


def inputs_digest(study: Study, preds: pl.DataFrame, outcomes: pl.DataFrame) -> str:
    """What the metrics depend on: predictions, outcomes, validation settings."""
    h = hashlib.sha256()
    h.update(preds.write_csv().encode())
    h.update(outcomes.write_csv().encode())
    h.update(study.validation.model_dump_json().encode())
    h.update(str(study.study.seed).encode())
    return h.hexdigest()


# --- one model -------------------------------------------------------------------------------


def _split_metrics(
    y: np.ndarray, score: np.ndarray, thr: float | None, study: Study, seed: int,
    time: np.ndarray | None, event: np.ndarray | None, cut: np.ndarray | None,
) -> tuple[SplitMetrics, dict[str, Any], list[str]]:
    """The measures of :data:`analytics.validation.MEASURES` on one split, its curves, and notes on what
    could not be computed."""
    v = study.validation
    inputs = SplitInputs.of(y, score, level=v.level, n_boot=v.n_boot, seed=seed, dca_thresholds=_dca_grid(v.dca_thresholds),
                            threshold=thr, time=time, event=event, cut=cut)
    metrics, curves = measure_split(inputs)
    return metrics, curves, inputs.notes


def _center_auc(y: np.ndarray, score: np.ndarray, level: float) -> Estimate:
    """DeLong AUC of one centre; the estimate alone when its variance cannot be estimated."""
    iv, _ = safe(stats.auc_ci, y, score, level=level)
    return Estimate.of(iv) if iv is not None else Estimate(clean(stats.auc(y, score)), None, None, "no CI", clean(level))


def _model_metrics(
    name: str, preds: pl.DataFrame, outcomes: pl.DataFrame, study: Study
) -> tuple[ModelMetrics, dict[str, Any], list[str]]:
    v = study.validation
    frame = preds.join(outcomes, on="patient_id", how="inner").filter(pl.col("label").is_not_null())
    notes: list[str] = []
    curves: dict[str, Any] = {}
    train = frame.filter(pl.col("split") == "train")
    thr: float | None = None
    cut: np.ndarray | None = None
    threshold: Threshold | None = None
    cutpoints: Cutpoints | None = None
    if train.height and train.get_column("label").n_unique() == 2:
        ytr = train.get_column("label").to_numpy().astype(int)
        str_ = train.get_column("score").to_numpy()
        thr = float(stats.threshold(ytr, str_, rule=v.threshold_rule))
        threshold = Threshold(clean(thr), v.threshold_rule)
        cut = stats.risk_cutpoints(str_, v.risk_quantiles)
        cutpoints = Cutpoints(tuple(clean(q) for q in v.risk_quantiles), tuple(clean(x) for x in cut))
    else:
        notes.append(f"{name}: no two-class training predictions; no threshold chosen")
    has_surv = "time" in frame.columns and "event" in frame.columns
    splits: dict[str, SplitMetrics] = {}
    for i, split in enumerate(SPLITS):
        part = frame.filter(pl.col("split") == split)
        if part.height == 0:
            continue
        y = part.get_column("label").to_numpy().astype(int)
        score = part.get_column("score").to_numpy().astype(float)
        time = part.get_column("time").cast(pl.Float64).to_numpy() if has_surv else None
        event = part.get_column("event").cast(pl.Float64).to_numpy() if has_surv else None
        m, c, n = _split_metrics(y, score, thr, study, study.study.seed + i, time, event, cut)
        splits[split] = m
        curves[split] = c
        notes += [f"{name} / {split}: {x}" for x in n]
    # heterogeneity across centres, per split: training out-of-fold scores and held-out scores come from
    # different models (fold models, the final refit), so they are never pooled
    centers: dict[str, dict[str, CenterMetrics]] = {}
    for center in sorted(frame.get_column("center").unique().drop_nulls().to_list()):
        per_split: dict[str, CenterMetrics] = {}
        for split in SPLITS:
            part = frame.filter((pl.col("center") == center) & (pl.col("split") == split))
            if part.height == 0:
                continue
            y = part.get_column("label").to_numpy().astype(int)
            score = part.get_column("score").to_numpy().astype(float)
            auc = _center_auc(y, score, v.level) if len(np.unique(y)) == 2 else None
            per_split[split] = CenterMetrics(int(len(y)), int(y.sum()), auc)
        centers[str(center)] = per_split
    return ModelMetrics(splits, centers, threshold, cutpoints), curves, notes


def _comparisons(preds: pl.DataFrame, outcomes: pl.DataFrame, study: Study, models: list[str]) -> list[PairedComparison]:
    """Paired DeLong comparisons of the configured pairs (all pairs when none are), among ``models``."""
    pairs = [tuple(p) for p in study.validation.compare] or list(combinations(models, 2))
    out = []
    for a, b in pairs:
        if a not in models or b not in models:
            continue  # only in a partial validation, which lists the pair as left out
        out += paired_comparisons(preds, outcomes, a, b, study.validation.level)
    return out


# the store's metrics table
METRICS_TABLE = {"model": pl.String, "split": pl.String, "metric": pl.String, "estimate": pl.Float64,
                 "low": pl.Float64, "high": pl.Float64, "method": pl.String}


def left_out(study: Study, present: set[str]) -> tuple[list[str], list[str]]:
    """Models of study.toml without predictions, and what leaving them out drops (one line each)."""
    missing = [m.name for m in study.models if m.name not in present]
    lines = [f"model {name}: no predictions (not fitted, or `cohortlab fit` was interrupted)" for name in missing]
    for a, b in (tuple(p) for p in study.validation.compare):
        lacking = [n for n in (a, b) if n in missing]
        if lacking:
            lines.append(f"comparison {a} vs {b}: {' and '.join(lacking)} not validated")
    return missing, lines


def validate(study: Study, force: bool = False, progress: bool = True, partial: bool = False) -> ValidateResult:
    """Compute every metric for every model and split; write files and the ``metrics`` table.

    Skips the work when ``metrics.json`` already holds metrics for the same
    predictions, outcomes and settings (unless ``force``).

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
    cohort = load_cohort(study)
    cols = ["patient_id", "label", "center", "split"] + [c for c in ("time", "event") if c in cohort.frame.columns]
    groups = study.validation.subgroups
    absent = [c for c in groups if c not in cohort.frame.columns]
    if absent:
        raise ValidateError(f"{study.root / 'study.toml'}: [validation] subgroups: no column "
                            f"{', '.join(repr(c) for c in absent)} in cohort {cohort.name!r} "
                            f"(its columns: {', '.join(cohort.frame.columns)})")
    cols += [c for c in groups if c not in cols]
    outcomes = cohort.frame.select(cols).rename({"split": "cohort_split"})
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
    curves: dict[str, Any] = {}
    for name in tqdm(models, desc="validating", unit="model", disable=not progress, leave=False):
        m_preds = preds.filter(pl.col("model") == name)
        m, c, notes = _model_metrics(name, m_preds, outcomes, study)
        models_metrics[name] = m
        curves[name] = c
        result.notes += notes
        for split in SPLITS:
            auc = m.splits[split].get("auc") if split in m.splits else None
            if auc is not None:
                result.headline.append(f"  {name:<14} {split:<9} AUC {auc.text()}")
    validation = Validation(
        study=study.study.name, cohort=cohort.name, cohort_hash=cohort.hash, inputs_digest=digest,
        code_version=store.code_version(), settings=jsonable({**study.validation.model_dump(), "seed": study.study.seed}),
        models=models_metrics, comparisons=tuple(_comparisons(preds, outcomes, study, models)),
        notes=tuple([f"left out of this partial validation: {x}" for x in dropped] + result.notes),
        subgroups=tuple(subgroup_metrics(preds, outcomes, {c: g.cuts for c, g in groups.items()},
                                         study.validation.level, models)),
        curves=jsonable(curves), predictions=preds.select("model", "patient_id", "split", "score"),
        outcomes=outcomes.select("patient_id", "label"))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_dir / "metrics.json", validation.to_dict(), indent=1)
    atomic.write_json(out_dir / "curves.json", validation.curves)
    atomic.write_text(out_dir / "metrics.csv", validation.to_csv())
    # the store's metrics table is keyed by (model, split, metric) and has no z / p columns: per-centre rows
    # live in the files only, and a comparison's z and p go into its method text there
    stored = [{"model": r["model"], "split": r["split"], "metric": r["measure"], "estimate": r["estimate"], "low": r["low"],
               "high": r["high"], "method": r["method"] if r["z"] is None else f"{r['method']} z={r['z']!r} p={r['p']!r}"}
              for r in validation.rows() if r["center"] is None]
    table = pl.DataFrame(stored, schema=METRICS_TABLE)
    con = store.connect(study.store_path)
    try:
        with store.transaction(con):
            con.execute("DELETE FROM metrics")
            con.register("_metrics_new", table.unique(subset=["model", "split", "metric"], keep="first", maintain_order=True).to_arrow())
            con.execute("INSERT INTO metrics SELECT model, split, metric, estimate, low, high, method FROM _metrics_new")
            con.unregister("_metrics_new")
    finally:
        con.close()
    result.models = models
    result.validation = validation
    return result


def load_validation(study: Study) -> Validation:
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
