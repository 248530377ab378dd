"""analytics.stats.nested_cv: equality with an independent R computation (R's folds and glm fits,
tests/internal/nested_cv_fixture.R), the AUC's per-patient terms against brute-force DeLong components,
and properties of the plan and the interval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from analytics.stats.calibrate import logistic_fit
from analytics.stats.internal import replicates_from
from analytics.stats.nested_cv import (
    auc_terms,
    nested_cv,
    nested_cv_from,
    nested_cv_plan,
    plan_from_folds,
)
from analytics.stats.resampling import Replicate
from analytics.stats.roc import auc

FIXTURE = Path(__file__).with_name("nested_cv.json")


def logistic(Xr, yr):
    beta = logistic_fit(Xr, yr.astype(float), tol=1e-13)
    return lambda Z: expit(Z @ beta)


def data(n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    y = rng.binomial(1, expit(X @ np.array([-0.8, 1.0, 0.4, 0.0])))
    return X, y


def test_equals_r_on_r_folds_and_glm() -> None:
    fx = json.loads(FIXTURE.read_text())
    X, y = np.asarray(fx["X"], dtype=float), np.asarray(fx["y"])
    plan = plan_from_folds(fx["folds"])
    assert (plan.k, plan.folds.shape[0]) == (fx["k"], fx["repeats"])
    res = nested_cv(y, replicates_from(logistic, X, y, plan.indices()), plan, fx["level"])
    for row in res.iter_rows(named=True):
        ref = fx["results"][row["index"]]
        for key in ("estimate", "low", "high", "se", "cv", "ncv", "bias", "se_naive"):
            assert row[key] == pytest.approx(ref[key], abs=1e-8), (row["index"], key)


def test_auc_terms_mean_is_auc_and_variance_is_delong() -> None:
    rng = np.random.default_rng(4)
    y = rng.binomial(1, 0.3, size=57)
    s = np.round(rng.normal(size=57) + y, 1)  # ties on purpose
    psi = auc_terms(y, s)
    assert psi.mean() == pytest.approx(auc(y, s), abs=1e-14)
    # DeLong's components by brute force: V10 over cases, V01 over controls
    cases, ctrls = s[y == 1], s[y == 0]
    cmp = (cases[:, None] > ctrls[None, :]) + 0.5 * (cases[:, None] == ctrls[None, :])
    v10, v01 = cmp.mean(axis=1), cmp.mean(axis=0)
    m, n0 = cases.size, ctrls.size
    # sum of squares of the terms = N^2 (sum (V10 - A)^2 / m^2 + sum (V01 - A)^2 / n0^2)
    a = cmp.mean()
    expected = y.size ** 2 * (((v10 - a) ** 2).sum() / m ** 2 + ((v01 - a) ** 2).sum() / n0 ** 2)
    assert ((psi - a) ** 2).sum() == pytest.approx(expected, rel=1e-12)
    delong = v10.var(ddof=1) / m + v01.var(ddof=1) / n0
    # so var(terms) / N is DeLong's variance up to the (m-1)/m, (n0-1)/n0 factors
    assert psi.var() / y.size == pytest.approx(
        (m - 1) / m * v10.var(ddof=1) / m + (n0 - 1) / n0 * v01.var(ddof=1) / n0, rel=1e-12)
    assert psi.var() / y.size == pytest.approx(delong, rel=0.05)
    assert np.isnan(auc_terms(np.zeros(5, dtype=int), np.arange(5.0))).all()


def test_plan_folds_are_stratified_and_fits_leave_out_their_folds() -> None:
    _, y = data()
    plan = nested_cv_plan(y, k=5, repeats=4, seed=9)
    assert len(plan.fits) == 4 * (5 + 10)
    for r in range(4):
        for cls in (0, 1):
            counts = np.bincount(plan.folds[r, y == cls], minlength=5)
            assert counts.max() - counts.min() <= 1
    for i, (r, a, b) in enumerate(plan.fits):
        rows = plan.train_rows(i)
        left = np.setdiff1d(np.arange(y.size), rows)
        assert set(np.unique(plan.folds[r, left])) == ({a} if b < 0 else {a, b})
    again = nested_cv_plan(y, k=5, repeats=4, seed=9)
    np.testing.assert_array_equal(plan.folds, again.folds)
    assert not np.array_equal(plan.folds, nested_cv_plan(y, k=5, repeats=4, seed=10).folds)
    with pytest.raises(ValueError, match="at least 5 patients of each outcome"):
        nested_cv_plan(np.r_[np.ones(4, dtype=int), np.zeros(50, dtype=int)], k=5)


def test_a_procedure_that_learns_nothing_gives_the_fold_average_and_no_bias() -> None:
    """Every fit scores with the same fixed probabilities: the inner and outer terms are the same
    numbers, so the bias is 0, the Brier estimate is the plain Brier score and the AUC estimate the
    mean of the folds' AUCs (each fold is left out (k-1) times as an inner fold and once as an outer)."""
    X, y = data(300, 2)
    p = expit(X @ np.array([-0.8, 0.7, 0.0, 0.3]))
    plan = nested_cv_plan(y, k=4, repeats=3, seed=1)
    reps = [Replicate(rows, p[rows], p) for rows in plan.indices()]
    res = {r["index"]: r for r in nested_cv(y, reps, plan).iter_rows(named=True)}
    assert res["Brier"]["bias"] == pytest.approx(0.0, abs=1e-15)
    assert res["Brier"]["estimate"] == pytest.approx(np.mean((y - p) ** 2), abs=1e-15)
    fold_auc = [auc(y[f == j], p[f == j]) for f in plan.folds for j in range(4)]
    sizes = [int((f == j).sum()) for f in plan.folds for j in range(4)]
    assert res["AUC"]["estimate"] == pytest.approx(np.average(fold_auc, weights=sizes), abs=1e-14)
    assert res["AUC"]["bias"] == pytest.approx(0.0, abs=1e-14)


