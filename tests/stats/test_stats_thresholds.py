"""Threshold rules against pROC coords(..., "best"); the train/test threshold
workflow; Wilson intervals against R prop.test and Newcombe (1998); F1 bootstrap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analytics import stats
from analytics.stats.bootstrap import bootstrap_indices

REF = json.loads((Path(__file__).parent / "data" / "proc_reference.json").read_text())


def _num(x: float | str) -> float:
    return float(str(x).replace("Inf", "inf")) if isinstance(x, str) else float(x)


CASES = [(name, key, rule) for name in REF["datasets"] for key in ("a", "b")
         for rule in ("youden", "closest_topleft")]


@pytest.mark.parametrize("name,key,rule", CASES)
def test_best_threshold_matches_proc_coords(name: str, key: str, rule: str) -> None:
    d = REF["datasets"][name]
    y, s = np.array(d["y"]), np.array(d[key], float)
    best = [_num(t) for t in REF["proc"][name][key][rule]]
    t = stats.threshold(y, s, rule=rule)
    # pROC lists all optimal thresholds in increasing order; ties -> the lowest.
    assert t == pytest.approx(best[0], abs=1e-9) or t == best[0]


def test_threshold_ties_pick_the_lowest() -> None:
    # Every candidate threshold 1.5, 2.5, 3.5 gives Youden J = 1/3 (pROC lists all three).
    y = [0, 0, 1, 1, 0, 1]
    s = [1, 2, 2, 3, 3, 4]
    assert stats.threshold(y, s, "youden") == 1.5


def test_roc_curve_counts_brute_force() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.normal(size=50), 1)
    tab = stats.roc_curve(y, s)
    thr = tab["threshold"].to_numpy()
    assert thr[0] == -np.inf and thr[-1] == np.inf and np.all(np.diff(thr) > 0)
    u = np.unique(s)
    np.testing.assert_allclose(thr[1:-1], (u[:-1] + u[1:]) / 2)
    for t, se, sp in zip(thr, tab["sensitivity"], tab["specificity"]):
        assert se == np.mean(s[y == 1] >= t)
        assert sp == np.mean(s[y == 0] < t)


def test_sensitivity_and_specificity_rules() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    s = rng.normal(size=400) + 1.2 * y
    tab = stats.roc_curve(y, s)
    t = stats.threshold(y, s, rule="sensitivity", target=0.9)
    sens = np.mean(s[y == 1] >= t)
    assert sens >= 0.9
    # the next higher candidate would drop below the target
    higher = tab.filter(tab["threshold"] > t)["sensitivity"][0]
    assert higher < 0.9
    t2 = stats.threshold(y, s, rule="specificity", target=0.8)
    assert np.mean(s[y == 0] < t2) >= 0.8
    lower = tab.filter(tab["threshold"] < t2)["specificity"][-1]
    assert lower < 0.8
    # exact targets on 10 cases: 9/10 is reachable exactly despite 0.9 * 10 rounding
    y10 = np.r_[np.ones(10, int), np.zeros(10, int)]
    s10 = np.r_[np.arange(10, 20), np.arange(0, 10)].astype(float)
    assert stats.threshold(y10, s10, "sensitivity", target=0.9) == 10.5
    with pytest.raises(ValueError, match="target"):
        stats.threshold(y, s, rule="sensitivity")
    with pytest.raises(ValueError, match="unknown rule"):
        stats.threshold(y, s, rule="f1")


def test_training_threshold_is_applied_unchanged_to_test_set() -> None:
    # Training data: Youden optimum at 0.5 (between 0.4 and 0.6).
    y_train = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s_train = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    t_train = stats.threshold(y_train, s_train)
    assert t_train == 0.5
    # Test data is shifted: its own optimum would be 0.7, not 0.5.
    y_test = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    s_test = np.array([0.3, 0.45, 0.55, 0.6, 0.65, 0.75, 0.8, 0.85, 0.9, 0.95])
    assert stats.threshold(y_test, s_test) == 0.7
    m = stats.binary_metrics(y_test, s_test, t_train, n_boot=200)
    # At 0.5: all 5 cases positive, 3 of 5 controls positive.
    assert m["sensitivity"].estimate == 1.0
    assert m["specificity"].estimate == pytest.approx(2 / 5)
    assert m["accuracy"].estimate == pytest.approx(7 / 10)
    assert m["ppv"].estimate == pytest.approx(5 / 8)
    assert m["npv"].estimate == 1.0
    assert m["f1"].estimate == pytest.approx(2 * 5 / (2 * 5 + 3 + 0))
    assert stats.confusion(y_test, s_test, t_train) == {"tp": 5, "fp": 3, "tn": 2, "fn": 0}
    # score == threshold counts as positive
    assert stats.confusion([0, 1], [0.5, 0.5], 0.5) == {"tp": 1, "fp": 1, "tn": 0, "fn": 0}


def wilson_by_hand(k: int, n: int, z: float) -> tuple[float, float]:
    # Newcombe (1998), method 3: roots of |p - k/n| = z sqrt(p (1 - p) / n).
    a = 1 + z * z / n
    b = -(2 * k / n + z * z / n)
    c = (k / n) ** 2
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("case", REF["wilson"], ids=lambda c: f"{c['x']}/{c['n']}")
def test_wilson_matches_r_prop_test_and_quadratic(case: dict) -> None:
    k, n = case["x"], case["n"]
    for level, key, z in ((0.95, "ci95", 1.959963984540054), (0.90, "ci90", 1.6448536269514722)):
        lo, hi = stats.wilson_interval(k, n, level)
        assert lo == pytest.approx(case[key][0], abs=1e-12)
        assert hi == pytest.approx(case[key][1], abs=1e-12)
        hlo, hhi = wilson_by_hand(k, n, z)
        assert lo == pytest.approx(max(0.0, hlo), abs=1e-9)
        assert hi == pytest.approx(min(1.0, hhi), abs=1e-9)


def test_wilson_published_values() -> None:
    # Newcombe, Stat Med 1998;17:857-872: illustrative intervals, method 3 (Wilson score).
    published = {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                  (0, 20): (0.0000, 0.1611), (1, 29): (0.0061, 0.1718)}
    for (k, n), (lo, hi) in published.items():
        got = stats.wilson_interval(k, n)
        assert round(got[0], 4) == lo and round(got[1], 4) == hi


def test_binary_metrics_intervals_and_f1_bootstrap() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 120)
    s = rng.normal(size=120) + y
    m = stats.binary_metrics(y, s, 0.4, level=0.9, n_boot=300, seed=9)
    assert set(m) == {"sensitivity", "specificity", "accuracy", "ppv", "npv", "f1"}
    c = stats.confusion(y, s, 0.4)
    lo, hi = stats.wilson_interval(c["tp"], c["tp"] + c["fn"], 0.9)
    assert (m["sensitivity"].low, m["sensitivity"].high) == (lo, hi)
    assert m["sensitivity"].method == "wilson" and m["sensitivity"].level == 0.9
    reps = []
    for idx in bootstrap_indices(y, 300, 9):
        for row in idx:
            yb, pb = y[row], s[row] >= 0.4
            tp = np.sum(pb & (yb == 1))
            reps.append(2 * tp / (2 * tp + np.sum(pb & (yb == 0)) + np.sum(~pb & (yb == 1))))
    qlo, qhi = np.quantile(reps, [0.05, 0.95])
    assert m["f1"].low == pytest.approx(qlo, abs=1e-12)
    assert m["f1"].high == pytest.approx(qhi, abs=1e-12)
    assert m["f1"].method == "bootstrap-percentile"
    again = stats.binary_metrics(y, s, 0.4, level=0.9, n_boot=300, seed=9)
    assert json.dumps({k: v.as_dict() for k, v in again.items()}) == json.dumps(
        {k: v.as_dict() for k, v in m.items()})


def test_binary_metrics_empty_denominator_is_nan() -> None:
    m = stats.binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], threshold=0.9, n_boot=50)
    assert math.isnan(m["ppv"].estimate) and m["sensitivity"].estimate == 0.0
    assert m["ppv"].as_dict()["estimate"] is None
