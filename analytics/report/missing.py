"""The report's missing-data section: the pattern, who is missing what, how the gaps were handled, and whether the
imputations can be trusted.

* The missingness pattern of the cohort's clinical columns, as ``mice::md.pattern``
  (:func:`analytics.impute.md_pattern`; van Buuren, *Flexible Imputation of Missing Data*, 2nd ed. 2018, §4.1).
* Missing % of each clinical column by split and centre.
* The method that ran, from ``[imputation]``: chained equations (with its settings), imputations read from a
  file (held-out estimates marked possibly optimistic unless one file per split is given), single (median /
  mode) imputation, which understates every standard error (Sterne et al., BMJ 2009;338:b2393), complete-case
  analysis with the patients it drops, or, without the table, the in-pipeline median / mode fill. With multiple
  imputation: how the models were pooled (Rubin's rules or the mean risk) and what the imputation cost, from each
  fit record; a model's spline or interaction terms missing from the chained equations (smcfcs, Bartlett et al.
  2015, is not available yet); image blocks kept out of the chains; and each headline measure's fraction of
  missing information (fmi) where validation pooled it by Rubin's rules.
* When ``cohortlab impute`` has written ``imputations/``: trace plots of each imputed column's mean and SD per
  iteration, one line per chain (``plot(imp)`` of mice), observed against imputed densities
  (``mice::densityplot``), and red flags for a split-R̂ of the chain means above 1.1 (Gelman et al., *Bayesian
  Data Analysis*, 3rd ed. 2013, §11.4; :func:`analytics.impute.split_rhat`) or an imputed value outside the
  observed range.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from scipy import stats as sps

from analytics import figures
from analytics.impute import ImputationError, md_pattern, split_rhat
from analytics.impute.diagnostics import RHAT_FLAG
from analytics.impute.longformat import read_long
from analytics.impute.study import FOLDER
from analytics.models.artifacts import FitRecord
from analytics.report.cells import SPLIT_NAMES, Embedded, fmt_count
from analytics.splits import SPLITS
from analytics.validation import Validation
from pipeline.config import RESERVED, StudyConfig

PATTERN_ROWS = 30
"""Patterns shown in the md.pattern table (the most frequent ones; the rest are counted in a note)."""

SINGLE_WARNING = ("Single imputation understates uncertainty: each filled value is treated as if it had been "
                  "observed, so it understates every standard error and confidence interval, and coefficients are "
                  "biased when values are missing at random (Sterne et al., BMJ 2009;338:b2393).")
FROM_OPTIMISTIC = ("Imputations made elsewhere were usually made with every patient's outcome, held-out patients' "
                   "included: held-out (internal and external) estimates may be optimistic, and so may the training "
                   "patients' out-of-fold and bootstrap estimates (their imputations saw the left-out patients' "
                   "outcomes). Give one file per split (from = { train = ..., internal = ..., external = ... }) to "
                   "impute held-out patients apart.")
SMCFCS_MISSING = ("Substantive-model-compatible imputation (smcfcs; Bartlett et al., Stat Methods Med Res "
                  "2015;24:462-487), which imputes with the model's own spline and interaction terms, is not "
                  "available yet.")
IMAGE_BLOCKS = ("Image feature blocks are not in the chained equations (too wide): a value missing inside a block is "
                "median-imputed inside the model's pipeline, fitted on training patients, and a patient lacking a "
                "whole block gets no prediction from that model.")
HEADLINE = ("auc", "c_index", "calibration_in_the_large", "calibration_recalibration_intercept",
            "calibration_recalibration_slope", "calibration_brier")
"""The measures pooled by Rubin's rules whose fraction of missing information the section lists."""


def clinical_columns(frame: pl.DataFrame) -> list[str]:
    """The cohort's clinical columns (every column but the reserved ones), in cohort order."""
    return [c for c in frame.columns if c not in RESERVED]


def _missing(frame: pl.DataFrame, column: str) -> pl.Series:
    s = frame.get_column(column)
    miss = s.is_null()
    if s.dtype.is_float():
        miss = miss | s.is_nan().fill_null(False)
    return miss


