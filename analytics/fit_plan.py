"""What a fit runs: the models it fits and the inputs they read, what each is fitted on, and the key of a fit.

:func:`select_models` closes a selection over the models it names (a second-stage model needs its input
models); :func:`targets` is a model's outcome (0/1 labels, or times and events); :func:`fit_key` is the
identity of a fit, compared by :mod:`analytics.fit` to skip a model that is up to date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from analytics.cohort import Cohort
from analytics.models import tuning
from analytics.models.data import input_models, mil_feature_set, pooled_refs
from analytics.outer_folds import FitError, OuterFolds
from pipeline import store
from pipeline.config import Model, StudyConfig


def select_models(study: StudyConfig, names: Sequence[str] | None = None) -> list[Model]:
    """The models to fit, in study order: ``names`` (default all) plus every model they depend on."""
    if not names:
        return list(study.models)
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in wanted:
            continue
        spec = study.model(name)
        wanted.add(name)
        stack += input_models(spec)
    return [m for m in study.models if m.name in wanted]


def required_inputs(specs: Sequence[Model]) -> tuple[list[str], list[str]]:
    """Pooled feature blocks and bag feature sets the models read (for :func:`analytics.cohort.load_cohort`)."""
    features: list[str] = []
    bags: list[str] = []
    for spec in specs:
        if spec.traits.bags:
            fs = mil_feature_set(spec)
            bags += [] if fs in bags else [fs]
        else:
            features += [r for r in pooled_refs(spec) if r not in features]
    return features, bags


def fit_key(spec: Model, cohort_hash: str, plan: OuterFolds, seed: int, inputs: Mapping[str, str]) -> str:
    """Identity of a fit: same key, same result (the condition for skipping a model).

    The inner-fold algorithm's version (:data:`analytics.models.tuning.FOLDS_VERSION`) is part of it: a model
    tuned on folds drawn another way is refitted, not mixed with fits tuned on these.
    """
    payload = {"config": spec.model_dump(mode="json"), "cohort": cohort_hash, "folds": plan.digest(),
               "seed": seed, "inputs": dict(sorted(inputs.items())), "inner_folds": tuning.FOLDS_VERSION}
    causes = spec.causes
    if causes is not None and causes.is_competing and (spec.traits.competing or spec.competing is not None):
        payload["cause"] = causes.cause  # another cause of interest is another model
    return store.json_digest(payload)


def declared_orders(spec: Model, cohort: Cohort) -> dict[str, list[str]]:
    """The model's clinical columns whose stored level order is not the sorted one (declared in study.toml)."""
    var = cohort.variables
    if not spec.clinical or var.height == 0 or "levels" not in var.columns:
        return {}
    return {r["name"]: list(r["levels"]) for r in var.select("name", "levels").to_dicts()
            if r["name"] in spec.clinical and r["levels"] and list(r["levels"]) != sorted(r["levels"])}


def labels(cohort: Cohort) -> np.ndarray:
    """The cohort's 0/1 labels as float64 (NaN: unlabelled)."""
    return cohort.frame["label"].cast(pl.Float64).fill_null(np.nan).to_numpy()


def survival(cohort: Cohort) -> np.ndarray | None:
    """``(n, 2)`` float64 times and events (NaN where either is missing), or None without those columns."""
    if "time" not in cohort.frame.columns or "event" not in cohort.frame.columns:
        return None
    cols = [cohort.frame[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in ("time", "event")]
    out = np.column_stack(cols)
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def strata(cohort: Cohort, endpoint: str) -> np.ndarray:
    """The outcome the outer folds hold and are stratified on: the label, or the event of patients with
    a time and an event (NaN: no such outcome)."""
    if endpoint == "binary":
        return labels(cohort)
    surv = survival(cohort)
    if surv is None:
        raise FitError(f"cohort {cohort.name}: [study] endpoint = \"survival\" needs columns time and event")
    return surv[:, 1]


def targets(study: StudyConfig, spec: Model, cohort: Cohort) -> np.ndarray:
    """What ``spec`` is fitted on: 0/1 labels (NaN = none), or ``(n, 2)`` times and events."""
    if study.endpoint(spec) == "binary":
        return labels(cohort)
    surv = survival(cohort)
    if surv is None:
        raise FitError(f"model '{spec.name}' predicts a survival endpoint; cohort {cohort.name} has no time "
                       "and event columns")
    causes = spec.causes
    if causes is not None and not spec.traits.competing:
        # a single-event model on declared codes: the event is the cause of interest, other causes censor it
        # (its cause-specific hazard; on competing causes only with competing = "cause_specific")
        surv[:, 1] = np.where(np.isnan(surv[:, 1]), np.nan, (surv[:, 1] == causes.cause).astype(np.float64))
    return surv


def study_horizons(study: StudyConfig, cohort: Cohort) -> list[float]:
    """``[validation] horizons``, else the quartiles of the training patients' event times (survival cohorts)."""
    if study.validation.horizons:
        return [float(t) for t in study.validation.horizons]
    surv = survival(cohort)
    if surv is None:
        return []
    times = surv[(cohort.split == "train") & (surv[:, 1] == 1), 0]
    return [float(np.round(q, 6)) for q in np.quantile(times, [0.25, 0.5, 0.75])] if len(times) else []


__all__ = ["declared_orders", "fit_key", "labels", "required_inputs", "select_models", "strata", "study_horizons",
           "survival", "targets"]
