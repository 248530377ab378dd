"""Calibration against R (glm, loess surface="direct"), an independent
statsmodels-free fit (sklearn / scipy), and data from known models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from analytics import stats
from analytics.stats.calibrate import loess

REF = json.loads((Path(__file__).parent / "data" / "calibration_reference.json").read_text())
Y = np.array(REF["y"])


@pytest.mark.parametrize("kind", ["calibrated", "overfit", "underfit"])
def test_matches_r_glm_and_loess(kind: str) -> None:
    p = np.array(REF["prob"][kind])
    ref = REF["calibration"][kind]
    c = stats.calibration(Y, p)
    for key in ("intercept", "slope", "slope_intercept", "brier", "ici", "e50", "e90", "emax"):
        assert c[key] == pytest.approx(ref[key], abs=1e-6), key
    np.testing.assert_allclose(loess(p, Y.astype(float), p[:20]), ref["loess_direct_head"],
                               atol=1e-9)
    # R's default surface="interpolate" is an approximation of the same smoother.
    assert c["ici"] == pytest.approx(ref["ici_interpolate"], abs=0.003)


@pytest.mark.parametrize("kind", ["calibrated", "overfit", "underfit"])
def test_matches_sklearn_and_scipy_fits(kind: str) -> None:
    p = np.array(REF["prob"][kind])
    lp = logit(p)
    c = stats.calibration(Y, p)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(lp[:, None], Y)
    assert c["slope"] == pytest.approx(lr.coef_[0, 0], abs=1e-5)
    assert c["slope_intercept"] == pytest.approx(lr.intercept_[0], abs=1e-5)

    def nll(a: float) -> float:
        q = expit(a + lp)
        return -np.sum(Y * np.log(q) + (1 - Y) * np.log1p(-q))

    a = minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}).x
    assert c["intercept"] == pytest.approx(a, abs=1e-6)
    assert c["brier"] == pytest.approx(np.mean((p - Y) ** 2), abs=1e-15)


def test_known_models_slope() -> None:
    rng = np.random.default_rng(2019)
    # Perfectly calibrated predictions: slope ~ 1, intercept ~ 0, small ICI.
    x = rng.normal(size=10_000)
    p = expit(-1 + x)
    y = rng.binomial(1, p)
    c = stats.calibration(y, p)
    assert abs(c["slope"] - 1) < 0.05 and abs(c["intercept"]) < 0.05 and c["ici"] < 0.01
    # Overfitted model (few events, many noise predictors) on new data: slope < 1.
    k = 25
    beta = np.zeros(k)
    beta[0] = 1.0
    xtr = rng.normal(size=(80, k))
    ytr = rng.binomial(1, expit(xtr @ beta))
    model = LogisticRegression(C=1e6, max_iter=10_000).fit(xtr, ytr)
    xte = rng.normal(size=(5000, k))
    yte = rng.binomial(1, expit(xte @ beta))
    c_over = stats.calibration(yte, model.predict_proba(xte)[:, 1])
    assert c_over["slope"] < 0.6
    assert c_over["ici"] > c["ici"]


def test_calibration_curve() -> None:
    p = np.array(REF["prob"]["overfit"])
    cc = stats.calibration_curve(Y, p, n_bins=10, level=0.9, grid=51)
    assert cc.smoothed.columns == ["prob", "observed"] and cc.smoothed.height == 51
    b = cc.binned
    assert b["n"].sum() == Y.size and b.height == 10
    assert set(b["n"].to_list()) == {100}
    row = b.row(0, named=True)
    lo, hi = stats.wilson_interval(row["events"], row["n"], 0.9)
    assert (row["low"], row["high"]) == (lo, hi)
    assert row["observed"] == row["events"] / row["n"]
    u = stats.calibration_curve(Y, p, n_bins=5, strategy="uniform")
    assert u.binned["n"].sum() == Y.size
    json.dumps(cc.as_dict())


def test_calibration_validation_and_clipping() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.calibration([0, 1, 1], [0.2, 1.2, 0.5])
    with pytest.raises(ValueError, match="lengths differ"):
        stats.calibration([0, 1, 1], [0.2, 0.5])
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200)
    p[0] = 0.0
    y = rng.binomial(1, p)
    with pytest.warns(RuntimeWarning, match="clipped"):
        c = stats.calibration(y, p)
    assert np.isfinite(c["slope"])


def test_calibration_deterministic() -> None:
    p = np.array(REF["prob"]["underfit"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = json.dumps(stats.calibration(Y, p))
    assert json.dumps(stats.calibration(Y, p)) == a


def brute_loess(x: np.ndarray, y: np.ndarray, a0: float, span: float) -> float:
    d = x - a0
    q = int(np.floor(x.size * span + 1e-5))
    h = np.sort(np.abs(d))[q - 1]
    w = np.clip(1 - (np.abs(d) / h) ** 3, 0, 1) ** 3
    design = np.column_stack([np.ones_like(d), d, d * d]) * np.sqrt(w)[:, None]
    return float(np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)[0][0])


def test_loess_against_weighted_least_squares_far_from_origin() -> None:
    rng = np.random.default_rng(3)
    x = 1000 + 0.01 * rng.normal(size=1500)
    y = np.sin((x - 1000) * 100) + 0.1 * rng.normal(size=1500)
    at = x[::29]
    fit = loess(x, y, at, span=0.1)
    ref = [brute_loess(x, y, a, 0.1) for a in at]
    np.testing.assert_allclose(fit, ref, atol=1e-9)


def test_knot_approximation_for_large_n() -> None:
    rng = np.random.default_rng(4)
    p = expit(rng.normal(size=3000))
    y = rng.binomial(1, expit(1.5 * logit(p)))
    exact = stats.calibration(y, p, max_points=10**6)
    approx = stats.calibration(y, p)
    for key in ("ici", "e50", "e90"):
        assert approx[key] == pytest.approx(exact[key], abs=2e-4)