def model_variables(study: StudyConfig, columns: Sequence[str]) -> list[str]:
    """The clinical columns any model reads, in cohort order."""
    used = {c for m in study.models for c in m.clinical}
    return [c for c in columns if c in used]


def incomplete_rows(frame: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """Per patient: whether any of ``columns`` is missing (all False without columns)."""
    out = pl.Series("incomplete", [False] * frame.height, dtype=pl.Boolean)
    for c in columns:
        out = out | _missing(frame, c)
    return out


def pattern_table(frame: pl.DataFrame, columns: Sequence[str], limit: int = PATTERN_ROWS) -> dict[str, Any] | None:
    """``mice::md.pattern`` of ``columns``: column order, pattern rows (count, 0/1 cells, columns missing) and the
    per-column totals; at most ``limit`` patterns, the most frequent (mice's order kept among them)."""
    if not columns:
        return None
    p = md_pattern(frame.select(columns))
    keep = set(np.argsort(-p.counts, kind="stable")[:limit].tolist())
    shown = [{"count": int(p.counts[i]), "cells": [int(v) for v in p.observed[i]],
              "missing": int(p.missing_per_pattern[i])} for i in range(p.counts.size) if i in keep]
    return {"columns": list(p.columns), "rows": shown, "totals": [int(v) for v in p.missing_per_column],
            "total": p.total, "patterns": int(p.counts.size), "hidden_patterns": int(p.counts.size) - len(shown),
            "hidden_patients": frame.height - int(p.counts[sorted(keep)].sum()), "patients": frame.height}


def by_split_centre(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, Any]:
    """Missing count and % of each column in every split × centre group present (and overall)."""
    split = frame.get_column("split") if "split" in frame.columns else pl.Series([None] * frame.height)
    center = (frame.get_column("center").cast(pl.String) if "center" in frame.columns
              else pl.Series([None] * frame.height, dtype=pl.String))
    groups: list[tuple[str, pl.Series]] = []
    for s in SPLITS:
        in_split = (split == s).fill_null(False)
        if not in_split.any():
            continue
        centres = sorted({c for c in center.filter(in_split).to_list() if c is not None})
        for c in centres:
            groups.append((f"{SPLIT_NAMES[s]} · {c}", in_split & (center == c).fill_null(False)))
        if center.filter(in_split).null_count():
            groups.append((f"{SPLIT_NAMES[s]} · no centre", in_split & center.is_null()))
    everyone = pl.Series([True] * frame.height)
    rows = []
    for col in columns:
        miss = _missing(frame, col)
        cells = [fmt_count(int((miss & sel).sum()), int(sel.sum())) for _, sel in groups]
        rows.append({"variable": col, "cells": cells, "total": fmt_count(int((miss & everyone).sum()), frame.height)})
    return {"groups": [name for name, _ in groups], "sizes": [int(sel.sum()) for _, sel in groups], "rows": rows}


def method_text(study: StudyConfig, manifests: Mapping[str, FitRecord] | None = None) -> dict[str, Any]:
    """Which method handles missing clinical values, in words, with the caveats the user must read (``manifests``:
    the fitted models' records, whose ``imputation`` entries name the formula terms the chains leave out)."""
    s = study.imputation
    notes: list[str] = []
    if s is None:
        return {"method": "none", "name": "In-pipeline single imputation (no [imputation] table)",
                "text": "Missing clinical values are filled inside each model's pipeline with the training patients' "
                        "median (numbers) or most frequent level (categories), refitted on every training fold.",
                "notes": [SINGLE_WARNING], "warn": True, "summary": "single (median / mode) imputation inside each "
                "model's pipeline, refitted on every training fold"}
    if s.method == "single":
        return {"method": "single", "name": "Single imputation ([imputation] method = \"single\")",
                "text": "Missing clinical values are filled inside each model's pipeline with the training patients' "
                        "median (numbers) or most frequent level (categories), kept for comparison with multiple "
                        "imputation.", "notes": [SINGLE_WARNING], "warn": True,
                "summary": "single (median / mode) imputation inside each model's pipeline ([imputation] method = "
                           "\"single\"), which understates every standard error"}
    if s.method == "complete_case":
        return {"method": "complete_case", "name": "Complete-case analysis ([imputation] method = \"complete_case\")",
                "text": "Patients missing any clinical variable a model reads are left out of the cohort.",
                "notes": ["Complete-case estimates are biased unless values are missing completely at random (or "
                          "missingness does not depend on the outcome), and the patients left out lower the "
                          "precision (Sterne et al., BMJ 2009;338:b2393)."], "warn": True,
                "summary": "complete-case analysis: patients missing a clinical variable of a model are left out"}
    methods = ", ".join(f"{k} = {v}" for k, v in sorted(s.methods.items()))
    seed = study.study.seed if s.seed is None else s.seed
    validation = ("each validation split imputed on its own, with its outcomes (validation_imputation = "
                  "\"with_outcome\")" if s.validation_imputation == "with_outcome" else
                  "held-out, external and new patients imputed by a second set of chained equations fitted on the "
                  "development patients without the outcome (Hoogland et al., Stat Med 2020;39:3591-3607)")
    text = (f"Multiple imputation by chained equations (van Buuren & Groothuis-Oudshoorn, J Stat Softw 2011;45(3)): "
            f"m = {s.m} imputations, maxit = {s.maxit} iterations, seed {seed}; predictive mean matching "
            f"({s.donors} donors) for numbers, logistic regression for binary, proportional odds for ordered and "
            f"multinomial regression for unordered categories"
            + (f", overridden: {methods}" if methods else "")
            + "; the outcome is in the imputation models of the development patients (the label; for a survival "
            "outcome the event indicator and the Nelson-Aalen cumulative hazard); "
            + (f"auxiliary columns: {', '.join(s.auxiliary)}; " if s.auxiliary else "")
            + f"{validation}. The chains are refitted on every training fold. `cohortlab impute` makes the "
            "development imputation alone and the diagnostics below.")
    summary = f"multiple imputation by chained equations (mice, m = {s.m}, maxit = {s.maxit})"
    if s.from_ is not None:
        files = s.from_files()
        per_split = None not in files
        named = "; ".join(f"{k}: {v}" for k, v in files.items()) if per_split else str(files[None])
        text = (f"Multiple imputations read from {named} (made elsewhere, in mice::complete(imp, \"long\") format): "
                "they fill the store's missing clinical values and the cohort SQL runs once per imputation; m is the "
                "number of imputations in the file"
                + (", and each split's patients are filled from their split's file only (training out-of-fold and "
                   "bootstrap estimates still read imputations made with every training patient's outcome)."
                   if per_split else "."))
        summary = f"multiple imputations read from {named}"
        if not per_split:
            notes.append(FROM_OPTIMISTIC)
    text += (" Every model that reads clinical columns is fitted on each completed data set: unpenalised logistic "
             "and Cox regressions are pooled by Rubin's rules (the pooled coefficients are the model, as "
             "mice::pool), other models' risk is the mean of the m fits' risks; the validation statistics are "
             "computed on each completed version of a split and pooled (Wood, Royston & White, Biom J "
             "2015;57:614-632). "
             + ("Bootstrap internal validation takes each replicate's rows of the file's imputations (they cannot be "
                "redone per replicate). Cost: m fits of each model per outer fold, for the final model and per "
                "internal-validation replicate." if s.from_ is not None else
                f"Bootstrap internal validation imputes again inside every replicate, with m_boot = {s.m_boot} "
                "imputations (bootstrap, then impute: Wahl et al., BMC Med Res Methodol 2016;16:144). Cost: m fits "
                "of each model per outer fold and for the final model, and m_boot × B fits for internal "
                "validation."))
    for name, record in (manifests or {}).items():
        terms = (record.imputation or {}).get("not_in_imputation_model") or []
        if terms:
            notes.append(f"Model {name}: the chained equations impute main effects only, without its terms "
                         f"{', '.join(terms)}, which biases those terms toward zero. {SMCFCS_MISSING}")
    if any(spec.features for spec in study.models):
        notes.append(IMAGE_BLOCKS)
    return {"method": "mice", "name": "Multiple imputation ([imputation] method = \"mice\")", "text": text,
            "notes": notes, "warn": bool(notes), "summary": summary}


def imputation_models(manifests: Mapping[str, FitRecord]) -> list[dict[str, Any]]:
    """Per fitted model with an ``imputation`` record: where its imputations came from, m, how it was pooled, and
    what the imputation cost (fits and seconds, and the internal validation's replicates × m_boot)."""
    rows = []
    for name, record in manifests.items():
        imp = record.imputation
        if not imp:
            continue
        internal = record.internal or {}
        boot = (internal.get("imputation") or {}) if isinstance(internal, dict) else {}
        fits = (record.tuning or {}).get("fits")
        rows.append({
            "model": name, "source": "read from file" if imp.get("source") == "from" else "chained equations",
            "m": imp.get("m"), "maxit": imp.get("maxit") if imp.get("source") != "from" else "–",
            "pooled": "Rubin's rules" if imp.get("pooled") == "rubin" else "mean of the m fits' risks",
            "fits": "–" if fits is None else str(fits),
            "seconds": "–" if imp.get("seconds") is None else f"{float(imp['seconds']):.1f}",
            "internal": "–" if not boot else (
                f"B = {internal.get('B', internal.get('replicates', '?'))} × m = {imp.get('m')} (the file's)"
                if imp.get("source") == "from" else
                f"B = {internal.get('B', internal.get('replicates', '?'))} × m_boot = "
                f"{boot.get('m_boot', imp.get('m_boot'))}"),
            "not_modelled": ", ".join(imp.get("not_in_imputation_model") or []),
        })
    return rows


def pooled_fmi(validation: Validation | None) -> list[dict[str, Any]]:
    """The headline measures pooled by Rubin's rules over the imputations, with m and the fraction of missing
    information (fmi) of each; empty when no measure was pooled."""
    if validation is None:
        return []
    out = []
    for r in validation.rows():
        if r.get("fmi") is None or r.get("center") is not None or r["measure"] not in HEADLINE:
            continue
        ci = (f" ({r['low']:.3f}–{r['high']:.3f})" if r.get("low") is not None and r.get("high") is not None else "")
        out.append({"model": r["model"], "split": SPLIT_NAMES.get(r["split"], r["split"]), "measure": r["measure"],
                    "estimate": f"{r['estimate']:.3f}{ci}" if r.get("estimate") is not None else "–",
                    "m": r["m"], "fmi": f"{r['fmi']:.3f}"})
    return out


def complete_case_counts(frame: pl.DataFrame, columns: Sequence[str], incomplete: Sequence[str]) -> dict[str, Any]:
    """How many of the patients the cohort SQL selected a complete-case analysis of ``columns`` left out:
    ``incomplete`` (:attr:`analytics.cohort.Cohort.incomplete`, dropped by the cohort stage before the split)
    and any still incomplete in ``frame``."""
    still = int(incomplete_rows(frame, columns).sum())
    dropped = len(incomplete) + still
    n = frame.height + len(incomplete)
    share = f" ({100.0 * dropped / n:.1f}%)" if n else ""
    return {"variables": list(columns), "dropped": dropped, "n": n, "text": f"{dropped} of {n} patients{share}"}


# ----------------------------------------------------------------------------------- imputations/
def _style() -> Any:
    """The report's figure style (:data:`analytics.figures.STYLE`) for ``rc_context``."""
    return dict(figures.STYLE)


def _trace_figure(name: str, trace: pl.DataFrame) -> bytes:
    """mice's ``plot(imp)`` for one column: mean and SD of the imputed values per iteration, one line per chain."""
    with matplotlib.rc_context(_style()):
        fig = figures.new_figure(7.0, 2.6)
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.2, top=0.82, wspace=0.25)
        axes = fig.subplots(1, 2)
        for ax, stat in zip(axes, ("mean", "sd")):
            for i, chain in enumerate(sorted(set(trace["chain"].to_list()))):
                part = trace.filter(pl.col("chain") == chain).sort("iteration")
                ax.plot(part["iteration"].to_numpy(), part[stat].to_numpy(), color=figures.model_color(i), lw=1.0)
            ax.set(xlabel="Iteration", title=f"{'Mean' if stat == 'mean' else 'SD'} of imputed values")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        fig.suptitle(figures.literal(name), fontsize=9.5, fontweight="bold")
        return figures.to_png(fig)


