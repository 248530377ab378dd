"""ROC confidence bands: sensitivity at fixed specificities as pROC's coords / ci.se."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.stats.bootstrap import bootstrap_indices
from analytics.stats.roc_band import BAND_SPECIFICITIES, _roc_points, roc_band, sensitivity_at


def _proc_coords_se(cases: np.ndarray, controls: np.ndarray, x: float) -> float:
    """A line-by-line transcription of pROC's ``roc.utils.thresholds`` / ``roc.utils.perfs`` (direction "<")
    and ``coords.roc(input = "specificity", ret = "sensitivity")``, with plain loops."""
    u = sorted(set(cases.tolist()) | set(controls.tolist()))
    thresholds = [-np.inf] + [(a + b) / 2 for a, b in zip(u[:-1], u[1:])] + [np.inf]
    sp = [sum(1 for c in controls if c < t) / len(controls) for t in thresholds]
    se = [sum(1 for c in cases if c >= t) / len(cases) for t in thresholds]
    for i, s in enumerate(sp):  # x %in% roc$sp: the first match
        if abs(s - x) <= 1e-12:
            return se[i]
    nxt = next(i for i, s in enumerate(sp) if s > x)
    prop = (x - sp[nxt - 1]) / (sp[nxt] - sp[nxt - 1])
    return se[nxt - 1] - prop * (se[nxt - 1] - se[nxt])


def test_hand_computed_case() -> None:
    # controls 0.1, 0.4; cases 0.35, 0.8: thresholds -inf, .225, .375, .6, inf give
    # specificity 0, .5, .5, 1, 1 and sensitivity 1, 1, .5, .5, 0
    sp, se = _roc_points(np.array([0.35, 0.8]), np.array([0.1, 0.4]))
    assert sp.tolist() == [0, 0.5, 0.5, 1, 1] and se.tolist() == [1, 1, 0.5, 0.5, 0]
    got = sensitivity_at(sp, se, np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert got.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sensitivity_at_matches_proc_transcription(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cases = rng.integers(0, 12, 17) / 4.0  # ties within and across classes
    controls = rng.integers(0, 10, 23) / 4.0
    sp, se = _roc_points(cases, controls)
    targets = np.round(np.linspace(0, 1, 41), 10)
    expected = [_proc_coords_se(cases, controls, float(x)) for x in targets]
    assert sensitivity_at(sp, se, targets) == pytest.approx(expected, abs=1e-12)


def test_band_is_the_percentile_interval_of_stratified_resamples() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(40) < 0.4).astype(int)
    s = y * 0.8 + rng.normal(0, 1, 40)
    low, high = roc_band(y, s, BAND_SPECIFICITIES, n_boot=60, level=0.9, seed=7)
    m = int(y.sum())
    reps = []
    for chunk in bootstrap_indices(y, 60, seed=7, stratified=True):
        for row in chunk:
            cases, controls = s[row[:m]], s[row[m:]]
            reps.append([_proc_coords_se(cases, controls, float(x)) for x in BAND_SPECIFICITIES])
    ref_low, ref_high = np.quantile(np.array(reps), [0.05, 0.95], axis=0)  # R's type-7 quantile
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)
    assert np.all(low <= high)
    assert low[0] == high[0] == 1.0  # specificity 0: every case is called positive


def test_perfect_separation_band_is_one() -> None:
    y = np.array([0] * 10 + [1] * 8)
    s = np.concatenate([np.linspace(0, 0.4, 10), np.linspace(0.6, 1, 8)])
    low, high = roc_band(y, s, n_boot=50, seed=0)
    assert np.all(low == 1.0) and np.all(high == 1.0)


def test_band_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="cases and controls"):
        roc_band(np.ones(5), np.arange(5.0), n_boot=10)
