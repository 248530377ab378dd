"""The report's figures: ROC curves with bootstrap bands, calibration, decision curves, Kaplan-Meier
curves, time-dependent ROC, forest plots, subgroups and the explanation figures, as embedded PNGs."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from analytics import figures
from analytics.report.cells import (
    SPLIT_NAMES,
    Cell,
    Embedded,
    estimate_value,
    few_classes,
    fmt,
    fmt_interval,
    fmt_p,
    metric_cell,
    noted,
)
from analytics.report.figure_cache import FigureCache
from analytics.splits import SPLITS
from analytics.stats.thresholds import roc_curve
from analytics.validation import PairedComparison, Validation

EXPLAIN_TYPES = MappingProxyType({".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                                  ".svg": "image/svg+xml"})


def scored_predictions(preds: pl.DataFrame, frame: pl.DataFrame | None) -> pl.DataFrame:
    if frame is None or preds.height == 0:
        return pl.DataFrame(schema={"model": pl.String, "patient_id": pl.String, "split": pl.String,
                                    "score": pl.Float64, "label": pl.Int8})
    cols = ["patient_id", "label"] + [c for c in ("time", "event") if c in frame.columns]
    return preds.join(frame.select(cols), on="patient_id", how="inner").filter(pl.col("label").is_not_null())


def _arrays(scored: pl.DataFrame, model: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    part = scored.filter((pl.col("model") == model) & (pl.col("split") == split))
    return part.get_column("label").to_numpy().astype(int), part.get_column("score").to_numpy().astype(float)


def roc_figures(models: Sequence[str], scored: pl.DataFrame, validation: Validation, seed: int,
                progress: bool = True, cache: FigureCache | None = None) -> tuple[list[Embedded], list[Embedded]]:
    """One figure per split with all models overlaid, and one figure per model with bootstrap bands (a model's
    figure, bands included, from ``cache`` when its scores, labels and settings are unchanged)."""
    cache = cache or FigureCache(None)
    settings = validation.settings
    level, n_boot = float(settings.get("level", 0.95)), int(settings.get("n_boot", 2000))
    per_model: list[Embedded] = []
    overview: dict[str, list[tuple[str, np.ndarray, np.ndarray, str]]] = {}
    for model in tqdm(models, desc="ROC figures", unit="model", disable=not progress, leave=False):
        inputs = []
        for i, split in enumerate(SPLITS):
            y, s = _arrays(scored, model, split)
            if y.size == 0 or len(np.unique(y)) < 2:
                continue
            fpr, tpr = _roc_points(validation, model, split, y, s)
            auc = validation.get(model, split, "auc")
            inputs.append((i, split, fpr, tpr, f"AUC {fmt_interval(auc)}", _band(validation, model, split, n_boot)))
            overview.setdefault(split, []).append((model, fpr, tpr, f"{model}: {fmt(estimate_value(auc))}"))

        def draw(model: str = model, inputs: list[Any] = inputs) -> bytes:
            panels = []
            for _i, split, fpr, tpr, label, band in inputs:
                sp, low, high = band if band is not None else (None, None, None)
                panels.append(figures.RocPanel(split, fpr, tpr, label, sp, low, high))
            return figures.roc_figure(f"{model}: ROC curves", panels, level)

        if inputs:
            # the curves and bands (computed by validate) are the figure's key
            png = cache.lookup(cache.key("roc_bands", model, inputs, n_boot, level), draw)
            per_model.append(Embedded(f"fig-roc-{model}", figures.data_uri(png), f"ROC curves of {model}",
                                    f"{model}: empirical ROC curves per split; shaded, the pointwise {level:.0%} "
                                    f"CI of sensitivity at fixed specificities ({n_boot} stratified bootstrap "
                                    "resamples, pROC ci.se); legend: AUC with DeLong CI."))
    overlays = [Embedded(f"fig-roc-split-{split}", figures.data_uri(cache.png(figures.roc_split_figure, split, overview[split])),
                         f"ROC curves of all models, {SPLIT_NAMES[split]}",
                         f"All models on the {SPLIT_NAMES[split]} split, each on the patients it scored "
                         "(legend: AUC, as in the performance table).")
                for split in SPLITS if split in overview]
    return overlays, per_model


def _roc_points(validation: Validation, model: str, split: str, y: np.ndarray,
                s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The empirical ROC curve (1 - specificity, sensitivity; ascending) that validate stored in curves.json, read
    rather than computed again from the scores; computed when curves.json has none (written by an older
    cohortlab) or one of other patients.

    curves.json keeps 12 significant digits; each point is a count over the negatives (positives) of ``y``, so
    the counts are recovered exactly and the points are the very floats :func:`~analytics.stats.roc_curve` gives.
    """
    stored = validation.curves.get(model, {}).get(split, {}).get("roc")
    positives = int(y.sum())
    negatives = y.size - positives
    if stored and positives and negatives:
        fpr = np.asarray(stored["fpr"], dtype=float)[::-1]
        tpr = np.asarray(stored["tpr"], dtype=float)[::-1]
        fp, tp = np.rint(fpr * negatives), np.rint(tpr * positives)
        exact_fpr, exact_tpr = 1.0 - (negatives - fp) / negatives, tp / positives
        if (fpr.size == tpr.size and np.allclose(exact_fpr, fpr, rtol=0, atol=1e-9)
                and np.allclose(exact_tpr, tpr, rtol=0, atol=1e-9)):
            return exact_fpr, exact_tpr
    roc = roc_curve(y, s)
    return 1.0 - roc.get_column("specificity").to_numpy()[::-1], roc.get_column("sensitivity").to_numpy()[::-1]


