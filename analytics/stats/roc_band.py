"""Pointwise confidence band of an ROC curve: sensitivity at fixed specificities.

The bootstrap band of pROC's ``ci.se`` (Robin et al., BMC Bioinformatics
2011;12:77), on the empirical ROC with pROC's thresholds.
"""

from __future__ import annotations

import numpy as np

from analytics.stats.bootstrap import _counts, bootstrap_indices

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


def _band_rows(ranks: np.ndarray, m: int, k: int, targets: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Sensitivity at ``targets`` of each resample (a row of ``ranks``: the ranks among the ``k`` distinct scores of
    its ``m`` cases, then of its controls).

    Each resample's ROC is taken on the grid of every distinct score of the sample instead of its own: a score the
    resample lacks gives a point equal to the next score's point (no case or control lies between them), and a
    repeated point changes neither an exact match nor an interpolation of :func:`sensitivity_at`. So the
    points are :func:`_roc_points`' (with repeats), and every number is computed as there: counts divided by
    counts, the same comparisons with ``tol`` and the same interpolation.
    """
    r, n = ranks.shape
    nc = n - m
    pos = _counts(ranks[:, :m], k)
    neg = _counts(ranks[:, m:], k)
    # controls at or below, cases below, each distinct score: the points (sp ascending, se descending), then (1, 0)
    neg_below = np.concatenate([np.zeros((r, 1), dtype=np.int64), np.cumsum(neg, axis=1)], axis=1)
    pos_below = np.concatenate([np.zeros((r, 1), dtype=np.int64), np.cumsum(pos, axis=1)], axis=1)
    sp = neg_below / nc
    se = (m - pos_below) / m
    # sensitivity_at's searchsorted(sp, targets - tol): sp takes the values c / nc, so find the first count c whose
    # c / nc reaches each target, then the first point of each row with that many controls at or below
    first_count = np.searchsorted(np.arange(nc + 1) / nc, targets - tol, side="left")
    width = k + 1
    offsets = np.arange(r, dtype=np.int64) * (nc + 1)
    flat = (neg_below + offsets[:, None]).ravel()
    i = np.searchsorted(flat, (first_count[None, :] + offsets[:, None]).ravel(), side="left").reshape(r, -1)
    i = np.clip(i - (np.arange(r, dtype=np.int64) * width)[:, None], 0, width - 1)
    sp_i = np.take_along_axis(sp, i, axis=1)
    exact = np.abs(sp_i - targets) <= tol
    j = np.clip(i, 1, width - 1)
    sp_j, sp_j1 = np.take_along_axis(sp, j, axis=1), np.take_along_axis(sp, j - 1, axis=1)
    se_j, se_j1 = np.take_along_axis(se, j, axis=1), np.take_along_axis(se, j - 1, axis=1)
    span = sp_j - sp_j1
    prop = np.divide(targets - sp_j1, span, out=np.zeros_like(span), where=span > 0)
    interp = se_j1 - prop * (se_j1 - se_j)
    return np.where(exact, np.take_along_axis(se, i, axis=1), interp)
