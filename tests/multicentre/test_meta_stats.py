"""analytics.stats.meta_analysis and analytics.stats.updating against R (metafor, pROC, glm/anova, survival).

Fixture: meta_fixture.R beside this file writes meta_fixture.json (R and package versions recorded in it):
metafor's dat.bcg log risk ratios, a five-centre simulated cohort validating a published logistic model
(per-centre measures, their pooling, and model updating in each centre), and a Cox model updated for a centre.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analytics.stats import meta_analysis as meta
from analytics.stats.updating import centre_measures, membership_c, update_cox, update_logistic, updated_lp

FIXTURE = Path(__file__).with_name("meta_fixture.json")
TOL = 1e-6


@pytest.fixture(scope="module")
def ref() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _same_as_metafor(res: meta.MetaAnalysis, r: dict[str, Any]) -> None:
    """Every number of ``res`` equals metafor's on the pooling scale (intervals are held back-transformed)."""
    def f(x: float) -> float:
        return {"logit": lambda p: math.log(p / (1 - p)), "log": math.log}.get(res.scale, lambda z: z)(x)

    got = {"mu": res.mu, "se": res.se, "ci_lb": f(res.low), "ci_ub": f(res.high), "tau2": res.tau2, "i2": res.i2,
           "h2": res.h2, "q": res.q, "q_p": res.q_p, "pi_lb": f(res.pi_low), "pi_ub": f(res.pi_high),
           "riley_lb": f(res.pi_riley_low), "riley_ub": f(res.pi_riley_high)}
    for key, value in got.items():
        assert value == pytest.approx(r[key], abs=TOL, rel=TOL), key


@pytest.mark.parametrize("part", ["all", "first3"])
def test_reml_knapp_hartung_and_both_prediction_intervals_equal_metafor_on_dat_bcg(ref, part) -> None:
    b = ref["bcg"]
    k = 13 if part == "all" else 3
    res = meta.random_effects(b["yi"][:k], b["vi"][:k])
    assert (res.method, res.k, res.scale) == ("REML", k, "identity")
    _same_as_metafor(res, b[part])
    # the Riley interval (k - 2 df) is the wider one
    assert res.pi_riley_low < res.pi_low <= res.low < res.estimate < res.high <= res.pi_high < res.pi_riley_high


def test_homogeneous_centres_give_tau2_zero_and_the_prediction_interval_equal_to_the_ci(ref) -> None:
    h = ref["homogeneous"]
    res = meta.random_effects(h["yi"], h["vi"])
    assert res.tau2 == 0.0 and res.i2 == 0.0
    _same_as_metafor(res, h["fit"])


def test_reml_that_does_not_converge_falls_back_to_dersimonian_laird_and_says_so(ref, monkeypatch) -> None:
    b = ref["bcg"]
    monkeypatch.setattr(meta, "MAX_ITER", 0)  # no Fisher step allowed: "did not converge"
    res = meta.random_effects(b["yi"], b["vi"])
    assert res.method == "DL"
    assert any("did not converge" in n and "DerSimonian-Laird" in n for n in res.notes)
    assert "DerSimonian-Laird" in res.method_text
    for got, key in ((res.tau2, "tau2"), (res.mu, "mu"), (res.low, "ci_lb"), (res.high, "ci_ub")):
        assert got == pytest.approx(b["dl"][key], abs=TOL)


def test_two_centres_give_a_fixed_effect_estimate_and_no_tau2_or_prediction_interval(ref) -> None:
    t = ref["two"]
    res = meta.random_effects(t["yi"], t["vi"])
    assert res.method == "FE"
    assert (res.mu, res.se, res.low, res.high, res.q) == pytest.approx(
        (t["mu"], t["se"], t["ci_lb"], t["ci_ub"], t["q"]), abs=TOL)
    assert all(math.isnan(x) for x in (res.tau2, res.i2, res.pi_low, res.pi_high, res.pi_riley_low))
    assert any("two centres" in n for n in res.notes)
    assert res.as_dict()["tau2"] is None


