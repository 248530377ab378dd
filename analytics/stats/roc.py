"""AUC, its DeLong variance and confidence intervals, and paired AUC comparison.

The AUC is the Mann-Whitney statistic, ties counting one half.  Variances use
DeLong's structural components (DeLong, DeLong & Clarke-Pearson, Biometrics
1988;44:837-845) computed with the mid-rank algorithm of Sun & Xu (IEEE Signal
Processing Letters 2014;21:1389-1393): O(n log n), float64.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from . import _validate as v
from .bootstrap import (
    auc_replicates,
    bca_interval,
    drop_nan,
    percentile_interval,
)
from .types import Comparison, Interval


def _midranks_sorted(xs: np.ndarray) -> np.ndarray:
    """1-based mid-ranks of an already sorted array (ties share their mean rank)."""
    n = xs.size
    if n == 0:
        return np.empty(0)
    brk = np.flatnonzero(xs[1:] != xs[:-1]) + 1
    starts = np.concatenate(([0], brk))
    ends = np.concatenate((brk, [n]))
    return np.repeat((starts + 1 + ends) / 2.0, ends - starts)


def placements(y: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray]:
    """AUC and DeLong placement values, per subject in input order.

    Parameters
    ----------
    y : ndarray of 0/1 (both classes present)
    score : ndarray of float (no NaN)

    Returns
    -------
    auc : float
        Mann-Whitney AUC.
    v : ndarray
        For a case ``i``, ``V10_i``: the fraction of controls scored below it
        (ties one half).  For a control ``j``, ``V01_j``: the fraction of cases
        scored above it.  ``mean(v[y == 1]) == mean(v[y == 0]) == auc``.

    Notes
    -----
    Sun & Xu (2014) mid-rank formulation of DeLong et al. (1988):
    ``V10 = (Tz - Tx) / n`` and ``V01 = 1 - (Tz - Ty) / m`` with ``Tz`` the
    mid-ranks in the pooled sample and ``Tx``/``Ty`` within cases/controls.
    One sort; the within-class mid-ranks reuse the pooled order.
    """
    order = np.argsort(score)
    xs = score[order]
    is_pos = y[order] == 1
    m = int(is_pos.sum())
    n = xs.size - m
    tz = _midranks_sorted(xs)
    tx = _midranks_sorted(xs[is_pos])
    ty = _midranks_sorted(xs[~is_pos])
    tz_pos = tz[is_pos]
    vals = np.empty(xs.size)
    vals[is_pos] = (tz_pos - tx) / n
    vals[~is_pos] = 1.0 - (tz[~is_pos] - ty) / m
    out = np.empty(xs.size)
    out[order] = vals
    auc = (float(tz_pos.sum()) - m * (m + 1) / 2.0) / (float(m) * float(n))
    return auc, out


def auc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney form; ties count one half).

    Parameters
    ----------
    y : array-like of 0/1
        Outcome; 1 = case.
    score : array-like of float
        Higher means more likely a case.

    Returns
    -------
    float

    Notes
    -----
    Hanley & McNeil, Radiology 1982;143:29-36 (AUC = Wilcoxon-Mann-Whitney
    statistic), computed from mid-ranks in O(n log n) (Sun & Xu, IEEE SPL 2014).
    Matches pROC ``auc(roc(y, score, levels = c(0, 1), direction = "<"))``.
    """
    yy, s = v.binary_and_score(y, score)
    return placements(yy, s)[0]


