"""Issue 23 item 6: the calibration slope of a Cox model's linear predictor on a held-out split never fails
in silence. Where the linear predictor orders the events perfectly the slope has no finite estimate: the old
code (lifelines) logged "overflow encountered in exp" at INFO and wrote a slope of 62 (CI -1031 to 1155); now
there is no number, validation says why, and the report's cell shows it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from analytics.report.cells import metric_cell, said_about
from analytics.stats.cox_validation import calibration_slope, cox_one
from analytics.validation.measures import SplitMetrics
from analytics.validation.stage import lp_calibration

# the higher the linear predictor, the earlier the event: a monotone partial likelihood
LP = np.linspace(-1.0, 1.0, 12)
TIME = np.arange(12, 0, -1).astype(float)
EVENT = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=float)


def test_no_finite_slope_is_a_note_not_a_number() -> None:
    risk = 1 - np.exp(-0.1 * np.exp(LP))[:, None]
    out, notes = lp_calibration(TIME, EVENT, LP, [5.0], risk, 0.95)
    assert "lp_calibration_slope" not in out
    assert len(notes) == 1 and "calibration slope" in notes[0] and "no finite estimate" in notes[0]


def test_report_cell_shows_why_the_slope_is_missing() -> None:
    _, notes = lp_calibration(TIME, EVENT, LP, [5.0], 1 - np.exp(-0.1 * np.exp(LP))[:, None], 0.95)
    validation = SimpleNamespace(notes=[f"cox / internal: {n}" for n in notes], models={})
    sm = SplitMetrics(0, 0, {}, None, None, 12, 9)
    cell = metric_cell("cox", "internal", "lp_calibration_slope", sm, validation)  # type: ignore[arg-type]
    assert cell.text == "–" and "no finite estimate" in cell.note and "monotone likelihood" in cell.note
    assert said_about(validation, "cox", "internal", "lp_calibration_slope")  # type: ignore[arg-type]


def test_one_flip_gives_a_finite_slope_equal_to_a_by_hand_fit() -> None:
    # swap the event order of two patients: the maximum exists; Newton's answer solves the score equation
    time = TIME.copy()
    time[[0, 5]] = time[[5, 0]]
    fit = cox_one(time, EVENT, LP)
    iv = calibration_slope(time, EVENT, LP)
    assert iv.estimate == pytest.approx(fit.coef) and np.isfinite(iv.low) and np.isfinite(iv.high)
    # the score (Breslow = Efron without ties) at the estimate is zero
    order = np.argsort(time)
    score = sum(LP[i] - np.sum(LP[time >= time[i]] * np.exp(fit.coef * LP[time >= time[i]]))
                / np.sum(np.exp(fit.coef * LP[time >= time[i]])) for i in order if EVENT[i] == 1)
    assert abs(score) < 1e-8


def test_calibration_at_a_horizon_that_did_not_converge_is_a_reason_not_a_number() -> None:
    # the same patients: lifelines' Cox fit of the calibration curve stops short ("Newton-Raphson failed to
    # converge") and used to give ICI = 0.35 with the warning logged at INFO
    from analytics import stats
    from analytics.validation.values import safe

    value, why = safe(stats.calibration_at, TIME, EVENT, 1 - np.exp(-0.1 * np.exp(LP)), 5.0)
    assert value is None and why is not None and "did not converge" in why
