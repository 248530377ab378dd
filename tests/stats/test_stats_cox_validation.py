"""analytics.stats.cox_validation against R survival on Royston & Altman's own example (BMC Med Res Methodol
2013;13:33): a Cox model developed on survival::rotterdam, validated on the 686 GBSG patients of
survival::gbsg. Fixture: royston_fixture.R beside this file (R and survival versions recorded in it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics.stats.cox_validation import baseline_survival_difference, breslow, calibration_slope

FIXTURE = Path(__file__).with_name("royston_fixture.json")


@pytest.fixture(scope="module")
def gbsg() -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    ref = json.loads(FIXTURE.read_text(encoding="utf-8"))
    data = pl.read_csv(FIXTURE.with_suffix(".csv"))
    assert (data.height, int(data["status"].sum())) == (ref["n"], ref["events"])
    return ref, data["rfstime"].to_numpy() / 365.25, data["status"].to_numpy().astype(np.int64), data["lp"].to_numpy()


def test_breslow_baseline_survival_with_the_linear_predictor_as_offset_matches_survfit(gbsg) -> None:
    """exp(-H0(t)) of the offset model equals survfit(coxph(... ~ offset(lp), ties = "breslow"), lp = 0,
    ctype = 1) at 3 and 5 years."""
    ref, time, event, lp = gbsg
    times, h0 = breslow(lp, time, event)
    assert np.all(np.diff(times) > 0) and np.all(np.diff(h0) > 0)
    for t, s0 in zip(ref["horizons"], ref["s0_validation"]):
        assert float(np.exp(-h0[times <= t][-1])) == pytest.approx(s0, abs=1e-10)


def test_calibration_slope_and_its_wald_interval_match_coxph(gbsg) -> None:
    ref, time, event, lp = gbsg
    iv = calibration_slope(time, event, lp, level=0.95)
    r = ref["slope"]
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((r["coef"], r["low"], r["high"]), abs=1e-6)
    assert iv.level == 0.95 and iv.high - iv.low == pytest.approx(2 * 1.959963984540054 * r["se"], abs=1e-6)


def test_baseline_survival_difference_matches_r(gbsg) -> None:
    """The development baseline survival is recovered from the saved risks 1 - exp(-H0_dev(t) exp(lp))."""
    ref, time, event, lp = gbsg
    risk = 1.0 - np.exp(-np.outer(np.exp(lp), np.asarray(ref["h0_development"])))
    diffs = baseline_survival_difference(time, event, lp, ref["horizons"], risk)
    assert diffs == pytest.approx(ref["baseline_survival_diff"], abs=1e-10)


def test_a_horizon_whose_risks_are_all_certain_has_no_difference(gbsg) -> None:
    """Risks of exactly 1 give no development hazard back (log of 0): None at that horizon, the others kept."""
    ref, time, event, lp = gbsg
    risk = 1.0 - np.exp(-np.outer(np.exp(lp), np.asarray(ref["h0_development"])))
    risk[:, 0] = 1.0
    diffs = baseline_survival_difference(time, event, lp, ref["horizons"], risk)
    assert diffs[0] is None and diffs[1] == pytest.approx(ref["baseline_survival_diff"][1], abs=1e-10)
