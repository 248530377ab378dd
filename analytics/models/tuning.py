"""Hyper-parameters by inner cross-validation on training patients only.

The inner folds are :func:`stratified_folds` (patient-level, stratified by label, shuffled with the study
seed) over the rows a learner is being fitted on, i.e. the training part of one outer fold or, for the final
model, all training patients. Held-out patients are never passed in. The criterion is the ROC AUC averaged
over inner folds; ties go to the first grid point in the order the grid lists them.

A penalised logistic regression is fitted along its ``C`` path with warm starts inside each inner fold (as
:class:`sklearn.linear_model.LogisticRegressionCV` does; Friedman, Hastie & Tibshirani 2010, J Stat Softw 33:1
for path-wise fitting): its preprocessing is fitted once per fold, the values of ``C`` in increasing order each
start from the previous solution. The chosen point is then refitted cold on all rows. Inner tasks (one grid
path on one fold) run on ``n_jobs`` local processes, each with one BLAS thread, so the choice is the same
bytes whatever ``n_jobs`` is.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from threadpoolctl import threadpool_limits

log = logging.getLogger("cohortlab.models.tuning")

DEFAULT_INNER_FOLDS = 3

# The inner-fold algorithm; part of every fit's key (analytics.fit_plan.fit_key) so that fits tuned on other
# folds are refitted, never mixed with these. 1: scikit-learn's StratifiedGroupKFold; 2: stratified_folds.
FOLDS_VERSION = 2

CRITERION = "ROC AUC averaged over stratified, patient-grouped, seeded inner folds of the training patients"

_C = "clf__C"


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


def inner_k(y: np.ndarray, folds: int) -> int:
    """Inner folds for labels ``y``: ``folds``, or fewer when a class is smaller (below 2: too small to tune)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    return int(min(folds, counts.min()))


def stratified_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The inner fold (0..k-1) of each row: a patient-level stratified split, vectorised.

    Patients (``groups``, sorted so the result does not depend on row order) are shuffled by
    ``np.random.default_rng(seed)``, stably sorted by stratum (a patient's largest label) and dealt to the
    folds in turn along that order. Each stratum's patients are then spread over the folds within one
    patient of each other, and so are all patients; every row of a patient lands in the patient's fold.
    Stratified K-fold cross-validation as in Hastie, Tibshirani & Friedman, *The Elements of Statistical
    Learning*, 2nd ed., section 7.10.

    Parameters
    ----------
    y
        0/1 label per row.
    groups
        Patient id per row.
    k
        Number of folds (2 or more).
    seed
        The study seed.
    """
    patients, row_patient = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    stratum = np.zeros(len(patients), dtype=np.int64)
    np.maximum.at(stratum, row_patient, np.asarray(y, dtype=np.int64))
    order = np.random.default_rng(seed).permutation(len(patients))
    order = order[np.argsort(stratum[order], kind="stable")]
    fold_of = np.empty(len(patients), dtype=np.int64)
    fold_of[order] = np.arange(len(patients)) % k
    return fold_of[row_patient]


def inner_splits(y: np.ndarray, groups: np.ndarray, folds: int,
                 seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(train rows, test rows) of each inner fold (:func:`stratified_folds`); None when a class is too small."""
    k = inner_k(y, folds)
    if k < 2:
        return None
    fold = stratified_folds(y, groups, k, seed)
    return [(np.flatnonzero(fold != j), np.flatnonzero(fold == j)) for j in range(k)]


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid, in the order its keys and values are listed."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def first_point(grid: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    return {k: v[0] for k, v in grid.items()}


def _warm_startable(estimator: BaseEstimator) -> bool:
    """A pipeline ending in a penalised scikit-learn logistic regression (its solvers take warm starts)."""
    return isinstance(estimator, Pipeline) and isinstance(estimator.steps[-1][1], LogisticRegression)


def grid_paths(estimator: BaseEstimator, points: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The grid points (their indices) fitted one after the other in an inner fold.

    A logistic pipeline's points that differ only in ``C`` form one path, ordered by increasing ``C``
    (strongest penalty first, as ``LogisticRegressionCV``); every other point is a path of its own.
    """
    if not _warm_startable(estimator) or not any(_C in p for p in points):
        return [[i] for i in range(len(points))]
    paths: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        paths.setdefault(repr(sorted((k, repr(v)) for k, v in p.items() if k != _C)), []).append(i)
    return [sorted(idx, key=lambda i: float(points[i][_C])) for idx in paths.values()]


def _score(model: Any, X: Any) -> np.ndarray:
    """A ranking score (the decision function where there is one, as scikit-learn's ``roc_auc`` scorer)."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), dtype=np.float64)
    return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)


def path_scores(estimator: BaseEstimator, points: Sequence[Mapping[str, Any]], X: Any, y: np.ndarray,
                train: np.ndarray, test: np.ndarray) -> list[float]:
    """The inner AUC of each point of one path (:func:`grid_paths`) on one fold, fitted on ``train``.

    More than one point: a logistic pipeline whose preprocessing is fitted once and whose classifier is
    warm-started from the previous point's coefficients.
    """
    X_tr, X_te = _safe_indexing(X, train), _safe_indexing(X, test)
    y_tr, y_te = y[train], y[test]
    with threadpool_limits(limits=1):  # the same bytes in this process and in a worker
        model = clone(estimator).set_params(**points[0])
        if len(points) == 1:
            return [float(roc_auc_score(y_te, _score(model.fit(X_tr, y_tr), X_te)))]
        prep, clf = model[:-1], model.steps[-1][1]
        Z_tr = prep.fit_transform(X_tr, y_tr)
        Z_te = prep.transform(X_te)
        clf.set_params(warm_start=True)
        out = []
        for point in points:
            clf.set_params(C=point[_C]).fit(Z_tr, y_tr)
            out.append(float(roc_auc_score(y_te, _score(clf, Z_te))))
        return out


def _path_task(estimator: BaseEstimator, points: list[dict[str, Any]], X: Any, y: np.ndarray, train: np.ndarray,
               test: np.ndarray) -> list[float]:
    return path_scores(estimator, points, X, y, train, test)


def run_tasks(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], n_jobs: int) -> list[Any]:
    """``fn(*task)`` for each task, in task order: here (``n_jobs`` 1) or on local processes (joblib's loky)."""
    if n_jobs == 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=min(n_jobs, len(tasks)) if n_jobs > 0 else n_jobs, backend="loky")(
        delayed(fn)(*t) for t in tasks))


