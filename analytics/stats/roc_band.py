"""Pointwise confidence band of an ROC curve: sensitivity at fixed specificities.

The bootstrap band of pROC's ``ci.se`` (Robin et al., BMC Bioinformatics
2011;12:77), on the empirical ROC with pROC's thresholds.
"""

from __future__ import annotations

import numpy as np

from analytics.stats.bootstrap import bootstrap_indices

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
    reps = np.empty((n_boot, specificities.size))
    b = 0
    for chunk in bootstrap_indices(y, n_boot, seed=seed, stratified=True):
        for row in chunk:
            sp, se = _roc_points(score[row[:m]], score[row[m:]])
            reps[b] = sensitivity_at(sp, se, specificities)
            b += 1
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    return low, high
