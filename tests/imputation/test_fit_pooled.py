"""The pooled model of an imputed fit equals ``mice::pool`` on the same completed data, and a non-regression model's
risk is the mean of its m fits' risks.

``rubin_glm.json`` / ``rubin_cox.json`` (``make_fixtures.R``) hold mice's own imputations of ``survival::pbc`` and
``survival::lung`` and ``mice::pool`` / ``summary()`` / ``D1`` of the glm and coxph fitted on them; they reach the
learner as ``ModelData.completions`` (imputations made elsewhere), so the learner fits and pools exactly those.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from analytics.impute import Settings, impute_new
from analytics.models import imputed, registry
from analytics.models.data import Columns, ModelData
from analytics.stats import rubin
from pipeline.config import Model
from pipeline.config_imputation import ImputationSettings

HERE = Path(__file__).parent
TOL = 1e-6


def _spec(body: dict[str, Any], m: int = 5) -> Model:
    spec = Model.model_validate(body)
    spec._imputation = ImputationSettings(method="mice", m=m, maxit=2)
    spec._imputation_seed = 11
    return spec


def _completions(fixture: dict[str, Any], columns: list[str], rename: dict[str, str]) -> list[pd.DataFrame]:
    long = pl.DataFrame(fixture["completed"]).rename(rename)
    out = []
    for i in sorted(long[".imp"].unique().to_list()):
        part = long.filter(pl.col(".imp") == i).sort(".id")
        out.append(pd.DataFrame({c: (part[c].cast(pl.String).to_numpy().astype(object) if part[c].dtype == pl.String
                                     else part[c].cast(pl.Float64).to_numpy()) for c in columns}))
    return out


def _assert_pool(table: pl.DataFrame, pool: dict[str, Any]) -> None:
    assert table["term"].to_list() == pool["term"]
    for ours, theirs in (("estimate", "estimate"), ("se", "std_error"), ("df", "df"), ("riv", "riv"),
                         ("lambda", "lambda"), ("fmi", "fmi"), ("ubar", "ubar"), ("b", "b"), ("t", "t"),
                         ("p", "p_value"), ("dfcom", "dfcom")):
        np.testing.assert_allclose(table[ours].to_numpy(), np.asarray(pool[theirs], dtype=float), rtol=TOL,
                                   atol=TOL, err_msg=ours)


def test_pooled_glm_equals_mice_pool_on_mices_imputations() -> None:
    fx = json.loads((HERE / "rubin_glm.json").read_text(encoding="utf-8"))
    numeric = ["age", "bili", "albumin", "chol", "platelet"]
    categorical = ["sex", "ascites", "stage"]
    order = ["age", "sex", "bili", "albumin", "chol", "platelet", "ascites", "stage"]
    tables = _completions(fx, order, {})
    y = pl.DataFrame(fx["completed"]).filter(pl.col(".imp") == 1).sort(".id")["dead"].to_numpy().astype(np.int64)
    formula = fx["formula"].split("~", 1)[1].strip()
    columns = Columns((), tuple(numeric), tuple(categorical),
                      (("sex", ("m", "f")), ("ascites", ("no", "yes")), ("stage", ("1", "2", "3", "4"))),
                      formula, (), tuple(order))
    ids = tuple(f"P{i:03d}" for i in range(len(y)))
    data = ModelData(ids, table=tables[0], columns=columns, completions=tuple(tables))
    spec = _spec({"name": "glm", "kind": "logistic", "formula": formula, "params": {"penalty": "none"}})
    learner = registry.build_learner(spec, 0)
    assert isinstance(learner, imputed.ImputedLearner)
    learner.fit(data, y)
    assert (learner.source_, learner.pooled_, learner.m) == ("from", "rubin", 5)
    _assert_pool(learner.tables_.coefficients, fx["pool"])
    # D1 of the stage factor (its three dummies), as mice::D1(fit1, fit0)
    d1 = learner.tables_.anova.filter(pl.col("row") == "stage").row(0, named=True)
    assert d1["method"] == "D1" and d1["df"] == fx["D1"]["df1"]
    for ours, theirs in (("statistic", "statistic"), ("df2", "df2"), ("p", "p"), ("riv", "riv")):
        assert d1[ours] == pytest.approx(fx["D1"][theirs], rel=TOL, abs=TOL), ours
    # the pooled coefficients are the model: its probability is expit of the pooled linear predictor
    clf = learner.model_fit_.pipeline_.steps[-1][1]
    np.testing.assert_array_equal(np.r_[clf.intercept_, clf.coef_[0]], learner.tables_.coefficients["estimate"])
    new = data.take(np.arange(5))
    per = learner.predict_imputed(new)
    design = learner.model_fit_.pipeline_[:-1]
    for i in range(5):
        eta = np.asarray(design.transform(tables[i].iloc[:5]), dtype=float) @ clf.coef_[0] + clf.intercept_[0]
        np.testing.assert_allclose(per[i], 1 / (1 + np.exp(-eta)), rtol=1e-12)
    np.testing.assert_array_equal(learner.predict_score(new), per.mean(axis=0))


def test_pooled_cox_equals_mice_pool_on_mices_imputations() -> None:
    fx = json.loads((HERE / "rubin_cox.json").read_text(encoding="utf-8"))
    rename = {"ph.karno": "ph_karno", "wt.loss": "wt_loss", "meal.cal": "meal_cal"}
    order = ["age", "sex", "ph_karno", "wt_loss", "meal_cal"]
    tables = _completions(fx, order, rename)
    first = pl.DataFrame(fx["completed"]).filter(pl.col(".imp") == 1).sort(".id")
    y = np.column_stack([first["time"].cast(pl.Float64).to_numpy(), first["status"].cast(pl.Float64).to_numpy()])
    formula = " + ".join(order)
    columns = Columns((), tuple(order), (), (), formula, (), ())
    data = ModelData(tuple(f"L{i:03d}" for i in range(len(y))), table=tables[0], columns=columns,
                     completions=tuple(tables))
    spec = _spec({"name": "cox", "kind": "cox", "formula": formula})
    learner = registry.build_learner(spec, 0).fit(data, y)
    assert learner.pooled_ == "rubin"
    pool = dict(fx["pool"])
    pool["term"] = [rename.get(t, t) for t in pool["term"]]
    _assert_pool(learner.tables_.coefficients, pool)
    # the pooled model's linear predictor uses the pooled coefficients
    np.testing.assert_array_equal(learner.model_fit_.model_.coef_, learner.tables_.coefficients["estimate"])


def _small(n: int = 80, seed: int = 3) -> tuple[ModelData, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(np.int64)
    marker = y * 1.0 + rng.normal(0, 1, n)
    marker[rng.random(n) < 0.3] = np.nan
    grade = np.array(rng.choice(["a", "b", "c"], n), dtype=object)
    grade[rng.random(n) < 0.15] = np.nan
    table = pd.DataFrame({"age": rng.normal(50, 10, n), "marker": marker, "grade": grade})
    columns = Columns((), ("age", "marker"), ("grade",))
    return ModelData(tuple(f"S{i:03d}" for i in range(n)), table=table, columns=columns), y


def test_a_non_regression_models_risk_is_the_mean_of_its_fits_risks() -> None:
    data, y = _small()
    spec = _spec({"name": "svm", "kind": "svm", "clinical": ["age", "marker", "grade"], "params": {"C": 1.0}}, m=3)
    learner = registry.build_learner(spec, 0)
    train, new = data.take(np.arange(60)), data.take(np.arange(60, 80))
    learner.fit(train, y[:60])
    assert learner.pooled_ == "mean_risk" and len({id(f) for f in learner.fits_}) == 3
    # each fit is the kind's own learner, fitted on its own completion of the training rows
    assert {type(f).__name__ for f in learner.fits_} == {"TabularLearner"}
    # new patients: imputed by chains fitted on the training rows without the outcome, then each fit scores
    # its own completion; the risk is the mean
    dev = learner.development_
    assert "label" not in dev.columns
    new_frame = imputed._chain_frame(new.table, ["age", "marker", "grade"])
    rows = np.flatnonzero(new_frame.select(pl.any_horizontal(pl.all().is_null())).to_series().to_numpy())
    imp = impute_new(dev, new_frame[rows.tolist()], Settings(m=3, maxit=2, seed=learner.chains_seed_),
                     ids=[new.patient_ids[i] for i in rows.tolist()])
    expected = []
    for i in range(3):
        table = new.table.copy()
        done = imp.complete(i + 1)
        for c in ("age", "marker", "grade"):
            col = table[c].to_numpy(copy=True)
            col[rows] = done[c].to_numpy() if c != "grade" else np.array(done[c].to_list(), dtype=object)
            table[c] = col
        expected.append(learner.fits_[i].predict_score(replace(new, table=table)))
    np.testing.assert_allclose(learner.predict_imputed(new), np.stack(expected), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(learner.predict_score(new), np.stack(expected).mean(axis=0))
    # a penalised or non-regression model's coefficients are not pooled with standard errors
    assert learner.tables_ is False


def test_rows_without_a_missing_value_need_no_chain_and_score_the_same() -> None:
    data, y = _small()
    spec = _spec({"name": "svm", "kind": "svm", "clinical": ["age", "marker", "grade"], "params": {"C": 1.0}}, m=3)
    learner = registry.build_learner(spec, 0).fit(data.take(np.arange(60)), y[:60])
    new = data.take(np.arange(60, 80))
    complete = np.flatnonzero(new.table.notna().all(axis=1).to_numpy())
    assert 0 < len(complete) < 20
    alone = learner.predict_imputed(new.take(complete))
    together = learner.predict_imputed(new)[:, complete]
    np.testing.assert_array_equal(alone, together)
    assert learner.completions(new.take(complete)) is None  # no chain ran


def test_spline_knots_come_once_from_the_observed_values() -> None:
    from analytics.models.formula import rcs_knots

    data, y = _small(120, 8)
    cols = replace(data.columns, formula="rcs(marker, 3) + age + grade")
    data = replace(data, columns=cols)
    spec = _spec({"name": "glm", "kind": "logistic", "formula": "rcs(marker, 3) + age + grade",
                  "params": {"penalty": "none"}}, m=3)
    learner = registry.build_learner(spec, 0).fit(data, y)
    observed = data.table["marker"].dropna().to_numpy()
    want = tuple(float(v) for v in rcs_knots(observed, 3, "marker"))
    for fit in learner.fits_:
        design = fit.pipeline_.named_steps["prep"].named_transformers_["design"].named_steps["design"]
        assert design.knots_["marker"] == want
    # the pooled table has one row per spline column, with Rubin's columns
    terms = learner.tables_.coefficients["term"].to_list()
    assert terms[:3] == ["(Intercept)", "rcs(marker, 3)marker", "rcs(marker, 3)marker'"]
    pooled = rubin.pool(np.stack([np.r_[f.pipeline_.steps[-1][1].intercept_, f.pipeline_.steps[-1][1].coef_[0]]
                                  for f in learner.fits_]),
                        np.stack([f.pipeline_.steps[-1][1].cov_ for f in learner.fits_]),
                        rubin.dfcom_glm(len(y), len(terms)), terms)
    np.testing.assert_array_equal(learner.tables_.coefficients["fmi"].to_numpy(), pooled.fmi)


def test_complete_training_data_run_no_chain_and_predict_as_the_kinds_own_learner() -> None:
    data, y = _small(90, 4)
    full = replace(data, table=data.table.assign(marker=data.table["marker"].fillna(0.5),
                                                 grade=data.table["grade"].fillna("a")))
    spec = _spec({"name": "glm", "kind": "logistic", "clinical": ["age", "marker", "grade"],
                  "params": {"penalty": "none"}}, m=3)
    learner = registry.build_learner(spec, 0).fit(full, y)
    assert learner.imputations_ == 0 and len({id(f) for f in learner.fits_}) == 1
    plain = registry._plain_learner(spec, 0).fit(full, y)
    # the same up to the rounding of a mean of m equal numbers
    np.testing.assert_allclose(learner.predict_score(full), plain.predict_score(full), rtol=1e-14, atol=0)
    # Rubin's rules on identical fits: no between-imputation variance, the single fit's standard errors
    table = learner.tables_.coefficients
    assert (table["b"] == 0).all() and (table["fmi"] < 0.05).all()
    np.testing.assert_allclose(table["se"].to_numpy(), plain.pipeline_.steps[-1][1].se_, rtol=1e-12)


def test_a_penalised_regressions_coefficients_are_the_flagged_mean_of_its_fits() -> None:
    from analytics.models.coefficients import regression_tables
    from analytics.models.pooling import POOLED_NOTE

    data, y = _small(90, 6)
    spec = _spec({"name": "ridge", "kind": "logistic", "clinical": ["age", "marker", "grade"],
                  "params": {"C": 1.0}}, m=3)
    learner = registry.build_learner(spec, 0).fit(data, y)
    assert learner.pooled_ == "mean_risk"
    table = learner.tables_.coefficients
    each = np.stack([regression_tables(f, data, y).coefficients["estimate"].to_numpy() for f in learner.fits_])
    np.testing.assert_allclose(table["estimate"].to_numpy(), each.mean(axis=0), rtol=1e-14)
    assert table["se"].null_count() == table.height and table["p"].null_count() == table.height
    assert table["penalised"].all() and set(table["note"].to_list()) == {POOLED_NOTE}
    assert learner.tables_.summary["pooled"] == "mean" and learner.tables_.anova is None


def test_image_feature_columns_stay_out_of_the_chains_and_are_median_imputed_by_the_pipeline() -> None:
    data, y = _small(80, 9)
    table = data.table.assign(**{"fs:mean:0": np.where(np.arange(80) % 5 == 0, np.nan, np.linspace(0, 1, 80))})
    columns = Columns(("fs:mean:0",), ("age", "marker"), ("grade",))
    data = ModelData(data.patient_ids, table=table[["fs:mean:0", "age", "marker", "grade"]], columns=columns)
    spec = _spec({"name": "svm", "kind": "svm", "clinical": ["age", "marker", "grade"], "features": ["fs"],
                  "params": {"C": 1.0}}, m=3)
    learner = registry.build_learner(spec, 0).fit(data.take(np.arange(60)), y[:60])
    assert learner.development_.columns == ["age", "marker", "grade"]
    done = learner.completions(data.take(np.arange(60, 80)))
    assert done is not None
    for t in done:  # clinical cells completed, the feature's gaps left to the pipeline's median
        assert t[["age", "marker", "grade"]].notna().all().all()
        np.testing.assert_array_equal(t["fs:mean:0"].isna().to_numpy(), (np.arange(60, 80) % 5 == 0))
    assert np.isfinite(learner.predict_score(data.take(np.arange(60, 80)))).all()
