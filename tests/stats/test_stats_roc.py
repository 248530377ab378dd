"""AUC, DeLong variance/CI and DeLong's paired test against pROC, sklearn and a
naive implementation of DeLong, DeLong & Clarke-Pearson (Biometrics 1988)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analytics import stats

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "proc_reference.json").read_text())
TOL = 1e-9  # fixtures carry 15 significant digits; the requirement is 1e-6

# Hanley & McNeil, "The meaning and use of the area under a receiver operating
# characteristic (ROC) curve", Radiology 1982;143:29-36, Table 1: CT images
# rated on a five-point scale (1 definitely normal .. 5 definitely abnormal).
# Counts per rating 1..5: normal n=58 (33, 6, 6, 11, 2), abnormal n=51
# (3, 2, 2, 11, 33).  Published area 0.893 (standard error 0.032).
HM_NORMAL = (33, 6, 6, 11, 2)
HM_ABNORMAL = (3, 2, 2, 11, 33)


def hanley_mcneil_data() -> tuple[np.ndarray, np.ndarray]:
    ratings = np.arange(1, 6)
    score = np.concatenate([np.repeat(ratings, HM_NORMAL), np.repeat(ratings, HM_ABNORMAL)])
    y = np.concatenate([np.zeros(sum(HM_NORMAL), int), np.ones(sum(HM_ABNORMAL), int)])
    return y, score.astype(float)


def naive_delong(y: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) structural components from the full m x n kernel."""
    v10, v01, aucs = [], [], []
    for s in scores:
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = int((y == 1).sum()), int((y == 0).sum())
    s10 = np.atleast_2d(np.cov(np.vstack(v10)))
    s01 = np.atleast_2d(np.cov(np.vstack(v01)))
    return np.array(aucs), s10 / m + s01 / n