def _band(validation: Validation, model: str, split: str,
          n_boot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The ROC band validate stored in curves.json (specificity, low, high); None without a bootstrap."""
    band = validation.curves.get(model, {}).get(split, {}).get("roc_band") if n_boot > 0 else None
    if not band:
        return None
    return (np.asarray(band["specificity"], dtype=float), np.asarray(band["low"], dtype=float),
            np.asarray(band["high"], dtype=float))


def calibration_figures(models: Sequence[str], curves: Mapping[str, Any], scored: pl.DataFrame,
                        validation: Validation, cache: FigureCache | None = None) -> list[Embedded]:
    """Calibration plots per model: loess curve, binned points with Wilson CIs, prediction rug."""
    cache = cache or FigureCache(None)
    out = []
    for model in models:
        panels = []
        for split in SPLITS:
            cal = curves.get(model, {}).get(split, {}).get("calibration")
            if not cal:
                continue
            sm = cal.get("smoothed", [])
            bn = cal.get("binned", [])
            cm = {k: estimate_value(validation.get(model, split, f"calibration_{k}"))
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
            png = cache.png(figures.calibration_figure, f"{model}: calibration", panels)
            out.append(Embedded(f"fig-calibration-{model}", figures.data_uri(png), f"Calibration plots of {model}",
                              f"{model}: observed proportion against predicted probability; line, loess smoother; points, "
                              "deciles of predicted risk with Wilson CIs; ticks at the bottom, the predictions."))
    return out


def _floats(values: Sequence[Any]) -> np.ndarray:
    """A JSON list of numbers (null for undefined) as a float array with NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def decision_figures(models: Sequence[str], curves: Mapping[str, Any], level: float,
                     cache: FigureCache | None = None) -> list[Embedded]:
    """Decision curves per model and split, with the bootstrap band of the model's net benefit."""
    cache = cache or FigureCache(None)
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
            png = cache.png(figures.decision_figure, f"{model}: decision curves", panels, level)
            out.append(Embedded(f"fig-decision-{model}", figures.data_uri(png), f"Decision curves of {model}",
                              f"{model}: net benefit over threshold probabilities against treating all and treating none "
                              f"(Vickers & Elkin 2006); shaded, the bootstrap {level:.0%} CI of the model's net benefit."))
    return out


def decision_overlays(models: Sequence[str], scored: pl.DataFrame, settings: Mapping[str, Any],
                      curves: Mapping[str, Any] | None = None, cache: FigureCache | None = None) -> list[Embedded]:
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
        scoring = set(part.get_column("model").unique().to_list())  # the models, not one value per patient
        present = [m for m in eligible if m in scoring]
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
        png = (cache or FigureCache(None)).png(figures.decision_split_figure, split, base.get_column("threshold").to_numpy(), lines,
                                            base.get_column("treat_all").to_numpy(),
                                            base.get_column("treat_none").to_numpy(), note)
        out.append(Embedded(f"fig-decision-split-{split}", figures.data_uri(png), f"Decision curves of all models, {SPLIT_NAMES[split]}",
                            f"All models on the {SPLIT_NAMES[split]} split: net benefit over threshold probabilities "
                            f"against treating all and treating none (Vickers & Elkin 2006), on the {note}."))
    return out


def km_at_risk(curve_rows: pl.DataFrame, times: np.ndarray) -> list[int]:
    """Numbers at risk at ``times`` from a group's KM table (lifelines' at-risk counts at each observed time)."""
    t = curve_rows.get_column("time").to_numpy()
    n = curve_rows.get_column("at_risk").to_numpy()
    idx = np.searchsorted(t, times, side="left")
    return [int(n[i]) if i < t.size else 0 for i in idx]


def survival_blocks(models: Sequence[str], curves: Mapping[str, Any], validation: Validation,
                    time_label: str, cache: FigureCache | None = None) -> list[dict[str, Any]]:
    """Per model and split: KM figure with numbers at risk, group summary and log-rank p."""
    cache = cache or FigureCache(None)
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
            times = figures.at_risk_times(float(cast(float, km.get_column("time").max())))
            for g in names:
                rows = km.filter(pl.col("group") == g).sort("time")
                groups.append(figures.KMGroup(g, rows.get_column("time").to_numpy(), rows.get_column("survival").to_numpy(),
                                              rows.get_column("low").to_numpy(), rows.get_column("high").to_numpy()))
                at_risk[g] = km_at_risk(rows, times)
            sm = validation.models[model].splits.get(split) if model in validation.models else None
            p_cell = metric_cell(model, split, "logrank_p", sm, validation)
            fig = cache.png(figures.km_figure, f"{model} · {SPLIT_NAMES[split]}", groups, times, at_risk,
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


def horizon_blocks(models: Sequence[str], curves: Mapping[str, Any],
                   cache: FigureCache | None = None) -> list[dict[str, Any]]:
    """Per survival model and split: time-dependent ROC and calibration at each horizon, one figure."""
    cache = cache or FigureCache(None)
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
            fig = cache.png(figures.horizon_figure, f"{model} · {SPLIT_NAMES[split]}", rocs, cal, smooth, decision)
            # a competing-risk model's observed risk is the Aalen-Johansen cumulative incidence of the cause
            aj = any((h.get("calibration_at") or {}).get("observed_by") == "Aalen-Johansen" for h in per.values())
            caption = (f"{model}, {SPLIT_NAMES[split]}: mean predicted cumulative incidence of the cause against the "
                       "Aalen-Johansen cumulative incidence by t per tenth of predicted risk (points; competing events "
                       "are events, not censoring) and the smooth pseudo-observation calibration curve (lines); the "
                       "decision curve at the main horizon (Aalen-Johansen risk among the treated)." if aj else
                       f"{model}, {SPLIT_NAMES[split]}: cumulative/dynamic ROC curves at each horizon (cases: event by "
                       "t; controls: event-free after t; inverse-probability-of-censoring weights); mean predicted "
                       "risk against the Kaplan-Meier risk by t per tenth of predicted risk (points) and the smooth "
                       "calibration curve (lines); the decision curve at the main horizon (Kaplan-Meier risk among "
                       "the treated).")
            out.append({"model": model, "split": split, "figure": Embedded(
                f"fig-horizons-{model}-{split}", figures.data_uri(fig),
                f"Time-dependent ROC and calibration of {model}, {split}", caption)})
    return out


def forest(rows: Sequence[Mapping[str, Any]], level: float, cache: FigureCache | None = None) -> Embedded | None:
    """Forest plot of the paired AUC differences."""
    raw: list[tuple[Mapping[str, Any], PairedComparison]] = [(r, r["raw"]) for r in rows]
    items = [figures.ForestRow(f"{r['a']} − {r['b']}", r["split"], c.difference, c.low, c.high, fmt_p(c.p))
             for r, c in raw if c.difference is not None and c.low is not None and c.high is not None]
    if not items:
        return None
    png = (cache or FigureCache(None)).png(figures.forest_figure, items, level)
    return Embedded("fig-forest", figures.data_uri(png), "Forest plot of AUC differences",
                  f"Difference in AUC between paired models with {level:.0%} CIs (DeLong); colour marks the split.")


def subgroup_blocks(models: Sequence[str], validation: Validation, level: float,
                    cache: FigureCache | None = None) -> list[dict[str, Any]]:
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
                          "auc": noted(Cell(fmt_interval(g.auc), f"{key}|auc"), few_classes(g.n, g.n_positive)),
                          "in_the_large": noted(Cell(fmt(g.in_the_large), f"{key}|in_the_large"),
                                                few_classes(g.n, g.n_positive))})
            if g.auc is not None and g.auc.estimate is not None:
                forest_rows.append(figures.SubgroupRow(f"{g.model} · {g.variable} {g.group}", g.auc.estimate, g.auc.low,
                                                       g.auc.high, f"{g.n} / {g.n_positive}",
                                                       figures.model_color(rank[g.model])))
        figure = None
        if forest_rows:
            png = (cache or FigureCache(None)).png(figures.subgroup_forest_figure,
                                                   f"AUC by subgroup · {SPLIT_NAMES[split]}", forest_rows, level)
            figure = Embedded(f"fig-subgroups-{split}", figures.data_uri(png), f"AUC by subgroup, {SPLIT_NAMES[split]}",
                              f"AUC with {level:.0%} DeLong CIs per model and subgroup on the {SPLIT_NAMES[split]} split; "
                              "right margin: patients / events; subgroups with one class have no AUC.")
        out.append({"split": split, "split_name": SPLIT_NAMES[split], "rows": table, "figure": figure})
    return out


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


