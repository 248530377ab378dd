"""Pointwise confidence band of an ROC curve: sensitivity at fixed specificities.

The bootstrap band of pROC's ``ci.se`` (Robin et al., BMC Bioinformatics
2011;12:77), on the empirical ROC with pROC's thresholds.
"""

from __future__ import annotations

import numpy as np

from analytics.stats import _validate as v
from analytics.stats.bootstrap import _auc_from_counts, _counts, bootstrap_indices, drop_nan, group_draws, percentile_interval
from analytics.stats.types import Interval

BAND_SPECIFICITIES = np.round(np.linspace(0.0, 1.0, 51), 10)
BAND_SPECIFICITIES.flags.writeable = False


def _roc_points(cases: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Specificity (ascending) and sensitivity at pROC's thresholds (-inf, midpoints, +inf), direction "<"."""
    cases, controls = np.sort(cases), np.sort(controls)
    u = np.unique(np.concatenate([cases, controls]))
    sp = np.concatenate([[0.0], np.searchsorted(controls, u, side="right") / controls.size])
    se = np.concatenate([(cases.size - np.searchsorted(cases, u, side="left")) / cases.size, [0.0]])
    return sp, se


def sensitivity_at(sp: np.ndarray, se: np.ndarray, targets: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Sensitivity at given specificities as pROC ``coords(input="specificity")``.

    An ROC point at the target specificity gives its sensitivity (the highest
    one when several points share it); otherwise the sensitivity is
    interpolated linearly between the two neighbouring points. ``sp`` must be
    ascending from 0 to 1 and ``se`` descending. Specificities within ``tol``
    of a target count as equal (float noise in ``k / n``).
    """
    i = np.searchsorted(sp, targets - tol, side="left")
    i = np.clip(i, 0, sp.size - 1)
    exact = np.abs(sp[i] - targets) <= tol
    j = np.clip(i, 1, sp.size - 1)
    span = sp[j] - sp[j - 1]
    prop = np.divide(targets - sp[j - 1], span, out=np.zeros_like(targets, dtype=float), where=span > 0)
    interp = se[j - 1] - prop * (se[j - 1] - se[j])
    return np.where(exact, se[i], interp)


def roc_band(
    y: np.ndarray, score: np.ndarray, specificities: np.ndarray = BAND_SPECIFICITIES,
    n_boot: int = 2000, level: float = 0.95, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise bootstrap CI of sensitivity at fixed specificities (pROC ``ci.se``).

    Cases and controls are resampled separately (stratified, the resamples of
    :func:`analytics.stats.bootstrap.bootstrap_indices` for ``seed``); each
    resample's empirical ROC gives the sensitivity at every specificity
    (:func:`sensitivity_at`); the band is the percentile interval. Robin et al.,
    BMC Bioinformatics 2011;12:77 (pROC ``ci.se``, ``boot.stratified = TRUE``).

    The resamples are evaluated together (:func:`_band_rows`), with the same numbers as
    :func:`_roc_points` and :func:`sensitivity_at` give one resample at a time.

    Returns
    -------
    (low, high)
        Arrays aligned with ``specificities``.
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    m = int(y.sum())
    if m == 0 or m == y.size:
        raise ValueError("ROC band needs cases and controls")
    values, ranks = np.unique(score, return_inverse=True)
    reps = np.empty((n_boot, specificities.size))
    b = 0
    for chunk in bootstrap_indices(y, n_boot, seed=seed, stratified=True):
        rows = _band_rows(ranks.reshape(-1)[chunk], m, values.size, np.asarray(specificities, dtype=float))
        reps[b:b + rows.shape[0]] = rows
        b += rows.shape[0]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    return low, high


def auc_bootstrap_band(
    y: np.ndarray, score: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
    specificities: np.ndarray = BAND_SPECIFICITIES,
) -> tuple[Interval, np.ndarray, np.ndarray]:
    """The stratified bootstrap AUC interval and the ROC band, from one count of each resample.

    Each resample's cases and controls are counted once per distinct score
    (the scores sorted once, as :func:`analytics.stats.bootstrap.auc_replicates`
    does); the counts give its AUC (Mann-Whitney, Hanley & McNeil, Radiology
    1982;143:29-36) and its sensitivity at ``specificities`` (pROC ``ci.se``,
    Robin et al., BMC Bioinformatics 2011;12:77). The resamples are those of
    :func:`analytics.stats.bootstrap.bootstrap_indices` for ``seed``, so the
    interval equals ``auc_ci(y, score, "bootstrap", level, n_boot, seed=seed)``
    and the band equals :func:`roc_band` for the same ``seed``, number for number.

    Returns
    -------
    (interval, low, high)
        The AUC's percentile interval (``method`` ``"bootstrap-percentile"``) and
        the band, arrays aligned with ``specificities``.
    """
    from analytics.stats.roc import placements

    level = v.level_ok(level)
    yy, s = v.binary_and_score(y, score)
    n_boot = v.n_boot_ok(n_boot)
    est, _ = placements(yy, s)
    targets = np.asarray(specificities, dtype=float)
    _, codes = np.unique(s, return_inverse=True)
    codes = codes.reshape(-1)
    k = int(codes.max()) + 1
    cases, controls = codes[yy == 1], codes[yy == 0]
    m, nc = cases.size, controls.size
    aucs = np.empty(n_boot)
    rows = np.empty((n_boot, targets.size))
    b = 0
    for ip, ineg in group_draws([m, nc], n_boot, seed, width=max(m + nc, k)):
        r = ip.shape[0]
        pos, neg = _counts(cases[ip], k), _counts(controls[ineg], k)
        aucs[b:b + r] = _auc_from_counts(pos, neg) / (2.0 * m * nc)
        rows[b:b + r] = _band_from_counts(pos, neg, m, nc, targets)
        b += r
    lo, hi = percentile_interval(drop_nan(aucs), level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(rows, [alpha, 1.0 - alpha], axis=0)
    return Interval(float(est), lo, hi, level, "bootstrap-percentile"), low, high


def _band_rows(ranks: np.ndarray, m: int, k: int, targets: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Sensitivity at ``targets`` of each resample (a row of ``ranks``: the ranks among the ``k`` distinct scores of
    its ``m`` cases, then of its controls); :func:`_band_from_counts` of their counts.

    Each resample's ROC is taken on the grid of every distinct score of the sample instead of its own: a score the
    resample lacks gives a point equal to the next score's point (no case or control lies between them), and a
    repeated point changes neither an exact match nor an interpolation of :func:`sensitivity_at`. So the
    points are :func:`_roc_points`' (with repeats), and every number is computed as there: counts divided by
    counts, the same comparisons with ``tol`` and the same interpolation.
    """
    return _band_from_counts(_counts(ranks[:, :m], k), _counts(ranks[:, m:], k), m, ranks.shape[1] - m, targets, tol)


def _band_from_counts(pos: np.ndarray, neg: np.ndarray, m: int, nc: int, targets: np.ndarray,
                      tol: float = 1e-12) -> np.ndarray:
    """Sensitivity at ``targets`` of each resample from its per-score counts of cases ``pos`` and controls ``neg``
    (``(resamples, k)``, ``m`` cases and ``nc`` controls in each)."""
    r, k = pos.shape
    width = k + 1
    # controls at or below, cases below, each distinct score: the points (sp ascending, se descending), then (1, 0);
    # sp = neg_below / nc and se = (m - pos_below) / m are divided only where read
    neg_below = np.zeros((r, width), dtype=np.int64)
    np.cumsum(neg, axis=1, out=neg_below[:, 1:])
    pos_below = np.zeros((r, width), dtype=np.int64)
    np.cumsum(pos, axis=1, out=pos_below[:, 1:])
    # sensitivity_at's searchsorted(sp, targets - tol): sp takes the values c / nc, so find the first count c whose
    # c / nc reaches each target, then the first point of each row with that many controls at or below (rows
    # offset so that the flat array ascends)
    first_count = np.searchsorted(np.arange(nc + 1) / nc, targets - tol, side="left")
    offsets = np.arange(r, dtype=np.int64) * (nc + 1)
    neg_below += offsets[:, None]
    i = np.searchsorted(neg_below.ravel(), (first_count[None, :] + offsets[:, None]).ravel(), side="left").reshape(r, -1)
    i = np.clip(i - (np.arange(r, dtype=np.int64) * width)[:, None], 0, width - 1)

    def sp(idx: np.ndarray) -> np.ndarray:
        return (np.take_along_axis(neg_below, idx, axis=1) - offsets[:, None]) / nc

    def se(idx: np.ndarray) -> np.ndarray:
        return (m - np.take_along_axis(pos_below, idx, axis=1)) / m

    exact = np.abs(sp(i) - targets) <= tol
    j = np.clip(i, 1, width - 1)
    sp_j, sp_j1 = sp(j), sp(j - 1)
    se_j, se_j1 = se(j), se(j - 1)
    span = sp_j - sp_j1
    prop = np.divide(targets - sp_j1, span, out=np.zeros_like(span), where=span > 0)
    interp = se_j1 - prop * (se_j1 - se_j)
    return np.where(exact, se(i), interp)
