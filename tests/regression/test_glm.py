"""MLLogistic against R's glm on survival::nwtco (fixture: regression_fixture.R), and the fits it refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from regression_helpers import design, fixture, outcome

from analytics.models.glm import EstimationError, MLLogistic
from analytics.stats import lr_test


@pytest.fixture(scope="module")
def full() -> MLLogistic:
    return MLLogistic().fit(design(), outcome())


def test_design_is_rs_model_matrix() -> None:
    x = design()
    sums = np.r_[x.shape[0], x.sum(axis=0)]
    np.testing.assert_allclose(sums, fixture()["glm"]["column_sums"], rtol=1e-13)


def test_coefficients_and_ses_equal_glm(full: MLLogistic) -> None:
    g = fixture()["glm"]
    beta = np.r_[full.intercept_, full.coef_[0]]
    assert full.converged_ and full.coef_.shape == (1, 10) and full.cov_.shape == (11, 11)
    np.testing.assert_allclose(beta, g["estimate"], rtol=0, atol=1e-8)
    # glm's vcov comes from its last IRLS weights, one iteration short of the maximum: 8.5e-7 off here
    np.testing.assert_allclose(full.se_, g["se"], rtol=0, atol=1e-6)
    assert full.loglik_ == pytest.approx(g["loglik"], abs=1e-8)
    assert -2 * full.loglik_null_ == pytest.approx(g["null_deviance"], abs=1e-8)


def test_equal_glm_converged_tightly(full: MLLogistic) -> None:
    g = fixture()["glm_tight"]  # glm(control = glm.control(epsilon = 1e-15)): R's own maximum
    np.testing.assert_allclose(np.r_[full.intercept_, full.coef_[0]], g["estimate"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(full.cov_, np.asarray(g["vcov"]), rtol=0, atol=1e-10)


def test_probabilities(full: MLLogistic) -> None:
    g = fixture()["glm_tight"]
    eta = np.c_[np.ones(len(outcome())), design()] @ np.asarray(g["estimate"])
    np.testing.assert_allclose(full.predict_proba(design())[:, 1], 1 / (1 + np.exp(-eta)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(full.decision_function(design()), eta, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("key", "small", "big"), [
    ("lr_factor", {"stage": False, "age": "linear", "interaction": False}, {"age": "linear", "interaction": False}),
    ("lr_spline", {"age": "linear", "interaction": False}, {"interaction": False}),
])
def test_lr_test_equals_anova(key: str, small: dict, big: dict) -> None:
    """anova(glm_small, glm_big, test = "LRT"): a 4-level factor adds 3 df, rcs(age, 4) over age adds 2."""
    ref = fixture()[key]
    y = outcome()
    fits = [MLLogistic().fit(design(**kw), y) for kw in (small, big)]
    assert -2 * fits[0].loglik_ == pytest.approx(ref["deviance_reduced"], abs=1e-8)
    assert -2 * fits[1].loglik_ == pytest.approx(ref["deviance_full"], abs=1e-8)
    df = fits[1].coef_.size - fits[0].coef_.size
    test = lr_test(y, fits[0].predict_proba(design(**small))[:, 1], fits[1].predict_proba(design(**big))[:, 1], df)
    assert test.df == ref["df"]
    assert test.statistic == pytest.approx(ref["statistic"], abs=1e-7)
    assert test.p == pytest.approx(ref["p"], rel=1e-6)


def _separated() -> tuple[pd.DataFrame, np.ndarray]:
    # marker >= 3 in every event and < 3 in every non-event: complete separation; age is noise
    x = pd.DataFrame({"age": [40.0, 55, 61, 38, 70, 47, 52, 66], "marker": [1.0, 2, 2.5, 1.5, 3, 4, 3.5, 5]})
    return x, np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_complete_separation_names_the_column() -> None:
    x, y = _separated()
    with pytest.raises(EstimationError) as err:
        MLLogistic().fit(x, y)
    msg = str(err.value)
    assert "\n" not in msg and "separation" in msg and "'marker'" in msg and "'age'" not in msg
    assert err.value.columns == (1,)


def test_quasi_separation_of_a_factor_level_names_it() -> None:
    """Every patient of level c has the event (quasi-complete: glm's coefficient runs off to +inf)."""
    rng = np.random.default_rng(3)
    n = 60
    level_b = (np.arange(n) % 3 == 1).astype(float)
    level_c = (np.arange(n) % 3 == 2).astype(float)
    age = rng.normal(50, 10, n)
    y = np.where(level_c == 1, 1, (rng.random(n) < 0.4).astype(int))
    with pytest.raises(EstimationError, match="'grade_c'") as err:
        MLLogistic(feature_names=["age", "grade_b", "grade_c"]).fit(np.c_[age, level_b, level_c], y)
    assert "'age'" not in str(err.value) and "'grade_b'" not in str(err.value)


def test_rank_deficient_design_names_the_aliased_column() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    x = pd.DataFrame({"a": a, "b": b, "a_plus_b": a + b})
    y = (rng.random(50) < 0.5).astype(int)
    with pytest.raises(EstimationError, match="rank-deficient design: 'a_plus_b' is a linear combination") as err:
        MLLogistic().fit(x, y)
    assert err.value.columns == (2,)
    # one-hot columns of every level besides an intercept: the last level is aliased, as in R
    levels = np.eye(3)[np.arange(50) % 3]
    with pytest.raises(EstimationError, match=r"x\[2\]"):
        MLLogistic().fit(levels, y)


def test_skops_round_trip(full: MLLogistic) -> None:
    from analytics.models.persist import _load_skops, dump_skops

    loaded = _load_skops(__import__("pathlib").Path("model.skops"), dump_skops(full))
    assert isinstance(loaded, MLLogistic)
    np.testing.assert_array_equal(loaded.predict_proba(design()), full.predict_proba(design()))
    np.testing.assert_array_equal(loaded.cov_, full.cov_)
    assert loaded.loglik_ == full.loglik_ and loaded.n_iter_ == full.n_iter_
