"""Models updated for a new centre (``[validation] updating``), saved as models of their own.

``cohortlab validate`` updates a binary regression model for each external centre (Steyerberg, *Clinical
Prediction Models*, 2009, ch. 20; Vergouwe et al., Stat Med 2017;36:4529-4539) and writes the method the
closed test chose as a published model (``kind = "fixed"``: a formula and its coefficients) in
``models/<model>-updated-<centre>/``, beside the original and never over it. Every updating method is a
logistic model on the original's model matrix, so its coefficients hold it exactly:

* recalibration-in-the-large ``a + lp``: the intercept plus ``a``;
* logistic recalibration ``a + b lp``: the intercept ``a + b beta_0``, each coefficient ``b beta_j``;
* revision: the coefficients re-estimated on the centre's patients, ``glm(y ~ formula)``.

The folder's record says what the model updates and how (:attr:`FitRecord.updates`); ``cohortlab predict``
and ``study.model(name)`` find it by name (:func:`with_updated`). Its performance on that centre is apparent,
never a validation.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from analytics.models.artifacts import FitRecord, ml_regression_reason
from analytics.models.fixed import INTERCEPT, FixedLearner
from analytics.models.persist import COEFFICIENTS, PersistError, read_files, read_record, save_model
from pipeline.config import Model, StudyConfig
from pipeline.config_base import NAME
from pipeline.formula import parse_formula

UPDATED = "-updated-"


def updated_name(model: str, center: str) -> str:
    """The name of ``model`` updated for ``center``: ``<model>-updated-<center>``."""
    return f"{model}{UPDATED}{center}"


def regression_terms(study: StudyConfig, spec: Model) -> tuple[str, dict[str, float]] | str:
    """The formula and coefficients (R's column names) of a binary logistic regression that a published model
    can hold, or why there are none: a published logistic model's own, or those an unpenalised ``logistic``
    model of clinical inputs saved (``coefficients.csv``)."""
    if study.endpoint(spec) != "binary":
        return f"model {spec.name} does not predict a binary outcome"
    if spec.traits.published:
        formula, coef = spec.formula or "", dict(spec.coefficients or {})
    else:
        why = ml_regression_reason(spec)
        if why is not None:
            return why
        if spec.features or spec.scores or spec.members:
            return f"{spec.name} reads image features or other models' scores, not clinical variables only"
        files = read_files(study.models_dir / spec.name, study.store_path) or {}
        if COEFFICIENTS not in files:
            return f"{spec.name} has no coefficient table (run `cohortlab fit`)"
        table = pl.read_csv(io.BytesIO(files[COEFFICIENTS]), schema_overrides={"term": pl.String, "note": pl.String})
        formula = spec.formula or " + ".join(spec.clinical)
        coef = {str(t): float(b) for t, b in zip(table["term"].to_list(), table["estimate"].to_list())}
    splines = sorted(parse_formula(formula).splines)
    if splines:
        return f"{spec.name}'s formula has rcs({splines[0]}, ...): a published model cannot hold a spline's knots"
    return formula, coef


def _fixed_spec(name: str, formula: str, coefficients: Mapping[str, float], references: Mapping[str, str]) -> Model:
    spec = Model.model_validate({"name": name, "kind": "fixed", "formula": formula,
                                 "coefficients": {k: float(v) for k, v in coefficients.items()}})
    spec._references = dict(references)  # treatment coding as the original's ([variables] reference levels)
    return spec


def design(formula: str, coefficients: Mapping[str, float], table: pd.DataFrame,
           references: Mapping[str, str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The model matrix of ``formula`` (R's columns named by ``coefficients``, the intercept left out) on the
    rows of ``table``, and which rows have every column (a missing value or an unknown level: none).

    Each column is the linear predictor of the model holding that coefficient alone: the published model's own
    coding (:class:`analytics.models.fixed.FixedLearner`), so revision re-estimates exactly its coefficients.
    """
    whole = FixedLearner(_fixed_spec("design", formula, coefficients, references))
    ok = ~np.isnan(whole.score_table(table).lp)
    names = [k for k in coefficients if k != INTERCEPT]
    cols = []
    for k in names:
        one = FixedLearner(_fixed_spec("design", formula, {**{c: 0.0 for c in coefficients}, k: 1.0}, references))
        cols.append(one.score_table(table).lp)
    x = np.column_stack(cols) if cols else np.empty((len(table), 0))
    return names, x, ok


def updated_coefficients(method: str, coefficients: Mapping[str, float], estimated: Sequence[float],
                         names: Sequence[str]) -> dict[str, float]:
    """The coefficients of the model ``method`` gives (see the module notes): ``estimated`` as
    :class:`analytics.stats.updating.Updating` holds them, ``names`` the revision's columns."""
    beta = {k: float(v) for k, v in coefficients.items()}
    b0 = beta.get(INTERCEPT, 0.0)
    if method == "original":
        return beta
    if method == "recalibration_in_the_large":
        return {**beta, INTERCEPT: b0 + float(estimated[0])}
    if method == "logistic_recalibration":
        a, b = float(estimated[0]), float(estimated[1])
        return {**{k: b * v for k, v in beta.items()}, INTERCEPT: a + b * b0}
    if method == "revision":
        return {INTERCEPT: float(estimated[0]), **{k: float(v) for k, v in zip(names, estimated[1:])}}
    raise ValueError(f"unknown updating method {method!r}")


def save_updated(study: StudyConfig, original: Model, center: str, formula: str, coefficients: Mapping[str, float],
                 updates: Mapping[str, Any], predictions: pl.DataFrame) -> Path:
    """Write ``models/<original>-updated-<center>/`` as a published model of ``formula`` and ``coefficients``
    (a staged folder renamed into place, its files' sha256 recorded in the store); ``updates``: what it updates
    and how; ``predictions``: its apparent predictions on the centre's patients (patient_id, split, score).

    Raises
    ------
    ValueError
        The name is not a model name, or is a model of ``study.toml`` (whose folder is never replaced).
    """
    name = updated_name(original.name, center)
    if not NAME.match(name):
        raise ValueError(f"{name!r} is not a model name (centre {center!r} holds characters a name cannot)")
    if any(m.name == name for m in study.models):
        raise ValueError(f"study.toml has a model named {name!r}; its folder is not replaced")
    spec = _fixed_spec(name, formula, coefficients, original.references)
    orig = read_record(study.models_dir / original.name, study.store_path)
    record = FitRecord(name=name, kind="fixed", config=spec.model_dump(mode="json"), clinical=list(spec.clinical),
                       cohort=dict(orig.cohort) if orig is not None else {},
                       updates={**dict(updates), "model": original.name, "center": center,
                                "fit_key": None if orig is None else orig.fit_key},
                       counts={"updating": predictions.height}, endpoint="binary")
    frame = predictions.select(pl.lit(name).alias("model"), "patient_id", "split", pl.col("score").cast(pl.Float64))
    return save_model(study.models_dir / name, FixedLearner(spec), record, frame, store_path=study.store_path)


def with_updated(study: StudyConfig, name: str) -> StudyConfig:
    """``study`` with model ``name`` among its models when ``name`` is not a model of ``study.toml`` but a saved
    updated model (its record's ``updates``, every file checked against the store); else ``study`` itself.

    Raises
    ------
    PersistError
        The updated model was made from an earlier fit of the model it updates (refitted since).
    """
    if any(m.name == name for m in study.models) or UPDATED not in name:
        return study
    record = read_record(study.models_dir / name, study.store_path)
    if record is None or not record.updates:
        return study
    model = str(record.updates.get("model"))
    original = read_record(study.models_dir / model, study.store_path)
    if original is None or original.fit_key != record.updates.get("fit_key"):
        raise PersistError(f"{study.models_dir / name}: model {name} updates an earlier fit of model {model}; run "
                           "`cohortlab validate` to update the current one")
    spec = Model.model_validate(record.config)
    base = next((m for m in study.models if m.name == model), None)
    spec._references = dict(base.references) if base is not None else {}
    return study.model_copy(update={"models": [*study.models, spec]})


__all__ = ["UPDATED", "design", "regression_terms", "save_updated", "updated_coefficients", "updated_name",
           "with_updated"]