def _density_figure(name: str, observed: np.ndarray, imputed: Sequence[np.ndarray]) -> bytes:
    """``mice::densityplot`` for one column: the observed values' density (blue, thick) and each imputation's
    imputed values' density (red, thin); a Gaussian kernel with Scott's bandwidth."""
    with matplotlib.rc_context(_style()):
        fig = figures.new_figure(4.2, 3.0)
        fig.subplots_adjust(left=0.15, right=0.97, bottom=0.16, top=0.88)
        ax = fig.subplots()
        pooled = np.concatenate([observed, *imputed]) if imputed else observed
        lo, hi = float(np.min(pooled)), float(np.max(pooled))
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        grid = np.linspace(lo - pad, hi + pad, 200)
        for i, values in enumerate(imputed):
            if np.unique(values).size > 1:
                ax.plot(grid, sps.gaussian_kde(values)(grid), color="#D55E00", lw=0.7, alpha=0.7,
                        label="imputed" if i == 0 else None)
        if np.unique(observed).size > 1:
            ax.plot(grid, sps.gaussian_kde(observed)(grid), color="#0072B2", lw=2.0, label="observed")
        ax.set(xlabel=figures.literal(name), ylabel="Density")
        ax.legend(loc="upper right")
        fig.suptitle(figures.literal(name), fontsize=9.5, fontweight="bold")
        return figures.to_png(fig)


