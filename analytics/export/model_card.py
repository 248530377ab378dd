"""``model_card.md``: how a developed model is used and what it was developed and validated on.

The content follows TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) item 22 (the full model: for a regression
its formula with every coefficient, the spline knots and the baseline survival at the horizons; otherwise the
code-free model files of the bundle) and items 27a-c (intended use and population, the data it was developed and
validated on, how to use it, its known limitations). What the study cannot tell (its intended use, the dates of
its data when no variable has them) is left as "to be completed".
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from analytics.models.persist import COEFFICIENTS, PREDICTIONS, FittedModel
from pipeline.config import StudyConfig

TO_BE_COMPLETED = "to be completed"


def _num(v: Any, digits: int = 6) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{float(v):.{digits}g}"


def _data_rows(study: StudyConfig, fitted: FittedModel, outcomes: pl.DataFrame | None) -> list[str]:
    preds = pl.read_parquet(io.BytesIO(fitted.files[PREDICTIONS])) if PREDICTIONS in fitted.files else pl.DataFrame()
    rows = ["| split | patients | events | centres |", "|---|---|---|---|"]
    if preds.is_empty():
        return [*rows, "| – | – | – | – |"]
    frame = preds.join(outcomes, on="patient_id", how="left") if outcomes is not None else preds
    survival = study.endpoint(fitted.spec) == "survival"
    for split in ("train", "internal", "external"):
        part = frame.filter(pl.col("split") == split)
        if part.is_empty():
            continue
        col = "event" if survival else "label"
        events = int((part[col] == 1).sum()) if col in part.columns else None
        centres = sorted(str(c) for c in part["center"].drop_nulls().unique()) if "center" in part.columns else []
        rows.append(f"| {split} | {part.height} | {events if events is not None else '–'} | "
                    f"{', '.join(centres) or '–'} |")
    return rows


def _regression(fitted: FittedModel) -> list[str]:
    spec = fitted.spec
    out: list[str] = []
    if spec.coefficients is not None:  # a published model: its coefficients as given
        out += [f"Formula: `{spec.formula}` (published; not refitted)", "", "| term | coefficient |", "|---|---|"]
        out += [f"| {k} | {_num(v, 10)} |" for k, v in spec.coefficients.items()]
        if spec.baseline_survival:
            centre = f" at linear predictor {spec.lp_centre:g}" if spec.lp_centre is not None else \
                " at all covariates zero"
            out += ["", f"Baseline survival{centre}: "
                    + ", ".join(f"S0({t:g}) = {s:g}" for t, s in spec.baseline_survival.items())]
        return out
    if COEFFICIENTS not in fitted.files:
        return ["Not a regression model: the full model is the code-free model files of this bundle "
                "(`models/`), read by `cohortlab predict --bundle`."]
    table = pl.read_csv(io.BytesIO(fitted.files[COEFFICIENTS]), schema_overrides={"term": pl.String,
                                                                                  "note": pl.String})
    link = "log odds" if spec.traits.regression == "logit" else "log hazard ratio"
    out += [f"Formula: `{spec.formula or ' + '.join(spec.clinical)}` ({link}; every coefficient below)", "",
            "| term | coefficient | SE |", "|---|---|---|"]
    out += [f"| {r['term']} | {_num(r.get('estimate'), 10)} | {_num(r.get('se'))} |" for r in table.to_dicts()]
    knots = _knots(fitted)
    if knots:
        out += ["", "Spline knots (restricted cubic splines): "
                + "; ".join(f"{v}: {', '.join(_num(k) for k in ks)}" for v, ks in knots.items())]
    base = _baseline(fitted)
    if base:
        out += ["", "Baseline survival (Breslow, at the mean of the model's columns): "
                + ", ".join(f"S0({t:g}) = {_num(s)}" for t, s in base.items())]
    return out


def _knots(fitted: FittedModel) -> dict[str, Sequence[float]]:
    """The knots of every spline of the model's formula design."""
    learner = fitted.learner
    prep = getattr(learner, "prep_", None)
    pipe = getattr(learner, "pipeline_", None)
    prep = prep if prep is not None else (pipe.named_steps.get("prep") if pipe is not None else None)
    for _, trans, _ in getattr(prep, "transformers_", []):
        steps = getattr(trans, "named_steps", {})
        design = steps.get("design") if isinstance(steps, Mapping) else None
        if design is not None and getattr(design, "knots_", None):
            return {v: list(k) for v, k in design.knots_.items()}
    return {}


def _baseline(fitted: FittedModel) -> dict[float, float]:
    """A Cox regression's baseline survival at its horizons (the Breslow estimate it predicts with)."""
    model = getattr(fitted.learner, "model_", None)
    times, hazard = getattr(model, "base_times_", None), getattr(model, "base_hazard_", None)
    if times is None or hazard is None:
        return {}
    out = {}
    for t in fitted.record.horizons or []:
        i = int(np.searchsorted(np.asarray(times), float(t), side="right")) - 1
        out[float(t)] = float(np.exp(-np.asarray(hazard)[i])) if i >= 0 else 1.0
    return out