def grid_search(
    estimator: BaseEstimator,
    grid: Mapping[str, Sequence[Any]],
    X: Any,
    y: np.ndarray,
    groups: np.ndarray,
    folds: int,
    seed: int,
    n_jobs: int = 1,
) -> tuple[BaseEstimator, dict[str, Any], float | None, int]:
    """Tune an sklearn estimator by inner cross-validation and refit it on every row.

    Parameters
    ----------
    estimator, grid
        An unfitted estimator (a pipeline) and its grid in its parameter names.
    X, y, groups
        Rows, 0/1 labels and patient ids.
    folds, seed
        Inner folds (:func:`inner_splits`).
    n_jobs
        Local processes for the inner tasks (one path on one fold each); the result does not depend on it.

    Returns
    -------
    (fitted estimator, chosen parameters, best mean inner AUC or None, number of fits)
        With a single grid point, or too few patients of a class for two inner
        folds, no search is run: the first grid point is fitted (and logged). The
        chosen point is refitted cold on all rows (the fits count it).
    """
    splits = inner_splits(y, groups, folds, seed)
    points = grid_points(grid)
    if len(points) <= 1 or splits is None:
        if len(points) > 1:
            log.warning("too few patients of a class (%s) for inner cross-validation; using %s",
                        np.bincount(np.asarray(y, dtype=np.int64), minlength=2).tolist(), first_point(grid))
        chosen = points[0] if points else {}
        return clone(estimator).set_params(**chosen).fit(X, y), chosen, None, 1
    paths = grid_paths(estimator, points)
    tasks = [(estimator, [points[i] for i in path], X, y, tr, te) for path in paths for tr, te in splits]
    aucs = np.empty((len(points), len(splits)))
    for (p, j), got in zip(itertools.product(range(len(paths)), range(len(splits))),
                           run_tasks(_path_task, tasks, n_jobs)):
        aucs[paths[p], j] = got
    means = aucs.mean(axis=1)
    best = int(np.argmax(means))  # the first of equal means, in grid order
    chosen = points[best]
    with threadpool_limits(limits=1):
        refit = clone(estimator).set_params(**chosen).fit(X, y)
    return refit, dict(chosen), float(means[best]), len(points) * len(splits) + 1


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
    splits = inner_splits(y, groups, folds, seed)
    if len(points) <= 1 or splits is None:
        return (points[0] if points else {}), None
    best, best_auc = points[0], -np.inf
    for point in points:
        aucs = [roc_auc_score(y[te], fit_score(point, tr, te)) for tr, te in splits]
        mean = float(np.mean(aucs))
        if mean > best_auc:
            best, best_auc = point, mean
    return best, best_auc