def delong_covariance(y: ArrayLike, *scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of paired scores and their DeLong covariance matrix.

    Parameters
    ----------
    y : array-like of 0/1
    *scores : array-like
        One or more scores on the same subjects.

    Returns
    -------
    aucs : ndarray, shape (k,)
    cov : ndarray, shape (k, k)
        ``S10 / m + S01 / n`` with ``S10``/``S01`` the sample covariances
        (denominators ``m - 1``, ``n - 1``) of the structural components.

    Notes
    -----
    DeLong, DeLong & Clarke-Pearson, Biometrics 1988;44:837-845, with the fast
    mid-rank computation of Sun & Xu, IEEE Signal Processing Letters
    2014;21(11):1389-1393.  Same as pROC ``var()`` / ``cov()`` (method
    ``"delong"``).
    """
    if not scores:
        raise ValueError("give at least one score")
    yy = v.binary_y(y)
    m = int(yy.sum())
    n = yy.size - m
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong variance needs at least 2 cases and 2 controls (got {m} and {n})"
        )
    aucs: list[float] = []
    vs: list[np.ndarray] = []
    for i, sc in enumerate(scores):
        name = "score" if len(scores) == 1 else f"score {i + 1}"
        s = v.as_1d(sc, name)
        v.same_length(y=yy, **{name.replace(" ", "_"): s})
        v.no_nan(s, name)
        auc_i, place = placements(yy, s)
        aucs.append(auc_i)
        vs.append(place)
    mat = np.vstack(vs)
    pos, neg = mat[:, yy == 1], mat[:, yy == 0]
    est = np.asarray(aucs)
    d10 = pos - est[:, None]
    d01 = neg - est[:, None]
    cov = (d10 @ d10.T) / ((m - 1) * m) + (d01 @ d01.T) / ((n - 1) * n)
    return est, cov


def _z(level: float) -> float:
    return float(ndtri(1.0 - (1.0 - level) / 2.0))


def auc_ci(
    y: ArrayLike,
    score: ArrayLike,
    method: Literal["delong", "bootstrap"] = "delong",
    level: float = 0.95,
    n_boot: int = 2000,
    stratified: bool = True,
    seed: int = 0,
    ci_type: Literal["percentile", "bca"] = "percentile",
) -> Interval:
    """AUC with a confidence interval.

    Parameters
    ----------
    y : array-like of 0/1
    score : array-like of float
    method : {"delong", "bootstrap"}
        ``"delong"``: normal interval with the DeLong variance (DeLong et al.,
        Biometrics 1988), computed by Sun & Xu's mid-rank algorithm (IEEE SPL
        2014), bounds clipped to [0, 1] as pROC ``ci.auc(method = "delong")``.
        ``"bootstrap"``: ``n_boot`` resamples, vectorised (see
        :mod:`analytics.stats.bootstrap`).
    level : float
        Confidence level.
    n_boot : int
        Bootstrap replicates (``method="bootstrap"`` only).
    stratified : bool
        Resample cases and controls separately, as pROC's default
        (``boot.stratified = TRUE``).
    seed : int
        Seed of the ``Generator(PCG64)`` streams; same seed, same interval.
    ci_type : {"percentile", "bca"}
        Bootstrap interval: percentile (Efron & Tibshirani 1993; pROC's
        interval) or BCa (Efron, JASA 1987) with the exact AUC influence values
        ``V10 - AUC``/``V01 - AUC`` as acceleration input.

    Returns
    -------
    Interval
        ``method`` is ``"delong"``, ``"bootstrap-percentile"`` or ``"bootstrap-bca"``.
    """
    level = v.level_ok(level)
    yy, s = v.binary_and_score(y, score)
    if method == "delong":
        a, cov = delong_covariance(yy, s)
        se = math.sqrt(max(float(cov[0, 0]), 0.0))
        z = _z(level)
        est = float(a[0])
        return Interval(est, max(0.0, est - z * se), min(1.0, est + z * se), level, "delong")
    if method != "bootstrap":
        raise ValueError(f"method must be 'delong' or 'bootstrap', got {method!r}")
    if ci_type not in ("percentile", "bca"):
        raise ValueError(f"ci_type must be 'percentile' or 'bca', got {ci_type!r}")
    n_boot = v.n_boot_ok(n_boot)
    est, pl = placements(yy, s)
    reps = drop_nan(auc_replicates(yy, [s], n_boot, seed, stratified)[0])
    if ci_type == "percentile":
        lo, hi = percentile_interval(reps, level)
    else:
        m = int(yy.sum())
        n = yy.size - m
        if m < 2 or n < 2:
            raise ValueError("BCa needs at least 2 cases and 2 controls")
        pos, neg = pl[yy == 1], pl[yy == 0]
        if stratified:
            infl = [pos - est, neg - est]
        else:
            # Delete-one jackknife over all subjects (one stratum).
            jack = np.concatenate([(m * est - pos) / (m - 1), (n * est - neg) / (n - 1)])
            infl = [(jack.size - 1) * (jack.mean() - jack)]
        lo, hi = bca_interval(reps, est, infl, level)
    return Interval(est, lo, hi, level, f"bootstrap-{ci_type}")


def compare_auc(
    y: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    method: Literal["delong", "bootstrap"] = "delong",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    stratified: bool = True,
) -> Comparison:
    """Compare two correlated (paired) AUCs: ``auc(score_a) - auc(score_b)``.

    Parameters
    ----------
    y : array-like of 0/1
    score_a, score_b : array-like
        Two scores measured on the same subjects.
    method : {"delong", "bootstrap"}
        ``"delong"``: DeLong, DeLong & Clarke-Pearson (Biometrics 1988)
        test, ``z = d / sqrt(var_a + var_b - 2 cov_ab)``, two-sided normal p,
        CI ``d +/- z_(1-alpha/2) * se`` (pROC ``roc.test(method = "delong",
        paired = TRUE)``).  ``"bootstrap"``: paired stratified bootstrap as
        pROC ``roc.test(method = "bootstrap")``: ``z = d / sd(d*)`` (sd with
        ``n - 1``), two-sided normal p; CI is the percentile interval of ``d*``.
    level : float
    n_boot : int
    seed : int
    stratified : bool
        Bootstrap only: resample cases and controls separately.

    Returns
    -------
    Comparison
    """
    level = v.level_ok(level)
    yy = v.binary_y(y)
    sa = v.as_1d(score_a, "score_a")
    sb = v.as_1d(score_b, "score_b")
    v.same_length(y=yy, score_a=sa, score_b=sb)
    v.no_nan(sa, "score_a")
    v.no_nan(sb, "score_b")
    if method == "delong":
        aucs, cov = delong_covariance(yy, sa, sb)
        d = float(aucs[0] - aucs[1])
        var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
        sig = math.sqrt(max(var, 0.0))
    elif method == "bootstrap":
        n_boot = v.n_boot_ok(n_boot)
        aucs = np.array([placements(yy, sa)[0], placements(yy, sb)[0]])
        d = float(aucs[0] - aucs[1])
        reps = drop_nan(auc_replicates(yy, [sa, sb], n_boot, seed, stratified))
        diffs = reps[0] - reps[1]
        sig = float(np.std(diffs, ddof=1)) if diffs.size > 1 else float("nan")
    else:
        raise ValueError(f"method must be 'delong' or 'bootstrap', got {method!r}")
    if sig == 0.0 and d == 0.0:
        zstat = 0.0
    elif sig == 0.0:
        zstat = math.copysign(math.inf, d)
    else:
        zstat = d / sig
    p = float(2.0 * ndtr(-abs(zstat)))
    if method == "delong":
        zc = _z(level)
        lo, hi = d - zc * sig, d + zc * sig
    else:
        lo, hi = percentile_interval(diffs, level)
    return Comparison(d, zstat, p, lo, hi, float(aucs[0]), float(aucs[1]), level, method)
