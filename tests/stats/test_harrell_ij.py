"""Harrell's C with R survival::concordance's infinitesimal-jackknife standard error (harrell_ij_fixture.R), and
the O(n log n) pair counts behind it (and behind the bootstrap and Uno's C) against counting every pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from analytics import stats
from analytics.stats.dominance import earlier_higher, later_lower, later_tied
from analytics.stats.survival import harrell_counts, weighted_pair_counts

FIXTURE = json.loads((Path(__file__).parent / "harrell_ij_fixture.json").read_text())


@pytest.mark.parametrize("case", sorted(FIXTURE["cases"]))
def test_ij_interval_equals_r_concordance(case: str) -> None:
    ref = FIXTURE["cases"][case]
    t, e, r = (np.asarray(ref[k], dtype=float) for k in ("time", "event", "risk"))
    c = stats.concordance(t, e, r, tau=ref["tau"], interval="ij", level=0.9)
    se = (c.high - c.low) / (2 * norm.ppf(0.95))
    assert c.estimate == pytest.approx(ref["concordance"], abs=1e-12)
    assert se**2 == pytest.approx(ref["var"], rel=1e-9)
    assert c.method == "ij-normal" and c.level == 0.9
    # the same point estimate as the bootstrap path, and the interval is centred on it
    assert c.estimate == pytest.approx(stats.concordance(t, e, r, tau=ref["tau"], n_boot=0).estimate, abs=1e-12)
    assert c.high - c.estimate == pytest.approx(c.estimate - c.low, abs=1e-12)


def test_interval_name_is_checked() -> None:
    with pytest.raises(ValueError, match="interval must be 'bootstrap' or 'ij', got 'jackknife'"):
        stats.concordance([1, 2, 3], [1, 0, 1], [0.3, 0.2, 0.1], interval="jackknife")


def _pairs(t: np.ndarray, e: np.ndarray, r: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair, one at a time: (concordant, discordant, tied) totals and per-subject shares."""
    n = t.size
    counts, per = np.zeros(3), np.zeros((n, 3))
    for i in range(n):
        if e[i] != 1:
            continue
        for j in range(n):
            if not (t[j] > t[i] or (t[j] == t[i] and e[j] == 0)):
                continue
            k = 0 if r[i] > r[j] else 1 if r[i] < r[j] else 2
            counts[k] += w[i]
            per[i, k] += w[i]
            per[j, k] += w[i]
    return counts, per


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(1, 8, n).astype(float)  # many tied times
    e = rng.integers(0, 2, n)
    r = rng.integers(0, 5, n) / 2.0  # many tied risks
    return t, e, r


@pytest.mark.parametrize("seed", range(6))
def test_pair_counts_equal_every_pair(seed: int) -> None:
    t, e, r = _data(seed, 5 + 17 * seed)
    w = np.random.default_rng(100 + seed).uniform(0.5, 2.0, t.size)
    want_counts, want_per = _pairs(t, e, r, w)
    counts, per = weighted_pair_counts(t, e, r, w)
    np.testing.assert_allclose(counts, want_counts, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(per, want_per, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_bootstrap_counts_are_exact_per_replicate(seed: int) -> None:
    # multiplicities weigh both members of a pair: a replicate is the data with each subject repeated
    t, e, r = _data(seed, 40)
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 3, (t.size, 5)).astype(float)
    conc, comp = harrell_counts(t, e, r, weights)
    for b in range(weights.shape[1]):
        rows = np.repeat(np.arange(t.size), weights[:, b].astype(int))
        c, _ = _pairs(t[rows], e[rows], r[rows], np.ones(rows.size))
        assert conc[b] == c[0] + 0.5 * c[2]  # exact: integer and half-integer sums
        assert comp[b] == c.sum()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 31, 64, 65, 200])
def test_dominance_counts_equal_loops(n: int) -> None:
    rng = np.random.default_rng(n)
    v = rng.integers(0, 6, n)
    keys = rng.integers(0, 4, n)
    w = rng.integers(0, 4, (n, 2)).astype(float)
    idx = np.arange(n)
    lower = [w[(idx > i) & (v < v[i])].sum(axis=0) for i in range(n)]
    higher = [w[(idx < i) & (v > v[i])].sum(axis=0) for i in range(n)]
    tied = [w[(v == v[i]) & (keys > keys[i])].sum(axis=0) for i in range(n)]
    np.testing.assert_array_equal(later_lower(v, w), np.reshape(lower, (n, 2)))
    np.testing.assert_array_equal(earlier_higher(v, w), np.reshape(higher, (n, 2)))
    np.testing.assert_array_equal(later_tied(v, keys, w), np.reshape(tied, (n, 2)))
    np.testing.assert_array_equal(later_lower(v, w[:, 0]), np.reshape(lower, (n, 2))[:, 0])


def test_large_cohort_counts_in_one_pass() -> None:
    # 200,000 subjects: the pair loop of the old Uno counts (O(n * events)) would take minutes
    rng = np.random.default_rng(7)
    n = 200_000
    x = rng.normal(size=n)
    t = np.round(rng.exponential(np.exp(-x)), 3)
    e = (rng.random(n) < 0.6).astype(int)
    c = stats.concordance(t, e, x, interval="ij")
    assert 0.6 < c.estimate < 0.8 and 0 < c.high - c.low < 0.01