@pytest.mark.parametrize("bad, message", [
    (([0.1], [0.01]), "two or more centres"),
    (([0.1, 0.2], [0.01, 0.0]), "vi must be positive; found 0.0 at index 1"),
    (([0.1, float("nan")], [0.01, 0.02]), "yi contains 1 non-finite"),
])
def test_bad_input_is_a_value_error_naming_it(bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        meta.random_effects(*bad)


def _centre(ref: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    co = ref["cohort"]
    m = np.array(co["center"]) == name
    x = np.column_stack([np.array(co[k])[m] for k in ("x1", "x2", "x3")])
    return np.array(co["y"])[m], np.array(co["lp"])[m], x


CENTRES = ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize("name", CENTRES)
def test_per_centre_measures_equal_proc_and_glm(ref, name) -> None:
    y, lp, _ = _centre(ref, name)
    got = centre_measures(y, lp)
    r = ref["centres"][name]
    pairs = {"n": "n", "events": "events", "auc": "auc", "auc_var": "auc_var", "calibration_in_the_large": "citl",
             "citl_se": "citl_se", "calibration_recalibration_slope": "slope", "slope_se": "slope_se",
             "oe_ratio": "oe", "log_oe_var": "log_oe_var", "brier": "brier"}
    for ours, theirs in pairs.items():
        assert got[ours] == pytest.approx(r[theirs], abs=TOL, rel=TOL), ours
    assert got["lp_mean"] == pytest.approx(float(lp.mean())) and got["lp_sd"] == pytest.approx(float(lp.std(ddof=1)))


def test_pooled_auc_oe_citl_and_slope_across_the_five_centres_equal_metafor(ref) -> None:
    per = [centre_measures(*_centre(ref, c)[:2]) for c in CENTRES]
    auc = meta.pool("auc", [p["auc"] for p in per], [p["auc_var"] for p in per])
    oe = meta.pool("oe_ratio", [p["oe_ratio"] for p in per], [p["log_oe_var"] for p in per])
    citl = meta.pool("calibration_in_the_large", [p["calibration_in_the_large"] for p in per],
                     [p["citl_se"] ** 2 for p in per])
    slope = meta.pool("calibration_recalibration_slope", [p["calibration_recalibration_slope"] for p in per],
                      [p["slope_se"] ** 2 for p in per])
    for res, key, scale in ((auc, "auc", "logit"), (oe, "oe", "log"), (citl, "citl", "identity"),
                            (slope, "slope", "identity")):
        assert res.scale == scale
        _same_as_metafor(res, ref["meta"][key])
    # back-transformed: the pooled AUC is expit of the pooled logit, its interval too
    r = ref["meta"]["auc"]
    expit = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert (auc.estimate, auc.low, auc.pi_high) == pytest.approx((expit(r["mu"]), expit(r["ci_lb"]), expit(r["pi_ub"])),
                                                                 abs=TOL)
    assert oe.estimate == pytest.approx(math.exp(ref["meta"]["oe"]["mu"]), abs=TOL)


@pytest.mark.parametrize("name", CENTRES)
def test_updating_deviances_lr_tests_and_closed_test_choice_equal_glm_and_anova(ref, name) -> None:
    y, lp, x = _centre(ref, name)
    u = update_logistic(y, lp, x)
    r = ref["updating"][name]
    assert list(u.deviance.values()) == pytest.approx(r["deviance"], abs=TOL)
    for key, (a, b) in {"lr14": ("original", "revision"), "lr24": ("recalibration_in_the_large", "revision"),
                        "lr34": ("logistic_recalibration", "revision"),
                        "lr12": ("original", "recalibration_in_the_large"),
                        "lr23": ("recalibration_in_the_large", "logistic_recalibration")}.items():
        step = u.test(a, b)
        assert (step.statistic, step.df, step.p) == pytest.approx((r[key]["stat"], r[key]["df"], r[key]["p"]),
                                                                  abs=TOL), key
    assert u.choice == r["choice"]
    assert u.coef["recalibration_in_the_large"] == pytest.approx([r["citl"]], abs=TOL)
    assert u.coef["logistic_recalibration"] == pytest.approx(r["recal"], abs=TOL)
    assert u.coef["revision"] == pytest.approx(r["revised"], abs=TOL)


def test_the_fixture_exercises_every_closed_test_outcome(ref) -> None:
    assert {ref["updating"][c]["choice"] for c in CENTRES} == {
        "original", "recalibration_in_the_large", "logistic_recalibration", "revision"}


def test_updated_linear_predictor_follows_the_chosen_method(ref) -> None:
    y, lp, x = _centre(ref, "C")
    u = update_logistic(y, lp, x)
    a, b = ref["updating"]["C"]["recal"]
    assert updated_lp(u, lp) == pytest.approx(a + b * lp)
    assert updated_lp(u, lp, x, method="revision") == pytest.approx(
        ref["updating"]["C"]["revised"][0] + x @ np.array(ref["updating"]["C"]["revised"][1:]))


def test_without_a_design_the_closed_test_stops_at_logistic_recalibration(ref) -> None:
    y, lp, _ = _centre(ref, "C")
    u = update_logistic(y, lp)
    assert "revision" not in u.deviance
    assert u.test("original", "logistic_recalibration").df == 2
    assert u.choice == "logistic_recalibration"


def test_cox_updating_equals_survival(ref) -> None:
    c = ref["cox"]
    u = update_cox(c["time"], c["status"], c["lp"], c["horizons"])
    assert u.baseline_survival == pytest.approx(c["s0_offset"], abs=TOL)
    assert (u.slope, u.slope_se) == pytest.approx((c["slope"], c["slope_se"]), abs=TOL)
    assert u.baseline_survival_slope == pytest.approx(c["s0_slope"], abs=TOL)
    assert u.lr_slope.statistic == pytest.approx(c["lr_slope"], abs=TOL)


def test_membership_c_is_near_one_half_for_the_same_population_and_high_for_a_different_one() -> None:
    rng = np.random.default_rng(3)
    xd, xs = rng.normal(size=(400, 2)), rng.normal(size=(300, 2))
    xo = rng.normal(loc=1.5, size=(300, 2))
    yd, ys, yo = (rng.integers(0, 2, n) for n in (400, 300, 300))
    assert membership_c(xd, yd, xs, ys) < 0.6
    assert membership_c(xd, yd, xo, yo) > 0.85


def test_a_centre_with_no_events_has_no_auc_or_calibration_but_counts() -> None:
    got = centre_measures(np.zeros(20), np.linspace(-2, 0, 20))
    assert got["n"] == 20 and got["events"] == 0
    assert all(math.isnan(got[k]) for k in ("auc", "auc_var", "calibration_in_the_large", "log_oe_var"))


def test_kaplan_meier_risk_and_greenwood_se_equal_survfit(ref) -> None:
    c = ref["cox"]
    for h, risk, se in zip(c["horizons"], c["km_risk"], c["km_se"]):
        got = meta.km_risk(c["time"], c["status"], h)
        assert got == pytest.approx((risk, se), abs=TOL)
        lo, var = meta.log_oe_survival(got[0], got[1], 0.2)
        assert (lo, var) == pytest.approx((math.log(risk / 0.2), (se / risk) ** 2), abs=TOL)
