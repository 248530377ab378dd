"""The report's views of the fitted models: their records (inputs, tuning, what was fitted), the
sample-size check against Riley et al. (BMJ 2020), nomograms and the ComBat centre-effect figures."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import polars as pl

from analytics import figures
from analytics.models.artifacts import FitRecord
from analytics.report.cells import Cell, Embedded, compact, estimate_value, fmt, fmt_p, kv, noted
from analytics.report.figure_cache import FigureCache
from analytics.validation import Validation
from pipeline.config import StudyConfig
from pipeline.errors import CohortlabError
from pipeline.model_kinds import traits_of

log = logging.getLogger("cohortlab.report")


MIL_SHOWN = ("pooling", "hidden", "attention_dim", "dropout", "lr", "epochs", "best_epoch", "class_weight",
             "max_instances")


def manifest_facts(man: FitRecord) -> list[tuple[str, str]]:
    """The parts of a fitted model's record a reader needs (no time stamps, hashes or library dumps)."""
    out: list[tuple[str, str]] = [("Chosen hyper-parameters", kv(man.chosen or {}))]
    folds = man.fold_chosen or []
    if folds:
        per = [kv({k: v for k, v in f.items() if k != "fold"}) for f in folds]
        if len(set(per)) > 1:
            out.append(("Per outer fold", "; ".join(f"fold {f.get('fold', i)}: {t}" for i, (f, t) in enumerate(zip(folds, per)))))
    if man.inner_auc is not None:
        # the best of the grid's inner-CV AUCs: chosen because it was highest, so biased upwards (issue 24)
        out.append(("Inner cross-validated AUC of the choice", f"{fmt(man.inner_auc)} (best of grid (optimistic))"))
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
    params = man.config.get("params") or {}
    # a formula, or a maximum-likelihood logistic regression, reads its clinical columns through R's model matrix
    traits = traits_of(man.kind)
    cox = traits is not None and traits.regression == "cox"
    design = cols.get("formula") is not None or params.get("penalty") == "none" or cox
    unpenalised = params.get("penalty") == "none" or (cox and not float(params.get("penalizer") or 0.0))
    if design and man.clinical:
        parts.append(f"formula: {cols.get('formula') or ' + '.join(man.clinical)} (median / most frequent level "
                     "imputed; factors treatment-coded against their reference level"
                     + ("" if unpenalised else "; standardised") + ")")
    scores = [c for c in cols.get("numeric") or [] if c.startswith("score:")]
    if design and scores:
        parts.append(f"input scores (median imputation{'' if unpenalised else ', standardised'}): {', '.join(scores)}")
    if cols.get("numeric") and not design:
        parts.append(f"numeric (median imputation, standardised): {', '.join(cols['numeric'])}")
    if cols.get("categorical") and not design:
        parts.append(f"categorical (most frequent level imputed, one-hot): {', '.join(cols['categorical'])}")
    if cols.get("features"):
        blocks = sorted({c.rsplit(":", 1)[0] for c in cols["features"]})
        parts.append(f"image features: {len(cols['features'])} columns ({', '.join(blocks)})")
    if parts:
        out.append(("Input columns and preprocessing", "; ".join(parts) + " — fitted on training patients only"))
    if man.mil:
        out.append(("MIL network", kv({k: v for k, v in man.mil.items() if k in MIL_SHOWN})))
    if man.missing:
        out.append(("Patients without inputs", compact(man.missing)))
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
                out.append(f"{name}: {compact(source['class_weight'])}")
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
    space = "; ".join(f"{k} ∈ {{{', '.join(compact(x) for x in v)}}}" for k, v in grid.items())
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
    picked = [f"{k} = {compact(chosen[k])}" for k in grid if chosen and k in chosen]
    return text + (f"; chosen {', '.join(picked)}" if picked else "")


def fit_cost(tuning: Mapping[str, Any]) -> str:
    """What fitting a model cost (estimators fitted, wall seconds), from its tuning record; empty before a fit."""
    fits, seconds = tuning.get("fits"), tuning.get("fit_seconds")
    return "" if not fits else f"; {fits} fits" + ("" if seconds is None else f" in {float(seconds):.1f} s")


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
            "grid": tuning_text(tuning, man.chosen if man is not None else None) + fit_cost(tuning),
            "dropped": _dropped_line(man.dropped if man is not None else None),
            "params": compact(entry.get("params")) if entry.get("params") else "–",
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


