"""Properties of analytics.stats.internal that need no R: bookkeeping, zero optimism when nothing is
learnt, determinism, .632+ and the location-shifted interval recomputed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from analytics.stats.calibrate import logistic_fit
from analytics.stats.internal import (
    bootstrap_indices,
    calibration_corrected,
    cv_indices,
    optimism,
    optimism_bootstrap,
)
from analytics.stats.resampling import Replicate


def data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    y = rng.binomial(1, expit(X @ np.array([-0.7, 1.0, 0.5, 0.0])))
    return X, y


def logistic(Xr, yr):
    beta = logistic_fit(Xr, yr.astype(float), tol=1e-13)
    return lambda Z: expit(Z @ beta)


def test_corrected_is_original_minus_mean_of_training_minus_test() -> None:
    X, y = data()
    res = optimism_bootstrap(logistic, X, y, B=25, seed=3)
    t = res.table
    # Emax is not a difference (rms puts it in the test, optimism and corrected columns alike)
    keep = [i for i, k in enumerate(t["index"]) if k != "Emax"]
    tr, te = res.training[:, keep].mean(axis=0), res.test[:, keep].mean(axis=0)
    np.testing.assert_allclose(t["optimism"].to_numpy()[keep], tr - te, rtol=0, atol=1e-14)
    np.testing.assert_allclose(t["corrected"].to_numpy()[keep], (t["original"] - t["optimism"]).to_numpy()[keep],
                               rtol=0, atol=1e-15)
    row = dict(zip(t["index"], t["corrected"], strict=True))
    # Emax is rms's: the largest gap of the corrected calibration line over p = 0, 0.0005, ..., 1
    p = np.linspace(0, 1, 2001)[1:-1]
    gap = np.abs(p - expit(row["Intercept"] + row["Slope"] * np.log(p / (1 - p)))).max()
    assert row["Emax"] == pytest.approx(gap, abs=1e-12)
    # an unpenalised logistic fit is calibrated on its own data, overfits elsewhere
    orig = dict(zip(t["index"], t["original"], strict=True))
    assert (orig["Intercept"], orig["Slope"]) == (0.0, 1.0)
    assert row["Slope"] < 1.0 and row["AUC"] < orig["AUC"]


def test_nothing_learnt_means_no_optimism() -> None:
    X, y = data(400, 1)
    p = logistic(X, y)(X)  # fixed scores, calibrated on these patients (ML fit)
    same = [Replicate(np.arange(y.size), p, p) for _ in range(3)]
    res = optimism(y, p, same)
    opt = res.table.filter(res.table["index"] != "Emax")["optimism"].to_numpy()
    np.testing.assert_allclose(opt, 0.0, atol=1e-9)
    # a procedure that ignores the data, on real bootstrap resamples: optimism ~ 0 (Monte Carlo only)
    reps = [Replicate(idx, p[idx], p) for idx in bootstrap_indices(y.size, 200, seed=2)]
    res = optimism(y, p, reps)
    row = dict(zip(res.table["index"], res.table["optimism"], strict=True))
    assert abs(row["AUC"]) < 0.005 and abs(row["B"]) < 0.003 and abs(row["Slope"]) < 0.05


def test_deterministic_and_failures_counted() -> None:
    X, y = data(200, 2)
    idx = bootstrap_indices(y.size, 12, seed=4)
    assert (idx == bootstrap_indices(y.size, 12, seed=4)).all()
    a = optimism_bootstrap(logistic, X, y, idx)
    b = optimism_bootstrap(logistic, X, y, idx.copy())
    assert a.table.write_json() == b.table.write_json()
    p = logistic(X, y)(X)
    reps = [Replicate(i, p[i], p) for i in idx] + [
        Replicate(idx[0], np.empty(0), np.empty(0), error="separation"),
        Replicate(idx[1], np.empty(0), np.empty(0), error="separation")]
    res = optimism(y, p, reps)
    assert (res.replicates, res.failed, res.reasons) == (14, 2, {"separation": 2})
    assert set(res.table["n"].to_list()) == {12}
    with pytest.raises(ValueError, match="unknown internal validation method"):
        optimism(y, p, reps, method="jackknife")  # type: ignore[arg-type]


def test_cv_folds_leave_every_row_out_once_per_repeat() -> None:
    train = cv_indices(103, k=5, repeats=3, seed=0)
    assert len(train) == 15
    for r in range(3):
        left = np.concatenate([np.setdiff1d(np.arange(103), t) for t in train[5 * r: 5 * r + 5]])
        assert np.array_equal(np.sort(left), np.arange(103))
    X, y = data(300, 5)
    res = optimism_bootstrap(logistic, X, y, cv_indices(300, 10, 2, seed=1), method="cv")
    t = dict(zip(res.table["index"], res.table["test"], strict=True))
    # the cross-validated AUC is the mean of the fold AUCs, each on its own left-out rows
    from sklearn.metrics import roc_auc_score

    aucs = []
    for tr in cv_indices(300, 10, 2, seed=1):
        out = np.setdiff1d(np.arange(300), tr)
        aucs.append(roc_auc_score(y[out], logistic(X[tr], y[tr])(X[out])))
    assert t["AUC"] == pytest.approx(np.mean(aucs), abs=1e-12)


def test_632plus_by_hand() -> None:
    X, y = data(150, 6)
    n = y.size
    idx = bootstrap_indices(n, 30, seed=7)
    res = optimism_bootstrap(logistic, X, y, idx, method=".632+")
    row = {k: (o, c) for k, o, c in zip(res.table["index"], res.table["original"],
                                        res.table["corrected"], strict=True)}
    p = logistic(X, y)(X)
    fits = [logistic(X[i], y[i])(X) for i in idx]
    # Brier: Efron & Tibshirani (1997) eq. 32, leave-one-out bootstrap error per patient
    err = np.mean((y - p) ** 2)
    per = []
    for i in range(n):
        losses = [(y[i] - f[i]) ** 2 for f, s in zip(fits, idx, strict=True) if i not in s]
        if losses:
            per.append(np.mean(losses))
    err1 = np.mean(per)
    gamma = np.mean([(yi - pj) ** 2 for yi in y for pj in p])
    r = (min(err1, gamma) - err) / (gamma - err)
    w = 0.632 / (1 - 0.368 * r)
    assert row["B"][1] == pytest.approx((1 - w) * err + w * min(err1, gamma), abs=1e-12)
    # AUC: out-of-bag AUC per replicate, no-information AUC 1/2 (Sahiner et al. 2008)
    from sklearn.metrics import roc_auc_score

    app = roc_auc_score(y, p)
    auc1 = np.mean([roc_auc_score(y[o], f[o]) for f, s in zip(fits, idx, strict=True)
                    for o in [np.setdiff1d(np.arange(n), s)]])
    r = np.clip((app - auc1) / (app - 0.5), 0, 1)
    w = 0.632 / (1 - 0.368 * r)
    assert row["AUC"][1] == pytest.approx((1 - w) * app + w * auc1, abs=1e-12)
    assert row["Dxy"][1] == pytest.approx(2 * row["AUC"][1] - 1, abs=1e-12)
    assert np.isnan(row["Slope"][1])
    # its location-shifted interval: the training percentiles moved by corrected - original (predboot)
    k = res.table["index"].to_list().index("AUC")
    ci = res.interval()
    shift = row["AUC"][1] - row["AUC"][0]
    assert ci["low"][k] == pytest.approx(np.quantile(res.training[:, k], 0.025) + shift, abs=1e-15)
    assert ci["high"][k] == pytest.approx(np.quantile(res.training[:, k], 0.975) + shift, abs=1e-15)


def test_location_shifted_interval() -> None:
    X, y = data(250, 8)
    res = optimism_bootstrap(logistic, X, y, B=60, seed=9)
    ci = res.interval(0.9)
    names = res.table["index"].to_list()
    k = names.index("AUC")
    col = res.training[:, k]
    opt = res.table["optimism"][k]
    assert ci["low"][k] == pytest.approx(np.quantile(col, 0.05) - opt, abs=1e-15)
    assert ci["high"][k] == pytest.approx(np.quantile(col, 0.95) - opt, abs=1e-15)
    assert ci["low"][k] < ci["corrected"][k] < ci["high"][k]
    for name in ("Intercept", "Slope", "Emax"):
        assert np.isnan(ci["low"][names.index(name)])
    cv = optimism_bootstrap(logistic, X, y, cv_indices(250, 5, 1, 0), method="cv")
    assert cv.interval()["low"].is_nan().all()


def test_calibration_curve_bookkeeping() -> None:
    X, y = data(400, 10)
    p = logistic(X, y)(X)
    same = [Replicate(np.arange(y.size), p, p) for _ in range(2)]
    res = calibration_corrected(y, p, same)
    np.testing.assert_array_equal(res.curve["optimism"].to_numpy(), 0.0)
    np.testing.assert_array_equal(res.curve["corrected"].to_numpy(), res.curve["apparent"].to_numpy())
    a = calibration_corrected(y, p, [Replicate(i, logistic(X[i], y[i])(X[i]), logistic(X[i], y[i])(X))
                                     for i in bootstrap_indices(y.size, 5, 1)])
    assert a.mae > 0 and a.q90 >= a.mae * 0.5 and a.curve.height == 50


def test_survival_brier_at_horizons() -> None:
    rng = np.random.default_rng(11)
    n = 300
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-0.7 * x))
    c = rng.exponential(2.0, size=n)
    Y = np.column_stack([np.minimum(t, c), (t <= c).astype(float)])
    risk = 1 - np.exp(-np.exp(0.7 * x)[:, None] * np.array([[0.5, 1.0]]))
    same = [Replicate(np.arange(n), x, x, risk, risk)]
    res = optimism(Y, x, same, endpoint="survival", horizons=(0.5, 1.0), apparent_risk=risk)
    names = res.table["index"].to_list()
    assert names[-2:] == ["Brier(t=0.5)", "Brier(t=1)"]
    for k in (names.index("Dxy"), names.index("C"), len(names) - 2, len(names) - 1):
        assert res.table["optimism"][k] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="apparent_risk"):
        optimism(Y, x, same, endpoint="survival", horizons=(0.5,))
