"""``cohortlab predict --explain K``: each scored patient's K largest SHAP contributions.

The model's fitted pipeline is explained as ``cohortlab explain`` explains it
(:func:`analytics.explain.shap_values.explain_pipeline`: linear SHAP for a logistic regression, tree SHAP for
XGBoost, Kernel SHAP otherwise; Lundberg & Lee, NeurIPS 2017), with the development training patients as the
background, on the model's output scale (log-odds for a logistic regression). A contribution is written
``name +0.42`` (it raises the output) or ``name -0.10``.
"""

from __future__ import annotations

import numpy as np

from analytics.cohort import load_cohort
from analytics.models.data import ModelData, assemble, input_models
from analytics.models.persist import FittedModel
from analytics.predict.patients import PredictError
from pipeline.config import StudyConfig


def top_contributions(study: StudyConfig, fitted: FittedModel, data: ModelData, k: int) -> list[str]:
    """Per row of ``data``, its ``k`` largest SHAP contributions by absolute value, as one text.

    Raises
    ------
    PredictError
        The model is not a classical pipeline on its own inputs (survival models, ensembles, networks, models
        reading other models' scores).
    """
    from analytics.explain.shap_values import explain_pipeline

    spec = fitted.spec
    pipeline = getattr(fitted.learner, "pipeline_", None)
    if pipeline is None or input_models(spec) or data.table is None or data.columns is None:
        raise PredictError(f"--explain: model '{spec.name}' ({spec.kind}) is not a classical pipeline on its own "
                           "inputs; SHAP contributions are given for logistic, svm and xgboost models")
    cohort = load_cohort(study, on_missing="keep")
    assembled = assemble(spec, cohort, {})
    train = np.flatnonzero((cohort.split == "train") & assembled.available)
    background = assembled.data.take(train).table
    assert background is not None
    expl = explain_pipeline(pipeline, background, data.table, categorical=list(data.columns.categorical),
                            patient_ids=list(data.patient_ids), seed=study.study.seed)
    names = expl.grouping.features
    out = []
    for row in np.asarray(expl.values, dtype=np.float64):
        top = np.argsort(-np.abs(row), kind="stable")[:k]
        out.append("; ".join(f"{names[j]} {row[j]:+.3g}" for j in top))
    return out


__all__ = ["top_contributions"]
