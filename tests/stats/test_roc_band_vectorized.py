"""The ROC band's resamples evaluated together equal, to the last bit, the resamples evaluated one at a time by
``_roc_points`` and ``sensitivity_at`` (the per-resample reading of pROC ``ci.se``), ties included."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.stats.bootstrap import bootstrap_indices
from analytics.stats.roc_band import BAND_SPECIFICITIES, _roc_points, roc_band, sensitivity_at


def _one_at_a_time(y: np.ndarray, score: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    m = int(y.sum())
    reps = np.empty((n_boot, BAND_SPECIFICITIES.size))
    b = 0
    for chunk in bootstrap_indices(y, n_boot, seed=seed, stratified=True):
        for row in chunk:
            sp, se = _roc_points(score[row[:m]], score[row[m:]])
            reps[b] = sensitivity_at(sp, se, BAND_SPECIFICITIES)
            b += 1
    alpha = (1.0 - 0.95) / 2.0  # as roc_band computes it (not the literal 0.025)
    low, high = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    return low, high


@pytest.mark.parametrize("case", range(12))
def test_band_equals_the_per_resample_loop(case: int) -> None:
    rng = np.random.default_rng(case)
    n = int(rng.integers(6, 300))
    y = (rng.random(n) < rng.uniform(0.15, 0.85)).astype(int)
    y[:2] = [0, 1]
    score = rng.normal(size=n) + y
    if case % 3 == 1:
        score = np.round(score, 1)  # many ties across cases and controls
    elif case % 3 == 2:
        score = rng.integers(0, 4, n).astype(float)  # a handful of distinct values
    low, high = roc_band(y, score, n_boot=200, seed=case)
    want_low, want_high = _one_at_a_time(y, score, 200, case)
    assert np.array_equal(low, want_low)
    assert np.array_equal(high, want_high)
