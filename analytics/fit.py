"""``cohortlab fit``: train every model of a study and write its predictions.

For each model in ``study.toml`` order (a model only names earlier models):

1. Its inputs are assembled for every cohort patient
   (:func:`analytics.models.data.assemble`); patients lacking a feature block,
   an instance bag or an input model's score get no prediction from it and are
   listed in the result.
2. **Outer cross-validation** on the labelled training patients: one
   stratified, seeded K-fold assignment (``[validation] folds``, fewer when a
   class is smaller; ``study.seed``) shared by every model. For each fold the
   learner (pipeline, hyper-parameter search and all) is fitted on the other
   folds and predicts this one: the out-of-fold (OOF) predictions of training
   patients, stored with their fold index.
3. **Final refit** on all training patients; it predicts the internal and
   external patients (fold NULL). Internal and external patients never reach
   anything that is fitted.
4. With ``[validation] internal`` set, the model's whole procedure is refitted on B resamples of the
   training patients its final model used (:mod:`analytics.internal_fit`); the replicates are cached under
   ``<study>/models/.internal/`` and recorded in the manifest (``internal``).
5. The final model is saved under ``<study>/models/<name>/``
   (:mod:`analytics.models.persist`) and the model's rows in the store's
   ``predictions`` table are replaced in one transaction.

Second-stage models (fusion ``scores``, ``voting`` / ``stacking`` members)
read their inputs' OOF scores for training patients and final-model scores for
held-out ones (:mod:`analytics.models.fusion`). The outer fold k model of one
that fits something on those scores (not soft voting) is fitted on input scores
cross-fitted without fold k instead, and scores fold k with the input models'
fold k models (nested cross-fitting, :mod:`analytics.crossfit`; ``nested =
false`` on the model skips it and its training estimate is optimistic). The
fits are cached under ``<study>/models/.crossfit/``.

Resumable: a model whose saved ``fit_key`` (its config, the cohort hash of its
inputs, the outer folds, the seed and its input models' prediction hashes)
matches is not refitted; its saved predictions are written back to the store
if the store's rows differ. A folder whose files are not the ones recorded in the
store (sha256, :mod:`analytics.models.persist`), or that an older cohortlab wrote
as a pickle, is never read: the model is refitted, with a warning naming the file.

The stage's parts, each importable from here too: the outer folds and :class:`FitError`
(:mod:`analytics.outer_folds`), the models selected and their outcomes (:mod:`analytics.fit_plan`), the
result records (:mod:`analytics.fit_results`), the store's ``predictions`` table
(:mod:`analytics.prediction_table`) and saved models' scores (:mod:`analytics.scoring`).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from analytics import internal_fit
from analytics.cohort import Cohort, feature_key, load_cohort
from analytics.crossfit import CACHE_FOLDER, CrossFitter, FitCache, needs_nesting, optimistic
from analytics.fit_engine import Engine, train_learner
from analytics.fit_plan import declared_orders as _declared_orders
from analytics.fit_plan import fit_key, required_inputs, select_models, study_horizons
from analytics.fit_plan import labels as _labels
from analytics.fit_plan import strata as _strata
from analytics.fit_plan import survival as _survival
from analytics.fit_plan import targets as _targets
from analytics.fit_results import FitResult, ModelReport, short_of_cohort, tuning_record
from analytics.fit_results import jsonable as _jsonable
from analytics.fit_results import oof_auc as _oof_auc
from analytics.fit_results import oof_c as _oof_c
from analytics.fit_results import split_counts as _counts
from analytics.impute.from_file import with_imputations
from analytics.models import fusion, harmonize, imputed, registry, tuning
from analytics.models.artifacts import FitRecord, ml_regression_reason
from analytics.models.coefficients import regression_tables
from analytics.models.data import (
    Assembled,
    ModelData,
    assemble,
    dropped_text,
    input_models,
    mil_feature_set,
    pooled_refs,
)
from analytics.models.learners import Learner
from analytics.models.persist import (
    COEFFICIENTS,
    FITTED,
    PREDICTIONS,
    RISK_GRID,
    ZPH,
    ArtifactError,
    LegacyModelError,
    library_versions,
    load_model,
    manifest_of,
    predictions_hash,
    read_files,
    risk_grid_times,
    save_model,
)
from analytics.models.ph_check import ph_check
from analytics.outer_folds import FitError, OuterFolds, outer_folds
from analytics.outer_folds import fold_rule as _fold_rule
from analytics.prediction_table import PREDICTION_SCHEMA, stored_predictions, write_predictions
from analytics.scoring import predict
from analytics.scoring import saved_scores as _predict
from analytics.splits import SPLITS
from pipeline import atomic
from pipeline.config import Model, StudyConfig

log = logging.getLogger("cohortlab.fit")

HORIZON_SCHEMA = {"model": pl.String, "patient_id": pl.String, "horizon": pl.Float64, "risk": pl.Float64}


# --- fitting one model ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelFit:
    """One model fitted by outer CV and refit: its predictions and final learner."""

    predictions: pl.DataFrame
    learner: Learner
    fold_chosen: list[dict[str, Any]]
    attention: pl.DataFrame | None
    missing: dict[str, list[str]]
    unlabelled: list[str]
    horizon_risks: pl.DataFrame | None = None  # survival models: model, patient_id, horizon, risk
    risk_grid: pl.DataFrame | None = None  # survival models: model, patient_id, time, risk (integrated Brier)
    training: np.ndarray | None = None  # positions of the training patients the final model was fitted on
    fits: int = 0  # estimators fitted, inner tuning fits included
    # [imputation] method = "mice": each predicted patient's score (and survival risks) on each completion
    imputed_predictions: pl.DataFrame | None = None
    imputed_horizon_risks: pl.DataFrame | None = None


def _attention_rows(data: Any, index: np.ndarray, weights: list[np.ndarray], split: np.ndarray,
                    fold: int | None) -> list[pl.DataFrame]:
    out = []
    for i, w in zip(index, weights):
        out.append(data.instances[i].with_columns(
            pl.lit(data.patient_ids[i]).alias("patient_id"), pl.lit(str(split[i])).alias("split"),
            pl.lit(fold, dtype=pl.Int32).alias("fold"), pl.Series("attention", w, dtype=pl.Float64),
        ))
    return out


def fit_model(
    spec: Model,
    inputs: Assembled,
    labels: np.ndarray,
    split: np.ndarray,
    plan: OuterFolds,
    seed: int,
    make: Callable[[Model, int], Learner] | None = None,
    progress: bool = False,
    fold_data: Sequence[ModelData] | None = None,
    on_fold: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    horizons: Sequence[float] = (),
    grid: Sequence[float] = (),
    engine: Engine | None = None,
) -> ModelFit:
    """Outer-CV out-of-fold predictions for training patients, then a final refit for held-out ones.

    Parameters
    ----------
    spec
        The model's entry.
    inputs
        Its assembled inputs for every cohort patient.
    labels
        float64 labels per patient (NaN = unlabelled), or for a survival model ``(n, 2)`` times and
        events (a NaN in a row = no survival outcome).
    split
        ``train`` / ``internal`` / ``external`` per patient.
    plan
        The shared outer folds.
    seed
        The study seed.
    make
        Builds a fresh learner (default :func:`analytics.models.registry.build_learner`).
    progress
        Show a progress bar over folds.
    fold_data
        Per outer fold, the inputs its model is fitted on and scores its patients with
        (nested cross-fitting, :meth:`analytics.crossfit.CrossFitter.fold_inputs`); default ``inputs``.
    on_fold
        Called with each outer fold, the positions of its patients and their scores.
    horizons
        Survival models: the times at which to predict absolute risk (``ModelFit.horizon_risks``).
    grid
        Survival models: a grid of times up to the last horizon at which to predict it too
        (``ModelFit.risk_grid``, the integrated Brier score; :func:`analytics.models.persist.risk_grid_times`).
    engine
        Where the outer folds' fits and the final refit run (default: this process); the predictions are the
        same bytes on every engine.
    """
    make = make or registry.build_learner
    data, available = inputs.data, inputs.available
    ids = list(data.patient_ids)
    survival = np.ndim(labels) == 2
    labelled = np.isfinite(labels).all(axis=1) if survival else np.isfinite(labels)
    is_train = split == "train"
    fold_of = plan.fold_of()
    fold = np.array([fold_of.get(p, -1) for p in ids], dtype=np.int64)
    stray = [p for p, f, t, lab in zip(ids, fold, is_train, labelled) if t and lab and f < 0]
    if stray and survival == (plan.endpoint == "survival"):
        raise FitError(f"model '{spec.name}': training patients without an outer fold: {stray[:10]}")
    # a model of another endpoint than the folds' trains on the patients the folds hold that have its outcome
    use = is_train & labelled & available & (fold >= 0)
    y = labels if survival else np.where(labelled, labels, -1).astype(np.int64)
    scores = np.full(len(ids), np.nan)
    fold_chosen: list[dict[str, Any]] = []
    attention: list[pl.DataFrame] = []
    is_mil = spec.traits.bags
    # absolute risk at the horizons (survival models): out-of-fold from each fold's model, as the scores
    # (the grid's columns follow the horizons')
    at = [*horizons, *grid] if horizons else []
    risk = np.full((len(ids), len(at)), np.nan) if survival and horizons else None

    # the outer folds' fits, then the final refit: each independent of the others, so they may run at once
    jobs: list[tuple[str, np.ndarray, ModelData]] = []
    tests: list[tuple[int, np.ndarray, ModelData]] = []
    for k in range(plan.k):
        tr, te = np.flatnonzero(use & (fold != k)), np.flatnonzero(use & (fold == k))
        if len(te) == 0:
            continue
        rows = data if fold_data is None else fold_data[k]
        jobs.append((f"outer fold {k}", tr, rows))
        tests.append((k, te, rows))
    jobs.append(("final refit", np.flatnonzero(use), data))
    per_imp = imputed.PerImputation(len(ids))  # [imputation] method = "mice": scores per completion
    engine = engine or Engine()
    fitted = engine.fits(spec, jobs, y, seed, make, engine.parallel(spec, int(use.sum())))
    fits = 0
    for k, te, rows in tqdm(tests, desc=f"{spec.name} outer folds", leave=False, disable=not progress):
        learner = next(fitted)
        fits += int(getattr(learner, "n_fits_", 1))
        fold_chosen.append({"fold": k, **learner.chosen})
        scores[te] = per_imp.score(learner, rows.take(te), te)
        if risk is not None and hasattr(learner, "risk_at"):  # soft voting averages risks: no absolute risk
            risk[te] = per_imp.risk(learner, rows.take(te), te, at, len(horizons))
        if on_fold is not None:
            on_fold(k, te, scores[te])
        if is_mil:
            attention += _attention_rows(data, te, learner.attention(data.take(te)), split, k)
    final = next(fitted)
    fits += int(getattr(final, "n_fits_", 1))
    held = np.flatnonzero(available & ~is_train)
    # [imputation] validation_imputation = "with_outcome": each held-out split completed by chains of its own
    imputed.complete_held_out(final, data, held, split, labels)
    if len(held):
        scores[held] = per_imp.score(final, data.take(held), held)
        if is_mil:
            attention += _attention_rows(data, held, final.attention(data.take(held)), split, None)
    keep = np.flatnonzero(use | (available & ~is_train))
    horizon_risks = risk_grid = None
    if risk is not None and hasattr(final, "risk_at"):
        if len(held):
            risk[held] = per_imp.risk(final, data.take(held), held, at, len(horizons))
        horizon_risks = _horizon_frame(spec.name, ids, keep, risk[:, :len(horizons)], horizons)
        if grid:
            risk_grid = _horizon_frame(spec.name, ids, keep, risk[:, len(horizons):], grid).rename({"horizon": "time"})
    if not np.isfinite(scores[keep]).all():
        raise FitError(f"model '{spec.name}': non-finite predicted scores")
    predictions = pl.DataFrame({
        "model": [spec.name] * len(keep), "patient_id": [ids[i] for i in keep],
        "split": [str(split[i]) for i in keep], "score": scores[keep],
        "fold": [int(fold[i]) if is_train[i] else None for i in keep],
    }, schema=PREDICTION_SCHEMA)
    unlabelled = [p for p, t, lab in zip(ids, is_train, labelled) if t and not lab]
    imp_predictions, imp_risks = per_imp.frames(spec.name, ids, split,
                                                [int(fold[i]) if is_train[i] else None for i in range(len(ids))],
                                                keep, horizons)
    return ModelFit(predictions, final, fold_chosen,
                    pl.concat(attention) if attention else None, inputs.missing, unlabelled, horizon_risks, risk_grid,
                    np.flatnonzero(use), fits, imp_predictions, imp_risks)


def _horizon_frame(name: str, ids: list[str], keep: np.ndarray, risk: np.ndarray,
                   horizons: Sequence[float]) -> pl.DataFrame:
    """Long table of absolute risks: model, patient_id, horizon, risk (kept patients only)."""
    return pl.DataFrame({
        "model": [name] * (len(keep) * len(horizons)),
        "patient_id": [ids[i] for i in keep for _ in horizons],
        "horizon": [float(t) for _ in keep for t in horizons],
        "risk": risk[keep].reshape(-1),
    }, schema=HORIZON_SCHEMA)


# --- the entry points ----------------------------------------------------------------------------


def _nested_inputs(spec: Model, crossfit: CrossFitter, k: int, progress: bool,
                   ) -> tuple[dict[str, Any], list[ModelData] | None]:
    """A second-stage model's inputs for each outer fold (nested cross-fitting), and the manifest's record of it."""
    record: dict[str, Any] = {"needed": needs_nesting(spec), "nested": False,
                              "optimistic": optimistic(spec, crossfit.specs), "reason": None}
    if not record["needed"]:
        return record, None
    if not spec.nested:
        record["reason"] = "nested = false"
        return record, None
    t0, fits, hits = time.perf_counter(), crossfit.fits, crossfit.cache.hits
    data: list[ModelData] = []
    bar = tqdm(range(k), desc=f"{spec.name} nested cross-fitting", leave=False, disable=not progress)
    try:
        for j in bar:
            data.append(crossfit.fold_inputs(spec.name, j))
            bar.set_postfix_str(f"{crossfit.fits - fits} fits, {crossfit.cache.hits - hits} cached")
    except FitError as exc:
        log.warning("model '%s' is not nested; its training estimate is optimistic: %s", spec.name, exc)
        record.update(optimistic=True, reason=str(exc))
        return record, None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    record.update(nested=True, fits=crossfit.fits - fits, cached=crossfit.cache.hits - hits, seconds=round(seconds, 2))
    log.info("model %s: nested cross-fitting over %d outer folds: %d input-model fits, %d cached, %.1f s", spec.name,
             k, record["fits"], record["cached"], seconds)
    return record, data


def _optimistic_reason(nesting: Mapping[str, Any] | None) -> str | None:
    return FitRecord("", "", nesting=dict(nesting) if nesting else None).optimistic_reason


def _training_fit(study: StudyConfig, spec: Model, cohort: Cohort, learner: Learner,
                  ) -> tuple[int | None, pl.DataFrame | None]:
    """A maximum-likelihood regression's number of coefficients and its final model's fitted probabilities of
    the training patients (``patient_id``, ``score``, cohort order), input scores from the saved input models'
    final fits (as :func:`predict` scores new patients)."""
    steps = getattr(getattr(learner, "pipeline_", None), "named_steps", None)
    coef = None if steps is None or "clf" not in steps else getattr(steps["clf"], "coef_", None)
    if coef is None:
        return None, None
    memo: dict[str, pl.DataFrame] = {}
    scores = {n: fusion.score_lookup(_predict(study, n, cohort, memo)) for n in input_models(spec)}
    assembled = assemble(spec, cohort, scores)
    train = assembled.available & (np.asarray(cohort.split) == "train")
    ids = np.asarray(cohort.patient_ids, dtype=object)[train]
    score = learner.predict_score(assembled.data.take(train)) if train.any() else np.empty(0)
    frame = pl.DataFrame({"patient_id": ids.tolist(), "score": np.asarray(score, dtype=np.float64)},
                         schema={"patient_id": pl.String, "score": pl.Float64})
    return _free_parameters(learner, assembled.data.take(train).table), frame


def _free_parameters(learner: Learner, table: Any) -> int:
    """The coefficients a maximum-likelihood fit estimates beside its intercept: the rank of its model matrix
    on the training patients, less one for the intercept.

    A factor enters the pipeline as one column per level, so it adds levels - 1 free parameters next to the
    intercept, as in R's model matrix with treatment coding; ``anova(glm_old, glm_new, test = "LRT")`` counts
    these, not the columns.
    """
    pipeline = learner.pipeline_
    design = pipeline[:-1].transform(table) if len(pipeline.steps) > 1 else table
    design = design.toarray() if hasattr(design, "toarray") else np.asarray(design, dtype=np.float64)
    with_intercept = np.column_stack([np.ones(design.shape[0]), design])
    return int(np.linalg.matrix_rank(with_intercept)) - 1


def _saved_files(folder: Path, store_path: Path, name: str) -> dict[str, bytes] | None:
    """A model folder's files, checked against the store; None (the model is refitted) when there is no
    folder, when an older cohortlab wrote it (a pickle, never read) or when a file is not the one fit wrote."""
    try:
        return read_files(folder, store_path)
    except LegacyModelError:
        log.warning("model %s was saved by an older cohortlab in a format that can run code (never loaded); "
                    "refitting it", name)
    except ArtifactError as exc:
        log.warning("%s; refitting model %s", exc, name)
    return None


def _fit_one(study: StudyConfig, spec: Model, cohort: Cohort, plan: OuterFolds, predictions: dict[str, pl.DataFrame],
             hashes: dict[str, str], progress: bool, crossfit: CrossFitter | None = None,
             ray: str | None = None, engine: Engine | None = None) -> ModelReport:
    t0 = time.perf_counter()
    seed = study.study.seed
    inputs = input_models(spec)
    bags = [mil_feature_set(spec)] if spec.traits.bags else []
    cohort_hash = cohort.digest(features=pooled_refs(spec), bags=bags)
    key_inputs = {n: hashes[n] for n in inputs}
    ordered = _declared_orders(spec, cohort)
    if ordered:  # a declared level order changes the one-hot encoding (a bracketed name: no model is called so)
        key_inputs["[levels]"] = json.dumps(ordered, sort_keys=True)
    if spec.references:  # [variables] reference levels change a regression's treatment coding
        key_inputs["[references]"] = json.dumps(spec.references, sort_keys=True)
    if (imputation_key := imputed.key(spec)) is not None:  # changed [imputation] settings refit the model
        key_inputs["[imputation]"] = imputation_key
    key = fit_key(spec, cohort_hash, plan, seed, key_inputs)
    folder = study.models_dir / spec.name
    labels = dict(zip(cohort.patient_ids, _labels(cohort).tolist()))
    targets = _targets(study, spec, cohort)
    is_survival = targets.ndim == 2
    horizons = study_horizons(study, cohort) if is_survival else []
    files = _saved_files(folder, study.store_path, spec.name)
    saved = None if files is None else manifest_of(folder, files)
    manifest = None if saved is None else FitRecord.from_dict(saved, folder / "manifest.json")
    # a survival model's saved risks must be at the study's horizons, on their grid (a model saved before the
    # grid was, or before the horizons changed, is refitted)
    risks_current = not is_survival or manifest is None or (
        manifest.horizons == horizons and (not horizons or RISK_GRID in (files or {})))
    # a maximum-likelihood regression saved before its training fit was: refitted, so validate reads it
    lr_current = manifest is None or ml_regression_reason(spec) is not None or FITTED in (files or {})
    # a regression saved before its coefficient tables were: refitted, so the report and notebook read them
    lr_current = lr_current and (manifest is None or spec.traits.regression is None or bool(spec.features)
                                 or COEFFICIENTS in (files or {}))
    # a cox model saved before its proportional-hazards check was: refitted, so the report reads it
    lr_current = lr_current and (manifest is None or spec.traits.regression != "cox" or ZPH in (files or {}))
    # a model imputed by chained equations has no single training fit: its pooled tables come with the model
    lr_current = lr_current or (manifest is not None and manifest.imputation is not None)
    # internal validation ([validation] internal, B, repeats): a model saved with other settings is refitted (its
    # cached replicates are kept, analytics.internal_fit)
    resampling = internal_fit.resampling_of(study)
    internal_current = manifest is None or internal_fit.is_current(manifest.internal, resampling, study.models_dir)
    if (files is not None and manifest is not None and manifest.fit_key == key and risks_current and lr_current
            and internal_current and manifest.predictions_hash is not None):
        frame = pl.read_parquet(io.BytesIO(files[PREDICTIONS])).cast(PREDICTION_SCHEMA)
        if predictions_hash(stored_predictions(study.store_path, spec.name)) != manifest.predictions_hash:
            log.info("model %s: store rows differ from the saved predictions; rewriting them", spec.name)
            write_predictions(study.store_path, spec.name, frame)
        predictions[spec.name], hashes[spec.name] = frame, manifest.predictions_hash
        return ModelReport(spec.name, spec.kind, "up to date", _counts(frame), manifest.oof_auc,
                           manifest.chosen, manifest.missing, manifest.unlabelled,
                           time.perf_counter() - t0, folder, manifest.dropped,
                           manifest.optimistic_reason, manifest.oof_c, (manifest.tuning or {}).get("fits"))

    assembled = assemble(spec, cohort, fusion.training_scores(inputs, predictions))
    # [imputation] auxiliary: cohort columns the chains read and no model does
    assembled = imputed.with_auxiliary(spec, cohort.frame, assembled, str(cohort.file))
    nesting, fold_data, on_fold = None, None, None
    if crossfit is not None:
        nesting, fold_data = _nested_inputs(spec, crossfit, plan.k, progress)
        if spec.name in crossfit.shared and (not inputs or nesting["nested"]):
            # this model's outer-fold fits are the fits a nested model's folds read: keep their scores
            on_fold = lambda k, te, s: crossfit.record(spec.name, k, te, s)  # noqa: E731
    t_fit = time.perf_counter()
    result = fit_model(spec, assembled, targets, cohort.split, plan, seed, progress=progress,
                       fold_data=fold_data, on_fold=on_fold, horizons=horizons, grid=risk_grid_times(horizons),
                       engine=engine)
    fit_seconds = time.perf_counter() - t_fit
    dropped = dict(getattr(result.learner, "dropped_", None) or {})
    used = getattr(result.learner, "columns_", None) or assembled.data.columns
    if dropped:
        log.warning("%s", dropped_text(spec.name, dropped))
    frame = result.predictions
    digest = predictions_hash(frame)
    oof_auc = None if is_survival else _oof_auc(frame, labels)
    causes = spec.causes if spec.traits.competing else None  # a competing-risk model's targets hold status codes
    oof_c = _oof_c(frame, cohort, targets, causes.cause if causes else None) if is_survival else None
    used_sets = sorted({r.split(":", 1)[0] for r in pooled_refs(spec)} | set(bags))
    # a maximum-likelihood regression: its coefficients and training fitted probabilities, for the
    # likelihood-ratio test (validate reads them here and never refits or re-predicts)
    free, fitted = (_training_fit(study, spec, cohort, result.learner) if ml_regression_reason(spec) is None
                    else (None, None))
    tables = None if result.training is None else regression_tables(
        result.learner, assembled.data.take(result.training), targets[result.training])
    internal = None if resampling is None or result.training is None else internal_fit.for_model(
        spec, assembled.data, targets, result.training, resampling, fit_key=key, models_dir=study.models_dir,
        horizons=horizons, n_jobs=study.compute.n_jobs, ray=ray, progress=progress, second_stage=bool(inputs),
        final=result.learner)
    manifest = FitRecord(**_jsonable({
        "name": spec.name, "kind": spec.kind, "config": spec.model_dump(mode="json"),
        "features": list(spec.features), "clinical": list(spec.clinical), "inputs": inputs,
        "input_hashes": {n: hashes[n] for n in inputs},
        "cohort": {"name": cohort.name, "file": str(cohort.file), "params": cohort.params, "hash": cohort_hash},
        "feature_sets": {fs: cohort.feature_sets.get(fs) for fs in used_sets},
        "seed": seed, "outer_folds": {"k": plan.k, "hash": plan.digest()}, "fit_key": key,
        "chosen": result.learner.chosen, "fold_chosen": result.fold_chosen,
        "inner_auc": getattr(result.learner, "inner_auc_", None), "nesting": nesting,
        "tuning": tuning_record(spec, getattr(result.learner, "inner_auc_", None), result.fits, fit_seconds),
        # the columns the final model uses; input_columns, those the model reads from a cohort
        "columns": used.to_dict() if used is not None else None,
        "input_columns": assembled.data.columns.to_dict() if assembled.data.columns is not None else None,
        "dropped": dropped,
        "predictions_hash": digest, "counts": _counts(frame), "oof_auc": oof_auc,
        "endpoint": study.endpoint(spec), "horizons": horizons, "oof_c": oof_c,
        "missing": result.missing, "unlabelled": result.unlabelled, "versions": library_versions(),
        "device": getattr(getattr(result.learner, "classifier_", None), "device_", None),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "free_parameters": free,
        "internal": internal, "regression": None if tables is None else tables.record(),
        "imputation": imputed.record(spec, result.learner),
    }))
    # a harmonised model: its ComBat fit, new centres and PCA before / after, for the report
    harmonization = harmonize.record_fit(result.learner, assembled.data, frame) if spec.harmonize == "combat" else None
    save_model(folder, result.learner, manifest, frame, result.attention, result.horizon_risks, result.risk_grid,
               harmonization=harmonization, store_path=study.store_path, fitted=fitted,
               tables=None if tables is None else tables.files(),
               zph=None if result.training is None else ph_check(result.learner, assembled.data.take(result.training),
                                                                 targets[result.training]),
               imputed=(result.imputed_predictions, result.imputed_horizon_risks))
    write_predictions(study.store_path, spec.name, frame)
    predictions[spec.name], hashes[spec.name] = frame, digest
    log.info("model %s (%s): fitted; %s; OOF AUC %s", spec.name, spec.kind, _counts(frame), oof_auc)
    return ModelReport(spec.name, spec.kind, "fitted", _counts(frame), oof_auc, manifest.chosen, result.missing,
                       result.unlabelled, time.perf_counter() - t0, folder, dropped, _optimistic_reason(nesting),
                       oof_c, result.fits)


def fit(study: StudyConfig, models: list[str] | None = None, progress: bool = True,
        plan: OuterFolds | None = None, ray: str | None = None) -> FitResult:
    """Fit the study's models (or ``models`` and what they depend on); see the module notes.

    Parameters
    ----------
    study
        The validated study.
    models
        Only these models (their input models are fitted too when not up to date).
    progress
        Progress bars over models and folds.
    plan
        The outer fold of every labelled training patient (default: stratified and seeded by
        :func:`outer_folds`); given to hold the assignment fixed while the labels change. It serves
        the models of its ``endpoint``; survival models of a binary study (and binary models of a
        survival study) get their own folds, drawn on the training patients with their outcome.
    ray
        A Ray address: the internal-validation replicates (``[validation] internal``) run as Ray tasks there
        (:mod:`analytics.internal_fit`); None: on ``[compute] n_jobs`` local processes.

    Returns
    -------
    FitResult
        Per model: status, patients predicted per split, OOF AUC, chosen
        hyper-parameters and the patients lacking its inputs.
    """
    # small matrices: BLAS threads only add contention (and run-to-run variation)
    with threadpool_limits(limits=1):
        # model folders and cache files half-written by a run that was killed (disk full, interrupted)
        for folder in (study.models_dir, study.models_dir / CACHE_FOLDER):
            if atomic.remove_stale_temporaries(folder):
                log.info("removed temporaries left by an interrupted run in %s", folder)
        specs = select_models(study, models)
        if not specs:
            return FitResult(study.cohort.name if study.cohort else "-", {}, 0, study.study.seed, [], study.models_dir)
        features, bags = required_inputs(specs)
        # [imputation] from: the cohort once per imputation made elsewhere (its completions feed every model)
        cohort = with_imputations(study, load_cohort(study, features=features, bags=bags, on_missing="keep"))
        if study.validation.internal_external:  # fewer than two development centres: refused before any fit
            from analytics.iecv import check_iecv

            developed = check_iecv(study, cohort, specs)  # assembled once: the IECV fits below reuse it
        # files that failed their check (the store logged each one when the cohort was loaded)
        used_sets = {feature_key(r)[0] for r in features} | set(bags)
        left_out = tuple(str(p) for p in cohort.left_out if p.feature_set in used_sets)
        counts = {s: int((cohort.split == s).sum()) for s in SPLITS}
        predictions: dict[str, pl.DataFrame] = {}
        hashes: dict[str, str] = {}
        seed, folds = study.study.seed, study.validation.folds
        versions = {k: v for k, v in library_versions().items() if k != "cohortlab"}
        cache = FitCache(study.models_dir / CACHE_FOLDER)
        endpoints = {m.name: study.endpoint(m) for m in specs}
        # one set of outer folds per endpoint the models predict: binary models' folds hold the labelled
        # training patients (stratified on the label), survival models' those with follow-up (on the event)
        plans: dict[str, OuterFolds] = {}
        crossfits: dict[str, CrossFitter] = {}
        engine = Engine(study.compute.n_jobs, ray)  # opens nothing until a model's fits need workers
        for endpoint in dict.fromkeys([study.study.endpoint, *endpoints.values()]):
            labels = _strata(cohort, endpoint)
            train = (cohort.split == "train") & np.isfinite(labels)
            given = plan if plan is not None and plan.endpoint == endpoint else None
            plans[endpoint] = given or replace(outer_folds(
                np.asarray(cohort.patient_ids, dtype=object)[train], labels[train], folds, seed), endpoint=endpoint)
            crossfits[endpoint] = CrossFitter(
                {m.name: m for m in specs}, cohort, labels, cohort.split, _fold_rule(plans[endpoint], folds, seed),
                lambda spec, data, y, step: train_learner(spec, data, y, seed, registry.build_learner, step),
                cache, {"seed": seed, "folds": folds, "versions": versions, "inner_folds": tuning.FOLDS_VERSION},
                survival=_survival(cohort), endpoints=endpoints,
                fit_many=lambda spec, jobs, y: engine.fit_all(spec, jobs, y, seed, registry.build_learner),
            )
        plan = plans[study.study.endpoint]
        try:
            reports = [
                _fit_one(study, spec, cohort, plans[endpoints[spec.name]], predictions, hashes, progress,
                         crossfits[endpoints[spec.name]], ray=ray, engine=engine)
                for spec in tqdm(specs, desc="fitting models", unit="model", disable=not progress)
            ]
        finally:
            cache.flush()
            engine.close()
        for m in reports:
            if text := short_of_cohort(m, len(cohort)):
                log.warning("%s", text)
        if study.validation.internal_external:  # each development centre left out in turn (analytics.iecv)
            from analytics.iecv import run_iecv

            run_iecv(study, cohort, specs, ray=ray, developed=developed)
        return FitResult(cohort.name, counts, plan.k, study.study.seed, reports, study.models_dir, left_out)


__all__ = ["Engine", "FitError", "FitResult", "ModelReport", "OuterFolds", "fit", "fit_model", "load_model", "outer_folds",
           "predict", "required_inputs", "select_models", "stored_predictions", "write_predictions"]
