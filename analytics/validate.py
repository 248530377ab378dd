"""Validation of fitted models: every metric with its CI, per model and split.

Reads the ``predictions`` table written by ``fit`` and the cohort's outcomes;
writes the ``metrics`` table, ``metrics.csv`` / ``metrics.json`` and
``curves.json`` (ROC, calibration, decision and survival curves for the
report) into the report folder.

Rules kept here:

* The classification threshold is chosen once, on the training patients'
  out-of-fold scores, by ``[validation] threshold_rule``; the same number is
  applied to the internal and external splits (never re-optimised on a test set).
* Survival risk groups are cut at quantiles of the training scores, then applied
  to every split.
* Same predictions and settings give byte-identical files (sorted keys, fixed seeds).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from analytics import stats
from analytics.cohort import load_cohort
from pipeline import atomic, store
from pipeline.config import Study

log = logging.getLogger("cohortlab.validate")


class ValidateError(ValueError):
    """Metrics that cannot be computed as configured (no predictions, or models without them)."""


SPLIT_ORDER = ("train", "internal", "external")
BINARY = ("sensitivity", "specificity", "accuracy", "ppv", "npv", "f1")
# calibration measures kept in metrics.json (names as stats.calibration), and how each is computed
CALIBRATION = {
    "in_the_large": "calibration-in-the-large: intercept of logit(y) ~ offset(logit(p)), slope fixed at 1",
    "recalibration_intercept": "logistic recalibration logit(y) ~ a + b logit(p): a (rms::val.prob Intercept)",
    "recalibration_slope": "logistic recalibration logit(y) ~ a + b logit(p): b (rms::val.prob Slope)",
    "brier": "mean squared error",
    "ici": "loess (Austin & Steyerberg)",
    "e50": "loess (Austin & Steyerberg)",
    "e90": "loess (Austin & Steyerberg)",
}


@dataclass
class ValidateResult:
    report_dir: Path
    skipped: bool = False
    models: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # partial validation: what was not validated, and why

    def __str__(self) -> str:
        head = f"metrics: {self.report_dir / 'metrics.json'}"
        partial = [f"left out: {x}" for x in self.left_out]
        if self.skipped:
            return "\n".join([head + " (up to date; nothing recomputed)", *partial])
        return "\n".join([head, *self.headline, *partial, *(f"note: {n}" for n in self.notes)])


# --- helpers -------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe and stable: NaN -> None, numpy scalars -> Python, floats rounded to 12 digits."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if not math.isfinite(f) else float(f"{f:.12g}")
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _interval(iv: stats.Interval) -> dict[str, Any]:
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "method": iv.method, "level": iv.level}


def _safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A metric that cannot be computed on this split (one class, too few events) is left out with a note.

    Numerical warnings (e.g. bootstrap resamples that lacked a class) go to the
    log rather than the console.
    """
    name = getattr(fn, "__name__", str(fn))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(*args, **kwargs), None
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            out = None, f"{name}: {exc}"
    for w in caught:
        log.info("%s: %s", name, w.message)
    return out


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
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    v = study.validation
    out: dict[str, Any] = {"n": int(len(y)), "n_positive": int(y.sum())}
    curves: dict[str, Any] = {}
    notes: list[str] = []
    if len(np.unique(y)) < 2:
        notes.append("only one class: AUC, calibration and thresholds metrics not computed")
        return out, curves, notes
    delong, note = _safe(stats.auc_ci, y, score, method="delong", level=v.level)
    if delong is not None:
        out["auc"] = _interval(delong)
    else:
        out["auc"] = {"estimate": stats.auc(y, score), "low": None, "high": None, "method": "no CI", "level": v.level}
        notes.append(f"AUC without a CI ({note})")
    if v.n_boot > 0:
        boot, note = _safe(stats.auc_ci, y, score, method="bootstrap", level=v.level, n_boot=v.n_boot, seed=seed)
        if boot is not None:
            out["auc_bootstrap"] = _interval(boot)
        elif note:
            notes.append(note)
    if thr is not None:
        bm, note = _safe(stats.binary_metrics, y, score, thr, level=v.level, n_boot=max(v.n_boot, 0) or 200, seed=seed)
        if bm is not None:
            for k in BINARY:
                out[k] = _interval(bm[k])
        elif note:
            notes.append(note)
    cal, note = _safe(stats.calibration, y, score)
    if cal is not None:
        out["calibration"] = {k: cal[k] for k in CALIBRATION if k in cal}
    elif note:
        notes.append(note)
    roc = stats.roc_curve(y, score)
    curves["roc"] = {
        "fpr": (1.0 - roc.get_column("specificity")).to_list(),
        "tpr": roc.get_column("sensitivity").to_list(),
        "threshold": roc.get_column("threshold").to_list(),
    }
    cc, note = _safe(stats.calibration_curve, y, score, level=v.level)
    if cc is not None:
        curves["calibration"] = cc.as_dict()
    nb, note = _safe(stats.net_benefit, y, score, _dca_grid(v.dca_thresholds), n_boot=min(v.n_boot, 500), level=v.level, seed=seed)
    if nb is not None:
        curves["decision"] = nb.to_dict(as_series=False)
    if time is not None and event is not None:
        ok = ~(np.isnan(time) | np.isnan(event))
        if ok.sum() >= 3 and event[ok].sum() >= 1:
            c, note = _safe(stats.concordance, time[ok], event[ok], score[ok], level=v.level, n_boot=v.n_boot or 200, seed=seed)
            if c is not None:
                out["c_index"] = _interval(c)
            elif note:
                notes.append(note)
            if cut is not None:
                groups = np.searchsorted(cut, score[ok], side="right")
                labels = stats.survival.group_labels(len(cut) + 1)
                km, note = _safe(stats.km_by_group, time[ok], event[ok], groups, labels={i: labels[i] for i in range(len(labels))}, level=v.level)
                if km is not None:
                    out["logrank"] = dict(km.logrank)
                    curves["km"] = km.curves.to_dict(as_series=False)
                    curves["km_summary"] = km.summary.to_dict(as_series=False)
                elif note:
                    notes.append(note)
    return out, curves, notes


