"""Validation at a horizon for a cause of interest: AUC(t), Brier(t), the null
model and IPA against riskRegression::Score(cause) on fixed risks exported from R,
calibration by pseudo-observations against prodlim::jackknife + R loess, a
simulation with the true risks, and the decision curve by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics import stats
from analytics.stats import competing_cif as cc
from analytics.stats import competing_score as cs

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "competing_reference.json").read_text())
MGUS = pd.read_csv(DATA / "mgus2.csv")
SIM3 = pd.read_csv(DATA / "sim3.csv")
TOL = 1e-6


def _mgus() -> tuple[np.ndarray, np.ndarray]:
    return MGUS.etime.to_numpy(float), MGUS.event.to_numpy(int)


def test_auc_equals_score_cause_one() -> None:
    t, s = _mgus()
    ref = REF["score"]
    a = stats.time_auc(t, s, np.asarray(ref["risk"]), ref["times"], cause=1)
    np.testing.assert_allclose(a.estimate, ref["auc"]["estimate"], rtol=0, atol=TOL)
    np.testing.assert_allclose(a.se, ref["auc"]["se"], rtol=0, atol=TOL)
    np.testing.assert_allclose(a.low, ref["auc"]["lower"], rtol=0, atol=TOL)
    np.testing.assert_allclose(a.high, ref["auc"]["upper"], rtol=0, atol=TOL)


def test_brier_null_model_and_ipa_equal_score_cause_one() -> None:
    t, s = _mgus()
    ref = REF["score"]
    res = cs.brier_ipa(t, s, np.asarray(ref["risk"]), ref["times"], cause=1)
    b = ref["brier"]
    null = [i for i, m in enumerate(b["model"]) if m == "Null model"]
    mod = [i for i, m in enumerate(b["model"]) if m == "csc"]
    for metric, rows in ((res.null, null), (res.brier, mod)):
        np.testing.assert_allclose(metric.estimate, np.take(b["estimate"], rows), rtol=0, atol=TOL)
        np.testing.assert_allclose(metric.se, np.take(b["se"], rows), rtol=0, atol=TOL)
        np.testing.assert_allclose(metric.low, np.take(b["lower"], rows), rtol=0, atol=TOL)
        np.testing.assert_allclose(metric.high, np.take(b["upper"], rows), rtol=0, atol=TOL)
    np.testing.assert_allclose(res.ipa, np.take(b["ipa"], mod), rtol=0, atol=TOL)
    assert res.to_frame().columns[:2] == ["time", "brier"]


def test_score_cause_two_of_three_tied_times() -> None:
    ref = REF["sim3"]["score"]
    risk = np.asarray(ref["risk"])
    a = stats.time_auc(SIM3.time, SIM3.status, risk, ref["times"], cause=2)
    np.testing.assert_allclose(a.estimate, ref["auc"]["estimate"], rtol=0, atol=TOL)
    np.testing.assert_allclose(a.estimate, ref["auc"]["estimate_recoded"], rtol=0, atol=TOL)
    # riskRegression's AUC SE takes state 1 as the cases and state 2 as the competing events
    # whatever the cause (see the R script); the reference is Score on the data recoded so.
    np.testing.assert_allclose(a.se, ref["auc"]["se"], rtol=0, atol=TOL)
    assert np.all(np.abs(a.se - np.asarray(ref["auc"]["se_as_coded"])) > 1e-3)
    # Our SE does not depend on how the causes are coded or whether competing causes are merged.
    recoded = np.where(SIM3.status == 2, 1, np.where(SIM3.status == 1, 3, SIM3.status))
    b = stats.time_auc(SIM3.time, recoded, risk, ref["times"], cause=1)
    np.testing.assert_allclose(b.se, a.se, rtol=0, atol=1e-14)
    res = cs.brier_ipa(SIM3.time, SIM3.status, risk, ref["times"], cause=2)
    b = ref["brier"]
    mod = [i for i, m in enumerate(b["model"]) if m == "fgr"]
    null = [i for i, m in enumerate(b["model"]) if m == "Null model"]
    np.testing.assert_allclose(res.brier.estimate, np.take(b["estimate"], mod), atol=TOL)
    np.testing.assert_allclose(res.brier.se, np.take(b["se"], mod), atol=TOL)
    np.testing.assert_allclose(res.null.se, np.take(b["se"], null), atol=TOL)
    np.testing.assert_allclose(res.ipa, np.take(b["ipa"], mod), atol=TOL)


def test_cause_with_single_event_type_is_the_one_event_metric() -> None:
    t, s = _mgus()
    e = (s > 0).astype(int)  # any event: no competing risk left
    risk = np.asarray(REF["score"]["risk"])
    one = stats.time_auc(t, e, risk, [60, 120])
    cause = stats.time_auc(t, e, risk, [60, 120], cause=1)
    np.testing.assert_allclose(cause.estimate, one.estimate, atol=1e-14)
    np.testing.assert_allclose(cause.se, one.se, atol=1e-14)
    b1 = stats.brier(t, e, risk, [60, 120])
    b2 = stats.brier(t, e, risk, [60, 120], cause=1)
    np.testing.assert_allclose(b2.se, b1.se, atol=1e-14)


def test_competing_events_are_controls_not_censored() -> None:
    # Four subjects, no censoring: case (cause 1, t=1, risk .9), competing event at t=2 with a
    # high risk (.8), event-free subjects with risks .1 and .95. At t = 3 the controls are the
    # competing event and both event-free subjects: the case outranks .8 and .1, not .95.
    a = stats.time_auc([1, 2, 5, 6], [1, 2, 0, 0], [0.9, 0.8, 0.1, 0.95], [3.0], cause=1)
    assert a.estimate[0] == pytest.approx(2 / 3)


def test_pseudo_value_calibration_equals_r_loess() -> None:
    t, s = _mgus()
    ref = REF["pseudo"]
    p = np.asarray(REF["score"]["risk"])[:, 1]
    cal = cs.calibration_competing(t, s, p, ref["t"], cause=1)
    np.testing.assert_allclose(np.log(-np.log1p(-p)), ref["cll"], atol=1e-12)
    np.testing.assert_allclose(cal.observed, ref["loess_fit"], rtol=0, atol=1e-9)
    err = np.abs(np.asarray(ref["loess_fit"]) - p)
    assert cal.ici == pytest.approx(err.mean(), abs=1e-9)
    assert cal.e90 == pytest.approx(np.quantile(err, 0.9), abs=1e-9)
    assert cal.events == int(((t <= 120) & (s == 1)).sum())


def _simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Cause-specific exponential hazards 0.05 e^{0.7x}, 0.1 e^{-0.3x}; uniform censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    h1, h2 = 0.05 * np.exp(0.7 * x), 0.1 * np.exp(-0.3 * x)
    t1, t2, cz = rng.exponential(1 / h1), rng.exponential(1 / h2), rng.uniform(0, 20, n)
    time = np.minimum(np.minimum(t1, t2), cz)
    status = np.where(time == cz, 0, np.where(time == t1, 1, 2))
    horizon = 5.0
    true = h1 / (h1 + h2) * (1 - np.exp(-(h1 + h2) * horizon))
    return time, status, true, horizon


def test_true_risks_are_calibrated_and_inflated_ones_are_not() -> None:
    time, status, true, h = _simulate(4000, 0)
    good = cs.calibration_competing(time, status, true, h)
    assert good.ici < 0.01 and good.e50 < 0.01
    # Risks inflated by half are clearly off (a subset keeps the test fast).
    m = 1500
    bad = cs.calibration_competing(time[:m], status[:m], np.clip(1.5 * true[:m], 0, 1), h)
    assert bad.ici > 0.05


def test_observed_by_group_is_aalen_johansen_in_each_group() -> None:
    t, s = _mgus()
    p = np.asarray(REF["score"]["risk"])[:, 1]
    tab = cs.observed_by_group(t, s, p, 120.0, groups=4)
    assert tab["n"].sum() == t.size and tab.height == 4
    cuts = np.quantile(p, [0.25, 0.5, 0.75])
    g = np.searchsorted(cuts, p, side="left")
    by = cc.cumulative_incidence(t, s, [120.0], by=g)
    for row in tab.iter_rows(named=True):
        want = by.get(1, str(row["group"] - 1))
        assert row["observed"] == pytest.approx(want["estimate"][0], abs=1e-12)
        assert row["se"] == pytest.approx(want["se"][0], abs=1e-12)
        assert row["predicted"] == pytest.approx(p[g == row["group"] - 1].mean())


def test_net_benefit_by_hand() -> None:
    # Aalen-Johansen risks by t = 10 worked out by hand (one subject censored at 5).
    time = [2, 3, 4, 5, 12, 15, 6, 20]
    status = [1, 2, 1, 0, 1, 0, 2, 0]
    risk = [0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    nb = cs.net_benefit_competing(time, status, risk, 10.0, thresholds=[0.25, 0.55])
    # pt = .25 treats the 6 with risk >= .25: times 2 (cause 1), 3 (cause 2), 4 (cause 1),
    # 5 (censored), 12, 15.  By t = 10: risk sets 6, 5, 4 at times 2, 3, 4, so
    # F1(10) = 1/6 + S(4-) (1/4) with S(4-) = (5/6)(4/5) = 4/6, i.e. 1/3.
    f = 1 / 6 + (4 / 6) * (1 / 4)
    q = 6 / 8
    assert nb["aj_risk"][0] == pytest.approx(f)
    assert nb["net_benefit"][0] == pytest.approx(f * q - (1 - f) * q * (0.25 / 0.75))
    # pt = .55: the 3 with risk >= .55, all with known status by 10: F1 = 2/3.
    assert nb["aj_risk"][1] == pytest.approx(2 / 3)
    assert nb["net_benefit"][1] == pytest.approx(2 / 3 * 3 / 8 - 1 / 3 * 3 / 8 * (0.55 / 0.45))
    # Everyone: event times 2 (cause 1), 3 (2), 4 (1), 6 (2) with risk sets 8, 7, 6, 4:
    # F1(10) = 1/8 + (7/8)(6/7)(1/6) = 1/4, so treating all at pt = .25 is worth 1/4 - 3/4 / 3 = 0.
    assert nb["treat_all"][0] == pytest.approx(0.0, abs=1e-12)
    assert nb["treat_all"][1] == pytest.approx(0.25 - 0.75 * 0.55 / 0.45)


def test_score_input_errors() -> None:
    t, s = _mgus()
    with pytest.raises(ValueError, match="risk_at_t"):
        cs.calibration_competing(t, s, np.full(t.size, 1.5), 60.0)
    with pytest.raises(ValueError, match="cause 3"):
        cs.calibration_competing(t, s, np.full(t.size, 0.1), 60.0, cause=3)
    with pytest.raises(ValueError, match="status"):
        stats.time_auc(t, s + 0.5, np.zeros(t.size), [60.0], cause=1)