def _numeric(s: pl.Series) -> bool:
    return s.dtype.is_numeric() and s.dtype != pl.Boolean


def imputation_diagnostics(study: StudyConfig, frame: pl.DataFrame) -> dict[str, Any] | None:
    """Trace plots, densities and red flags of ``imputations/`` (from ``cohortlab impute``), when it exists.

    The files are checked against the current cohort's development patients (:func:`read_long`): imputations of
    another cohort are reported as stale and not drawn.
    """
    folder = study.root / FOLDER
    long_path, trace_path = folder / "long.csv", folder / "trace.csv"
    if not long_path.is_file():
        return None
    out: dict[str, Any] = {"folder": FOLDER, "trace": [], "density": [], "flags": [], "rhat": [], "stale": None}
    summary: dict[str, Any] = {}
    if (folder / "summary.json").is_file():
        try:
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            out["stale"] = f"{folder / 'summary.json'} cannot be read: {exc}"
            return out
    out.update(m=summary.get("m"), maxit=summary.get("maxit"), seed=summary.get("seed"),
               methods=summary.get("methods") or {})
    clinical = clinical_columns(frame)
    dev = frame.filter(pl.col("split") == "train") if "split" in frame.columns else frame
    if "label" in dev.columns and not ("time" in dev.columns and "event" in dev.columns):
        dev = dev.filter(pl.col("label").is_not_null())  # as cohortlab impute: unlabelled patients are left out
    observed = dev.select("patient_id", *clinical)
    try:
        done = read_long(long_path, observed)
    except ImputationError as exc:
        out["stale"] = (f"{exc}. The imputations in {FOLDER}/ do not match the current cohort's development "
                        "patients; run `cohortlab impute` again.")
        return out
    out["flags"] += done.flags
    trace = _read_trace(trace_path)
    imputed_cols = [c for c in clinical if _missing(observed, c).any()]
    for i, col in enumerate(imputed_cols):
        part = trace.filter(pl.col("variable") == col) if trace is not None else None
        if part is not None and part.height:
            iters = part["iteration"].n_unique()
            chains = sorted(set(part["chain"].to_list()))
            means = np.column_stack([part.filter(pl.col("chain") == c).sort("iteration")["mean"].to_numpy()
                                     for c in chains]).reshape(iters, len(chains))
            rhat = split_rhat(means)
            out["rhat"].append({"variable": col, "rhat": "–" if not np.isfinite(rhat) else f"{rhat:.3f}",
                                "flag": bool(np.isfinite(rhat) and rhat > RHAT_FLAG)})
            if np.isfinite(rhat) and rhat > RHAT_FLAG:
                out["flags"].append(f"{col}: split-R̂ {rhat:.3f} > {RHAT_FLAG} across chains (not converged; "
                                    "raise maxit)")
            png = _trace_figure(col, part)
            out["trace"].append(Embedded(f"missing-trace-{i}", figures.data_uri(png),
                                         f"Trace plot of {col}",
                                         f"{col}: mean and SD of the imputed values per iteration, one line per "
                                         f"chain ({len(chains)} chains)."))
        if not _numeric(observed[col]):
            continue
        miss = _missing(observed, col).to_numpy()
        obs_vals = observed[col].cast(pl.Float64).to_numpy()[~miss]
        imp_vals = [d[col].cast(pl.Float64).to_numpy()[miss] for d in done.completed]
        lo, hi = float(np.min(obs_vals)), float(np.max(obs_vals))
        outside = int(sum(int(np.sum((v < lo) | (v > hi))) for v in imp_vals))
        if outside:
            out["flags"].append(f"{col}: {outside} imputed value(s) outside the observed range [{lo:g}, {hi:g}]")
        png = _density_figure(col, obs_vals, imp_vals)
        out["density"].append(Embedded(f"missing-density-{i}", figures.data_uri(png),
                                       f"Observed and imputed densities of {col}",
                                       f"{col}: density of the {obs_vals.size} observed values (blue) and of the "
                                       f"{int(miss.sum())} imputed values in each of the {len(imp_vals)} "
                                       "imputations (red)."))
    out["m"] = out["m"] or done.m
    return out


