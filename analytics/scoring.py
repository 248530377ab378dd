"""Scores of saved models for a cohort's patients (``cohortlab`` predict; the training fit of a regression).

A second-stage model reads its input models' final-model scores, each input scored recursively from its own
saved model. A saved model scores only a cohort whose input columns are those it was fitted on.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from analytics.cohort import Cohort
from analytics.models import fusion, imputed
from analytics.models.data import Assembled, Columns, assemble, input_models
from analytics.models.persist import FittedModel, load_model
from analytics.outer_folds import FitError
from pipeline.config import StudyConfig


def predict(study: StudyConfig, model_name: str, cohort: Cohort) -> pl.DataFrame:
    """Scores of a saved model (and, recursively, its saved input models) for a cohort's patients.

    Every input score is the input model's final-model prediction. Patients
    lacking the model's inputs get a null score.

    Parameters
    ----------
    study
        The study whose ``models/`` folder holds the saved models.
    model_name
        The model.
    cohort
        Patients to score, with the pooled feature blocks the models read
        loaded (see :func:`analytics.fit_plan.required_inputs`); bags are read on demand.

    Returns
    -------
    polars.DataFrame
        ``patient_id``, ``score`` (Float64, null where inputs are lacking), in cohort order.
    """
    with threadpool_limits(limits=1):
        return saved_scores(study, model_name, cohort, {})


def saved_scores(study: StudyConfig, name: str, cohort: Cohort, memo: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """:func:`predict` of model ``name``, reusing (and filling) ``memo``: each model is scored once."""
    if name in memo:
        return memo[name]
    fitted = load_model(study.models_dir / name, study.store_path)
    spec = fitted.spec
    scores = {n: fusion.score_lookup(saved_scores(study, n, cohort, memo)) for n in input_models(spec)}
    assembled = assemble(spec, cohort, scores)
    # a model imputed by chained equations reads its auxiliary columns too (when the cohort returns them)
    aux = [c for c in imputed.auxiliary_of(fitted.learner) if c in cohort.frame.columns]
    assembled = imputed.with_auxiliary(spec, cohort.frame, assembled, str(cohort.file), names=aux)
    check_columns(fitted, assembled)
    out = np.full(len(cohort), np.nan)
    if assembled.available.any():
        out[assembled.available] = fitted.predict_score(assembled.data.take(assembled.available))
    frame = pl.DataFrame({"patient_id": cohort.patient_ids, "score": out}).with_columns(pl.col("score").fill_nan(None))
    memo[name] = frame
    return frame


def check_columns(fitted: FittedModel, assembled: Assembled) -> None:
    """Refuse a cohort whose input columns are not those the saved model was fitted on."""
    saved = fitted.record.saved_columns
    if saved is None or assembled.data.columns is None:
        return
    if Columns.from_dict(saved).names() != assembled.data.columns.names():
        raise FitError(f"model '{fitted.spec.name}': the cohort's input columns differ from those it was fitted on "
                       f"({fitted.path / 'manifest.json'})")


__all__ = ["check_columns", "predict", "saved_scores"]
