"""The report's tables: participant flow, missing data, feature-set provenance, performance, paired
comparisons and added value, each from typed records (formatted, never recomputed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import polars as pl

from analytics.report.cells import (
    COMPLETE_CASES,
    NA,
    SPLIT_NAMES,
    Cell,
    compact,
    dims,
    few_classes,
    fmt,
    fmt_count,
    fmt_interval,
    fmt_p,
    measure_basis,
    metric_cell,
    missing_reason,
    na_cell,
    noted,
    said_about,
)
from analytics.splits import SPLITS
from analytics.validation import Estimate, SplitMetrics, Validation
from pipeline import store
from pipeline.config import StudyConfig

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
    ("lp_calibration_slope", "Calibration slope of the linear predictor"),
)


# survival models, per horizon t: (metrics.csv prefix, row label)
# (IPA: competing-risk models only, against the Aalen-Johansen null model)
HORIZON_ROWS = (("auc", "AUC({t}), IPCW"), ("brier", "Brier({t}), IPCW"), ("ipa", "IPA({t}) vs Aalen–Johansen null"),
                ("ici", "ICI({t}), smooth calibration"))


# binary models on a censored endpoint, at the label's horizon t: (metrics.csv prefix, row label)
IPCW_ROWS = (("auc_ipcw", "AUC({t}), IPCW, all with follow-up"), ("brier_ipcw", "Brier({t}), IPCW, all with follow-up"))


def flow(patients: pl.DataFrame, frame: pl.DataFrame | None, predictions: pl.DataFrame,
         models: Sequence[str], survival: bool = False, endpoint: str = "binary",
         cohort_part: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Participant flow by centre: store → cohort → with an outcome → analysed by each model; then per split.

    With ``survival`` (a survival endpoint or model), a patient with a time and an event has an outcome
    whether or not it has a label. Per split, the events are the labels' positives, or for a survival
    ``endpoint`` the events. ``cohort_part``: the cohort's rows and splits as the cohort stage counted them
    (:meth:`analytics.cohort.summary.CohortSummary.flow`), else counted here
    (:func:`analytics.cohort.summary.cohort_flow`); either way no loop over patients.

    Returns
    -------
    dict
        ``centers``; ``rows``: (stage, counts per centre, total); ``splits``:
        per split, counts ``n (events)`` per centre and total.
    """
    from analytics.cohort.summary import cohort_flow, known_outcome

    centers = sorted(patients.get_column("center").unique().drop_nulls().to_list())
    of = patients.select("patient_id", pl.col("center").alias("_store_center"))

    def counts(ids: pl.DataFrame) -> list[int]:
        per = dict(ids.join(of, on="patient_id", how="inner").group_by("_store_center").len().iter_rows())
        return [int(per.get(c, 0)) for c in centers]

    store_counts = counts(patients.select("patient_id"))
    rows: list[dict[str, Any]] = [{"stage": "Patients in the store", "counts": store_counts, "total": sum(store_counts)}]
    splits: list[dict[str, Any]] = []
    if frame is not None:
        part = cohort_part
        if part is None or list(part.get("centers", [])) != centers:
            part = cohort_flow(frame, patients.select("patient_id", "center"), survival, "event" if endpoint == "survival" else "label")
        rows += [dict(r) for r in part["rows"]]
        lab = frame.filter(known_outcome(frame, bool(part["followed"]))).select("patient_id")
        for model in models:
            ids = predictions.filter(pl.col("model") == model).select("patient_id").join(lab, on="patient_id", how="semi")
            c = counts(ids)
            rows.append({"stage": f"Analysed by {model} (inputs available)", "counts": c, "total": sum(c), "model": model})
        splits = [{"split": SPLIT_NAMES[s["split"]], "cells": list(s["cells"])} for s in part["splits"]]
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
        res = [f"{k} {dims(params[k])}" for k in resolution_keys if params.get(k) is not None]
        other = [f"{k}={compact(v)}" for k, v in sorted(params.items()) if k not in resolution_keys]
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
                res.append(f"{k} {dims(v)}")
        rows.append({
            "name": fs.name, "modality": fs.modality, "encoder": fs.encoder, "weights": text, "random": random,
            "dim": "–", "resolution": ", ".join(res) or "–", "params": compact(fs.params) if fs.params else "–",
            "code_version": "–", "done": 0, "failed": 0, "instances": "–", "coverage": "–", "stored": False,
        })
    return rows


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
        # a survival model has no label measures: no rows of complete cases (they would read "0 patients")
        survival = bool(sp) and all(m.n == 0 and m.n_survival is not None for m in sp.values())
        for name, label in (*METRIC_ROWS, *horizon_rows):
            if survival and measure_basis(name) == COMPLETE_CASES:
                continue
            cells = [metric_cell(model, s, name, sp[s], validation) if s in sp else
                     na_cell(missing_reason(model, s, name, None)) for s in splits]
            # a measure computed but undefined on every split (e.g. NPV without predicted negatives) keeps its row;
            # so does one that failed, with validation's reason in its cells
            if all(c.text == NA for c in cells) and not any(sp[s].get(name) is not None for s in splits if s in sp) \
                    and not any(said_about(validation, model, s, name) for s in splits):
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
                                 if e.c_index is not None else few_classes(e.n, e.n_positive)),
                })
    return {"splits": [SPLIT_NAMES[s] for s in splits], "split_keys": splits, "headline": headline,
            "detail": detail, "centers": centers}


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