def test_interval_is_the_estimate_plus_minus_z_se_with_se_between_its_bounds() -> None:
    X, y = data(200, 5)
    plan = nested_cv_plan(y, k=5, repeats=2, seed=3)
    reps = replicates_from(logistic, X, y, plan.indices())
    for level in (0.9, 0.95):
        for r in nested_cv(y, reps, plan, level).iter_rows(named=True):
            z = norm.ppf(0.5 + level / 2)
            assert r["low"] == pytest.approx(r["estimate"] - z * r["se"], abs=1e-14)
            assert r["high"] == pytest.approx(r["estimate"] + z * r["se"], abs=1e-14)
            assert r["se_naive"] - 1e-15 <= r["se"] <= r["se_naive"] * math.sqrt(5) + 1e-15
            assert r["estimate"] == pytest.approx(r["ncv"] - (1 + 3 / 5) * (r["ncv"] - r["cv"]), abs=1e-14)


def test_failed_replicates_drop_their_outer_fold_and_bad_inputs_are_named() -> None:
    X, y = data(200, 6)
    plan = nested_cv_plan(y, k=3, repeats=2, seed=0)
    reps = replicates_from(logistic, X, y, plan.indices())
    # the first outer fit of repeat 0 fails: that (repeat, outer fold) is left out, the rest stays
    broken = [Replicate(reps[0].index, np.empty(0), np.empty(0), error="ValueError: no")] + reps[1:]
    res = nested_cv(y, broken, plan)
    assert res["failed"].to_list() == [1, 1]
    assert np.isfinite(res["estimate"].to_numpy()).all()
    with pytest.raises(ValueError, match="needs 12 replicates"):
        nested_cv(y, reps[:-1], plan)
    with pytest.raises(ValueError, match="plan is for 200 patients"):
        nested_cv(y[:-1], reps, plan)


def test_nested_cv_from_a_callable_is_plan_then_refit_then_nested_cv() -> None:
    X, y = data(150, 7)
    plan = nested_cv_plan(y, k=3, repeats=2, seed=4)
    direct = nested_cv(y, replicates_from(logistic, X, y, plan.indices()), plan)
    assert nested_cv_from(logistic, X, y, k=3, repeats=2, seed=4).equals(direct)
