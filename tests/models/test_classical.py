"""The classical pipelines' parts, checked against hand computations and properties."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from analytics.models.classical import CalibratedSVC, EarlyStoppedXGB, build_pipeline
from analytics.models.data import Columns, ModelData
from analytics.models.learners import TabularLearner


@pytest.fixture(scope="module")
def bc() -> tuple[pd.DataFrame, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return pd.DataFrame(X[:200, :10], columns=[f"f{i}" for i in range(10)]), y[:200]


def _data(table: pd.DataFrame, columns: Columns) -> ModelData:
    return ModelData(tuple(f"p{i}" for i in range(len(table))), table=table, columns=columns)


def test_imputer_and_scaler_statistics_are_those_of_the_rows_fitted_on(bc: tuple) -> None:
    table, y = bc
    table = table.copy()
    table.iloc[[1, 7, 30], 0] = np.nan
    table["sex"] = np.where(np.arange(len(table)) % 3 == 0, "M", "F").astype(object)
    table.loc[[2, 5], "sex"] = np.nan
    cols = Columns(tuple(f"f{i}" for i in range(10)), (), ("sex",))
    rows = np.arange(120)
    pipe = build_pipeline("logistic", cols, {}, 0).fit(table.iloc[rows], y[rows])
    feats = pipe.named_steps["prep"].named_transformers_["features"]
    train = table.iloc[rows, :10].to_numpy()
    median = np.nanmedian(train, axis=0)
    np.testing.assert_allclose(feats.named_steps["impute"].statistics_, median)
    filled = np.where(np.isnan(train), median, train)
    np.testing.assert_allclose(feats.named_steps["scale"].mean_, filled.mean(axis=0))
    np.testing.assert_allclose(feats.named_steps["scale"].scale_, filled.std(axis=0))
    onehot = pipe.named_steps["prep"].named_transformers_["categorical"]
    assert onehot.named_steps["impute"].statistics_.tolist() == ["F"]  # the most frequent level in those rows
    # an unseen level at prediction time is all zeros, not an error
    new = table.iloc[:3].copy()
    new["sex"] = "X"
    assert pipe.named_steps["prep"].transform(new)[:, -2:].tolist() == [[0.0, 0.0]] * 3


def test_pca_is_fitted_on_the_scaled_training_rows(bc: tuple) -> None:
    table, y = bc
    cols = Columns(tuple(table.columns), (), ())
    pipe = build_pipeline("svm", cols, {"pca": 3}, 0).fit(table.iloc[:100], y[:100])
    pca = pipe.named_steps["prep"].named_transformers_["features"].named_steps["pca"]
    z = table.iloc[:100].to_numpy()
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    eig = np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1][:3]
    np.testing.assert_allclose(pca.explained_variance_, eig, rtol=1e-8)


def test_l1_penalty_zeroes_coefficients_that_l2_keeps(bc: tuple) -> None:
    table, y = bc
    cols = Columns(tuple(table.columns), (), ())
    coef = {}
    for penalty in ("l1", "l2"):
        learner = TabularLearner("logistic", {"penalty": penalty, "C": 0.05}, {"C": [0.05]}, 0).fit(_data(table, cols), y)
        coef[penalty] = learner.pipeline_.named_steps["clf"].coef_[0]
    assert (coef["l1"] == 0).sum() >= 5 and (coef["l2"] == 0).sum() == 0


def test_svm_probabilities_are_a_monotone_platt_map_of_the_decision_value(bc: tuple) -> None:
    table, y = bc
    X = (table.to_numpy() - table.to_numpy().mean(0)) / table.to_numpy().std(0)
    svc = CalibratedSVC(C=1.0, random_state=0).fit(X, y)
    d, p = svc.decision_function(X), svc.predict_proba(X)[:, 1]
    order = np.argsort(d)
    assert (np.diff(p[order]) >= 0).all() and p.min() > 0 and p.max() < 1
    # the Platt form p = 1 / (1 + exp(a d + b)) holds exactly for one (a, b), found by least squares on the logit
    a, b = np.linalg.lstsq(np.column_stack([d, np.ones_like(d)]), np.log(1 / p - 1), rcond=None)[0]
    np.testing.assert_allclose(p, 1 / (1 + np.exp(a * d + b)), rtol=1e-6)


def test_xgboost_stops_early_and_is_deterministic(bc: tuple) -> None:
    table, y = bc
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(len(y)) < 0.3, 1 - y, y)  # label noise makes many rounds overfit
    a = EarlyStoppedXGB(n_estimators=300, random_state=0).fit(table.to_numpy(), noisy)
    b = EarlyStoppedXGB(n_estimators=300, random_state=0).fit(table.to_numpy(), noisy)
    assert a.best_rounds_ < 300
    assert a.booster_.get_booster().num_boosted_rounds() == a.best_rounds_
    assert pickle.dumps(a.booster_) == pickle.dumps(b.booster_)


def test_unknown_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['kernal'\] for svm"):
        TabularLearner("svm", {"kernal": "rbf"}, {}, 0)
    with pytest.raises(ValueError, match=r"unknown grid parameter\(s\) \['depth'\] for xgboost"):
        TabularLearner("xgboost", {}, {"depth": [2, 3]}, 0)
    with pytest.raises(ValueError, match="penalty 'l3'"):
        TabularLearner("logistic", {"penalty": "l3"}, {}, 0)
