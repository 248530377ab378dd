"""Net benefit (Vickers & Elkin 2006) on a hand-computed case, and its bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analytics import stats
from analytics.stats.bootstrap import bootstrap_indices


def test_hand_computed_tiny_case() -> None:
    # 10 patients, 4 events.
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.6, 0.3, 0.3, 0.2, 0.1, 0.1, 0.05])
    t = stats.net_benefit(y, p, thresholds=[0.1, 0.25, 0.5, 0.6, 0.85])
    assert t.columns == ["threshold", "net_benefit", "treat_all", "treat_none"]
    # pt=0.1: treat p >= 0.1 -> 9 patients, TP 4, FP 5: 4/10 - 5/10 * (0.1/0.9)
    # pt=0.25: treat 6 -> TP 4, FP 2:              4/10 - 2/10 * (1/3)
    # pt=0.5: treat 4 -> TP 3, FP 1:               3/10 - 1/10 * 1
    # pt=0.6: treat 4 (0.6 >= 0.6) -> TP 3, FP 1:   3/10 - 1/10 * 1.5
    # pt=0.85: treat 1 -> TP 1, FP 0:              1/10
    expected = [0.4 - 0.5 / 9, 0.4 - 0.2 / 3, 0.3 - 0.1, 0.3 - 0.15, 0.1]
    np.testing.assert_allclose(t["net_benefit"].to_numpy(), expected, atol=1e-15)
    # treat all: prevalence 0.4 -> 0.4 - 0.6 * pt / (1 - pt)
    pt = np.array([0.1, 0.25, 0.5, 0.6, 0.85])
    np.testing.assert_allclose(t["treat_all"].to_numpy(), 0.4 - 0.6 * pt / (1 - pt), atol=1e-15)
    assert (t["treat_none"] == 0).all()


def test_default_grid_and_validation() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50)
    y = rng.binomial(1, p)
    t = stats.net_benefit(y, p)
    assert t.height == 99 and t["threshold"][0] == 0.01 and t["threshold"][-1] == 0.99
    with pytest.raises(ValueError, match="strictly between"):
        stats.net_benefit(y, p, thresholds=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.net_benefit(y, p * 2, thresholds=[0.5])


def test_bootstrap_interval_against_loop() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=80)
    y = rng.binomial(1, p)
    grid = np.array([0.05, 0.2, 0.5, 0.8])
    t = stats.net_benefit(y, p, grid, n_boot=300, level=0.9, seed=4)
    reps = []
    for idx in bootstrap_indices(np.zeros(80), 300, 4, stratified=False):
        for row in idx:
            yb, pb = y[row], p[row]
            tp = [np.sum((pb >= g) & (yb == 1)) for g in grid]
            fp = [np.sum((pb >= g) & (yb == 0)) for g in grid]
            reps.append([(a - b * g / (1 - g)) / 80 for a, b, g in zip(tp, fp, grid)])
    lo, hi = np.quantile(np.array(reps), [0.05, 0.95], axis=0)
    np.testing.assert_allclose(t["low"].to_numpy(), lo, atol=1e-12)
    np.testing.assert_allclose(t["high"].to_numpy(), hi, atol=1e-12)
    again = stats.net_benefit(y, p, grid, n_boot=300, level=0.9, seed=4)
    assert json.dumps(again.to_dicts()) == json.dumps(t.to_dicts())