def internal_calibration_figures(models: Sequence[str], validation: Validation) -> dict[str, Embedded]:
    """The bias-corrected calibration curve of each model with internal validation (``rms::calibrate``): apparent,
    bias-corrected and ideal, with the corrected curve's mean absolute error; binary one panel, survival one per
    horizon (Kaplan-Meier groups, survival scale)."""
    out: dict[str, Embedded] = {}
    for model in models:
        im = validation.internal.get(model)
        if im is None or not im.calibration:
            continue
        panels = []
        for c in im.calibration:
            survival = c.horizon is not None
            label = f"mean absolute error {fmt(c.mae)}" + (f"\n0.9 quantile {fmt(c.q90)}" if c.q90 is not None else "")
            panels.append(figures.CorrectedCalibrationPanel(
                f"t = {c.horizon:g}" if c.horizon is not None else "training patients", _floats(c.predicted),
                _floats(c.apparent), _floats(c.corrected), f"{label}\n{im.label}, {c.used} used", survival))
        png = figures.corrected_calibration_figure(f"{model}: bias-corrected calibration", panels)
        what = ("observed (Kaplan–Meier) against mean predicted survival per risk group at each horizon"
                if im.endpoint == "survival" else "observed proportion (lowess) against predicted probability")
        out[model] = Embedded(
            f"fig-internal-calibration-{model}", figures.data_uri(png), f"Bias-corrected calibration of {model}",
            f"{model}: {what} on the training patients; apparent, the final model on the patients it was fitted on; "
            f"bias-corrected, apparent minus the mean optimism over the replicates ({im.label}; rms::calibrate); "
            "dashed, ideal.")
    return out
