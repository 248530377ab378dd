"""Hyper-parameters by inner cross-validation on training patients only.

The inner folds are :class:`sklearn.model_selection.StratifiedGroupKFold`
(stratified by label, grouped by patient, shuffled with the study seed) over
the rows a learner is being fitted on, i.e. the training part of one outer fold
or, for the final model, all training patients. Held-out patients are never
passed in. The criterion is the ROC AUC averaged over inner folds; ties go to
the first grid point in the order the grid lists them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

log = logging.getLogger("cohortlab.models.tuning")

DEFAULT_INNER_FOLDS = 3


CRITERION = "ROC AUC averaged over stratified, patient-grouped, seeded inner folds of the training patients"


def searched_grid(kind: str, grid: Mapping[str, Sequence[Any]],
                  params: Mapping[str, Any]) -> tuple[dict[str, list[Any]], str]:
    """The hyper-parameter grid a model of ``kind`` searches, and where it comes from.

    Returns
    -------
    (grid, source)
        The study's ``grid`` when it gives one (source ``"study.toml"``); else,
        for logistic / svm / xgboost, the kind's default grid
        (:data:`analytics.models.classical.DEFAULT_GRIDS`) without the
        parameters fixed in ``params`` (source ``"default"``); else ``{}``
        (source ``"none"``: nothing is tuned).
    """
    from analytics.models.classical import DEFAULT_GRIDS

    if grid:
        return {k: list(v) for k, v in grid.items()}, "study.toml"
    if params.get("penalty") == "none":  # a maximum-likelihood logistic regression (MLLogistic): nothing to tune
        return {}, "none"
    default = {k: list(v) for k, v in DEFAULT_GRIDS.get(kind, {}).items() if k not in params}
    return (default, "default") if default else ({}, "none")


def inner_splitter(y: np.ndarray, folds: int, seed: int) -> StratifiedGroupKFold | None:
    """Stratified, grouped, seeded inner folds; fewer when a class is small; None when it is too small to tune."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    k = int(min(folds, counts.min()))
    if k < 2:
        return None
    return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid, in the order its keys and values are listed."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def first_point(grid: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    return {k: v[0] for k, v in grid.items()}


def grid_search(
    estimator: BaseEstimator,
    grid: Mapping[str, Sequence[Any]],
    X: Any,
    y: np.ndarray,
    groups: np.ndarray,
    folds: int,
    seed: int,
) -> tuple[BaseEstimator, dict[str, Any], float | None]:
    """Tune an sklearn estimator with :class:`~sklearn.model_selection.GridSearchCV` and refit it.

    Returns
    -------
    (fitted estimator, chosen parameters, best mean inner AUC or None)
        With a single grid point, or too few patients of a class for two inner
        folds, no search is run: the first grid point is fitted (and logged).
    """
    cv = inner_splitter(y, folds, seed)
    points = grid_points(grid)
    if len(points) <= 1 or cv is None:
        if len(points) > 1:
            log.warning("too few patients of a class (%s) for inner cross-validation; using %s",
                        np.bincount(np.asarray(y, dtype=np.int64), minlength=2).tolist(), first_point(grid))
        chosen = points[0] if points else {}
        return clone(estimator).set_params(**chosen).fit(X, y), chosen, None
    search = GridSearchCV(clone(estimator), {k: list(v) for k, v in grid.items()}, scoring="roc_auc", cv=cv,
                          refit=True, n_jobs=1, error_score="raise")
    search.fit(X, y, groups=groups)
    return search.best_estimator_, dict(search.best_params_), float(search.best_score_)


def select(
    fit_score: Callable[[dict[str, Any], np.ndarray, np.ndarray], np.ndarray],
    grid: Mapping[str, Sequence[Any]],
    y: np.ndarray,
    groups: np.ndarray,
    folds: int,
    seed: int,
) -> tuple[dict[str, Any], float | None]:
    """Choose a grid point for any learner by the same inner cross-validation.

    Parameters
    ----------
    fit_score
        ``fit_score(params, train_index, test_index)`` fits a learner with
        ``params`` on the rows ``train_index`` and returns scores of ``test_index``.
    grid, y, groups, folds, seed
        As :func:`grid_search`.

    Returns
    -------
    (chosen parameters, best mean inner AUC or None when no search ran)
    """
    points = grid_points(grid)
    cv = inner_splitter(y, folds, seed)
    if len(points) <= 1 or cv is None:
        return (points[0] if points else {}), None
    splits = list(cv.split(np.zeros(len(y)), y, groups))
    best, best_auc = points[0], -np.inf
    for point in points:
        aucs = [roc_auc_score(y[te], fit_score(point, tr, te)) for tr, te in splits]
        mean = float(np.mean(aucs))
        if mean > best_auc:
            best, best_auc = point, mean
    return best, best_auc