UNDEFINED_COMPARISON = ("not defined: the difference has no variance (the two models rank these patients alike, "
                        "or a model's predictions are constant)")


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
        one_class = few_classes(av.n, av.n_positive) if av.n_positive in (0, av.n) else ""

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


# the rows of rms::validate, as the report names them
INTERNAL_LABELS = {
    "Dxy": "Somers' Dxy", "AUC": "AUC", "C": "Harrell's C", "R2": "Nagelkerke R²", "Intercept": "Calibration intercept",
    "Slope": "Calibration slope", "Emax": "Emax (largest calibration error)", "D": "Discrimination index D",
    "U": "Unreliability index U", "Q": "Quality index Q", "B": "Brier score", "g": "g-index",
    "gp": "gp-index (probability scale)",
}
INTERNAL_COLUMNS = ("original", "training", "test", "optimism", "corrected")


def internal_blocks(models: Sequence[str], validation: Validation) -> list[dict[str, Any]]:
    """One table per model with internal validation, in ``rms::validate``'s layout: index, apparent (the final
    model on its own training patients), training and test (means over the replicates), optimism, corrected,
    the corrected value's interval, and the replicates each index was defined on; with the failed replicates and
    why. Numbers as in metrics.json (``internal``), three decimals."""
    out = []
    for model in models:
        im = validation.internal.get(model)
        if im is None:
            continue
        rows = []
        for r in im.rows:
            label = INTERNAL_LABELS.get(r.index) or (f"Brier score at t = {r.index[8:-1]}, IPCW"
                                                     if r.index.startswith("Brier(t=") else r.index)
            interval = (f"{fmt(r.low)}–{fmt(r.high)}" if r.low is not None and r.high is not None else NA)
            rows.append({"index": r.index, "label": label, "measure": r.measure,
                         "cells": [(c, fmt(getattr(r, c))) for c in INTERNAL_COLUMNS], "interval": interval,
                         "n": r.n})
        # nested cross-validation ("ncv"): measure, estimate, interval, SE, cross-validated value, bias
        nested = [{"index": r.index, "label": "Brier score" if r.index == "Brier" else r.index, "measure": r.measure,
                   "estimate": fmt(r.estimate), "se": fmt(r.se), "cv": fmt(r.cv), "bias": fmt(r.bias),
                   "interval": f"{fmt(r.low)}–{fmt(r.high)}" if r.low is not None and r.high is not None else NA}
                  for r in im.nested]
        out.append({"model": model, "label": im.label, "method": im.method, "endpoint": im.endpoint, "n": im.n,
                    "replicates": im.replicates, "failed": im.failed, "reasons": sorted(im.reasons.items()),
                    "rows": rows, "nested": nested, "level": im.level, "interval_method": im.interval_method,
                    "interval_note": im.interval_note, "input_scores": im.input_scores, "notes": list(im.notes),
                    "all_failed": im.replicates > 0 and im.failed == im.replicates})
    return out
