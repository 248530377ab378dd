"""The AUC bootstrap and the ROC band from one count of each resample (analytics.stats.roc_band.auc_bootstrap_band):
with the same resamples, the interval equals auc_ci's bootstrap and the band equals roc_band, number for number, and
both equal the resamples evaluated one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from analytics import stats
from analytics.stats.bootstrap import bootstrap_indices
from analytics.stats.roc_band import BAND_SPECIFICITIES, _roc_points, auc_bootstrap_band, roc_band, sensitivity_at


def _case(case: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case)
    n = int(rng.integers(8, 400))
    y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    y[:2] = [0, 1]
    score = rng.normal(size=n) + y
    if case % 3 == 1:
        score = np.round(score, 1)  # ties across cases and controls
    elif case % 3 == 2:
        score = rng.integers(0, 4, n).astype(float)  # a handful of distinct values
    return y, score


@pytest.mark.parametrize("case", range(9))
def test_interval_and_band_equal_auc_ci_and_roc_band(case: int) -> None:
    y, score = _case(case)
    level = 0.9 if case % 2 else 0.95
    iv, low, high = auc_bootstrap_band(y, score, n_boot=150, level=level, seed=case)
    assert iv.as_dict() == stats.auc_ci(y, score, method="bootstrap", n_boot=150, level=level, seed=case).as_dict()
    want_low, want_high = roc_band(y, score, BAND_SPECIFICITIES, n_boot=150, level=level, seed=case)
    assert np.array_equal(low, want_low) and np.array_equal(high, want_high)


def test_each_resample_as_read_one_at_a_time() -> None:
    y, score = _case(4)
    m = int(y.sum())
    aucs, rows = [], []
    for chunk in bootstrap_indices(y, 60, seed=2, stratified=True):
        for row in chunk:
            aucs.append(stats.auc(y[row], score[row]))
            sp, se = _roc_points(score[row[:m]], score[row[m:]])
            rows.append(sensitivity_at(sp, se, BAND_SPECIFICITIES))
    iv, low, high = auc_bootstrap_band(y, score, n_boot=60, seed=2)
    assert (iv.low, iv.high) == pytest.approx(tuple(np.quantile(aucs, [0.025, 0.975])), abs=1e-12)
    want_low, want_high = np.quantile(np.array(rows), [0.025, 0.975], axis=0)
    np.testing.assert_allclose(low, want_low, rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, want_high, rtol=0, atol=1e-12)


def test_one_class_and_no_resamples_are_errors() -> None:
    with pytest.raises(ValueError):
        auc_bootstrap_band(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError):
        auc_bootstrap_band(np.array([0, 1, 0, 1]), np.arange(4.0), n_boot=0)