def _loaded(kind: Any) -> bool:
    """Whether the report loads a ``kind`` model's saved artefact (a pipeline or a meta-learner; a Cox
    regression, for its nomogram and its parameter count)."""
    traits = traits_of(kind) if isinstance(kind, str) else None
    return traits is not None and (traits.saved in ("pipeline", "meta") or traits.regression == "cox")


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
                     manifests: Mapping[str, FitRecord], cache: FigureCache | None = None) -> list[dict[str, Any]]:
    """Each model's training patients and events against the Riley et al. (BMJ 2020) minimum sample size:
    prevalence from the training patients, R²cs anticipated from the out-of-fold AUC (Riley et al. 2021),
    parameters after one-hot encoding and PCA. ``short`` flags a training set below the required n."""
    from analytics.stats import sample_size
    from analytics.stats.added_value import SampleSize

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
            row["note"] = ("a published model: never fitted, no parameters estimated" if traits.published
                           else "averages its members' scores: no parameters of its own")
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
        row["auc"] = fmt(estimate_value(auc))
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
            # R²cs from the AUC is a simulation of a million patients: taken from the report's cache when done before
            prevalence, c = sm.n_positive / sm.n, float(auc.estimate)

            def compute(q: float = prevalence, k: int = p, a: float = c) -> dict[str, Any]:
                return asdict(sample_size(q, k, auc=a))

            req = SampleSize(**(cache or FigureCache(None)).value("sample_size", compute, prevalence, p, c))
        except ValueError as exc:
            row["note"] = f"not computable: {exc}"
            continue
        row.update(r2=fmt(req.r2_cs), c1=str(req.criterion_1), c2=str(req.criterion_2), c3=str(req.criterion_3),
                   required=str(req.n), short=sm.n < req.n)
        if traits is not None and traits.flexible:
            row["note"] = "criteria derived for regression models: a lower bound for a flexible learner"
    return out