def _performance(study: StudyConfig, name: str) -> list[str]:
    try:
        data = json.loads((study.report_dir / "metrics.json").read_text(encoding="utf-8"))
        splits = data["models"][name]["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["Not validated yet (run `cohortlab validate`); " + TO_BE_COMPLETED + "."]
    rows = ["| split | measure | estimate | 95% CI |", "|---|---|---|---|"]
    for split, measures in splits.items():
        for key in ("auc", "c_index", "calibration_slope", "brier"):
            m = measures.get(key) if isinstance(measures, Mapping) else None
            if isinstance(m, Mapping) and m.get("estimate") is not None:
                ci = f"{_num(m.get('low'), 3)} to {_num(m.get('high'), 3)}" if m.get("low") is not None else "–"
                rows.append(f"| {split} | {key} | {_num(m['estimate'], 3)} | {ci} |")
    return rows if len(rows) > 2 else ["No headline measure in metrics.json; " + TO_BE_COMPLETED + "."]


def _images(feature_sets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The feature sets an image model reads: how new slides or scans must be embedded, and its weights."""
    if not feature_sets:
        return []
    rows = ["## Image features", "",
            "New patients' slides (`--slides`) or scans (`--scans`) are embedded with exactly these settings; "
            "`cohortlab predict` refuses when one cannot be reproduced.", "",
            "| feature set | modality | encoder | weights | dim | settings |", "|---|---|---|---|---|---|"]
    for name, entry in feature_sets.items():
        rec = entry["record"]
        keep = ("mpp", "tile_size", "overlap", "tissue_threshold", "spacing", "mode", "window", "pooling")
        settings = ", ".join(f"{k} {rec['params'][k]}" for k in keep if rec["params"].get(k) is not None)
        weights = rec["weights"] + (f" (file {entry['weights']['file']}"
                                    f"{', in this bundle' if entry['weights']['bundled'] else ', not in this bundle'})"
                                    if entry.get("weights") else "")
        rows.append(f"| {name} | {rec['modality']} | {rec['encoder']} | {weights} | {rec['dim']} | {settings} |")
    return [*rows, ""]


def model_card(study: StudyConfig, fitted: FittedModel, outcomes: pl.DataFrame | None,
               development: Mapping[str, Any], inputs: Sequence[str],
               feature_sets: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The text of ``model_card.md`` of model ``fitted`` of ``study``.

    Parameters
    ----------
    outcomes
        ``patient_id, label | time, event, center`` of the cohort (events and centres per split), or None.
    development
        The bundle's development record (ranges of the inputs, threshold).
    inputs
        The clinical predictors the model reads.
    feature_sets
        The bundle's ``feature_sets.json`` (an image model's feature sets: settings and weights), or None.
    """
    spec = fitted.spec
    name = spec.name
    endpoint = study.endpoint(spec)
    preds = pl.read_parquet(io.BytesIO(fitted.files[PREDICTIONS])) if PREDICTIONS in fitted.files else None
    validated = sorted({str(c) for c in outcomes.join(preds.filter(pl.col("split") == "external"), on="patient_id")
                        ["center"].drop_nulls().unique()}) if outcomes is not None and preds is not None and \
        "center" in outcomes.columns else []
    ranges = development.get("ranges") or {}
    lines = [
        f"# Model card: {name}", "",
        f"Model `{name}` (kind `{spec.kind}`) of study `{study.study.name}`; endpoint: {endpoint}"
        + (f", risk at {', '.join(f'{t:g}' for t in fitted.record.horizons or [])}" if endpoint == "survival" else "")
        + ".", "",
        "## Intended use and population (TRIPOD+AI 27a)", "",
        f"Intended use: {study.study.description or TO_BE_COMPLETED}.",
        f"Population: the patients the cohort `{study.cohort.name if study.cohort else '-'}` selects "
        "(its SQL is in this bundle, `cohorts/`); new patients it leaves out are not scored.", "",
        "## Development and validation data", "",
        *_data_rows(study, fitted, outcomes), "",
        f"Dates of the data: {TO_BE_COMPLETED} (no variable of the study holds them).", "",
        "## Predictors", "",
        "| predictor | development range |", "|---|---|",
        *[f"| {c} | {_num(ranges[c][0])} to {_num(ranges[c][1])} |" if c in ranges else f"| {c} | categorical |"
          for c in inputs], "",
        *_images(feature_sets or {}),
        "## The full model (TRIPOD+AI 22)", "",
        *_regression(fitted), "",
        "## Performance", "",
        *_performance(study, name), "",
        "## How to use it (TRIPOD+AI 27b-c)", "",
        "`cohortlab predict --bundle <this file> --patients new.csv --out risks.csv`: one row per patient with its "
        "risk and, for an unpenalised regression, its 95% confidence interval; patients outside the cohort's "
        "criteria, with an unknown level or a value of the wrong type are listed with the reason; values outside "
        "the development range are flagged as extrapolation.",
        f"Risk groups: {'high at risk >= ' + _num(development.get('threshold')) if development.get('threshold') is not None else 'none (no threshold)'}.",
        "",
        "## Known limitations", "",
        f"Validated externally only in centre(s): {', '.join(validated) or 'none'}; its performance elsewhere is "
        "unknown until validated there.",
        "Risks outside the development range of a predictor are extrapolations.", "",
    ]
    return "\n".join(lines)


__all__ = ["TO_BE_COMPLETED", "model_card"]
