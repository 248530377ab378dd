"""Calibration-in-the-large and logistic recalibration, named and valued as R ``rms::val.prob`` does.

Reference values: tests/stats/data/rms_calibration_reference.json, written by
tests/stats/data/make_rms_reference.R (rms::val.prob "Intercept" / "Slope" / "Brier", and
glm(y ~ 1, offset = qlogis(p)) for calibration-in-the-large). A second, R-free check fits the
same two likelihoods with scipy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logit

from analytics import stats

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "rms_calibration_reference.json").read_text())
BASE = json.loads((DATA / "calibration_reference.json").read_text())


def _dataset(name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    d = REF["datasets"][name]
    if "y" in d:
        return np.asarray(d["y"]), np.asarray(d["prob"], dtype=float), d["values"]
    return np.asarray(BASE["y"]), np.asarray(BASE["prob"][name], dtype=float), d["values"]


@pytest.mark.parametrize("name", sorted(REF["datasets"]))
def test_matches_rms_val_prob(name: str) -> None:
    y, p, ref = _dataset(name)
    c = stats.calibration(y, p)
    assert c["in_the_large"] == pytest.approx(ref["citl"], abs=1e-7)
    assert c["recalibration_intercept"] == pytest.approx(ref["intercept"], abs=1e-7)
    assert c["recalibration_slope"] == pytest.approx(ref["slope"], abs=1e-7)
    assert c["brier"] == pytest.approx(ref["brier"], abs=1e-12)


@pytest.mark.parametrize("name", sorted(REF["datasets"]))
def test_matches_an_independent_likelihood_fit(name: str) -> None:
    y, p, _ = _dataset(name)
    lp = logit(p)

    def nll(a: float, b: float) -> float:
        q = np.clip(expit(a + b * lp), 1e-300, 1 - 1e-16)
        return float(-np.sum(y * np.log(q) + (1 - y) * np.log1p(-q)))

    citl = minimize(lambda t: nll(t[0], 1.0), [0.0], method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10_000}).x
    recal = minimize(lambda t: nll(t[0], t[1]), [0.0, 1.0], method="Nelder-Mead",
                     options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000}).x
    c = stats.calibration(y, p)
    assert c["in_the_large"] == pytest.approx(citl[0], abs=1e-5)
    assert c["recalibration_intercept"] == pytest.approx(recal[0], abs=1e-5)
    assert c["recalibration_slope"] == pytest.approx(recal[1], abs=1e-5)


def test_the_two_intercepts_differ_when_the_slope_is_not_one() -> None:
    """Calibration-in-the-large is not the recalibration intercept: on the overfitted predictions
    (slope about 0.57) they differ in sign; with the slope at 1 they would coincide."""
    y, p, _ = _dataset("overfit")
    c = stats.calibration(y, p)
    assert c["recalibration_slope"] < 0.7
    assert c["in_the_large"] > 0 > c["recalibration_intercept"]
    assert abs(c["in_the_large"] - c["recalibration_intercept"]) > 0.2
    # the earlier names keep their meaning
    assert (c["intercept"], c["slope"], c["slope_intercept"]) == (
        c["in_the_large"], c["recalibration_slope"], c["recalibration_intercept"])


def test_recalibrated_predictions_are_calibrated() -> None:
    """Apply the fitted recalibration to the predictions: the new ones have intercept 0 and slope 1
    (a property of the maximum-likelihood fit, independent of any reference)."""
    y, p, _ = _dataset("too_high")
    c = stats.calibration(y, p)
    q = expit(c["recalibration_intercept"] + c["recalibration_slope"] * logit(p))
    again = stats.calibration(y, q)
    assert again["recalibration_intercept"] == pytest.approx(0.0, abs=1e-8)
    assert again["recalibration_slope"] == pytest.approx(1.0, abs=1e-8)
    assert again["in_the_large"] == pytest.approx(0.0, abs=1e-8)
