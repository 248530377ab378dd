"""Survival validation at horizons: Uno's C vs R survival::concordance, AUC(t),
Brier(t) and IBS vs R riskRegression::Score (fixtures from
data/make_survival_time_reference.R), scikit-survival as a second reference,
calibration at t on simulated data, net benefit at t by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from scipy.stats import norm
from sksurv import metrics as sksurv_metrics
from sksurv.util import Surv

from analytics import stats
from analytics.stats.survival import weighted_pair_counts

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "survival_time_reference.json").read_text())
SETS = {
    "gbsg": (pd.read_csv(DATA / "gbsg.csv"), "rfstime", "status"),
    "rossi": (pd.read_csv(DATA / "rossi.csv"), "week", "arrest"),
}
Z95 = norm.ppf(0.975)
TOL = 1e-6


def _data(name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    df, tcol, ecol = SETS[name]
    return df[tcol].to_numpy(float), df[ecol].to_numpy(int), REF[name]


def test_reference_versions_and_data() -> None:
    v = REF["versions"]
    assert v["survival"].startswith("3.5") and v["riskRegression"].startswith("2022.11")
    gbsg = SETS["gbsg"][0]
    # survival::gbsg: 686 patients, 299 recurrences or deaths.
    assert len(gbsg) == 686 and int(gbsg.status.sum()) == 299
    for name in SETS:
        t, _, ref = _data(name)
        assert len(ref["risk"]) == t.size
        assert np.shape(ref["risk_at"]) == (t.size, len(ref["horizons"]))


# ------------------------------------------------------------------ Uno's C
@pytest.mark.parametrize("name", ["gbsg", "rossi"])
@pytest.mark.parametrize("truncate", [False, True])
def test_uno_concordance_matches_r(name: str, truncate: bool) -> None:
    t, e, ref = _data(name)
    tau = ref["tau"] if truncate else None
    want = ref["concordance"]["uno_tau" if truncate else "uno"]
    c = stats.concordance(t, e, ref["risk"], method="uno", tau=tau)
    assert c.estimate == pytest.approx(want["c"], abs=TOL)
    se = (c.high - c.low) / (2 * Z95)
    assert se == pytest.approx(want["se"], abs=TOL)
    assert c.low == pytest.approx(want["c"] - Z95 * want["se"], abs=TOL)
    assert c.method == "ij-normal"
    c90 = stats.concordance(t, e, ref["risk"], "uno", tau, level=0.9)
    assert (c90.high - c90.low) / (2 * norm.ppf(0.95)) == pytest.approx(want["se"], abs=TOL)


@pytest.mark.parametrize("name", ["gbsg", "rossi"])
def test_harrell_concordance_with_tau_matches_r(name: str) -> None:
    t, e, ref = _data(name)
    for key, tau in (("harrell", None), ("harrell_tau", ref["tau"])):
        c = stats.concordance(t, e, ref["risk"], tau=tau, n_boot=0)
        assert c.estimate == pytest.approx(ref["concordance"][key]["c"], abs=TOL)


@pytest.mark.parametrize("name", ["gbsg", "rossi"])
def test_pair_influence_gives_r_harrell_variance(name: str) -> None:
    # With unit pair weights the same influence computation must give R's
    # (unweighted) infinitesimal-jackknife variance of Harrell's C.
    t, e, ref = _data(name)
    r = np.asarray(ref["risk"])
    counts, per = weighted_pair_counts(t, e, r, np.ones(t.size))
    npair = counts.sum()
    somer = (counts[0] - counts[1]) / npair
    dfbeta = ((per[:, 0] - per[:, 1]) - somer * per.sum(axis=1)) / npair
    assert (somer + 1) / 2 == pytest.approx(ref["concordance"]["harrell"]["c"], abs=1e-12)
    assert np.sum(dfbeta**2) / 4 == pytest.approx(ref["concordance"]["harrell"]["var"], abs=1e-10)


def test_uno_equals_harrell_without_censoring_before_last_event() -> None:
    # Rossi is censored only at week 52, so every G(T_i-) is 1.
    t, e, ref = _data("rossi")
    uno = stats.concordance(t, e, ref["risk"], "uno").estimate
    harrell = stats.concordance(t, e, ref["risk"], n_boot=0).estimate
    assert uno == pytest.approx(harrell, abs=1e-12)


def test_uno_is_invariant_to_monotone_risk_transform_and_flips() -> None:
    t, e, ref = _data("gbsg")
    r = np.asarray(ref["risk"])
    a = stats.concordance(t, e, r, "uno")
    b = stats.concordance(t, e, np.exp(r), "uno")
    c = stats.concordance(t, e, -r, "uno")
    assert a.estimate == pytest.approx(b.estimate, abs=1e-12)
    assert c.estimate == pytest.approx(1 - a.estimate, abs=1e-12)
    assert c.high - c.low == pytest.approx(a.high - a.low, abs=1e-12)


# ------------------------------------------------------- AUC(t), Brier(t)
@pytest.mark.parametrize("name", ["gbsg", "rossi"])
def test_time_auc_matches_riskregression(name: str) -> None:
    t, e, ref = _data(name)
    got = stats.time_auc(t, e, np.asarray(ref["risk_at"]), ref["horizons"])
    np.testing.assert_array_equal(got.times, ref["horizons"])
    for k in ("estimate", "se", "low", "high"):
        np.testing.assert_allclose(getattr(got, k), ref["auc"][k], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["gbsg", "rossi"])
def test_time_auc_of_linear_predictor_equals_auc_of_cox_risk(name: str) -> None:
    # A Cox model's risk at t is increasing in its linear predictor.
    t, e, ref = _data(name)
    by_lp = stats.time_auc(t, e, ref["risk"], ref["horizons"])
    np.testing.assert_allclose(by_lp.estimate, ref["auc"]["estimate"], atol=TOL)
    np.testing.assert_allclose(by_lp.se, ref["auc"]["se"], atol=TOL)


@pytest.mark.parametrize("name", ["gbsg", "rossi"])
def test_brier_matches_riskregression(name: str) -> None:
    t, e, ref = _data(name)
    got = stats.brier(t, e, np.asarray(ref["risk_at"]), ref["horizons"])
    for k in ("estimate", "se", "low", "high"):
        np.testing.assert_allclose(getattr(got, k), ref["brier"][k], rtol=0, atol=TOL)
    one = stats.brier(t, e, np.asarray(ref["risk_at"])[:, 1], ref["horizons"][1])
    assert one.estimate[0] == pytest.approx(ref["brier"]["estimate"][1], abs=TOL)
    iv = one.at(ref["horizons"][1])
    assert (iv.low, iv.high) == pytest.approx(
        (ref["brier"]["low"][1], ref["brier"]["high"][1]), abs=TOL)
    frame = got.to_frame()
    assert frame.columns == ["time", "estimate", "se", "low", "high"]
    assert json.loads(json.dumps(got.as_dict()))["se"] == pytest.approx(ref["brier"]["se"], abs=TOL)


@pytest.mark.parametrize("name", ["gbsg", "rossi"])
def test_integrated_brier_matches_riskregression_ibs(name: str) -> None:
    t, e, ref = _data(name)
    g = ref["ibs"]
    bs = stats.brier(t, e, np.asarray(g["risk_at_grid"]), g["grid"]).estimate
    np.testing.assert_allclose(bs, g["brier"], atol=TOL)
    ibs = stats.integrated_brier(t, e, np.asarray(g["risk_at_grid"]), g["grid"])
    assert ibs == pytest.approx(g["ibs"][-1], abs=TOL)
    # Against a hand step integral of R's Brier curve.
    x = np.concatenate(([0.0], g["grid"]))
    y = np.concatenate(([0.0], g["brier"]))
    assert ibs == pytest.approx(np.sum(y[:-1] * np.diff(x)) / x[-1], abs=TOL)


def test_brier_of_perfect_prediction_without_censoring_is_zero() -> None:
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    e = np.ones(6, dtype=int)
    risk = (t <= 3.5).astype(float)
    got = stats.brier(t, e, risk, 3.5)
    assert got.estimate[0] == 0.0
    # No censoring: the plain mean squared error.
    p = np.linspace(0.1, 0.9, 6)
    assert stats.brier(t, e, p, 3.5).estimate[0] == pytest.approx(np.mean((p - risk) ** 2))


# ------------------------------------------------------- scikit-survival
def _untied(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 400
    x = rng.normal(size=n)
    time_ev = rng.exponential(1 / np.exp(x))
    time_c = rng.exponential(1.5, n)
    t = np.minimum(time_ev, time_c)
    e = (time_ev <= time_c).astype(int)
    return t, e, x, np.quantile(t[e == 1], [0.25, 0.5, 0.75])


@pytest.mark.parametrize("seed", range(3))
def test_matches_scikit_survival_on_untied_times(seed: int) -> None:
    t, e, x, hz = _untied(seed)
    y = Surv.from_arrays(e.astype(bool), t)
    risk = np.round(x, 1)  # tied risks count one half in both
    assert stats.concordance(t, e, risk, "uno").estimate == pytest.approx(
        sksurv_metrics.concordance_index_ipcw(y, y, risk)[0], abs=1e-10)
    ts = np.sort(t)
    tau = float(ts[320] + ts[321]) / 2  # between two times: sksurv truncates at T < tau
    assert stats.concordance(t, e, risk, "uno", tau).estimate == pytest.approx(
        sksurv_metrics.concordance_index_ipcw(y, y, risk, tau=tau)[0], abs=1e-10)
    auc, _ = sksurv_metrics.cumulative_dynamic_auc(y, y, risk, hz)
    np.testing.assert_allclose(stats.time_auc(t, e, risk, hz).estimate, auc, atol=1e-10)
    pr = 1 - np.exp(-np.outer(np.exp(x), hz))
    _, bs = sksurv_metrics.brier_score(y, y, 1 - pr, hz)
    np.testing.assert_allclose(stats.brier(t, e, pr, hz).estimate, bs, atol=1e-10)


def test_scikit_survival_differs_only_by_tie_handling_on_gbsg() -> None:
    # scikit-survival's censoring Kaplan-Meier treats an event and a censoring
    # at the same time differently (and takes G at T_i, not T_i-); on gbsg,
    # which has a few tied times, the estimates differ a little.
    t, e, ref = _data("gbsg")
    y = Surv.from_arrays(e.astype(bool), t)
    auc, _ = sksurv_metrics.cumulative_dynamic_auc(y, y, np.asarray(ref["risk"]), ref["horizons"])
    ours = stats.time_auc(t, e, ref["risk"], ref["horizons"]).estimate
    assert np.abs(ours - auc).max() < 1e-3
    _, bs = sksurv_metrics.brier_score(y, y, 1 - np.asarray(ref["risk_at"]), ref["horizons"])
    assert np.abs(stats.brier(t, e, np.asarray(ref["risk_at"]), ref["horizons"]).estimate
                  - bs).max() < 1e-3


# ------------------------------------------------------------ calibration
def _simulated(seed: int, n: int = 10000) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    rate = 0.1 * np.exp(0.8 * x)
    time_ev = rng.exponential(1 / rate)
    time_c = rng.uniform(0, 20, n)
    horizon = 5.0
    true_risk = 1 - np.exp(-rate * horizon)
    return np.minimum(time_ev, time_c), (time_ev <= time_c).astype(int), true_risk, horizon


def test_calibration_at_true_risk_is_calibrated() -> None:
    t, e, p, horizon = _simulated(11)
    cal = stats.calibration_at(t, e, p, horizon)
    assert cal.ici < 0.01 and cal.e90 < 0.02
    # Calibration in the large: the smoothed risks average to the KM risk.
    km = 1 - KaplanMeierFitter().fit(t, e).predict(horizon)
    assert np.mean(cal.observed) == pytest.approx(km, abs=0.003)
    assert cal.e50 <= cal.e90 <= cal.emax
    assert cal.events == int(((t <= horizon) & (e == 1)).sum())
    curve = cal.curve
    assert np.all(np.diff(curve["observed"].to_numpy()) > 0)
    assert np.abs(curve["observed"].to_numpy() - curve["predicted"].to_numpy()).max() < 0.03


@pytest.mark.parametrize("distort", ["over", "under"])
def test_calibration_at_recovers_known_miscalibration(distort: str) -> None:
    t, e, p, horizon = _simulated(12)
    q = 1 - (1 - p) ** 2 if distort == "over" else 1 - (1 - p) ** 0.5
    cal = stats.calibration_at(t, e, q, horizon)
    err = np.abs(q - p)  # the smoothed observed risk should recover p
    assert cal.ici == pytest.approx(err.mean(), abs=0.01)
    assert cal.e50 == pytest.approx(np.median(err), abs=0.015)
    assert cal.e90 == pytest.approx(np.quantile(err, 0.9), abs=0.015)
    np.testing.assert_allclose(cal.observed, p, atol=0.05)


def test_calibration_at_matches_r_rms_on_gbsg() -> None:
    # R: rms::cph on rcs(cloglog(risk), 3) and survest, the paper's code.  The
    # only difference is the baseline hazard (lifelines: Breslow; survest after
    # an Efron fit: Efron), hence a looser tolerance.
    t, e, ref = _data("gbsg")
    want = REF["gbsg_calibration"]
    cal = stats.calibration_at(t, e, np.asarray(ref["risk_at"])[:, 2], want["t"])
    np.testing.assert_allclose(cal.observed, want["observed"], atol=5e-4)
    assert cal.ici == pytest.approx(want["ici"], abs=2e-4)
    assert cal.e50 == pytest.approx(want["e50"], abs=2e-4)
    assert cal.e90 == pytest.approx(want["e90"], abs=2e-4)


# ------------------------------------------------------------ net benefit
def test_net_benefit_survival_by_hand() -> None:
    risk = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]
    time = [1, 2, 5, 3, 2, 6, 4, 7]
    event = [1, 0, 1, 1, 1, 0, 1, 0]
    nb = stats.net_benefit_survival(time, event, risk, 4.5, [0.25, 0.5, 0.95])
    # pt 0.5: treated 1e 2c 5e 3e; KM by 4.5 = 3/4 * 1/2 -> risk 5/8; q = 1/2.
    # pt 0.25: treated also 2e 6c; KM = 5/6 * 4/5 * 2/3 -> risk 5/9; q = 3/4.
    # everyone: KM = 7/8 * 6/7 * 4/5 * 3/4 = 0.45 -> risk 0.55.
    np.testing.assert_allclose(nb["net_benefit"].to_numpy(), [11 / 36, 0.125, 0.0], atol=1e-12)
    np.testing.assert_allclose(nb["treat_all"].to_numpy(),
                               [0.55 - 0.45 / 3, 0.1, 0.55 - 0.45 * 19], atol=1e-12)
    np.testing.assert_allclose(nb["km_risk"].to_numpy()[:2], [5 / 9, 5 / 8], atol=1e-12)
    assert np.isnan(nb["km_risk"][2]) and nb["treated"].to_list() == [0.75, 0.5, 0.0]
    assert nb["treat_none"].to_list() == [0.0, 0.0, 0.0]


def test_net_benefit_survival_km_matches_lifelines() -> None:
    t, e, ref = _data("gbsg")
    p = np.asarray(ref["risk_at"])[:, 2]
    nb = stats.net_benefit_survival(t, e, p, 1826, [0.3, 0.6])
    for row, th in enumerate([0.3, 0.6]):
        sel = p >= th
        kmf = KaplanMeierFitter().fit(t[sel], e[sel])
        assert nb["km_risk"][row] == pytest.approx(1 - kmf.predict(1826.0), abs=1e-12)


# ------------------------------------------------------------------ errors
def test_errors_are_clear() -> None:
    t, e, ref = _data("gbsg")
    with pytest.raises(ValueError, match="method must be"):
        stats.concordance(t, e, ref["risk"], method="somers")
    with pytest.raises(ValueError, match="tau must be"):
        stats.concordance(t, e, ref["risk"], "uno", tau=-1)
    with pytest.raises(ValueError, match=r"shape \(n, len\(times\)\)"):
        stats.time_auc(t, e, np.asarray(ref["risk_at"]), [365, 1095])
    with pytest.raises(ValueError, match="needs cases"):
        stats.time_auc(t, e, ref["risk"], [1.0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*row 0, column 0"):
        stats.brier(t, e, np.full(t.size, 1.5), [365])
    with pytest.raises(ValueError, match="NaN.*row 3"):
        bad = np.asarray(ref["risk_at"]).copy()
        bad[3, 1] = np.nan
        stats.brier(t, e, bad, ref["horizons"])
    with pytest.raises(ValueError, match="1-D but 3 times"):
        stats.brier(t, e, np.asarray(ref["risk_at"])[:, 0], ref["horizons"])
    with pytest.raises(ValueError, match="strictly increasing"):
        stats.integrated_brier(t, e, np.asarray(ref["risk_at"]), [1095, 365, 1826])
    with pytest.raises(ValueError, match="thresholds must lie"):
        stats.net_benefit_survival(t, e, np.asarray(ref["risk_at"])[:, 0], 365, [0.0])
    with pytest.raises(KeyError, match="horizon 100"):
        stats.brier(t, e, np.asarray(ref["risk_at"]), ref["horizons"]).at(100)
