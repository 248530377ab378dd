"""Nested cross-validation interval for the prediction performance of a modelling procedure.

Bates, Hastie & Tibshirani, "Cross-validation: what does it estimate and how well does it do it?",
J Am Stat Assoc 2024;119:1434-1445 (arXiv:2104.00673), Algorithm 1.  The naive interval of a
cross-validated estimate (the DeLong interval of pooled out-of-fold scores, say) treats the fold errors
as independent; they are not, because every patient trains some folds and tests another, so the interval
is too narrow.  Nested cross-validation estimates the mean squared error of the cross-validated estimate
directly and widens the interval to match.

A loss must be a mean of per-patient terms.  The Brier score is one.  The AUC of a held-out set becomes
one through the DeLong placement values (DeLong, DeLong & Clarke-Pearson, Biometrics 1988;44:837-845):
for a case ``psi_i = A + (N / m)(V10_i - A)``, for a control ``psi_j = A + (N / n0)(V01_j - A)``, with A
the set's AUC, m cases, n0 controls and N = m + n0.  Their mean is exactly A and ``var(psi) / N`` is the
DeLong variance of A (the Hajek projection of the Mann-Whitney statistic), which is what the algorithm
needs of a per-patient term.

The replicates are the procedure refitted on the plan's row sets (:func:`nested_cv_plan`): per repeat,
the k outer fits leaving out one fold and the k(k-1)/2 inner fits leaving out a pair of folds; k = 5 and
20 repeats are 300 refits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtri

from . import _validate as v
from .bootstrap import spawn_generators
from .resampling import Replicate
from .roc import placements

INDEXES = ("AUC", "Brier")
METHOD = "nested cross-validation (Bates, Hastie & Tibshirani 2024)"


@dataclass(frozen=True, eq=False)
class NestedCVPlan:
    """The fits of a repeated nested cross-validation.

    Attributes
    ----------
    folds : ndarray, shape (repeats, n)
        Fold (0..k-1) of every patient in each repeat.
    k : int
    fits : tuple of (repeat, a, b)
        One per refit, in the order the replicates must be given: ``b == -1`` leaves out fold ``a`` (an
        outer fit, scored on fold a); otherwise it leaves out folds ``a < b`` (an inner fit, scored on
        fold a for the outer fold b and on fold b for the outer fold a).
    """

    folds: np.ndarray = field(repr=False)
    k: int
    fits: tuple[tuple[int, int, int], ...] = field(repr=False)

    def train_rows(self, i: int) -> np.ndarray:
        """Rows (sorted) the ``i``-th fit is fitted on."""
        r, a, b = self.fits[i]
        f = self.folds[r]
        return np.flatnonzero((f != a) & (f != b))

    def indices(self) -> list[np.ndarray]:
        """Training rows of every fit, in order (the row sets to refit the procedure on)."""
        return [self.train_rows(i) for i in range(len(self.fits))]


def nested_cv_plan(y: Any, k: int = 5, repeats: int = 20, seed: int = 0) -> NestedCVPlan:
    """Folds stratified by the 0/1 outcome, one random split per repeat (repeat ``r`` uses its own
    stream of ``SeedSequence(seed)``, so a repeat depends only on ``seed`` and ``r``).

    Stratifying keeps both classes in every fold, which a fold's AUC needs: each class must have at
    least k patients.
    """
    yy = v.binary_y(y, name="y")
    k, repeats = int(k), int(repeats)
    if k < 3:
        raise ValueError(f"nested cross-validation needs k >= 3 folds, got k={k}")
    if repeats < 1:
        raise ValueError(f"nested cross-validation needs repeats >= 1, got {repeats}")
    small = min(int(yy.sum()), int(yy.size - yy.sum()))
    if small < k:
        raise ValueError(f"nested cross-validation with k={k} folds needs at least {k} patients of each "
                         f"outcome, the smaller class has {small}")
    folds = np.empty((repeats, yy.size), dtype=np.int64)
    for r, g in enumerate(spawn_generators(seed, repeats)):
        for cls in (0, 1):
            rows = np.flatnonzero(yy == cls)
            # a random start so that the larger folds are not always the first ones
            folds[r, g.permutation(rows)] = (np.arange(rows.size) + int(g.integers(k))) % k
    return plan_from_folds(folds)


def plan_from_folds(folds: Any) -> NestedCVPlan:
    """The plan for given fold ids (``(repeats, n)``, 0..k-1; R's, say): per repeat the k outer fits,
    then, after all of them, the k(k-1)/2 inner fits of every repeat."""
    f = np.atleast_2d(np.asarray(folds, dtype=np.int64))
    k = int(f.max()) + 1
    if f.min() < 0 or any(np.unique(row).size != k for row in f):
        raise ValueError(f"every repeat's folds must use each of 0..{k - 1}")
    repeats = f.shape[0]
    fits = [(r, a, -1) for r in range(repeats) for a in range(k)]
    fits += [(r, a, b) for r in range(repeats) for a in range(k) for b in range(a + 1, k)]
    return NestedCVPlan(folds=f, k=k, fits=tuple(fits))


def auc_terms(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per-patient terms whose mean is the AUC and whose variance / N is its DeLong variance (module
    docstring); NaN when the set lacks a class."""
    m = int(y.sum())
    n0 = y.size - m
    if m == 0 or n0 == 0:
        return np.full(y.size, math.nan)
    a, plc = placements(y, score)
    scale = np.where(y == 1, y.size / m, y.size / n0)
    return a + scale * (plc - a)


def brier_terms(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Squared error per patient."""
    return (y - prob) ** 2


def _terms(y: np.ndarray, score: np.ndarray) -> list[np.ndarray]:
    return [auc_terms(y, score), brier_terms(y, score)]


def nested_cv(y: Any, replicates: Sequence[Replicate], plan: NestedCVPlan,
              level: float = 0.95) -> pl.DataFrame:
    """Nested cross-validation estimate and interval of the AUC and the Brier score.

    Bates, Hastie & Tibshirani (JASA 2024), Algorithm 1, with the finite-sample choices of the
    mlr3inferr implementation (``ci.ncv``): for each repeat and outer fold k, ``a_k = (mean(e_in) -
    mean(e_out))^2`` (e_in: the inner fits' terms on the other folds, e_out: the outer fit's on fold k)
    and ``b_k = var(e_out) / |fold k|``; ``MSE = (k - 1) / k * mean(a - b)`` (rescaled from a training
    size of (k - 1)/k n to n); ``se = sqrt(MSE)`` kept within ``[s, s sqrt(k)] / sqrt(n)`` (s the SD of
    the inner terms: independent and fully dependent folds); the estimate is ``Err_NCV - bias`` with
    ``bias = (1 + (k - 2) / k)(Err_NCV - Err_CV)``, Err_NCV the mean inner term and Err_CV the mean
    outer term (the fold-averaged cross-validated value); the interval is ``estimate -/+ z se``.

    Parameters
    ----------
    y : array-like of 0/1
        The n training patients' outcomes.
    replicates : sequence of Replicate
        The procedure refitted on ``plan.indices()``, in that order; ``test`` holds its predicted
        probability for all n patients.
    plan : NestedCVPlan
    level : float

    Returns
    -------
    polars.DataFrame
        One row per index (AUC, Brier): ``index, estimate, low, high, se, cv, ncv, bias, se_naive,
        level, k, repeats, failed, method``.  ``se_naive`` is ``s / sqrt(n)``, the naive interval's.
        A failed replicate (``error`` set) drops its repeat and outer fold from the estimate.
    """
    level = v.level_ok(level)
    yy = v.binary_y(y)
    n = yy.size
    if plan.folds.shape[1] != n:
        raise ValueError(f"the plan is for {plan.folds.shape[1]} patients, y has {n}")
    if len(replicates) != len(plan.fits):
        raise ValueError(f"nested cross-validation needs {len(plan.fits)} replicates (the plan's fits, in "
                         f"order), got {len(replicates)}")
    k = plan.k
    scores: dict[tuple[int, int, int], np.ndarray | None] = {}
    for fit, rep in zip(plan.fits, replicates, strict=True):
        scores[fit] = None if rep.error is not None else np.asarray(rep.test, dtype=np.float64)
    failed = sum(rep.error is not None for rep in replicates)
    n_idx = len(INDEXES)
    e_in: list[list[np.ndarray]] = [[] for _ in range(n_idx)]
    e_out: list[list[np.ndarray]] = [[] for _ in range(n_idx)]
    a_b: list[list[float]] = [[] for _ in range(n_idx)]
    for r in range(plan.folds.shape[0]):
        f = plan.folds[r]
        for out in range(k):
            outer = scores.get((r, out, -1))
            inner = [scores.get((r, min(out, j), max(out, j))) for j in range(k) if j != out]
            if outer is None or any(s is None for s in inner):
                continue
            rows = f == out
            t_out = _terms(yy[rows], outer[rows])
            others = [j for j in range(k) if j != out]
            t_in = [_terms(yy[f == j], s[f == j]) for j, s in zip(others, inner, strict=True) if s is not None]
            for i in range(n_idx):
                ins = np.concatenate([t[i] for t in t_in])
                a = (ins.mean() - t_out[i].mean()) ** 2
                b = t_out[i].var(ddof=1) / t_out[i].size
                e_in[i].append(ins)
                e_out[i].append(t_out[i])
                a_b[i].append(a - b)
    z = float(ndtri(0.5 + level / 2.0))
    rows_out = []
    for i, name in enumerate(INDEXES):
        if not a_b[i]:
            est = low = high = se = cv = ncv = bias = se_naive = math.nan
        else:
            ins = np.concatenate(e_in[i])
            ncv = float(ins.mean())
            cv = float(np.concatenate(e_out[i]).mean())
            mse = (k - 1) / k * float(np.mean(a_b[i]))
            se_naive = float(ins.std(ddof=1)) / math.sqrt(n)
            se = min(max(math.sqrt(max(mse, 0.0)), se_naive), se_naive * math.sqrt(k))
            bias = (1.0 + (k - 2) / k) * (ncv - cv)
            est = ncv - bias
            low, high = est - z * se, est + z * se
        rows_out.append({"index": name, "estimate": est, "low": low, "high": high, "se": se, "cv": cv,
                         "ncv": ncv, "bias": bias, "se_naive": se_naive, "level": level, "k": k,
                         "repeats": int(plan.folds.shape[0]), "failed": failed, "method": METHOD})
    return pl.DataFrame(rows_out)


def nested_cv_from(fit: Callable[[Any, Any], Callable[[Any], Any]], X: Any, y: Any, *, k: int = 5,
                   repeats: int = 20, seed: int = 0, level: float = 0.95) -> pl.DataFrame:
    """Plan, refit ``fit(X_rows, y_rows) -> predict`` on every row set of the plan (``predict(X)``
    returns probabilities) and return :func:`nested_cv`.  ``X`` is an array or a data frame."""
    plan = nested_cv_plan(y, k, repeats, seed)
    yy = np.asarray(y)
    reps = []
    for rows in plan.indices():
        try:
            predict = fit(v.take_rows(X, rows), yy[rows])
            reps.append(Replicate(rows, np.empty(0), np.asarray(predict(X), dtype=np.float64)))
        except Exception as exc:  # a failed refit drops its outer fold, as nested_cv documents
            reps.append(Replicate(rows, np.empty(0), np.empty(0), error=f"{type(exc).__name__}: {exc}"))
    return nested_cv(y, reps, plan, level)


