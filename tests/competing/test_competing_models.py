"""Cause-specific Cox (Efron ties) and Fine-Gray against R: coxph per cause and
riskRegression::CSC / predictRisk, cmprsk::crr and riskRegression::FGR /
predictRisk (fixtures from make_competing_reference.R), lifelines as a second
Efron implementation, and properties of the predicted risks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from analytics.stats import competing_cox as cm
from analytics.stats import competing_finegray as fgm

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "competing_reference.json").read_text())
MGUS = pd.read_csv(DATA / "mgus2.csv")
SIM3 = pd.read_csv(DATA / "sim3.csv")
COVS = ["age", "male", "hgb"]
TOL = 1e-6


def _mgus() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    return MGUS[COVS], MGUS.etime.to_numpy(float), MGUS.event.to_numpy(int)


@pytest.fixture(scope="module")
def csc() -> cm.CauseSpecificCox:
    x, t, s = _mgus()
    return cm.cause_specific_cox(x, t, s)


@pytest.mark.parametrize("cause", [1, 2])
def test_cause_specific_cox_equals_coxph(csc: cm.CauseSpecificCox, cause: int) -> None:
    ref = REF["csc"]["models"][f"causeCause {cause}"]
    fit = csc.models[cause]
    assert fit.names == COVS
    np.testing.assert_allclose(fit.coef, ref["coef"], rtol=0, atol=TOL)
    np.testing.assert_allclose(fit.se, ref["se"], rtol=0, atol=TOL)
    np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-10)


def test_efron_cox_equals_lifelines() -> None:
    from lifelines import CoxPHFitter

    x, t, s = _mgus()
    df = x.assign(T=t, E=(s == 2).astype(int))
    lf = CoxPHFitter().fit(df, "T", "E")
    ours = cm.cox_efron(x, t, s == 2)
    np.testing.assert_allclose(ours.coef, lf.params_[COVS].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.se, lf.standard_errors_[COVS].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("cause", [1, 2])
def test_csc_absolute_risk_equals_predict_risk(csc: cm.CauseSpecificCox, cause: int) -> None:
    rows = np.asarray(REF["csc"]["newdata_rows"]) - 1
    got = csc.predict_risk(MGUS[COVS].iloc[rows], REF["horizons"], cause=cause)
    np.testing.assert_allclose(got, REF["csc"][f"risk_cause{cause}"], rtol=0, atol=TOL)


def test_csc_three_causes_cause_two_and_three() -> None:
    ref = REF["sim3"]["csc"]
    fit = cm.cause_specific_cox(SIM3[["x1", "x2"]], SIM3.time, SIM3.status)
    assert fit.causes == [1, 2, 3]
    for c in (1, 2, 3):
        np.testing.assert_allclose(fit.models[c].coef, ref["models"][f"cause{c}"]["coef"], atol=TOL)
        np.testing.assert_allclose(fit.models[c].se, ref["models"][f"cause{c}"]["se"], atol=TOL)
    h = REF["sim3"]["horizons"]
    for c in (2, 3):
        got = fit.predict_risk(SIM3[["x1", "x2"]].iloc[:5], h, cause=c)
        np.testing.assert_allclose(got, ref[f"risk_cause{c}"], rtol=0, atol=TOL)


def test_csc_risks_add_up_with_event_free_survival(csc: cm.CauseSpecificCox) -> None:
    # Product-limit version: F1 + F2 + S = 1 at every time (the S is the product over all jumps).
    x = MGUS[COVS].iloc[:20]
    t = np.array([12.0, 60.0, 200.0, 400.0])
    f1 = csc.predict_risk(x, t, cause=1)
    f2 = csc.predict_risk(x, t, cause=2)
    union = np.unique(np.concatenate([m.event_times for m in csc.models.values()]))
    total = sum(np.exp(x.to_numpy() @ m.coef)[:, None]
                * np.where(np.isin(union, m.event_times), 1.0, 0.0)[None, :]
                * np.interp(union, m.event_times, m.hazard)[None, :]
                for m in csc.models.values())
    surv = np.cumprod(1 - total, axis=1)[:, np.searchsorted(union, t, side="right") - 1]
    np.testing.assert_allclose(f1 + f2 + surv, 1.0, atol=1e-12)
    assert np.all(np.diff(f1, axis=1) >= 0)
    exp_version = csc.predict_risk(x, t, cause=1, product_limit=False)
    assert np.max(np.abs(exp_version - f1)) > 1e-4  # the two definitions differ visibly


def test_csc_summary_table(csc: cm.CauseSpecificCox) -> None:
    tab = csc.summary()
    assert tab.columns[:3] == ["cause", "term", "coef"]
    assert tab.height == 6
    row = tab.filter((pl.col("cause") == 2) & (pl.col("term") == "male"))
    assert row["hr"][0] == pytest.approx(np.exp(REF["csc"]["models"]["causeCause 2"]["coef"][1]))


def test_fine_gray_equals_crr() -> None:
    x, t, s = _mgus()
    fg = fgm.fine_gray(x, t, s, cause=1)
    ref = REF["fgr"]
    assert fg.converged and ref["converged"]
    np.testing.assert_allclose(fg.coef, ref["coef"], rtol=0, atol=TOL)
    np.testing.assert_allclose(fg.se, ref["se"], rtol=0, atol=TOL)
    assert fg.loglik == pytest.approx(ref["loglik"], rel=1e-10)
    rows = np.asarray(REF["csc"]["newdata_rows"]) - 1
    got = fg.predict_risk(x.iloc[rows], REF["horizons"])
    np.testing.assert_allclose(got, ref["risk"], rtol=0, atol=TOL)


def test_fine_gray_tight_convergence_equals_tight_crr() -> None:
    x, t, s = _mgus()
    fg = fgm.fine_gray(x, t, s, cause=1, gtol=1e-12, maxiter=50)
    np.testing.assert_allclose(fg.coef, REF["fgr"]["coef_tight"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(fg.se, REF["fgr"]["se_tight"], rtol=0, atol=1e-8)


def test_fine_gray_cause_two_of_three_tied_times() -> None:
    ref = REF["sim3"]["fgr"]
    fg = fgm.fine_gray(SIM3[["x1", "x2"]], SIM3.time, SIM3.status, cause=2)
    np.testing.assert_allclose(fg.coef, ref["coef"], rtol=0, atol=TOL)
    np.testing.assert_allclose(fg.se, ref["se"], rtol=0, atol=TOL)
    got = fg.predict_risk(SIM3[["x1", "x2"]].iloc[:5], REF["sim3"]["horizons"])
    np.testing.assert_allclose(got, ref["risk"], rtol=0, atol=TOL)


def test_model_input_errors() -> None:
    x, t, s = _mgus()
    bad = x.copy()
    bad.loc[3, "hgb"] = np.nan
    with pytest.raises(ValueError, match="'hgb'"):
        fgm.fine_gray(bad, t, s)
    with pytest.raises(ValueError, match="rows"):
        cm.cause_specific_cox(x.iloc[:10], t, s)
    with pytest.raises(ValueError, match="no events of cause 3"):
        fgm.fine_gray(x, t, s, cause=3)
    fit = cm.cause_specific_cox(x, t, s)
    with pytest.raises(KeyError, match="cause 5"):
        fit.predict_risk(x.iloc[:2], [10.0], cause=5)


def test_fine_gray_without_competing_events_is_cox() -> None:
    # With no competing events the subdistribution hazard is the hazard: with untied times
    # (Efron = Breslow) the Fine-Gray coefficients are the Cox ones.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 2))
    time = rng.exponential(1 / np.exp(x @ np.array([0.5, -0.3])))
    cens = rng.exponential(2.0, 400)
    status = (time <= cens).astype(int)
    t = np.minimum(time, cens)
    fg = fgm.fine_gray(x, t, status, gtol=1e-12, maxiter=50)
    cox = cm.cox_efron(x, t, status)
    np.testing.assert_allclose(fg.coef, cox.coef, rtol=0, atol=1e-9)


def test_fine_gray_summary_is_subdistribution_hazard_ratios() -> None:
    x, t, s = _mgus()
    tab = fgm.fine_gray(x, t, s).summary()
    ref = REF["fgr"]
    np.testing.assert_allclose(tab["hr"].to_numpy(), np.exp(ref["coef"]), rtol=1e-9)
    z = np.asarray(ref["coef"]) / np.asarray(ref["se"])
    np.testing.assert_allclose(tab["z"].to_numpy(), z, rtol=1e-6)
    assert tab["term"].to_list() == COVS
