"""The model matrix of a formula against R's model.matrix on nwtco (names, order, values, term groups),
knots and levels learned on training rows only, unseen levels, and a skops round trip."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from formula_levels import LEVELS

from analytics.models.classical import regression_preprocessor
from analytics.models.data import Columns
from analytics.models.formula import DesignError, RegressionDesign


def _r_names(names: list[str]) -> list[str]:
    # R has no C(x, ref = ...): the fixture uses relevel(stage, "III"), which names its columns so
    return [n.replace('relevel(stage, "III")', "stage") for n in names]


def test_model_matrices_equal_r(reference: dict[str, Any], nwtco: pd.DataFrame) -> None:
    shown = reference["shown_rows"]
    for case in reference["matrices"]:
        design = RegressionDesign(case["formula"], LEVELS).fit(nwtco)
        X = design.transform(nwtco)[shown]
        assert list(design.get_feature_names_out()) == _r_names(case["names"]), case["formula"]
        np.testing.assert_allclose(X, np.asarray(case["values"]).T, rtol=1e-12, atol=1e-10, err_msg=case["formula"])
        # R's assign attribute: the term (1-based) of each column
        assign = np.empty(X.shape[1], dtype=int)
        for i, term in enumerate(design.terms_()):
            assign[list(term.columns)] = i + 1
        assert assign.tolist() == case["assign"], case["formula"]


def test_terms_group_columns_and_flag_nonlinear_ones(nwtco: pd.DataFrame) -> None:
    design = RegressionDesign("histol + stage + rcs(age, 4) + histol:stage", LEVELS).fit(nwtco)
    terms = {t.label: t for t in design.terms_()}
    assert list(terms) == ["histol", "stage", "rcs(age, 4)", "histol:stage"]
    assert terms["rcs(age, 4)"].columns == (4, 5, 6) and terms["rcs(age, 4)"].nonlinear == (5, 6)
    assert terms["histol:stage"].variables == ("histol", "stage") and terms["stage"].nonlinear == ()
    crossed = {t.label: t for t in RegressionDesign("rcs(age, 3) * histol", LEVELS).fit(nwtco).terms_()}
    assert crossed["rcs(age, 3):histol"].columns == (3, 4) and crossed["rcs(age, 3):histol"].nonlinear == (4,)


def test_reference_level_from_key_formula_and_declared_order(nwtco: pd.DataFrame) -> None:
    first = RegressionDesign("stage", LEVELS).fit(nwtco)
    assert first.names_ == ["stageII", "stageIII", "stageIV"]
    keyed = RegressionDesign("stage", LEVELS, {"stage": "IV"}).fit(nwtco)
    assert keyed.names_ == ["stageI", "stageII", "stageIII"]
    formula = RegressionDesign('C(stage, ref = "II")', LEVELS, {"stage": "IV"}).fit(nwtco)  # the formula wins
    assert formula.names_ == ["stageI", "stageIII", "stageIV"]
    declared = RegressionDesign("stage", {"stage": ["IV", "III", "II", "I"]}).fit(nwtco)
    assert declared.names_ == ["stageIII", "stageII", "stageI"]
    undeclared = RegressionDesign("stage").fit(nwtco)  # sorted levels, the first the reference
    assert undeclared.names_ == ["stageII", "stageIII", "stageIV"]


def test_knots_are_learned_on_training_rows_only(nwtco: pd.DataFrame) -> None:
    nwtco = nwtco.iloc[:300]  # fewer rows than the whole cohort, so that three folds' quantiles differ
    rng = np.random.default_rng(0)
    folds = rng.permutation(len(nwtco)) % 3
    knots = []
    for k in range(3):
        train, held = nwtco[folds != k], nwtco[folds == k]
        design = RegressionDesign("histol + rcs(age, 5)", LEVELS).fit(train)
        before = dict(design.knots_)
        expected = np.quantile(train["age"], [0.05, 0.275, 0.5, 0.725, 0.95])
        np.testing.assert_allclose(before["age"], expected)
        design.transform(held)  # held-out rows are coded with the training knots and change nothing
        assert design.knots_ == before
        knots.append(before["age"])
        # the held-out basis is the basis at the training knots, not at knots of the held-out rows
        held_knots = RegressionDesign("rcs(age, 5)").fit(held).knots_["age"]
        assert held_knots != before["age"]
    assert len({tuple(k) for k in knots}) == 3


def test_unseen_level_gets_reference_coding(nwtco: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    train = nwtco[nwtco["stage"] != "IV"]
    design = RegressionDesign("stage + histol:stage", LEVELS).fit(train)
    # stage:histol without histol's main effect: stage coded by one column per level (R's rule)
    assert design.names_ == ["stageII", "stageIII", "stageI:histolUH", "stageII:histolUH", "stageIII:histolUH"]
    held = pd.DataFrame({"stage": ["IV", "II"], "histol": ["UH", "UH"], "age": [1.0, 2.0]})
    with caplog.at_level("WARNING", logger="cohortlab.models.formula"):
        X = design.transform(held)
    assert X[0].tolist() == [0.0] * 5 and X[1].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert "IV not seen on the training rows" in caplog.text


def test_fit_time_errors_name_the_variable(nwtco: pd.DataFrame) -> None:
    with pytest.raises(DesignError, match=r"rcs\(histol, 4\): histol is categorical"):
        RegressionDesign("rcs(histol, 4)").fit(nwtco)
    with pytest.raises(DesignError, match=r"rcs\(stage_n, 5\): stage_n has 4 distinct values"):
        RegressionDesign("rcs(stage_n, 5)").fit(nwtco.assign(stage_n=nwtco["stage"].map({"I": 1.0, "II": 2.0,
                                                                                         "III": 3.0, "IV": 4.0})))
    with pytest.raises(DesignError, match="reference level 'V' has no training rows"):
        RegressionDesign("stage", LEVELS, {"stage": "V"}).fit(nwtco)
    with pytest.raises(DesignError, match=r"C\(age\): age is numeric; declare it categorical"):
        RegressionDesign("C(age) + stage").fit(nwtco)
    with pytest.raises(DesignError, match="no column grade"):
        RegressionDesign("stage + grade").fit(nwtco)


def test_design_imputes_first_and_survives_a_skops_round_trip(nwtco: pd.DataFrame) -> None:
    from analytics.models.persist import _load_skops, dump_skops

    table = nwtco.copy()
    table.loc[[0, 5], "age"] = np.nan
    table.loc[[1, 7], "stage"] = np.nan
    columns = Columns(numeric=("age",), categorical=("histol", "stage"), levels=tuple((k, tuple(v)) for k, v in
                                                                                     LEVELS.items()),
                      formula="histol + stage + rcs(age, 4) + histol:stage")
    prep = regression_preprocessor(columns).fit(table)
    X = prep.transform(table)
    # the imputed rows carry the training median age and the most frequent stage
    median, mode = np.nanmedian(table["age"]), table["stage"].mode()[0]
    filled = table.fillna({"age": median, "stage": mode})
    np.testing.assert_array_equal(X, RegressionDesign(columns.formula, LEVELS).fit(filled).transform(filled))
    loaded = _load_skops(None, dump_skops(prep))  # type: ignore[arg-type]
    np.testing.assert_array_equal(loaded.transform(table), X)
    design = loaded.named_transformers_["design"].named_steps["design"]
    assert design.knots_ == prep.named_transformers_["design"].named_steps["design"].knots_
    assert [t.label for t in design.terms_()] == ["histol", "stage", "rcs(age, 4)", "histol:stage"]


def test_design_terms_cover_every_classifier_column_once(nwtco: pd.DataFrame) -> None:
    from analytics.models.formula import design_terms

    table = nwtco.assign(**{"score:img": np.linspace(0, 1, len(nwtco))})
    columns = Columns(numeric=("age", "score:img"), categorical=("histol", "stage"),
                      formula="histol * stage + rcs(age, 3)")
    prep = regression_preprocessor(columns, penalised=True).fit(table)
    names, terms = design_terms(prep)
    assert len(names) == prep.transform(table).shape[1] == 10
    assert sorted(j for t in terms for j in t.columns) == list(range(10))
    assert [t.label for t in terms] == ["histol", "stage", "rcs(age, 3)", "histol:stage", "score:img"]
    assert names[terms[2].columns[1]] == "rcs(age, 3)age'" and terms[2].nonlinear == (terms[2].columns[1],)


def test_a_factor_with_one_level_on_the_rows_adds_no_column(nwtco: pd.DataFrame) -> None:
    # an inner tuning fold can lack a rare level: the fit must go on, as R's model.matrix would fail to
    # (contrasts need two levels), with the factor's contrasts all zero on these rows
    train = nwtco[nwtco["histol"] == "FH"]
    design = RegressionDesign("histol + stage + rcs(age, 3)", LEVELS, {"histol": "UH"}).fit(train)
    assert design.names_ == ["stageII", "stageIII", "stageIV", "rcs(age, 3)age", "rcs(age, 3)age'"]
    assert design.reference_["histol"] == "FH"
    both = RegressionDesign("histol + stage + rcs(age, 3)", LEVELS).fit(nwtco)
    # the same stage and linear age columns (the spline's knots are learned on each fit's rows)
    np.testing.assert_array_equal(design.transform(nwtco)[:, :4], both.transform(nwtco)[:, 1:5])
    # a penalised formula pipeline fits on such rows (the grid's inner folds reach this)
    cols = Columns(numeric=("age",), categorical=("histol", "stage"), formula="histol + stage + age")
    prep = regression_preprocessor(cols, penalised=True).fit(train)
    assert prep.transform(nwtco).shape[1] == 4