def nomogram_figures(study: StudyConfig, models: Sequence[str], fitted: Mapping[str, Any], cohort: Any,
                     predictions: pl.DataFrame, variables: pl.DataFrame,
                     cache: FigureCache | None = None) -> tuple[list[Embedded], list[str]]:
    """A nomogram of each fitted logistic or Cox model on clinical variables and scores (axes over the training
    patients' values, in the variables' units; a Cox model's survival at each of its horizons), and why a model
    of those kinds has none (each drawing from ``cache`` when drawn before from an equal nomogram)."""
    from analytics.models.data import SCORE_PREFIX, assemble, input_models
    from analytics.report.nomogram import (
        NomogramError,
        cox_nomogram,
        cox_nomogram_figure,
        nomogram,
        nomogram_figure,
    )

    cache = cache or FigureCache(None)
    out: list[Embedded] = []
    notes: list[str] = []
    units = {r["name"]: (r.get("label") or r["name"]) + (f" ({r['unit']})" if r.get("unit") else "")
             for r in variables.to_dicts()}
    time_unit = next((str(r.get("unit") or "") for r in variables.to_dicts() if r.get("role") == "time"), "")
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
            full = assembled.data.table
            assert full is not None  # a clinical model's inputs are a table
            table = full.loc[train].reset_index(drop=True)
            labels = {c: units.get(c, c) for c in table.columns}
            labels.update({c: f"Score of {c.removeprefix(SCORE_PREFIX)}" for c in table.columns if c.startswith(SCORE_PREFIX)})
            if fm.spec.traits.regression == "cox":
                horizons = fm.record.horizons
                if not horizons:
                    raise NomogramError("no horizons to predict survival at")
                cox = cox_nomogram(name, fm.learner, table, horizons, labels)
                out.append(Embedded(
                    f"fig-nomogram-{name}", figures.data_uri(cache.png(cox_nomogram_figure, cox, f"{name}: nomogram", time_unit)),
                    f"Nomogram of {name}",
                    f"{name}: nomogram of the final Cox model (the layout of rms::nomogram on a cph fit). Read each "
                    "predictor's points on the top scale, add them, and read the linear predictor and the predicted "
                    f"survival at each horizon ({', '.join(f'{t:g}' for t in horizons)}) below the total; "
                    "S(t) = S0(t)^exp(lp) with the Breslow baseline of the training patients; axes span the training "
                    "patients' values, a missing value counts as the training median (most frequent level)."))
                continue
            nom = nomogram(name, fm.learner.pipeline_, table, labels)
        except (NomogramError, CohortlabError, ValueError, KeyError) as exc:
            notes.append(f"{name}: no nomogram ({exc})")
            continue
        out.append(Embedded(f"fig-nomogram-{name}", figures.data_uri(cache.png(nomogram_figure, nom, f"{name}: nomogram")),
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


def coefficient_blocks(study: StudyConfig, models: Sequence[str],
                       manifests: Mapping[str, FitRecord]) -> list[dict[str, Any]]:
    """Per regression model with saved tables (``coefficients.csv``, ``anova.csv`` and the record's model line,
    :class:`analytics.models.coefficients.RegressionTables`): its coefficient rows, its per-term Wald rows in
    the layout of ``rms::anova`` and its model line, formatted. Read from the checked model folder."""
    from analytics.models.coefficients import RegressionTables
    from analytics.models.persist import read_files

    out = []
    for name in models:
        record = manifests.get(name)
        if record is None or not record.regression:
            continue
        files = read_files(study.models_dir / name, study.store_path) or {}
        tables = RegressionTables.from_files(record.regression, files)
        if tables is None:
            continue
        ratio = tables.ratio
        rows = [{"term": r["term"], "estimate": fmt(r["estimate"], 4), "ratio": fmt(r[ratio], 3),
                 "ci": "–" if r["ci_low"] is None else f"{fmt(r['ci_low'], 3)}–{fmt(r['ci_high'], 3)}",
                 "se": fmt(r["se"], 4), "z": fmt(r["z"], 2), "p": fmt_p(r["p"]), "note": r.get("note") or ""}
                for r in tables.coefficients.iter_rows(named=True)]
        anova = [] if tables.anova is None else [
            {"row": r["row"].strip(), "indent": r["row"].startswith(" "), "chisq": fmt(r["chisq"], 2), "df": r["df"],
             "p": fmt_p(r["p"])} for r in tables.anova.iter_rows(named=True)]
        out.append({"model": name, "kind": record.kind, "penalised": tables.penalised,
                    "ratio": "Odds ratio" if ratio == "odds_ratio" else "Hazard ratio", "rows": rows, "anova": anova,
                    "line": tables.model_line()})
    return out


def ph_blocks(study: StudyConfig, models: Sequence[str], time_label: str = "Time",
              cache: FigureCache | None = None) -> list[dict[str, Any]]:
    """Per Cox regression: the proportional-hazards table saved at fit time (``zph.json``: the Grambsch-Therneau
    test of ``cox.zph`` per term and globally, a term with p < 0.05 flagged) and its scaled Schoenfeld residual
    figure (from ``cache`` when drawn before from equal panels); or why there is no test (a penalised fit). A
    model saved without the file is left out."""
    from analytics.models.persist import read_zph
    from analytics.models.ph_check import ALPHA, zph_of

    out = []
    for name in models:
        rec = read_zph(study.models_dir / name, study.store_path)
        if rec is None:
            continue
        block: dict[str, Any] = {"model": name, "method": rec.get("method", ""), "reason": rec.get("reason"),
                                 "rows": [], "figure": None, "flagged": [], "alpha": ALPHA}
        out.append(block)
        zph = zph_of(rec)
        if zph is None:
            continue
        for t in zph.tests:
            flagged = t.term != "GLOBAL" and t.p < ALPHA
            block["rows"].append({"term": t.term, "chisq": fmt(t.chisq), "df": str(t.df), "p": fmt_p(t.p),
                                  "flagged": flagged, "global": t.term == "GLOBAL"})
        block["flagged"] = [r["term"] for r in block["rows"] if r["flagged"]]
        block["n"], block["events"] = rec.get("n"), rec.get("events")
        try:
            png = (cache or FigureCache(None)).png(figures.schoenfeld_figure, f"{name}: scaled Schoenfeld residuals",
                                                   figures.schoenfeld_panels(zph, ALPHA), time_label)
        except ValueError as exc:  # e.g. too few distinct event times for the smooth
            block["reason"] = f"no residual plot ({exc})"
            continue
        block["figure"] = Embedded(
            f"fig-ph-{name}", figures.data_uri(png), f"Scaled Schoenfeld residuals of {name}",
            f"{name}: scaled Schoenfeld residuals of each term against time (Kaplan-Meier transformed, as "
            "plot.cox.zph), with a natural-spline smooth (4 df) and its ±2 SE band; a flat smooth is a constant "
            f"log hazard ratio. Red: p < {ALPHA:g} (hazards not proportional).")
    return out


def survival_sample_size_rows(models: Sequence[str], fitted: Mapping[str, Any], manifests: Mapping[str, FitRecord],
                              cohort: Any, predictions: pl.DataFrame) -> list[dict[str, Any]]:
    """Each survival model's training patients against the Riley et al. minimum sample size for a time-to-event
    model (Stat Med 2019;38:1276, BMJ 2020;368:m441; pmsampsize ``type = "s"``, :func:`analytics.stats.
    sample_size_survival`): the event rate per unit of time and the mean follow-up of the training patients,
    the timepoint the model's first (main) horizon, parameters its coefficients. R²cs is anticipated, as the
    binary table does from the out-of-fold AUC, from the out-of-fold linear predictor: ``1 - exp(-LR/n)`` with
    LR the likelihood-ratio χ² of a Cox regression of the training outcome on it (Riley et al. 2019, eq. 10);
    15% of the largest possible R²cs where there is none (Riley et al. 2020's conservative default)."""
    from analytics.stats.cox_validation import cox_one
    from analytics.stats.sample_size_survival import max_r2_cs_survival, sample_size_survival

    out: list[dict[str, Any]] = []
    frame = None if cohort is None else cohort.frame
    for name in models:
        record = manifests.get(name)
        traits = traits_of(record.kind) if record is not None else None
        if record is None or traits is None or not traits.survival:
            continue
        row: dict[str, Any] = {"model": name, "kind": record.kind, "n": "–", "events": "–", "parameters": "–",
                               "rate": "–", "follow_up": "–", "timepoint": "–", "r2": "–", "r2_how": "", "c1": "–",
                               "c2": "–", "c3": "–", "required": "–", "required_events": "–", "epp": "–",
                               "short": False, "note": "", "values": None}
        out.append(row)
        coef = getattr(getattr(getattr(fitted.get(name), "learner", None), "model_", None), "coef_", None)
        if coef is None:
            row["note"] = (f"{record.kind}: no coefficients to count" if name in fitted or not traits.regression
                           else "no saved model to count parameters from")
            continue
        if frame is None or "time" not in frame.columns:
            row["note"] = "the cohort (time and event) could not be read"
            continue
        if not record.horizons:
            row["note"] = "no horizon: criterion 3 needs the timepoint of the predictions"
            continue
        oof = predictions.filter((pl.col("model") == name) & (pl.col("split") == "train")).join(
            frame.select("patient_id", "time", "event"), on="patient_id").drop_nulls(["time", "event"])
        time = oof.get_column("time").cast(pl.Float64).to_numpy()
        event = oof.get_column("event").cast(pl.Float64).to_numpy()
        if len(time) == 0 or event.sum() == 0 or time.sum() <= 0:
            row["note"] = "no training patients with follow-up and an event"
            continue
        p, n, e = int(np.asarray(coef).size), len(time), int(event.sum())
        rate, follow_up, timepoint = float(e / time.sum()), float(time.mean()), float(record.horizons[0])
        r2, how = 0.0, ""
        if traits.linear_predictor:
            try:
                lr = cox_one(time, event, oof.get_column("score").to_numpy()).lr
                r2 = 1.0 - float(np.exp(-lr / n))
                how = "out-of-fold: 1 − exp(−LR/n), LR of a Cox regression on the out-of-fold linear predictor"
            except ValueError:
                r2 = 0.0
        if not r2 > 0:
            r2 = 0.15 * max_r2_cs_survival(rate, follow_up)
            how = "15% of the largest possible R²cs (no out-of-fold likelihood ratio)"
        try:
            req = sample_size_survival(p, rate, timepoint, follow_up, r2_cs=r2)
        except ValueError as exc:
            row["note"] = f"not computable: {exc}"
            continue
        row.update(n=str(n), events=str(e), parameters=str(p), rate=f"{rate:.4g}", follow_up=f"{follow_up:.4g}",
                   timepoint=f"{timepoint:g}", r2=fmt(r2), r2_how=how, c1=str(req.criterion_1),
                   c2=str(req.criterion_2), c3=str(req.criterion_3), required=str(req.n),
                   required_events=f"{req.events:.0f}", epp=f"{req.events_per_parameter:.1f}", short=n < req.n,
                   values=req.as_dict())
    return out
