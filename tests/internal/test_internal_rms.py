"""analytics.stats.internal against rms::validate / rms::calibrate on R's own resample indices.

Fixture: tests/internal/rms_validate_fixture.R (survival::nwtco, 1,000 children, lrm; survival::lung,
cph with Efron ties; B = 40 bootstrap, 10- and 5-fold cross-validation).  The models are refitted here by
statsmodels (logistic, to full convergence) and by a coxph-style Newton fit (tests/internal/coxph_newton.py)
on R's design matrices; R's lrm.fit converges to about 1e-9, hence the 1e-6 tolerance."""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from analytics.stats.internal import _folds, calibration_corrected, optimism, replicates_from

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from coxph_newton import coxph  # noqa: E402

COLUMNS = ["original", "training", "test", "optimism", "corrected"]


@cache
def fixture() -> dict:
    return json.loads((HERE / "rms_validate.json").read_text())


def logistic(Xr: np.ndarray, yr: np.ndarray):
    params = sm.GLM(yr, Xr, family=sm.families.Binomial()).fit(tol=1e-12).params
    return lambda Z: 1.0 / (1.0 + np.exp(-(Z @ params)))


def cox(Xr: np.ndarray, Yr: np.ndarray):
    beta = coxph(Yr[:, 0], Yr[:, 1], Xr)
    return lambda Z: Z @ beta


def binary_data():
    b = fixture()["binary"]
    y = np.asarray(b["data"]["rel"])
    return b, np.column_stack([np.ones(y.size), np.asarray(b["design"])]), y


def survival_data():
    s = fixture()["survival"]
    Y = np.column_stack([np.asarray(s["data"]["time"], float), np.asarray(s["data"]["status"], float)])
    return s, np.asarray(s["design"]), Y


def assert_table(table: pl.DataFrame, ref: dict, drop: str, tol: float = 1e-6) -> None:
    ours = table.filter(pl.col("index") != drop)
    assert ours["index"].to_list() == ref["index"]
    for c in COLUMNS:
        np.testing.assert_allclose(ours[c].to_numpy(), np.asarray(ref[c], float), rtol=0, atol=tol,
                                   err_msg=c)
    assert ours["n"].to_list() == [int(k) for k in ref["n"]]


def test_validate_lrm_bootstrap_equals_rms() -> None:
    b, X, y = binary_data()
    p = logistic(X, y)(X)
    np.testing.assert_allclose(np.log(p / (1 - p)), X @ np.r_[b["coefficients"]], atol=1e-8)
    reps = replicates_from(logistic, X, y, list(np.asarray(b["boot_indices"]) - 1))
    res = optimism(y, p, reps)
    assert_table(res.table, b["validate_boot"], "AUC")
    auc = dict(zip(res.table["index"], res.table["corrected"], strict=True))
    assert auc["AUC"] == pytest.approx((auc["Dxy"] + 1) / 2, abs=1e-15)
    assert (res.replicates, res.failed, res.reasons) == (40, 0, {})


def test_validate_lrm_crossvalidation_equals_rms() -> None:
    b, X, y = binary_data()
    folds = _folds(np.asarray(b["cv_permutation"]) - 1, b["cv_groups"])
    train = [np.setdiff1d(np.arange(y.size), f) for f in folds]
    res = optimism(y, logistic(X, y)(X), replicates_from(logistic, X, y, train), method="cv")
    assert_table(res.table, b["validate_cv"], "AUC")


def test_validate_cph_bootstrap_and_cv_equal_rms() -> None:
    s, X, Y = survival_data()
    lp = cox(X, Y)(X)
    np.testing.assert_allclose(lp, X @ np.r_[s["coefficients"]], atol=1e-12)
    res = optimism(Y, lp, replicates_from(cox, X, Y, list(np.asarray(s["boot_indices"]) - 1)),
                   endpoint="survival")
    assert_table(res.table, s["validate_boot"], "C", tol=1e-10)
    folds = _folds(np.asarray(s["cv_permutation"]) - 1, s["cv_groups"])
    train = [np.setdiff1d(np.arange(lp.size), f) for f in folds]
    cv = optimism(Y, lp, replicates_from(cox, X, Y, train), endpoint="survival", method="cv")
    assert_table(cv.table, s["validate_cv"], "C", tol=1e-10)


def test_calibrate_equals_rms() -> None:
    b, X, y = binary_data()
    cal = b["calibrate"]
    reps = replicates_from(logistic, X, y, list(np.asarray(b["calibrate_indices"]) - 1))
    res = calibration_corrected(y, logistic(X, y)(X), reps)
    curve = res.curve
    for ours, ref in [("predicted", "predy"), ("apparent", "apparent"), ("corrected", "corrected"),
                      ("optimism", "optimism")]:
        np.testing.assert_allclose(curve[ours].to_numpy(), np.asarray(cal[ref], float), atol=1e-8,
                                   err_msg=ours)
    assert curve["n"].to_list() == [int(k) for k in cal["n"]]
    assert res.mae == pytest.approx(cal["mae"], abs=1e-9)
    assert res.mse == pytest.approx(cal["mse"], abs=1e-9)
    assert res.q90 == pytest.approx(cal["q90"], abs=1e-9)


def test_calibrate_cph_km_equals_rms() -> None:
    """rms::calibrate(cph, cmethod = "KM", u = 365, m = 50) from R's own bootstrap predictions."""
    from analytics.stats.internal import calibration_corrected_survival
    from analytics.stats.resampling import Replicate

    s, X, Y = survival_data()
    c = s["calibrate_km"]
    idx = np.asarray(c["indices"]) - 1
    reps = [Replicate(i, np.empty(0), np.empty(0), 1 - np.asarray(a)[:, None], 1 - np.asarray(t)[:, None])
            for i, a, t in zip(idx, c["surv_apparent"], c["surv_test"], strict=True)]
    res = calibration_corrected_survival(Y, 1 - np.asarray(c["predicted"]), reps, c["u"], m=c["m"])
    g = res.groups
    for ours, ref in [("predicted", "mean_predicted"), ("observed", "KM"), ("corrected", "KM_corrected"),
                      ("optimism", "optimism"), ("original", "original"), ("training", "training"),
                      ("test", "test")]:
        np.testing.assert_allclose(g[ours].to_numpy(), np.asarray(c[ref], float), rtol=0, atol=1e-10,
                                   err_msg=ours)
    assert g["n"].to_list() == [int(k) for k in c["n"]]
