"""The time-dependent ROC curve drawn in the report: its area is the IPCW AUC(t) of analytics.stats."""

from __future__ import annotations

import numpy as np
import pytest

from analytics import stats
from analytics.stats.time_curves import km_calibration_points, time_roc_curve


@pytest.mark.parametrize("seed", [0, 1])
def test_area_under_time_roc_equals_time_auc(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    x = rng.normal(size=n)
    t_event = rng.exponential(10 / np.exp(x))
    t_cens = rng.uniform(2, 30, n)
    time = np.round(np.minimum(t_event, t_cens), 1)  # rounded: tied times and tied risks
    event = (t_event <= t_cens).astype(float)
    risk = np.round(1 / (1 + np.exp(-x)), 2)
    for t in (5.0, 10.0):
        roc = time_roc_curve(time, event, risk, t)
        area = np.trapezoid(roc["tpr"], roc["fpr"])
        assert area == pytest.approx(stats.time_auc(time, event, risk, [t]).estimate[0], abs=1e-10)


def test_km_calibration_points_without_censoring_are_event_shares() -> None:
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    event = np.ones(10)
    risk = np.linspace(0.1, 1.0, 10)
    pts = km_calibration_points(time, event, risk, 5.0, groups=2)
    # no censoring: the Kaplan-Meier risk by 5 is the share with an event by 5
    assert pts["observed"] == [1.0, 0.0] and pts["n"] == [5, 5]
    assert pts["predicted"] == pytest.approx([0.3, 0.8])
