"""Coefficient tables, rms::anova Wald tests and model summaries against R (fixture: regression_fixture.R)."""

from __future__ import annotations

import numpy as np
import pytest
from regression_helpers import TERMS, TERMS_NONLINEAR_INTERACTION, TERMS_TWO_INTERACTIONS, design, fixture, outcome

from analytics.models.glm import MLLogistic
from analytics.stats.coefficients import coefficient_table, model_summary, term_wald, unstandardise


@pytest.fixture(scope="module")
def full() -> MLLogistic:
    return MLLogistic().fit(design(), outcome())


def _glm_table(fit: MLLogistic):
    g = fixture()["glm"]
    return coefficient_table(g["names"], np.r_[fit.intercept_, fit.coef_[0]], fit.cov_, link="logit")


def test_logistic_table_equals_summary_glm(full: MLLogistic) -> None:
    g = fixture()["glm"]
    table = _glm_table(full)
    assert table["term"].to_list() == g["names"]
    np.testing.assert_allclose(table["estimate"], g["estimate"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["se"], g["se"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["z"], g["z"], rtol=0, atol=1e-4)  # z inherits glm's SE (see test_glm)
    # β ± 1.96 SE: glm's SE error (< 1e-6) times 1.96
    np.testing.assert_allclose(np.log(table["ci_low"]), g["ci_low"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.log(table["ci_high"]), g["ci_high"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(table["p"], g["p"], rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(table["odds_ratio"], np.exp(g["estimate"]), rtol=1e-8)
    assert not table["penalised"].any()
    tight = fixture()["glm_tight"]  # at R's own converged maximum everything agrees far below 1e-6
    np.testing.assert_allclose(table["se"], tight["se"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(table["z"], tight["z"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["p"], tight["p"], rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(np.log(table["ci_low"]), tight["ci_low"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.log(table["ci_high"]), tight["ci_high"], rtol=0, atol=1e-10)


def test_logistic_table_on_glm_estimates_is_exact() -> None:
    """The table's arithmetic alone: R's coefficients and vcov in, summary(glm) + confint.default out."""
    g = fixture()["glm"]
    table = coefficient_table(g["names"], g["estimate"], np.asarray(g["vcov"]), link="logit")
    for col, key in (("se", "se"), ("z", "z")):
        np.testing.assert_allclose(table[col], g[key], rtol=1e-10)
    np.testing.assert_allclose(table["p"], g["p"], rtol=1e-9)
    np.testing.assert_allclose(np.log(table["ci_low"]), g["ci_low"], rtol=1e-10)
    np.testing.assert_allclose(np.log(table["ci_high"]), g["ci_high"], rtol=1e-10)


def test_cox_table_equals_summary_coxph() -> None:
    c = fixture()["coxph"]
    table = coefficient_table(c["names"], c["estimate"], np.asarray(c["vcov"]), link="cox", intercept=False)
    assert "hazard_ratio" in table.columns and "odds_ratio" not in table.columns
    for col, key in (("hazard_ratio", "hr"), ("ci_low", "hr_low"), ("ci_high", "hr_high"), ("se", "se"), ("z", "z"),
                     ("p", "p")):
        np.testing.assert_allclose(table[col], c[key], rtol=1e-9)


def test_lifelines_efron_fit_at_coxphs_maximum() -> None:
    """lifelines' Efron partial likelihood, its information and so the table agree with coxph at coxph's
    estimate; lifelines does not reach that maximum from zero on this spline design (see the report)."""
    import pandas as pd
    from lifelines import CoxPHFitter

    c = fixture()["coxph"]
    x = design()
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])])
    frame["time"], frame["event"] = fixture_time(), outcome()
    start = np.asarray(c["estimate"]) * x.std(axis=0, ddof=1)  # lifelines iterates on standardised columns
    fit = CoxPHFitter().fit(frame, "time", "event", initial_point=start, fit_options={"precision": 1e-12})
    np.testing.assert_allclose(fit.params_.to_numpy(), c["estimate"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.standard_errors_.to_numpy(), c["se"], rtol=0, atol=1e-9)
    assert fit.log_likelihood_ == pytest.approx(c["loglik"], abs=1e-8)
    table = coefficient_table(c["names"], fit.params_.to_numpy(), fit.variance_matrix_.to_numpy(), link="cox",
                              intercept=False)
    np.testing.assert_allclose(table["p"], c["p"], rtol=1e-6)
    np.testing.assert_allclose(table["ci_high"], c["hr_high"], rtol=1e-8)


def fixture_time() -> np.ndarray:
    from regression_helpers import data

    return data()["edrel"].to_numpy().astype(np.float64)


@pytest.mark.parametrize(("key", "intercept", "terms"), [
    ("lrm", True, TERMS), ("cph", False, TERMS), ("cph_tight", False, TERMS),
    ("lrm_nonlinear_interaction", True, TERMS_NONLINEAR_INTERACTION),
    ("lrm_two_interactions", True, TERMS_TWO_INTERACTIONS),
])
def test_term_wald_equals_rms_anova(key: str, intercept: bool, terms) -> None:
    r = fixture()[key]
    beta, cov = np.asarray(r["estimate"]), np.asarray(r["vcov"])
    if intercept:
        beta, cov = beta[1:], cov[1:, 1:]
    table = term_wald(beta, cov, terms)
    a = r["anova"]
    assert table["row"].to_list() == a["rows"]
    np.testing.assert_allclose(table["chisq"], a["chisq"], rtol=1e-9)
    assert table["df"].to_list() == [int(d) for d in a["df"]]
    # anova.rms computes P as 1 - pchisq(...), exact only to ~1e-16 absolute (tiny p-values print as 0 there)
    np.testing.assert_allclose(table["p"], a["p"], rtol=1e-6, atol=1e-15)


def test_term_wald_of_our_fit_equals_anova_lrm(full: MLLogistic) -> None:
    a = fixture()["lrm"]["anova"]
    table = term_wald(full.coef_[0], full.cov_[1:, 1:], TERMS)
    np.testing.assert_allclose(table["chisq"], a["chisq"], rtol=1e-6)


def test_model_summary_equals_glm(full: MLLogistic) -> None:
    g, lrm = fixture()["glm"], fixture()["lrm"]
    s = model_summary(g["n"], g["events"], full.loglik_, full.loglik_null_, 10, link="logit")
    assert s["aic"] == pytest.approx(g["aic"], abs=1e-7)
    assert s["null_deviance"] == pytest.approx(g["null_deviance"], abs=1e-8)
    assert s["residual_deviance"] == pytest.approx(g["deviance"], abs=1e-8)
    assert (s["null_df"], s["residual_df"]) == (g["df_null"], g["df_residual"])
    assert s["lr_chisq"] == pytest.approx(lrm["lr_statistic"], abs=1e-6)
    assert s["df"] == lrm["lr_df"] and (s["n"], s["events"]) == (4028, g["events"])


def test_model_summary_equals_coxph() -> None:
    c = fixture()["coxph"]
    s = model_summary(c["n"], c["events"], c["loglik"], c["loglik_null"], 10, link="cox")
    assert s["aic"] == pytest.approx(c["aic"], rel=1e-12)
    assert s["lr_chisq"] == pytest.approx(c["lr_statistic"], rel=1e-10)
    assert s["p"] == pytest.approx(c["lr_p"], rel=1e-6)
    assert "null_deviance" not in s


def test_unstandardise_recovers_the_raw_fit(full: MLLogistic) -> None:
    """Maximum likelihood is equivariant: a fit on standardised columns, mapped back, is the fit on raw ones."""
    x = design()
    mean, sd = x.mean(axis=0), x.std(axis=0)
    z = MLLogistic().fit((x - mean) / sd, outcome())
    beta, cov = unstandardise(np.r_[z.intercept_, z.coef_[0]], mean, sd, z.cov_)
    np.testing.assert_allclose(beta, np.r_[full.intercept_, full.coef_[0]], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(cov, full.cov_, rtol=1e-7, atol=1e-12)
    # without an intercept (Cox): only the scale changes
    b, v = unstandardise([2.0, -1.0], [5.0, 1.0], [2.0, 4.0], np.diag([4.0, 16.0]), intercept=False)
    np.testing.assert_allclose(b, [1.0, -0.25])
    np.testing.assert_allclose(v, np.diag([1.0, 1.0]))


def test_penalised_table_has_no_inference() -> None:
    table = coefficient_table(["(Intercept)", "age"], [0.5, 0.1], None, penalised=True)
    assert table["penalised"].all() and table["se"].null_count() == 2 and table["p"].null_count() == 2
    np.testing.assert_allclose(table["odds_ratio"], np.exp([0.5, 0.1]))
    with pytest.raises(ValueError, match="covariance"):
        coefficient_table(["age"], [0.1], None)
