"""analytics.stats.time_curves against R on survival::lung: the Kaplan-Meier risk by t (survfit), observed
against predicted risk per group (survfit per group), and the IPCW cumulative/dynamic ROC curve and its area
(riskRegression::Score, Kaplan-Meier censoring weights). Fixture: time_curves_fixture.R beside this file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics.stats.time_curves import km_calibration_points, km_risk, time_roc_curve

FIXTURE = Path(__file__).with_name("time_curves_fixture.json")


@pytest.fixture(scope="module")
def lung() -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    ref = json.loads(FIXTURE.read_text(encoding="utf-8"))
    data = pl.read_csv(FIXTURE.with_suffix(".csv"))
    assert (data.height, int(data["event"].sum())) == (ref["n"], ref["events"])
    return (ref, data["time"].to_numpy().astype(np.float64), data["event"].to_numpy().astype(np.float64),
            data["risk"].to_numpy())


def test_km_risk_matches_survfit(lung) -> None:
    ref, time, event, _ = lung
    for h in ref["horizons"]:
        assert km_risk(time, event, h["t"]) == pytest.approx(h["km_risk"], abs=1e-12)


def test_km_risk_before_the_first_event_is_zero() -> None:
    assert km_risk(np.array([2.0, 3.0, 5.0]), np.array([0.0, 1.0, 1.0]), 2.5) == 0.0


def test_km_calibration_points_match_survfit_per_group_of_predicted_risk(lung) -> None:
    ref, time, event, risk = lung
    for h in ref["horizons"]:
        pts = km_calibration_points(time, event, risk, h["t"], groups=ref["groups"])
        assert pts["n"] == h["group_n"]
        assert pts["predicted"] == pytest.approx(h["group_predicted"], abs=1e-12)
        assert pts["observed"] == pytest.approx(h["group_observed"], abs=1e-12)


def test_time_roc_curve_matches_risk_regression_score(lung) -> None:
    """At every risk threshold of Score's ROC plot frame, the weighted shares of cases and controls with a risk
    at or above it agree; the area under the curve is Score's AUC(t)."""
    ref, time, event, risk = lung
    for h in ref["horizons"]:
        roc = time_roc_curve(time, event, risk, h["t"])
        thresholds = np.asarray(roc["threshold"])
        assert thresholds[0] == np.inf and np.all(np.diff(thresholds) < 0)
        for r, tpr, fpr in zip(h["roc_risk"], h["roc_tpr"], h["roc_fpr"]):
            # the curve steps at its own thresholds: a threshold of R's between two of ours reads the lower one
            i = int(np.nonzero(thresholds >= r - 1e-12)[0][-1])
            assert (roc["tpr"][i], roc["fpr"][i]) == pytest.approx((tpr, fpr), abs=1e-10), (h["t"], r)
        assert roc["tpr"][-1] == pytest.approx(1.0) and roc["fpr"][-1] == pytest.approx(1.0)
        assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(h["auc"], abs=1e-10)


def test_time_roc_curve_without_controls_says_so() -> None:
    with pytest.raises(ValueError, match="no controls at 9"):
        time_roc_curve(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0]), np.array([0.2, 0.5, 0.9]), 9.0)
