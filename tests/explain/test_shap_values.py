"""SHAP values of fitted pipelines: additivity for every explainer, and agreement with Shapley values by brute force.

The reference is the definition: with players = the model's input columns
(or blocks of them) and the interventional value function
``v(S) = mean_b f(x_S, b_not_S)`` over the background rows ``b``, the Shapley
value of player j is ``sum_S |S|!(M-|S|-1)!/M! (v(S + j) - v(S))``,
enumerated over all coalitions here (small M). Tree (interventional), linear
and Kernel SHAP with full enumeration must reproduce it exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import polars as pl
import pytest

from analytics.explain.shap_values import (
    ADDITIVITY_TOLERANCE,
    ExplainError,
    explain_function,
    explain_pipeline,
    units_for,
)
from analytics.models.classical import build_pipeline
from analytics.models.data import Columns

from explain_helpers import signal_table


def brute_shapley(f: Callable[[pd.DataFrame], np.ndarray], x: pd.Series, background: pd.DataFrame,
                  players: Sequence[Sequence[str]]) -> np.ndarray:
    """Exact Shapley values of ``f`` at ``x`` with the interventional value function over ``background``."""
    m, nb = len(players), len(background)
    subsets = [frozenset(s) for r in range(m + 1) for s in itertools.combinations(range(m), r)]
    parts = []
    for s in subsets:  # every coalition's hybrid rows, predicted in one call
        z = background.copy()
        for k in s:
            for col in players[k]:
                z[col] = [x[col]] * nb
        parts.append(z)
    out = np.asarray(f(pd.concat(parts, ignore_index=True)), dtype=np.float64).reshape(len(subsets), nb)
    v = dict(zip(subsets, out.mean(axis=1)))
    phi = np.zeros(m)
    for j in range(m):
        for s in subsets:
            if j not in s:
                weight = math.factorial(len(s)) * math.factorial(m - len(s) - 1) / math.factorial(m)
                phi[j] += weight * (v[s | {j}] - v[s])
    return phi


def _logit(pipe):  # noqa: ANN001, ANN202
    def f(t: pd.DataFrame) -> np.ndarray:
        p = np.clip(pipe.predict_proba(t)[:, 1], 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)
    return f


def _small(n: int = 120, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(2, 3, n), "c": rng.uniform(size=n)})
    y = (t["a"] + 0.3 * t["b"] - t["c"] + rng.normal(0, 0.7, n) > 0.5).astype(np.int64).to_numpy()
    return t, y


def test_tree_explainer_is_exact_interventional_shapley_of_the_log_odds() -> None:
    t, y = _small()
    cols = Columns((), ("a", "b", "c"), ())
    pipe = build_pipeline("xgboost", cols, {"n_estimators": 40, "max_depth": 3}, 0).fit(t.iloc[:100], y[:100])
    bg, rows = t.iloc[:30].reset_index(drop=True), t.iloc[100:106].reset_index(drop=True)
    e = explain_pipeline(pipe, bg, rows, max_background=30)
    assert e.explainer == "tree" and e.space == "log-odds"
    assert e.additivity_error() < ADDITIVITY_TOLERANCE
    np.testing.assert_allclose(e.output, _logit(pipe)(rows), atol=1e-5)
    for i in range(len(rows)):
        ref = brute_shapley(_logit(pipe), rows.iloc[i], bg, [["a"], ["b"], ["c"]])
        np.testing.assert_allclose(e.values[i], ref, atol=1e-4)


def test_linear_explainer_maps_pca_and_one_hot_back_to_input_columns() -> None:
    table, y, columns = signal_table(n=160, noise_dims=2)
    table = table.drop(columns=["esr", "age", "stage"])
    columns = Columns(columns.features, ("marker",), ("sex",))
    pipe = build_pipeline("logistic", columns, {"C": 0.5, "pca": 3}, 0).fit(table.iloc[:120], y[:120])
    bg, rows = table.iloc[:25].reset_index(drop=True), table.iloc[120:125].reset_index(drop=True)
    e = explain_pipeline(pipe, bg, rows, columns.features, columns.categorical, max_background=25)
    assert e.explainer == "linear" and e.space == "log-odds"
    assert "PCA" in e.method
    assert list(e.features) == list(table.columns)  # input columns, not components or indicators
    np.testing.assert_allclose(e.output, pipe.decision_function(rows), atol=1e-10)
    assert e.additivity_error() < 1e-9
    players = [[c] for c in table.columns]
    for i in range(len(rows)):
        ref = brute_shapley(pipe.decision_function, rows.iloc[i], bg, players)
        np.testing.assert_allclose(e.values[i], ref, atol=1e-8)


def test_kernel_explainer_with_full_enumeration_is_exact_shapley_of_the_probability() -> None:
    t, y = _small(seed=2)
    t["grade"] = np.random.default_rng(3).choice(["low", "mid", "high"], len(t)).astype(object)
    t.loc[4, "grade"] = np.nan
    cols = Columns((), ("a", "b", "c"), ("grade",))
    pipe = build_pipeline("svm", cols, {"C": 1.0}, 0).fit(t.iloc[:100], y[:100])
    bg, rows = t.iloc[:12].reset_index(drop=True), t.iloc[100:104].reset_index(drop=True)
    # k >= background rows: the background is the rows themselves, equally weighted
    e = explain_pipeline(pipe, bg, rows, (), ("grade",), background=50)
    assert e.explainer == "kernel" and e.space == "probability"
    assert e.additivity_error() < 1e-8
    np.testing.assert_allclose(e.output, pipe.predict_proba(rows)[:, 1], atol=1e-12)
    prob = lambda z: pipe.predict_proba(z)[:, 1]  # noqa: E731
    bg_imputed = bg.copy()
    bg_imputed.loc[bg_imputed["grade"].isna(), "grade"] = bg["grade"].mode()[0]
    for i in range(len(rows)):
        ref = brute_shapley(prob, rows.iloc[i], bg_imputed, [["a"], ["b"], ["c"], ["grade"]])
        np.testing.assert_allclose(e.values[i], ref, atol=1e-8)


def test_kernel_explainer_treats_large_blocks_as_single_players() -> None:
    table, y, columns = signal_table(n=150, noise_dims=25, missing=False)
    table = table.drop(columns=["age", "esr", "sex", "stage"])
    columns = Columns(columns.features, ("marker",), ())
    pipe = build_pipeline("svm", columns, {"C": 1.0, "kernel": "linear"}, 0).fit(table.iloc[:110], y[:110])
    bg, rows = table.iloc[:10].reset_index(drop=True), table.iloc[110:113].reset_index(drop=True)
    e = explain_pipeline(pipe, bg, rows, columns.features, (), background=50, max_units=10)
    assert list(e.features) == ["sig:mean", "noise:mean", "marker"]
    assert e.additivity_error() < 1e-8
    players = [list(columns.features[:4]), list(columns.features[4:]), ["marker"]]
    prob = lambda z: pipe.predict_proba(z)[:, 1]  # noqa: E731
    for i in range(len(rows)):
        np.testing.assert_allclose(e.values[i], brute_shapley(prob, rows.iloc[i], bg, players), atol=1e-8)


def test_kmeans_background_keeps_additivity_and_is_seeded() -> None:
    table, y, columns = signal_table(n=200, noise_dims=6)
    pipe = build_pipeline("svm", columns, {"C": 1.0}, 0).fit(table.iloc[:150], y[:150])
    bg, rows = table.iloc[:150].reset_index(drop=True), table.iloc[150:170].reset_index(drop=True)
    a = explain_pipeline(pipe, bg, rows, columns.features, columns.categorical, background=20, nsamples=64,
                         max_units=30, seed=5)
    b = explain_pipeline(pipe, bg, rows, columns.features, columns.categorical, background=20, nsamples=64,
                         max_units=30, seed=5)
    assert len(a.features) == len(columns.all)  # 15 players, sampled coalitions
    assert a.additivity_error() < 1e-8
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.base_values, b.base_values)


@pytest.mark.parametrize("kind", ["logistic", "xgboost", "svm"])
def test_additivity_on_mixed_inputs_with_missing_values(kind: str) -> None:
    table, y, columns = signal_table(n=180, noise_dims=12)
    params = {"n_estimators": 40} if kind == "xgboost" else {"C": 1.0}
    pipe = build_pipeline(kind, columns, params, 0).fit(table.iloc[:140], y[:140])
    rows = table.iloc[140:].reset_index(drop=True)
    e = explain_pipeline(pipe, table.iloc[:140].reset_index(drop=True), rows, columns.features, columns.categorical,
                         nsamples=128)
    assert e.explainer == {"logistic": "linear", "xgboost": "tree", "svm": "kernel"}[kind]
    assert e.additivity_error() < ADDITIVITY_TOLERANCE
    prob = pipe.predict_proba(rows)[:, 1]
    expected = np.log(prob) - np.log1p(-prob) if e.space == "log-odds" else prob
    np.testing.assert_allclose(e.output, expected, atol=1e-5)
    g = e.grouped()
    assert np.allclose(g.values.sum(axis=1), e.values.sum(axis=1))
    assert g.additivity_error() < ADDITIVITY_TOLERANCE


def test_pca_pipeline_with_trees_falls_back_to_the_whole_pipeline() -> None:
    table, y, columns = signal_table(n=150, noise_dims=4, missing=False)
    pipe = build_pipeline("xgboost", columns, {"n_estimators": 30, "pca": 3}, 0).fit(table.iloc[:120], y[:120])
    rows = table.iloc[120:130].reset_index(drop=True)
    e = explain_pipeline(pipe, table.iloc[:120].reset_index(drop=True), rows, columns.features,
                         columns.categorical, nsamples=64)
    assert e.explainer == "kernel" and e.space == "probability"
    assert e.additivity_error() < 1e-8
    with pytest.raises(ExplainError, match="tree explainer"):
        explain_pipeline(pipe, table.iloc[:120].reset_index(drop=True), rows, columns.features,
                         columns.categorical, explainer="tree")


def test_ensemble_scores_by_kernel_match_the_voting_formula() -> None:
    rng = np.random.default_rng(0)
    train, rows = rng.uniform(size=(15, 3)), rng.uniform(size=(5, 3))
    w = np.array([0.5, 0.3, 0.2])
    e = explain_function(lambda s: s @ w, train, rows, ["score:a", "score:b", "score:c"], [f"P{i}" for i in range(5)],
                         ["external"] * 5, background=100)
    # for a weighted mean, Shapley value = w_j (s_j - mean over the background of s_j)
    np.testing.assert_allclose(e.values, w * (rows - train.mean(axis=0)), atol=1e-10)
    assert e.additivity_error() < 1e-10
    assert e.grouping.label("score:a") == "score:a"  # no labels given


def test_units_for_blocks() -> None:
    feats = ["x:mean:0", "x:mean:1", "y:max:0", "age", "score:m"]
    assert units_for(feats, feats[:3], 10) == ([[0], [1], [2], [3], [4]], feats)
    assert units_for(feats, feats[:3], 3) == ([[0, 1], [2], [3], [4]], ["x:mean", "y:max", "age", "score:m"])


def test_frame_is_long_and_complete() -> None:
    t, y = _small(n=60)
    pipe = build_pipeline("logistic", Columns((), ("a", "b", "c"), ()), {}, 0).fit(t.iloc[:50], y[:50])
    e = explain_pipeline(pipe, t.iloc[:50].reset_index(drop=True), t.iloc[50:].reset_index(drop=True),
                         patient_ids=[f"P{i}" for i in range(10)], splits=["internal"] * 10)
    f = e.frame()
    assert f.height == 30 and set(f["feature"]) == {"a", "b", "c"}
    sums = f.group_by("patient_id").agg(pl.col("value").sum(), pl.col("base_value").first(), pl.col("output").first())
    np.testing.assert_allclose((sums["base_value"] + sums["value"]).to_numpy(), sums["output"].to_numpy(), atol=1e-10)


@pytest.mark.parametrize("kind", ["logistic", "xgboost", "svm"])
def test_no_rows_to_explain_gives_an_empty_explanation(kind: str) -> None:
    t, y = _small(n=80)
    pipe = build_pipeline(kind, Columns((), ("a", "b", "c"), ()), {}, 0).fit(t.iloc[:60], y[:60])
    e = explain_pipeline(pipe, t.iloc[:60].reset_index(drop=True), t.iloc[:0])
    assert e.values.shape == (0, 3) and e.additivity_error() == 0.0 and e.frame().height == 0
