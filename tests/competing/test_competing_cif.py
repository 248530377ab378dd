"""Aalen-Johansen cumulative incidence, Gray's test and pseudo-values against R
(survival::survfit, cmprsk::cuminc, prodlim::jackknife; fixtures from
make_competing_reference.R on survival::mgus2 and a simulated three-cause set),
a hand-computed case, and a simulation where 1 - Kaplan-Meier is biased."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.stats import competing_cif as cc

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "competing_reference.json").read_text())
MGUS = pd.read_csv(DATA / "mgus2.csv")
SIM3 = pd.read_csv(DATA / "sim3.csv")
TOL = 1e-6


def _mgus() -> tuple[np.ndarray, np.ndarray]:
    return MGUS.etime.to_numpy(float), MGUS.event.to_numpy(int)


def test_reference_versions_and_data() -> None:
    v = REF["versions"]
    assert v["survival"].startswith("3.5") and v["cmprsk"] == "2.2.11"
    assert v["riskRegression"].startswith("2022.11") and v["prodlim"]
    # survival::mgus2 without the 13 missing hgb: 1,371 patients; 114 progressions.
    assert len(MGUS) == REF["n"] == 1371
    assert int((MGUS.event == 1).sum()) == 114
    assert set(SIM3.status.unique()) == {0, 1, 2, 3}


def _check_survfit(res: cc.CumulativeIncidence, ref: dict, group: str, rows: slice) -> None:
    states = ref["states"]
    for cause in (1, 2):
        col = states.index(str(cause))
        got = res.get(cause, group)
        for ours, key in (("estimate", "pstate"), ("se", "std_err"), ("low", "lower"),
                          ("high", "upper")):
            want = np.asarray(ref[key])[rows, col]
            np.testing.assert_allclose(got[ours].to_numpy(), want, rtol=0, atol=TOL)


def test_aalen_johansen_equals_survfit_overall() -> None:
    t, s = _mgus()
    res = cc.cumulative_incidence(t, s, REF["horizons"])
    _check_survfit(res, REF["aj_all"], "all", slice(0, 3))
    # The standard error is survfit's infinitesimal jackknife, not cuminc's (Gray's) variance.
    se = res.get(1)["se"].to_numpy()
    gray_var = np.asarray(REF["cuminc"]["var"])
    assert not np.allclose(se, np.sqrt(gray_var[0]), atol=1e-6)


def test_aalen_johansen_equals_survfit_by_group() -> None:
    t, s = _mgus()
    res = cc.cumulative_incidence(t, s, REF["horizons"], by=MGUS.male.to_numpy())
    _check_survfit(res, REF["aj_male"], "0", slice(0, 3))
    _check_survfit(res, REF["aj_male"], "1", slice(3, 6))


def test_aalen_johansen_three_causes_tied_times() -> None:
    res = cc.cumulative_incidence(SIM3.time, SIM3.status, REF["sim3"]["horizons"])
    ref = REF["sim3"]["aj"]
    for cause in (1, 2, 3):
        col = ref["states"].index(str(cause))
        got = res.get(cause)
        np.testing.assert_allclose(got["estimate"], np.asarray(ref["pstate"])[:, col], atol=TOL)
        np.testing.assert_allclose(got["se"], np.asarray(ref["std_err"])[:, col], atol=TOL)


def test_estimates_equal_cuminc_timepoints() -> None:
    t, s = _mgus()
    res = cc.cumulative_incidence(t, s, REF["horizons"], by=MGUS.male.to_numpy())
    ref = REF["cuminc"]
    for k, name in enumerate(ref["names"]):  # "<group> <cause>"
        group, cause = name.split()
        np.testing.assert_allclose(res.get(int(cause), group)["estimate"], ref["est"][k], atol=TOL)


@pytest.mark.parametrize("cause", [1, 2])
def test_gray_test_equals_cuminc(cause: int) -> None:
    t, s = _mgus()
    g = cc.gray_test(t, s, MGUS.male.to_numpy(), cause=cause)
    tests = REF["cuminc"]["tests"]
    assert g.statistic == pytest.approx(tests["stat"][cause - 1], abs=TOL)
    assert g.p == pytest.approx(tests["pv"][cause - 1], abs=TOL)
    assert g.df == tests["df"][cause - 1] == 1


@pytest.mark.parametrize("cause", [1, 2])
def test_gray_test_three_groups_rho_one(cause: int) -> None:
    t, s = _mgus()
    ref = REF["gray3"]
    g = cc.gray_test(t, s, ref["group"], cause=cause, rho=ref["rho"])
    assert g.statistic == pytest.approx(ref["stat"][cause - 1], rel=1e-9)
    assert g.df == 2


def test_gray_test_stratified_other_cause() -> None:
    ref = REF["sim3"]["gray"]
    g = cc.gray_test(SIM3.time, SIM3.status, SIM3.x2, cause=ref["cause"], rho=ref["rho"],
                     strata=SIM3.strat)
    assert g.statistic == pytest.approx(ref["stat"], abs=TOL)
    assert g.p == pytest.approx(ref["pv"], abs=TOL)


def test_pseudo_values_equal_prodlim_jackknife() -> None:
    t, s = _mgus()
    pv = cc.pseudo_values(t, s, REF["pseudo"]["t"], cause=1)
    np.testing.assert_allclose(pv, REF["pseudo"]["pseudo"], rtol=0, atol=1e-9)
    # Their mean is the estimate itself (no censoring before t would make it exact; close here).
    assert pv.mean() == pytest.approx(cc.aalen_johansen_risk(t, s, 120.0), abs=0.01)


def test_hand_computed_example() -> None:
    # Times 1..6; status 1, 2, 0, 1, 2, 0.  Risk sets 6, 5, (censored), 3, 2.
    t = [1, 2, 3, 4, 5, 6]
    s = [1, 2, 0, 1, 2, 0]
    # S: 5/6 after t=1, 4/6 after t=2; F1(4) = 1/6 + (4/6)(1/3) = 7/18.
    assert cc.aalen_johansen_risk(t, s, 4.0, cause=1) == pytest.approx(7 / 18, abs=1e-12)
    # F2(5) = 1/6 + S(4) (1/2) with S(4) = 4/6 * 2/3 = 4/9: 1/6 + 2/9 = 7/18.
    assert cc.aalen_johansen_risk(t, s, 5.0, cause=2) == pytest.approx(7 / 18, abs=1e-12)
    # Without censoring, the cumulative incidence is the empirical proportion.
    assert cc.aalen_johansen_risk([1, 2, 3, 4], [1, 2, 2, 1], 3.5, cause=2) == pytest.approx(0.5)
    # With no censoring the pseudo-values are the indicators of the cause by t.
    pv = cc.pseudo_values([1, 2, 3, 4, 5], [1, 2, 1, 2, 1], 3.5, cause=1)
    np.testing.assert_allclose(pv, [1, 0, 1, 0, 0], atol=1e-12)


def test_aalen_johansen_recovers_true_cif_where_one_minus_km_does_not() -> None:
    # Two independent exponential causes (rates 0.10 and 0.20) and uniform censoring:
    # F1(t) = 0.1 / 0.3 (1 - exp(-0.3 t)); 1 - KM with cause 2 censored estimates 1 - exp(-0.1 t).
    rng = np.random.default_rng(28)
    n = 4000
    t1, t2, cz = rng.exponential(10.0, n), rng.exponential(5.0, n), rng.uniform(0, 12, n)
    time = np.minimum(np.minimum(t1, t2), cz)
    status = np.where(time == cz, 0, np.where(time == t1, 1, 2))
    h = 5.0
    true = 0.1 / 0.3 * (1.0 - np.exp(-0.3 * h))
    res = cc.cumulative_incidence(time, status, [h]).get(1)
    est, se = float(res["estimate"][0]), float(res["se"][0])
    assert abs(est - true) < 3 * se
    assert float(res["low"][0]) < true < float(res["high"][0])
    one_minus_km = cc.aalen_johansen_risk(time, np.where(status == 1, 1, 0), h, cause=1)
    assert one_minus_km - true > 10 * se  # 1 - KM overestimates: about 0.39 vs 0.26


def test_input_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="status"):
        cc.cumulative_incidence([1, 2], [0, 1.5], [1])
    with pytest.raises(ValueError, match="time"):
        cc.cumulative_incidence([1, -2], [0, 1], [1])
    with pytest.raises(ValueError, match="no events"):
        cc.cumulative_incidence([1, 2], [0, 0], [1])
    with pytest.raises(ValueError, match="two groups"):
        cc.gray_test([1, 2, 3], [1, 2, 1], [0, 0, 0])
    with pytest.raises(ValueError, match="cause"):
        cc.gray_test([1, 2, 3], [1, 2, 1], [0, 1, 0], cause=0)


def test_cif_curve_steps_match_the_horizon_table() -> None:
    t, s = _mgus()
    curve = cc.cif_curve(t, s, cause=2)
    assert np.all(np.diff(curve["time"].to_numpy()) > 0)
    assert np.all(np.diff(curve["estimate"].to_numpy()) >= 0)
    at = cc.cumulative_incidence(t, s, REF["horizons"]).get(2)["estimate"].to_numpy()
    k = np.searchsorted(curve["time"].to_numpy(), REF["horizons"], side="right") - 1
    np.testing.assert_allclose(curve["estimate"].to_numpy()[k], at, atol=1e-15)