def _model_metrics(
    name: str, preds: pl.DataFrame, outcomes: pl.DataFrame, study: Study
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    v = study.validation
    frame = preds.join(outcomes, on="patient_id", how="inner").filter(pl.col("label").is_not_null())
    notes: list[str] = []
    result: dict[str, Any] = {"splits": {}, "centers": {}}
    curves: dict[str, Any] = {}
    train = frame.filter(pl.col("split") == "train")
    thr: float | None = None
    cut: np.ndarray | None = None
    if train.height and train.get_column("label").n_unique() == 2:
        ytr = train.get_column("label").to_numpy().astype(int)
        str_ = train.get_column("score").to_numpy()
        thr = float(stats.threshold(ytr, str_, rule=v.threshold_rule))
        result["threshold"] = {"value": thr, "rule": v.threshold_rule, "chosen_on": "train (out-of-fold scores)"}
        cut = stats.risk_cutpoints(str_, v.risk_quantiles)
        result["risk_cutpoints"] = {"quantiles": list(v.risk_quantiles), "values": cut.tolist()}
    else:
        notes.append(f"{name}: no two-class training predictions; no threshold chosen")
    has_surv = "time" in frame.columns and "event" in frame.columns
    for i, split in enumerate(SPLIT_ORDER):
        part = frame.filter(pl.col("split") == split)
        if part.height == 0:
            continue
        y = part.get_column("label").to_numpy().astype(int)
        score = part.get_column("score").to_numpy().astype(float)
        time = part.get_column("time").cast(pl.Float64).to_numpy() if has_surv else None
        event = part.get_column("event").cast(pl.Float64).to_numpy() if has_surv else None
        m, c, n = _split_metrics(y, score, thr, study, study.study.seed + i, time, event, cut)
        result["splits"][split] = m
        curves[split] = c
        notes += [f"{name} / {split}: {x}" for x in n]
    # heterogeneity across centres, per split: training out-of-fold scores and held-out scores come from
    # different models (fold models, the final refit), so they are never pooled
    for center in sorted(frame.get_column("center").unique().drop_nulls().to_list()):
        per_split: dict[str, Any] = {}
        for split in SPLIT_ORDER:
            part = frame.filter((pl.col("center") == center) & (pl.col("split") == split))
            if part.height == 0:
                continue
            y = part.get_column("label").to_numpy().astype(int)
            score = part.get_column("score").to_numpy().astype(float)
            entry: dict[str, Any] = {"n": int(len(y)), "n_positive": int(y.sum())}
            if len(np.unique(y)) == 2:
                iv, _ = _safe(stats.auc_ci, y, score, level=v.level)
                entry["auc"] = _interval(iv) if iv is not None else {
                    "estimate": stats.auc(y, score), "low": None, "high": None, "method": "no CI", "level": v.level}
            per_split[split] = entry
        result["centers"][str(center)] = per_split
    return result, curves, notes


def _comparisons(preds: pl.DataFrame, outcomes: pl.DataFrame, study: Study, models: list[str]) -> list[dict[str, Any]]:
    """Paired DeLong comparisons of the configured pairs (all pairs when none are), among ``models``."""
    pairs = [tuple(p) for p in study.validation.compare] or list(combinations(models, 2))
    out = []
    for a, b in pairs:
        if a not in models or b not in models:
            continue  # only in a partial validation, which lists the pair as left out
        wide = (
            preds.filter(pl.col("model") == a).select("patient_id", "split", pl.col("score").alias("a"))
            .join(preds.filter(pl.col("model") == b).select("patient_id", pl.col("score").alias("b")), on="patient_id")
            .join(outcomes.select("patient_id", "label"), on="patient_id")
            .filter(pl.col("label").is_not_null())
        )
        for split in SPLIT_ORDER:
            part = wide.filter(pl.col("split") == split)
            y = part.get_column("label").to_numpy().astype(int)
            if part.height < 3 or len(np.unique(y)) < 2:
                continue
            cmp, _ = _safe(stats.compare_auc, y, part.get_column("a").to_numpy(), part.get_column("b").to_numpy(), method="delong", level=study.validation.level)
            if cmp is None:
                continue
            out.append({"a": a, "b": b, "split": split, "n": int(part.height), **cmp.as_dict()})
    return out


def _row(model: str, split: str, metric: str, estimate: Any, method: str, low: Any = None, high: Any = None,
         center: str | None = None, z: Any = None, p: Any = None) -> dict[str, Any]:
    return {"model": model, "split": split, "center": center, "metric": metric, "estimate": estimate, "low": low,
            "high": high, "z": z, "p": p, "method": method}


def _long_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """metrics.json -> one row per (model, split[, centre], metric) for metrics.csv and the store."""
    rows: list[dict[str, Any]] = []
    for model, m in metrics["models"].items():
        for split, sm in m["splits"].items():
            for key, val in sm.items():
                if isinstance(val, dict) and "estimate" in val:
                    rows.append(_row(model, split, key, val["estimate"], val["method"], val["low"], val["high"]))
                elif key == "calibration":
                    rows += [_row(model, split, f"calibration_{k}", x, CALIBRATION.get(k, "")) for k, x in val.items()]
                elif key == "logrank":
                    rows.append(_row(model, split, "logrank_p", val.get("p"), "log-rank", p=val.get("p")))
                elif key in ("n", "n_positive"):
                    rows.append(_row(model, split, key, float(val), "count"))
        if "threshold" in m:
            rows.append(_row(model, "train", "threshold", m["threshold"]["value"], m["threshold"]["rule"]))
        for center, per_split in m.get("centers", {}).items():
            for split, e in per_split.items():
                rows.append(_row(model, split, "n", float(e["n"]), "count", center=center))
                rows.append(_row(model, split, "n_positive", float(e["n_positive"]), "count", center=center))
                if "auc" in e:
                    a = e["auc"]
                    rows.append(_row(model, split, "auc", a["estimate"], a["method"], a["low"], a["high"], center=center))
    for c in metrics["comparisons"]:
        rows.append(_row(f"{c['a']} vs {c['b']}", c["split"], "auc_difference", c["difference"], "delong",
                         c["low"], c["high"], z=c.get("z"), p=c.get("p")))
    return rows


CSV_SCHEMA = {"model": pl.String, "split": pl.String, "center": pl.String, "metric": pl.String,
              "estimate": pl.Float64, "low": pl.Float64, "high": pl.Float64, "z": pl.Float64, "p": pl.Float64,
              "method": pl.String}


def metrics_csv(rows: list[dict[str, Any]]) -> str:
    """metrics.csv text: every float written in full (the shortest text that reads back as the same float)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(CSV_SCHEMA))
    for r in rows:
        writer.writerow(["" if r[c] is None else repr(float(r[c])) if t == pl.Float64 else r[c]
                         for c, t in CSV_SCHEMA.items()])
    return buf.getvalue()


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
    metrics: dict[str, Any] = {
        "study": study.study.name,
        "cohort": cohort.name,
        "cohort_hash": cohort.hash,
        "inputs_digest": digest,
        "code_version": store.code_version(),
        "settings": {**study.validation.model_dump(), "seed": study.study.seed},
        "models": {},
        "comparisons": [],
    }
    curves: dict[str, Any] = {}
    for name in tqdm(models, desc="validating", unit="model", disable=not progress, leave=False):
        m_preds = preds.filter(pl.col("model") == name)
        m, c, notes = _model_metrics(name, m_preds, outcomes, study)
        metrics["models"][name] = m
        curves[name] = c
        result.notes += notes
        for split in SPLIT_ORDER:
            auc = m["splits"].get(split, {}).get("auc")
            if auc:
                result.headline.append(f"  {name:<14} {split:<9} AUC {auc['estimate']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})")
    metrics["comparisons"] = _comparisons(preds, outcomes, study, models)
    metrics["notes"] = [f"left out of this partial validation: {x}" for x in dropped] + result.notes
    metrics = _clean(metrics)
    rows = _long_rows(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True))
    atomic.write_text(out_dir / "curves.json", json.dumps(_clean(curves), sort_keys=True))
    atomic.write_text(out_dir / "metrics.csv", metrics_csv(rows))
    # the store's metrics table is keyed by (model, split, metric) and has no z / p columns: per-centre rows
    # live in the files only, and a comparison's z and p go into its method text there
    stored = [{**r, "method": f"{r['method']} z={r['z']!r} p={r['p']!r}"} if r["z"] is not None else r
              for r in rows if r["center"] is None]
    table = pl.DataFrame(stored, schema=CSV_SCHEMA).select(
        "model", "split", "metric", "estimate", "low", "high", "method")
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
    return result
