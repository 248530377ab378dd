"""Every table, figure and text of the report, assembled from the sources of one run, with the
TRIPOD+AI facts the checklist is filled from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
from markupsafe import Markup

from analytics.report import tripod
from analytics.report.cells import SPLIT_NAMES, compact
from analytics.report.competing import competing_context, tripod_outcome_text
from analytics.report.figure_cache import FigureCache
from analytics.report.fitted import (
    class_weights,
    coefficient_blocks,
    harmonization_blocks,
    load_fitted,
    model_rows,
    nomogram_figures,
    ph_blocks,
    sample_size_rows,
    survival_sample_size_rows,
    training_estimates,
)
from analytics.report.missing import missing_context
from analytics.report.multicentre import multicentre_context
from analytics.report.plots import (
    calibration_figures,
    decision_figures,
    decision_overlays,
    explain_budget,
    explanation_figures,
    forest,
    horizon_blocks,
    internal_calibration_figures,
    roc_figures,
    scored_predictions,
    subgroup_blocks,
    survival_blocks,
)
from analytics.report.sources import Sources, model_names
from analytics.report.tables import (
    added_value_blocks,
    comparisons,
    feature_set_rows,
    flow,
    internal_blocks,
    missing_data,
    performance,
)
from analytics.splits import SPLITS
from analytics.validation.internal import OOF_DELONG_COVERAGE
from pipeline import store
from pipeline.config import StudyConfig

# Sections and their stable element ids (tests and the TRIPOD table link to them).
SECTIONS = (
    ("sec-study", "Study and data"),
    ("sec-missing", "Missing data and imputation"),
    ("sec-features", "Feature sets"),
    ("sec-models", "Models"),
    ("sec-performance", "Performance"),
    ("sec-internal", "Internal validation"),
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


def build_context(src: Sources, progress: bool = True, figure_cache: FigureCache | None = None) -> dict[str, Any]:
    """Every table, figure and text of the report, from the sources of one run (the figures drawn before from
    the same data taken from ``figure_cache``)."""
    # the sample sizes' simulations of a million patients each are numpy array work, which lets other threads
    # run: a second thread does them while this one draws the figures (a second core shortens the report)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-sample-size") as pool:
        return _context(src, progress, figure_cache, pool)


def _context(src: Sources, progress: bool, fc: FigureCache | None, pool: ThreadPoolExecutor) -> dict[str, Any]:
    study = src.study
    validation = src.validation
    models = model_names(study, validation, src.predictions)
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
    followed = (any(src.study.endpoint(m) == "survival" for m in src.study.models)
                or src.study.study.endpoint == "survival")
    ctx["flow"] = flow(src.store_patients, frame, src.predictions, models, survival=followed,
                       endpoint=src.study.study.endpoint,
                       cohort_part=src.summary.flow(followed, src.study.study.endpoint) if src.summary else None)
    ctx["cohort_error"] = src.cohort_error
    if src.cohort is not None:
        assert frame is not None
        prov = src.cohort.provenance()
        ctx["cohort"] = {"name": prov["cohort"], "file": Path(prov["file"]).name, "sql": src.cohort.sql.strip(),
                         "params": compact(prov["params"]) if prov["params"] else "none",
                         "split": _split_text(study), "hash": prov["hash"], "n": len(src.cohort)}
        # Table 1 as the cohort stage computed it, else computed now
        ctx["table1"] = Markup(src.summary.table1_html if src.summary is not None else src.cohort.table1().to_html())
        ctx["missing"] = missing_data(frame, src.variables)
        ctx["missing_splits"] = [SPLIT_NAMES[s] for s in SPLITS if (frame.get_column("split") == s).any()]
    else:
        ctx["cohort"] = None
    # the missing-data section: pattern, per split and centre, the method that ran, imputation diagnostics
    ctx.update(missing_context(study, frame, src.cohort.incomplete if src.cohort is not None else (),
                               manifests=src.manifests, validation=src.validation))
    # competing causes: Aalen-Johansen cumulative incidence of every cause, overall and per subgroup variable
    ctx.update(competing_context(study, frame, float(study.validation.level), _time_label(src.variables, frame), fc,
                                 models, src.curves))
    # feature sets, models
    fs_rows = feature_set_rows(src.feature_sets, study, src.coverage, len(src.cohort) if src.cohort is not None else None)
    ctx["feature_sets"] = fs_rows
    ctx["random_sets"] = [r["name"] for r in fs_rows if r["random"]]
    ctx["model_rows"] = model_rows(study, models, validation, src.manifests)
    ctx["harmonization"] = harmonization_blocks(study, models)
    ctx["coefficients"] = coefficient_blocks(study, models, src.manifests)
    # binary models' figures and summaries; survival models (scores are risks) have the survival section
    binary = [m for m in models if not any(s.name == m and study.endpoint(s) == "survival" for s in study.models)]
    fitted = load_fitted(study, binary, src.manifests)
    sizes = pool.submit(sample_size_rows, binary, validation, fitted, src.manifests, fc) if validation is not None else None
    ctx["nomograms"], ctx["nomogram_notes"] = nomogram_figures(study, binary, fitted, src.cohort, src.predictions,
                                                                src.variables, fc)
    # survival models: Riley's time-to-event sample size, the Cox nomogram and the proportional-hazards check
    survival = [m for m in models if m not in binary]
    fitted_survival = load_fitted(study, survival, src.manifests)
    ctx["sample_size_survival"] = survival_sample_size_rows(survival, fitted_survival, src.manifests, src.cohort,
                                                            src.predictions)
    cox_nomograms, cox_notes = nomogram_figures(study, survival, fitted_survival, src.cohort, src.predictions,
                                                src.variables, fc)
    ctx["nomograms"], ctx["nomogram_notes"] = ctx["nomograms"] + cox_nomograms, ctx["nomogram_notes"] + cox_notes
    ctx["ph"] = ph_blocks(study, survival, _time_label(src.variables, frame), fc)
    # performance and figures
    scored = scored_predictions(src.predictions, frame)
    level = validation.level if validation is not None else float(study.validation.level)
    ctx["level"] = level
    if validation is not None:
        ctx["performance"] = performance(models, validation, training_estimates(src.manifests))
        ctx["roc_overview"], ctx["roc"] = roc_figures(binary, scored, validation, study.study.seed, progress, fc)
        ctx["calibration"] = calibration_figures(binary, src.curves, scored, validation, fc)
        ctx["decision"] = decision_figures(binary, src.curves, level, fc)
        ctx["decision_overlays"] = decision_overlays(binary, scored, validation.settings, src.curves, fc)
        ctx["subgroups"] = subgroup_blocks(binary, validation, level, fc)
        ctx["comparisons"] = comparisons(validation)
        ctx["added_value"] = added_value_blocks(validation)
        ctx["forest"] = forest(ctx["comparisons"], level, fc)
        time_label = _time_label(src.variables, frame)
        ctx["survival"] = survival_blocks(models, src.curves, validation, time_label, fc)
        ctx["horizons"] = horizon_blocks(models, src.curves, fc)
        ctx["internal"] = internal_blocks(models, validation)
        ctx.update(multicentre_context(models, validation, fc))
        if ctx["multicentre"]:  # the section is shown only for studies with two or more external centres
            at = [sid for sid, _ in SECTIONS].index("sec-subgroups") + 1
            ctx["sections"] = (*SECTIONS[:at], ("sec-multicentre", "Multi-centre performance"), *SECTIONS[at:])
        shown = internal_calibration_figures(models, validation)
        for block in ctx["internal"]:
            block["figure"] = shown.get(block["model"])
    else:
        ctx.update(performance=None, roc_overview=[], roc=[], calibration=[], decision=[], decision_overlays=[],
                   subgroups=[], comparisons=[], added_value=[],
                   forest=None, survival=[], horizons=[], internal=[], multicentre=[])
    ctx["oof_note"] = OOF_DELONG_COVERAGE
    enabled = study.explain.enabled
    ctx["explain"] = explanation_figures(study.report_dir, src.explain if enabled else None)
    ctx["explain"].update(enabled=enabled, budget=explain_budget(src.explain) if enabled else [])
    ctx["failed"] = src.failed.to_dicts()
    ctx["sample_size"] = sizes.result() if sizes is not None else []
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
        imputation=((ctx.get("missingness") or {}).get("method") or {}).get("summary", ""),
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
        competing_outcome=tripod_outcome_text(study.causes),
    )
