"""analytics.models.coefficients on fitted learners: a penalised fit's table is on the inputs' original scale
(its linear predictor, rebuilt from the table and the raw model matrix, is the learner's), a fit with image
features has none, and the lifelines-style text holds the table's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from analytics.models.coefficients import RegressionTables, regression_tables
from analytics.models.data import Columns, ModelData
from analytics.models.formula import RegressionDesign
from analytics.models.learners import TabularLearner
from analytics.models.survival import SurvivalLearner

N = 300
FORMULA = "grade + rcs(age, 3) + marker"


@pytest.fixture(scope="module")
def data() -> tuple[ModelData, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    age = rng.normal(60, 10, N).round(1)
    marker = rng.normal(5, 2, N)
    grade = rng.choice(["low", "mid", "high"], N)
    lp = -0.5 + 0.04 * (age - 60) + 0.4 * (marker - 5) + np.where(grade == "high", 0.8, 0.0)
    y = (rng.random(N) < 1 / (1 + np.exp(-lp))).astype(np.int64)
    time = rng.exponential(np.exp(-lp) * 50) + 0.1
    event = (rng.random(N) < 0.7).astype(np.int64)
    table = pd.DataFrame({"age": age, "marker": marker, "grade": pd.Series(grade, dtype=object)})
    columns = Columns(numeric=("age", "marker"), categorical=("grade",), levels=(("grade", ("low", "mid", "high")),),
                      formula=FORMULA)
    return ModelData(tuple(f"P{i}" for i in range(N)), table, columns), y, np.column_stack([time, event])


def _raw_design(table: pd.DataFrame) -> np.ndarray:
    """R's model matrix of FORMULA on ``table`` (unscaled), from the design alone."""
    design = RegressionDesign(FORMULA, {"grade": ["low", "mid", "high"]}).fit(table)
    return design.transform(table)


def test_penalised_logistic_table_is_on_the_original_scale(data) -> None:
    rows, y, _ = data
    learner = TabularLearner("logistic", {"C": 0.5}, {}, 0).fit(rows, y)
    tables = regression_tables(learner, rows, y)
    assert tables is not None and tables.penalised and tables.anova is None
    table = tables.coefficients
    assert table["term"].to_list() == ["(Intercept)", "grademid", "gradehigh", "rcs(age, 3)age", "rcs(age, 3)age'",
                                       "marker"]
    assert table["se"].is_null().all() and table["p"].is_null().all() and table["penalised"].all()
    beta = table["estimate"].to_numpy()
    lp = beta[0] + _raw_design(rows.table) @ beta[1:]
    np.testing.assert_allclose(lp, learner.pipeline_.decision_function(rows.table), rtol=0, atol=1e-9)
    assert tables.summary == {"n": N, "events": int(y.sum())}


def test_penalised_cox_table_is_on_the_original_scale(data) -> None:
    rows, _, surv = data
    learner = SurvivalLearner("cox", {"penalizer": 0.1}, {}, 0).fit(rows, surv)
    tables = regression_tables(learner, rows, surv)
    assert tables is not None and tables.penalised and tables.link == "cox"
    beta = tables.coefficients["estimate"].to_numpy()
    lp = _raw_design(rows.table) @ beta
    risk = learner.predict_score(rows)
    # the Cox linear predictor is defined up to a constant (its centring)
    np.testing.assert_allclose(lp - lp.mean(), risk - risk.mean(), rtol=0, atol=1e-9)


def test_unpenalised_cox_information_is_efron_hessian(data) -> None:
    """An unpenalised Cox table (scikit-survival's Newton fit, its SE from Efron's information at that fit)
    equals an independent Efron fit from zero (analytics.stats.cox_efron, itself equal to coxph; coxph's own
    numbers are checked through the study in test_clinical_only_run)."""
    from analytics.stats.competing_cox import cox_efron

    rows, _, surv = data
    learner = SurvivalLearner("cox", {}, {}, 0).fit(rows, surv)
    tables = regression_tables(learner, rows, surv)
    assert tables is not None and not tables.penalised and tables.anova is not None
    ref = cox_efron(_raw_design(rows.table), surv[:, 0], surv[:, 1])  # an independent Newton fit from zero
    np.testing.assert_allclose(tables.coefficients["estimate"], ref.coef, rtol=0, atol=1e-7)
    np.testing.assert_allclose(tables.coefficients["se"], ref.se, rtol=1e-6)
    assert tables.summary["lr_chisq"] == pytest.approx(2 * (ref.loglik[1] - ref.loglik[0]), abs=1e-6)
    assert tables.anova["row"].to_list() == ["grade", "age", " Nonlinear", "marker", "TOTAL"]


def test_image_features_get_no_table(data) -> None:
    rows, y, _ = data
    table = rows.table.assign(f0=np.random.default_rng(0).normal(size=N))
    cols = Columns(features=("f0",), numeric=("age",))
    with_features = ModelData(rows.patient_ids, table[["f0", "age"]], cols)
    learner = TabularLearner("logistic", {"C": 1.0}, {}, 0).fit(with_features, y)
    assert regression_tables(learner, with_features, y) is None


def test_text_and_files_round_trip(data) -> None:
    rows, y, _ = data
    learner = TabularLearner("logistic", {"penalty": "none"}, {}, 0).fit(rows, y)
    tables = regression_tables(learner, rows, y)
    assert tables is not None
    back = RegressionTables.from_files(tables.record(), tables.files())
    assert back is not None
    assert back.coefficients.equals(tables.coefficients) and back.anova.equals(tables.anova)
    text = back.text("m", "logistic")
    first = back.coefficients.row(1, named=True)
    assert f"{first['estimate']:.4f}" in text and "Wald tests per term (rms::anova)" in text
    assert f"AIC = {back.summary['aic']:.2f}" in text
    assert isinstance(back.coefficients, pl.DataFrame)
