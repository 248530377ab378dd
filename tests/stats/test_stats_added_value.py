"""NRI, IDI and the likelihood-ratio test against R (Hmisc::improveProb, anova(test = "LRT")) on the
low birth weight data, and the Riley et al. sample size against the published examples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import integrate
from scipy.special import ndtri
from scipy.stats import norm

from analytics import stats

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "added_value_reference.json").read_text())
TOL = 1e-9


@pytest.fixture(scope="module")
def bw() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = pl.read_csv(DATA / REF["data"]).get_column("low").to_numpy()
    return y, np.array(REF["p_old"]), np.array(REF["p_new"])


def _check_nri(res: stats.NRI, ref: dict[str, float]) -> None:
    assert res.estimate == pytest.approx(ref["nri"], abs=TOL)
    assert res.se == pytest.approx(ref["se.nri"], abs=TOL)
    assert res.z == pytest.approx(ref["z.nri"], abs=TOL)
    assert res.events.estimate == pytest.approx(ref["nri.ev"], abs=TOL)
    assert res.events.se == pytest.approx(ref["se.nri.ev"], abs=TOL)
    assert res.events.z == pytest.approx(ref["z.nri.ev"], abs=TOL)
    assert res.nonevents.estimate == pytest.approx(ref["nri.ne"], abs=TOL)
    assert res.nonevents.se == pytest.approx(ref["se.nri.ne"], abs=TOL)
    assert res.nonevents.z == pytest.approx(ref["z.nri.ne"], abs=TOL)
    assert res.events.n == ref["na"] and res.nonevents.n == ref["nb"]
    assert res.events.up / res.events.n == pytest.approx(ref["pup.ev"], abs=TOL)
    assert res.nonevents.down / res.nonevents.n == pytest.approx(ref["pdown.ne"], abs=TOL)
    # improveProb prints the CI as estimate +- 1.96 se and p from the normal distribution
    assert res.p == pytest.approx(2 * norm.sf(abs(ref["z.nri"])), rel=1e-9)
    assert res.low == pytest.approx(ref["nri"] - norm.ppf(0.975) * ref["se.nri"], abs=TOL)
    assert res.high == pytest.approx(ref["nri"] + norm.ppf(0.975) * ref["se.nri"], abs=TOL)
    assert res.events.p == pytest.approx(2 * norm.sf(abs(ref["z.nri.ev"])), rel=1e-9)


def test_continuous_nri_matches_improveprob(bw):
    y, p_old, p_new = bw
    res = stats.nri(y, p_old, p_new)
    _check_nri(res, REF["continuous"])
    assert res.cutoffs is None and res.method == "asymptotic"


def test_categorical_nri_matches_improveprob_on_risk_groups(bw):
    y, p_old, p_new = bw
    res = stats.nri(y, p_old, p_new, cutoffs=REF["cutoffs"])
    _check_nri(res, REF["categorical"])
    assert res.cutoffs == tuple(REF["cutoffs"])


def test_idi_matches_improveprob(bw):
    y, p_old, p_new = bw
    res = stats.idi(y, p_old, p_new)
    ref = REF["continuous"]
    assert res.estimate == pytest.approx(ref["idi"], abs=TOL)
    assert res.se == pytest.approx(ref["se.idi"], abs=TOL)
    assert res.z == pytest.approx(ref["z.idi"], abs=TOL)
    assert res.events == pytest.approx(ref["improveSens"], abs=TOL)
    assert res.nonevents == pytest.approx(ref["improveSpec"], abs=TOL)
    assert res.low == pytest.approx(ref["idi"] - norm.ppf(0.975) * ref["se.idi"], abs=TOL)
    assert res.p == pytest.approx(2 * norm.sf(ref["z.idi"]), rel=1e-9)


def test_idi_is_change_in_discrimination_slope(bw):
    y, p_old, p_new = bw
    slope = lambda p: p[y == 1].mean() - p[y == 0].mean()  # noqa: E731
    assert stats.idi(y, p_old, p_new).estimate == pytest.approx(slope(p_new) - slope(p_old), abs=1e-14)


def test_lr_test_matches_anova(bw):
    y, p_old, p_new = bw
    ref = REF["lrt"]
    res = stats.lr_test(y, p_old, p_new, df=ref["df"])
    assert res.statistic == pytest.approx(ref["statistic"], abs=TOL)
    assert res.deviance_reduced == pytest.approx(ref["deviance_reduced"], abs=TOL)
    assert res.deviance_full == pytest.approx(ref["deviance_full"], abs=TOL)
    assert res.p == pytest.approx(ref["p"], rel=1e-9)
    assert res.df == 6


def test_reclassification_table_matches_r(bw):
    y, p_old, p_new = bw
    tab = stats.reclassification(y, p_old, p_new, REF["cutoffs"])
    # jsonlite writes a matrix row by row: rows are the old model's groups
    assert tab["events"] == REF["reclassification"]["events"]
    assert tab["nonevents"] == REF["reclassification"]["nonevents"]
    assert np.array(tab["all"]).sum() == len(y)


def test_reclassification_counts_agree_with_nri_moves(bw):
    y, p_old, p_new = bw
    tab = np.array(stats.reclassification(y, p_old, p_new, [0.2, 0.4])["events"])
    res = stats.nri(y, p_old, p_new, cutoffs=[0.2, 0.4])
    assert np.triu(tab, 1).sum() == res.events.up and np.tril(tab, -1).sum() == res.events.down


def test_cutoff_value_belongs_to_higher_group():
    y = np.array([1, 0])
    res = stats.nri(y, [0.1, 0.25], [0.2, 0.2], cutoffs=[0.2])
    assert (res.events.up, res.nonevents.up, res.nonevents.down) == (1, 0, 0)


def test_bootstrap_nri_interval_close_to_asymptotic(bw):
    y, p_old, p_new = bw
    asym = stats.nri(y, p_old, p_new)
    boot = stats.nri(y, p_old, p_new, method="bootstrap", n_boot=4000, seed=3)
    assert boot.method == "bootstrap-percentile" and boot.estimate == asym.estimate
    assert boot.low < boot.estimate < boot.high
    assert boot.low == pytest.approx(asym.low, abs=0.03) and boot.high == pytest.approx(asym.high, abs=0.03)
    again = stats.nri(y, p_old, p_new, method="bootstrap", n_boot=4000, seed=3)
    assert (again.low, again.high) == (boot.low, boot.high)


def test_bootstrap_nri_uses_stratified_resamples(bw):
    y, p_old, p_new = bw
    boot = stats.nri(y, p_old, p_new, cutoffs=[0.2, 0.4], method="bootstrap", n_boot=50, seed=1)
    moves = np.sign(np.searchsorted([0.2, 0.4], p_new, "right") - np.searchsorted([0.2, 0.4], p_old, "right"))
    reps = []
    from analytics.stats.bootstrap import bootstrap_indices
    m = int(y.sum())
    for idx in bootstrap_indices(y, 50, 1):
        for row in idx:
            reps.append(moves[row[:m]].mean() - moves[row[m:]].mean())
    assert (boot.low, boot.high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-12)


@pytest.mark.parametrize("bad, msg", [
    (dict(cutoffs=[0.5, 0.2]), "strictly increasing"),
    (dict(cutoffs=[1.5]), r"\(0, 1\)"),
    (dict(method="exact"), "method"),
])
def test_nri_rejects_bad_arguments(bad, msg):
    with pytest.raises(ValueError, match=msg):
        stats.nri([0, 1, 1], [0.1, 0.2, 0.3], [0.2, 0.3, 0.4], **bad)


def test_nri_rejects_probabilities_outside_unit_interval():
    with pytest.raises(ValueError, match="p_new must lie in"):
        stats.nri([0, 1], [0.1, 0.2], [0.1, 1.2])


# --- sample size: Riley et al., BMJ 2020;368:m441, and pmsampsize's published checks -----------


def test_riley_bmj_worked_example():
    res = stats.sample_size(prevalence=0.174, parameters=24, r2_cs=0.288)
    assert res.criterion_1 == 623
    assert (res.criterion_2, res.criterion_3, res.n) == (668, 221, 668)
    assert res.max_r2_cs == 0.60
    assert round(res.events_per_parameter, 2) == 4.84


@pytest.mark.parametrize("prev, p, r2, expect", [
    (0.174, 24, 0.55, (255, 532, 221, 532)),
    (0.174, 36, 0.288, (934, 1002, 221, 1002)),
    (0.25, 24, 0.288, (623, 583, 289, 623)),
])
def test_sample_size_other_published_settings(prev, p, r2, expect):
    res = stats.sample_size(prev, p, r2_cs=r2)
    assert (res.criterion_1, res.criterion_2, res.criterion_3, res.n) == expect


def test_criterion_1_formula_by_hand():
    # n = P / ((S - 1) ln(1 - R2/S)), rounded up
    res = stats.sample_size(0.3, 10, r2_cs=0.2, shrinkage=0.85)
    assert res.criterion_1 == math.ceil(10 / (-0.15 * math.log(1 - 0.2 / 0.85)))


def _r2_cs_limit(auc: float, prev: float) -> float:
    """Large-sample limit of the simulation: 1 - exp(-2 I(Y; LP)), by quadrature."""
    mu = math.sqrt(2) * ndtri(auc)
    w0, w1 = prev, 1 - prev
    f = lambda x: (w0 * norm.pdf(x) * math.log(w0 * norm.pdf(x) / (w0 * norm.pdf(x) + w1 * norm.pdf(x - mu)))  # noqa: E731
                   + w1 * norm.pdf(x - mu) * math.log(w1 * norm.pdf(x - mu) / (w0 * norm.pdf(x) + w1 * norm.pdf(x - mu))))
    ll = integrate.quad(f, -12, 12 + mu, limit=200)[0]
    null = w0 * math.log(w0) + w1 * math.log(w1)
    return 1 - math.exp(-2 * (ll - null))


@pytest.mark.parametrize("case", REF["r2_from_auc"], ids=lambda c: f"auc{c['auc']}-prev{c['prevalence']}")
def test_r2_from_auc_agrees_with_r_simulation_and_its_limit(case):
    got = stats.r2_cs_from_auc(case["auc"], case["prevalence"])
    # different random numbers than R: agreement within simulation error only
    assert got == pytest.approx(case["r2_cs"], abs=0.003)
    assert got == pytest.approx(_r2_cs_limit(case["auc"], case["prevalence"]), abs=0.003)


def test_sample_size_from_auc_uses_converted_r2():
    res = stats.sample_size(0.174, 24, auc=0.75)
    assert res.auc == 0.75
    assert res.r2_cs == stats.r2_cs_from_auc(0.75, 0.174)
    assert res.criterion_1 == math.ceil(24 / (-0.1 * math.log(1 - res.r2_cs / 0.9)))


@pytest.mark.parametrize("kw, msg", [
    (dict(), "give r2_cs or auc"),
    (dict(r2_cs=0.95), "shrinkage"),
    (dict(r2_cs=0.3, parameters=0), "parameters"),
    (dict(auc=0.4), "auc must lie"),
])
def test_sample_size_rejects_bad_arguments(kw, msg):
    args = dict(prevalence=0.2, parameters=10) | kw
    with pytest.raises(ValueError, match=msg):
        stats.sample_size(**args)