def dataset(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = REF["datasets"][name]
    return np.array(d["y"], int), np.array(d["a"], float), np.array(d["b"], float)


CASES = [(name, key) for name in REF["datasets"] for key in ("a", "b")]


@pytest.mark.parametrize("name,key", CASES)
def test_auc_and_delong_match_proc(name: str, key: str) -> None:
    y, a, b = dataset(name)
    s = a if key == "a" else b
    ref = REF["proc"][name][key]
    assert stats.auc(y, s) == pytest.approx(ref["auc"], abs=TOL)
    aucs, cov = stats.delong_covariance(y, s)
    assert cov[0, 0] == pytest.approx(ref["var_delong"], abs=TOL)
    for level, k in ((0.95, "ci95_delong"), (0.90, "ci90_delong")):
        ci = stats.auc_ci(y, s, method="delong", level=level)
        assert ci.estimate == pytest.approx(ref["auc"], abs=TOL)
        assert ci.low == pytest.approx(ref[k][0], abs=TOL)
        assert ci.high == pytest.approx(ref[k][1], abs=TOL)
        assert ci.method == "delong" and ci.level == level


@pytest.mark.parametrize("name", list(REF["datasets"]))
def test_delong_paired_test_matches_proc_roc_test(name: str) -> None:
    y, a, b = dataset(name)
    ref = REF["proc"][name]["delong_test"]
    c = stats.compare_auc(y, a, b, method="delong")
    assert c.difference == pytest.approx(ref["difference"], abs=TOL)
    assert c.z == pytest.approx(ref["z"], abs=1e-7)
    assert c.p == pytest.approx(ref["p"], abs=TOL)
    assert c.low == pytest.approx(ref["ci95"][0], abs=TOL)
    assert c.high == pytest.approx(ref["ci95"][1], abs=TOL)
    assert c.auc_a == pytest.approx(REF["proc"][name]["a"]["auc"], abs=TOL)
    assert c.auc_b == pytest.approx(REF["proc"][name]["b"]["auc"], abs=TOL)


def test_hanley_mcneil_worked_example() -> None:
    y, s = hanley_mcneil_data()
    a = stats.auc(y, s)
    assert round(a, 3) == 0.893  # published value
    ref = REF["proc"]["hanley_mcneil"]["a"]
    assert np.array_equal(np.array(REF["datasets"]["hanley_mcneil"]["a"], float), s)
    assert a == pytest.approx(ref["auc"], abs=TOL)
    se = math.sqrt(stats.delong_covariance(y, s)[1][0, 0])
    assert se == pytest.approx(math.sqrt(ref["var_delong"]), abs=TOL)
    assert se == pytest.approx(math.sqrt(naive_delong(y, s)[1][0, 0]), abs=1e-12)
    # Hanley & McNeil's own exponential approximation gives the published 0.032;
    # the DeLong (nonparametric) SE is close to it.
    m, n = 51, 58
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se_hm = math.sqrt((a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n))
    assert round(se_hm, 3) == 0.032
    assert abs(se - se_hm) < 0.005


@pytest.mark.parametrize("seed", range(6))
def test_delong_against_naive_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 60))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    y[2:4] = [0, 1]
    a = np.round(rng.normal(size=n) + 0.8 * y, 1)  # rounding creates ties
    b = np.round(0.5 * a + rng.normal(size=n), 0)
    aucs, cov = stats.delong_covariance(y, a, b)
    naucs, ncov = naive_delong(y, a, b)
    np.testing.assert_allclose(aucs, naucs, atol=1e-12)
    np.testing.assert_allclose(cov, ncov, atol=1e-12)
    c = stats.compare_auc(y, a, b)
    var = ncov[0, 0] + ncov[1, 1] - 2 * ncov[0, 1]
    assert c.difference == pytest.approx(naucs[0] - naucs[1], abs=1e-12)
    assert c.z == pytest.approx((naucs[0] - naucs[1]) / math.sqrt(var), rel=1e-9)
    from scipy.stats import norm

    assert c.p == pytest.approx(2 * norm.sf(abs(c.z)), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = [30, 200, 1000, 5000, 20000][seed]
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 3)))
    assert stats.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_below_half_and_constant_score() -> None:
    y = np.array([0, 0, 1, 1])
    assert stats.auc(y, [4, 3, 2, 1]) == 0.0
    assert stats.auc(y, [1, 1, 1, 1]) == 0.5
    ci = stats.auc_ci([0, 0, 0, 1, 1, 1], [1, 2, 3, 4, 5, 6])
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        stats.auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        stats.auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class"):
        stats.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        stats.auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        stats.auc([0, np.nan, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="at least 2 cases"):
        stats.auc_ci([0, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="method"):
        stats.auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], method="hanley")
    with pytest.raises(ValueError, match="level"):
        stats.auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], level=95)
    with pytest.raises(ValueError, match="lengths differ"):
        stats.compare_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])
    # booleans are accepted as 0/1
    assert stats.auc(np.array([False, True]), [0.1, 0.9]) == 1.0


def test_interval_and_comparison_formatting() -> None:
    ci = stats.Interval(0.8932, 0.8361, 0.9503, 0.95, "delong")
    assert str(ci) == "0.893 (95% CI 0.836\u20130.950)"
    assert "0.893 (95% CI" in repr(ci) and "delong" in repr(ci)
    assert ci.as_dict() == {"estimate": 0.8932, "low": 0.8361, "high": 0.9503,
                            "level": 0.95, "method": "delong"}
    nan_ci = stats.Interval(float("nan"), 0.0, 1.0)
    assert json.loads(json.dumps(nan_ci.as_dict()))["estimate"] is None
    with pytest.raises(AttributeError):
        ci.low = 0.0  # type: ignore[misc]
    c = stats.Comparison(-0.02, -1.5, 0.1336, -0.046, 0.006, 0.80, 0.82, 0.95, "delong")
    assert "-0.046 to 0.006" in str(c) and "p = 0.134" in str(c)
    assert set(c.as_dict()) >= {"difference", "z", "p", "low", "high", "auc_a", "auc_b"}
    assert "90% CI" in str(stats.Interval(0.5, 0.4, 0.6, 0.9))
