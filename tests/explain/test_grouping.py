"""Grouping SHAP values into input blocks: hand-computed cases, labels, and recovery of a known signal."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analytics.explain.grouping import group_of, group_values, importance, labels_for, make_grouping
from analytics.explain.shap_values import explain_pipeline
from analytics.models.classical import build_pipeline

from explain_helpers import signal_table


def test_group_of_names_blocks_scores_and_variables() -> None:
    assert group_of("resnet50:mean:17") == "resnet50:mean"
    assert group_of("score:ct_svm") == "score:ct_svm"
    assert group_of("age") == "age"
    assert group_of("odd:name", feature_columns=["odd:name"]) == "odd"


def test_group_values_sums_within_groups_in_first_appearance_order() -> None:
    g = make_grouping(["b:mean:0", "age", "b:mean:1", "score:m", "b:mean:2"])
    assert g.group_names == ("b:mean", "age", "score:m")
    v = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, 0.5, 1.0, -2.0, 0.0]])
    np.testing.assert_array_equal(group_values(v, g), [[9.0, 2.0, 4.0], [0.0, 0.5, -2.0]])
    # importance is the mean absolute grouped value: cancellation inside a patient counts, across patients not
    np.testing.assert_array_equal(importance(group_values(v, g)), [4.5, 1.25, 3.0])
    with pytest.raises(ValueError, match="5 features"):
        group_values(v[:, :4], g)


def test_labels_use_variable_labels_units_and_feature_names() -> None:
    variables = pl.DataFrame({"name": ["age", "sex"], "label": ["Age", "Sex"], "unit": ["years", None]})
    feature_sets = {"rad": {"encoder": "radiomics", "weights": "none",
                            "params": '{"feature_names": ["original_firstorder_Mean", "original_shape_Sphericity"]}'},
                    "wsi": {"encoder": "resnet18", "weights": "random", "params": "{}"}}
    labels = labels_for(["age", "sex", "rad:mean:1", "wsi:max:3", "wsi:max", "score:fusion"], variables, feature_sets)
    assert labels == {
        "age": "Age (years)", "sex": "Sex", "rad:mean:1": "original_shape_Sphericity (mean)",
        "wsi:max:3": "wsi:max #3", "wsi:max": "wsi (resnet18, random weights), max-pooled",
        "score:fusion": "fusion score",
    }


@pytest.mark.parametrize("kind,params", [("logistic", {"C": 0.1}), ("xgboost", {"n_estimators": 60}),
                                         ("svm", {"C": 0.3, "kernel": "linear"})])
def test_the_signal_variable_and_block_get_the_largest_grouped_importance(kind: str, params: dict) -> None:
    """Outcome from ``marker`` and the 4-d ``sig`` block only; noise: 3 clinical variables and a 30-d block."""
    table, y, columns = signal_table(n=300, noise_dims=30, seed=11)
    train, rows = table.iloc[:240].reset_index(drop=True), table.iloc[240:].reset_index(drop=True)
    pipe = build_pipeline(kind, columns, params, 0).fit(train, y[:240])
    e = explain_pipeline(pipe, train, rows, columns.features, columns.categorical, nsamples=128, background=20)
    g = e.grouped()
    imp = dict(zip(g.features, importance(g.values)))
    assert set(imp) == {"sig:mean", "noise:mean", "marker", "age", "esr", "sex", "stage"}
    ranked = sorted(imp, key=imp.get, reverse=True)
    assert set(ranked[:2]) == {"sig:mean", "marker"}, imp
    # clearly ahead, not by a hair
    assert min(imp["sig:mean"], imp["marker"]) > 1.5 * max(v for k, v in imp.items() if k not in ("sig:mean", "marker"))


def test_waterfall_labels_blocks_without_a_value() -> None:
    import numpy as np

    from analytics.explain.plots import _shown_value

    block = np.array([None, None, None], dtype=object)
    clinical = np.array([24.6, None, 3.0], dtype=object)
    assert _shown_value(block, 0) == ""
    assert _shown_value(clinical, 0) == " = 24.6"
    assert _shown_value(clinical, 1) == " = missing"