def imputation_files(study: StudyConfig) -> list[tuple[str, bytes]]:
    """The ``imputations/`` files this section reads, with their bytes (``b"-"`` when absent), for the report's
    inputs digest: a new ``cohortlab impute`` renders the report again."""
    out = []
    for name in ("long.csv", "trace.csv", "summary.json"):
        path = study.root / FOLDER / name
        out.append((f"{FOLDER}/{name}", path.read_bytes() if path.is_file() else b"-"))
    return out


def _read_trace(path: Path) -> pl.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pl.read_csv(path, schema_overrides={"variable": pl.String, "iteration": pl.Int64, "chain": pl.Int64,
                                                   "mean": pl.Float64, "sd": pl.Float64})
    except (pl.exceptions.PolarsError, OSError):
        return None


def missing_context(study: StudyConfig, frame: pl.DataFrame | None, incomplete: Sequence[str] = (),
                    manifests: Mapping[str, FitRecord] | None = None, validation: Validation | None = None
                    ) -> dict[str, Any]:
    """The missing-data section's content (``missingness`` in the report context); ``None`` without a cohort.

    ``incomplete``: the patients a complete-case analysis left out of the cohort (:attr:`Cohort.incomplete`);
    ``manifests``: the fitted models' records (their ``imputation`` entries: m, pooling, cost); ``validation``: its
    headline measures pooled by Rubin's rules give each one's fraction of missing information.
    """
    if frame is None:
        return {"missingness": None}
    clinical = clinical_columns(frame)
    method = method_text(study, manifests)
    ctx: dict[str, Any] = {
        "method": method,
        "pattern": pattern_table(frame, clinical),
        "by_centre": by_split_centre(frame, clinical),
        "complete_case": None,
        "imputations": None,
        "models": imputation_models(manifests or {}) if method["method"] == "mice" else [],
        "fmi": pooled_fmi(validation) if method["method"] == "mice" else [],
    }
    if method["method"] == "complete_case":
        ctx["complete_case"] = complete_case_counts(frame, model_variables(study, clinical), incomplete)
    # shown whenever cohortlab impute has written them, whatever the method (the method text says what ran)
    ctx["imputations"] = imputation_diagnostics(study, frame)
    return {"missingness": ctx}


__all__ = ["FROM_OPTIMISTIC", "IMAGE_BLOCKS", "SINGLE_WARNING", "SMCFCS_MISSING", "by_split_centre", "clinical_columns",
           "complete_case_counts", "imputation_diagnostics", "imputation_files", "imputation_models", "incomplete_rows",
           "method_text", "missing_context", "model_variables", "pattern_table", "pooled_fmi"]
