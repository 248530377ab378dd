"""Vectorised bootstrap AUC against a slow loop over sklearn.roc_auc_score that
uses the same resamples; BCa against a loop jackknife; loose agreement with
pROC's bootstrap (different RNG); determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr, ndtri
from sklearn.metrics import roc_auc_score

from analytics import stats
from analytics.stats.bootstrap import auc_replicates, bootstrap_indices

REF = json.loads((Path(__file__).parent / "data" / "proc_reference.json").read_text())


def sample(seed: int, n: int = 150, digits: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    a = np.round(rng.normal(size=n) + y, digits)
    b = np.round(0.6 * a + rng.normal(size=n) + 0.3 * y, digits)
    return y, a, b


def slow_replicates(y, score, n_boot, seed, stratified=True):
    out = []
    for idx in bootstrap_indices(y, n_boot, seed, stratified):
        for row in idx:
            yb = y[row]
            out.append(roc_auc_score(yb, score[row]) if 0 < yb.sum() < yb.size else np.nan)
    return np.array(out)


@pytest.mark.parametrize("stratified", [True, False])
def test_replicates_equal_slow_loop(stratified: bool) -> None:
    y, a, b = sample(1, n=60)
    fast = auc_replicates(y, [a, b], 150, seed=7, stratified=stratified)
    np.testing.assert_allclose(fast[0], slow_replicates(y, a, 150, 7, stratified), atol=1e-12)
    np.testing.assert_allclose(fast[1], slow_replicates(y, b, 150, 7, stratified), atol=1e-12)


def test_stratified_indices_keep_class_sizes_and_are_chunk_invariant() -> None:
    y, a, _ = sample(2)
    m = int(y.sum())
    rows = np.vstack(list(bootstrap_indices(y, 50, 3)))
    assert rows.shape == (50, y.size)
    assert (y[rows].sum(axis=1) == m).all()
    small = np.vstack(list(bootstrap_indices(y, 50, 3, chunk_rows=7)))
    np.testing.assert_array_equal(rows, small)
    r1 = auc_replicates(y, [a], 50, 3)
    r2 = auc_replicates(y, [a], 50, 3, chunk_rows=7)
    np.testing.assert_array_equal(r1, r2)


def test_percentile_ci_equals_quantiles_of_slow_loop() -> None:
    y, a, _ = sample(3)
    ci = stats.auc_ci(y, a, method="bootstrap", n_boot=250, seed=11)
    ref = slow_replicates(y, a, 250, 11)
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert ci.low == pytest.approx(lo, abs=1e-12)
    assert ci.high == pytest.approx(hi, abs=1e-12)
    assert ci.estimate == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert ci.method == "bootstrap-percentile"


@pytest.mark.parametrize("stratified", [True, False])
def test_bca_against_loop_jackknife(stratified: bool) -> None:
    y, a, _ = sample(4, n=80)
    level, n_boot, seed = 0.9, 250, 5
    ci = stats.auc_ci(y, a, method="bootstrap", n_boot=n_boot, seed=seed,
                      stratified=stratified, ci_type="bca", level=level)
    reps = slow_replicates(y, a, n_boot, seed, stratified)
    est = roc_auc_score(y, a)
    keep = np.ones(y.size, bool)
    jack = []
    for i in range(y.size):
        keep[i] = False
        jack.append(roc_auc_score(y[keep], a[keep]))
        keep[i] = True
    jack = np.array(jack)
    if stratified:
        # Davison & Hinkley (1997): influence values within each stratum,
        # acceleration sum l^3/n_s^3 / (6 (sum l^2/n_s^2)^1.5).
        num = den = 0.0
        for cls in (1, 0):
            jj = jack[y == cls]
            ns = jj.size
            infl = (ns - 1) * (jj.mean() - jj)
            num += np.sum(infl**3) / ns**3
            den += np.sum(infl**2) / ns**2
        acc = num / (6 * den**1.5)
    else:
        d = jack.mean() - jack
        acc = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    # Replicates equal to the estimate count one half; compare with a tolerance
    # because the loop's trapezoid AUCs carry rounding noise.
    below = np.sum(reps < est - 1e-12) + np.sum(reps <= est + 1e-12)
    z0 = ndtri(below / (2 * reps.size))
    zs = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    q = ndtr(z0 + (z0 + zs) / (1 - acc * (z0 + zs)))
    lo, hi = np.quantile(reps, q)
    assert ci.low == pytest.approx(lo, abs=1e-10)
    assert ci.high == pytest.approx(hi, abs=1e-10)
    assert ci.method == "bootstrap-bca"


@pytest.mark.parametrize("name", ["hanley_mcneil", "medium_ties", "continuous", "imbalanced"])
def test_bootstrap_ci_close_to_proc_bootstrap(name: str) -> None:
    # Different random streams, so only agreement within Monte-Carlo error.
    d = REF["datasets"][name]
    y, a = np.array(d["y"]), np.array(d["a"], float)
    ci = stats.auc_ci(y, a, method="bootstrap", n_boot=2000, seed=0)
    ref = REF["proc"][name]["a"]["boot_ci95"]
    width = ref[1] - ref[0]
    assert abs(ci.low - ref[0]) < 0.06 * width + 0.003
    assert abs(ci.high - ref[1]) < 0.06 * width + 0.003


def test_paired_bootstrap_comparison() -> None:
    y, a, b = sample(6, n=120)
    c = stats.compare_auc(y, a, b, method="bootstrap", n_boot=250, seed=2)
    diffs = slow_replicates(y, a, 250, 2) - slow_replicates(y, b, 250, 2)
    d = roc_auc_score(y, a) - roc_auc_score(y, b)
    assert c.difference == pytest.approx(d, abs=1e-12)
    z = d / np.std(diffs, ddof=1)
    assert c.z == pytest.approx(z, rel=1e-9)
    assert c.p == pytest.approx(2 * ndtr(-abs(z)), abs=1e-12)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    assert (c.low, c.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert c.method == "bootstrap"


@pytest.mark.parametrize("name", ["hanley_mcneil", "medium_ties", "continuous"])
def test_paired_bootstrap_close_to_proc(name: str) -> None:
    d = REF["datasets"][name]
    y, a, b = np.array(d["y"]), np.array(d["a"], float), np.array(d["b"], float)
    c = stats.compare_auc(y, a, b, method="bootstrap", n_boot=2000, seed=0)
    ref = REF["proc"][name]["bootstrap_test"]
    assert abs(c.z - ref["z"]) < 0.15 * max(1.0, abs(ref["z"]))
    delong = stats.compare_auc(y, a, b)
    assert abs(c.z - delong.z) < 0.2 * max(1.0, abs(delong.z))


def test_bootstrap_coverage_roughly_nominal() -> None:
    # 200 samples from a binormal model with known AUC = Phi(1/sqrt(2)).
    true_auc = float(ndtr(1 / math.sqrt(2)))
    rng = np.random.default_rng(123)
    hits_boot = hits_delong = 0
    for _ in range(200):
        y = np.r_[np.zeros(60, int), np.ones(40, int)]
        s = rng.normal(size=100) + y
        ci = stats.auc_ci(y, s, method="bootstrap", n_boot=300, seed=1)
        hits_boot += ci.low <= true_auc <= ci.high
        cd = stats.auc_ci(y, s)
        hits_delong += cd.low <= true_auc <= cd.high
    assert 0.88 <= hits_boot / 200 <= 0.99
    assert 0.88 <= hits_delong / 200 <= 0.99


def test_determinism_byte_identical() -> None:
    y, a, b = sample(8, n=300, digits=2)

    def run() -> bytes:
        parts = [
            stats.auc_ci(y, a, method="bootstrap", seed=3).as_dict(),
            stats.auc_ci(y, a, method="bootstrap", seed=3, ci_type="bca").as_dict(),
            stats.auc_ci(y, a, method="bootstrap", seed=3, stratified=False).as_dict(),
            stats.compare_auc(y, a, b, method="bootstrap", seed=3).as_dict(),
            stats.compare_auc(y, a, b).as_dict(),
        ]
        return json.dumps(parts).encode() + auc_replicates(y, [a, b], 100, 3).tobytes()

    first = run()
    assert run() == first
    other = stats.auc_ci(y, a, method="bootstrap", seed=4)
    assert other.as_dict() != json.loads(first.split(b"]")[0].decode() + "]")[0]


def test_bootstrap_validation() -> None:
    y, a, _ = sample(9, n=20)
    with pytest.raises(ValueError, match="ci_type"):
        stats.auc_ci(y, a, method="bootstrap", ci_type="basic")
    with pytest.raises(ValueError, match="n_boot"):
        stats.auc_ci(y, a, method="bootstrap", n_boot=0)
    with pytest.raises(ValueError, match="seed"):
        stats.auc_ci(y, a, method="bootstrap", seed=-1)


def test_unstratified_warns_about_single_class_resamples() -> None:
    y = np.array([0] * 9 + [1])
    s = np.arange(10.0)
    with pytest.warns(RuntimeWarning, match="undefined"):
        ci = stats.auc_ci(y, s, method="bootstrap", stratified=False, n_boot=200)
    assert ci.estimate == 1.0
