"""The outer folds every model of a study is cross-validated on, and the fit stage's error.

One stratified, seeded K-fold assignment of the labelled training patients (``[validation] folds``,
``study.seed``) is shared by every model of an endpoint (:mod:`analytics.fit`); nested cross-fitting draws the
same kind of assignment inside a fold (:func:`fold_rule`). Stratified K-fold cross-validation as in
Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, 2nd ed., section 7.10.

:class:`FitError` lives here, the lowest of the fit modules, so each of them raises the same error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from pipeline import store
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.fit")


class FitError(CohortlabError, ValueError):
    """A model that cannot be fitted on this cohort; the message names the model and the reason."""


@dataclass(frozen=True)
class OuterFolds:
    """The outer fold of every labelled training patient (shared by all models)."""

    patient_ids: tuple[str, ...]
    folds: tuple[int, ...]
    k: int
    seed: int
    endpoint: str = "binary"  # stratified on the label (binary) or on the event (survival)

    def fold_of(self) -> dict[str, int]:
        return dict(zip(self.patient_ids, self.folds))

    def digest(self) -> str:
        extra = [] if self.endpoint == "binary" else [self.endpoint]
        return store.json_digest([self.k, self.seed, self.patient_ids, self.folds, *extra])


def outer_folds(patient_ids: Sequence[str], y: np.ndarray, folds: int, seed: int) -> OuterFolds:
    """Stratified, seeded K-fold assignment of labelled training patients, independent of row order.

    ``K`` is ``folds``, or the size of the smaller class when that is smaller.
    """
    ids = np.asarray(patient_ids, dtype=object)
    y = np.asarray(y, dtype=np.int64)
    order = np.argsort(ids.astype(str), kind="stable")
    ids, y = ids[order], y[order]
    counts = np.bincount(y, minlength=2)
    k = int(min(folds, counts.min()))
    if k < 2:
        raise FitError(
            f"the train split has {counts[0]} patients of label 0 and {counts[1]} of label 1 (for survival models: "
            "censored and with an event); outer cross-validation needs at least 2 of each"
        )
    if k < folds:
        log.warning("only %d training patients in the smaller class: %d outer folds instead of %d", counts.min(), k,
                    folds)
    assign = np.empty(len(ids), dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
        assign[test] = f
    return OuterFolds(tuple(str(i) for i in ids), tuple(int(f) for f in assign), k, seed)


def fold_rule(plan: OuterFolds, folds: int, seed: int) -> Callable[[Sequence[str], np.ndarray], Mapping[str, int]]:
    """Folds of a set of training patients: the outer folds for all of them, else the same stratified, seeded
    assignment drawn on the set (the inner folds of nested cross-fitting)."""
    everyone = frozenset(plan.patient_ids)

    def rule(ids: Sequence[str], y: np.ndarray) -> Mapping[str, int]:
        if len(ids) == len(everyone) and everyone.issuperset(ids):
            return plan.fold_of()
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
        if counts.min() < 2:
            raise FitError(f"{len(ids)} training patients inside the outer folds hold {counts[0]} of label 0 and "
                           f"{counts[1]} of label 1; nested cross-fitting needs at least 2 of each")
        return outer_folds(ids, y, int(min(folds, counts.min())), seed).fold_of()

    return rule


__all__ = ["FitError", "OuterFolds", "fold_rule", "outer_folds"]
