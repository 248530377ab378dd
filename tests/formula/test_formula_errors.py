"""Bad formulas give one line naming the model and the formula: at load time where study.toml says enough
(syntax, unknown function with a "did you mean", knots outside 3..7, a spline of a declared category, formula
and clinical both given, a reference level not among the levels), when the cohort is read otherwise (a column
the cohort does not return, a spline of a category)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.cohort import load_cohort
from analytics.models.data import ModelInputError, assemble
from pipeline.config import ConfigError, Model, parse_study
from pipeline.formula import FormulaError, parse_formula


def _load(model: dict[str, Any], variables: dict[str, Any] | None = None) -> Model:
    data = {"study": {"name": "e"}, "manifests": {"patients": "p.csv"}, "models": [{"name": "m", **model}],
            "variables": variables or {"histol": {"levels": ["FH", "UH"]}, "age": {"type": "numeric"}}}
    return parse_study(data, Path(".")).models[0]


@pytest.mark.parametrize(("model", "message"), [
    ({"kind": "logistic", "formula": "histol + rsc(age, 4)"},
     "model 'm': formula \"histol + rsc(age, 4)\": unknown function rsc(); did you mean rcs()?"),
    ({"kind": "cox", "formula": "histol + factor(stage)"}, "unknown function factor(); did you mean C()?"),
    ({"kind": "logistic", "formula": "histol + rcs(age, 9)"}, "rcs(age, 9): the number of knots must be 3 to 7"),
    ({"kind": "logistic", "formula": "histol + rcs(age, 2)"}, "the number of knots must be 3 to 7"),
    ({"kind": "logistic", "formula": "rcs(histol, 4) + age"}, "rcs(histol, 4): histol is categorical"),
    ({"kind": "logistic", "formula": "histol + age", "clinical": ["age"]}, "give formula or clinical, not both"),
    ({"kind": "svm", "formula": "histol + age"}, "a formula applies to regression models (logistic, cox, cause_specific_cox and fine_gray), not svm"),
    ({"kind": "logistic", "formula": "label ~ histol"}, "give the right-hand side only"),
    ({"kind": "logistic", "formula": "histol + age - 1"}, "the model keeps its intercept"),
    ({"kind": "logistic", "formula": "histol +"}, "cannot read the formula"),
    ({"kind": "logistic", "formula": "C(histol, ref = \"XX\") + age"}, "'XX' is not one of histol's levels (FH, UH)"),
    ({"kind": "logistic", "formula": "age + rcs(age, 4)"}, "a spline holds the linear term"),
])
def test_config_errors_are_one_line_naming_the_model(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(model)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert "models[0]" in text


def test_reference_key_is_checked_and_reaches_the_model() -> None:
    model = _load({"kind": "cox", "formula": "histol + age"}, {"histol": {"levels": ["FH", "UH"], "reference": "UH"}})
    assert model.references == {"histol": "UH"} and model.clinical == ["histol", "age"]
    with pytest.raises(ConfigError, match="reference 'X' is not one of its levels"):
        _load({"kind": "cox", "formula": "histol"}, {"histol": {"levels": ["FH", "UH"], "reference": "X"}})


def test_a_formula_model_dumps_and_reads_back_as_itself() -> None:
    model = _load({"kind": "logistic", "formula": "histol * age", "params": {"penalty": "l2"}})
    dumped = model.model_dump(mode="json")
    assert "clinical" not in dumped and dumped["formula"] == "histol * age"
    assert Model.model_validate(dumped) == model
    plain = _load({"kind": "logistic", "clinical": ["age"]}).model_dump(mode="json")
    assert "formula" not in plain  # models without a formula keep their fit identity


def test_parser_orders_terms_and_variables_as_r() -> None:
    parsed = parse_formula("stage:histol + histol + rcs(age, 4) + C(stage, ref = 'III')")
    assert [t.label for t in parsed.terms] == ["histol", "rcs(age, 4)", "stage", "stage:histol"]
    assert parsed.variables == ("stage", "histol", "age") and parsed.references == {"stage": "III"}
    assert parsed.splines == {"age": 4}
    assert [t.label for t in parse_formula("(a + b + c)^2").terms] == ["a", "b", "c", "a:b", "a:c", "b:c"]
    with pytest.raises(FormulaError, match="two reference levels"):
        parse_formula("C(s, ref = 'a') + C(s, ref = 'b')")


@pytest.fixture()
def small_study(tmp_path: Path) -> Path:
    patients = pl.DataFrame({"patient_id": [f"P{i:02d}" for i in range(40)], "center": ["A"] * 40,
                             "label": [i % 2 for i in range(40)], "age": [float(i) for i in range(40)],
                             "grade": ["g1", "g2", "g3", "g4"] * 10})
    toml = study_toml("errs", 1, "[[models]]\nname = \"m\"\nkind = \"logistic\"\nformula = \"age + grade\"\n",
                      split='internal_fraction = 0')
    build_study(tmp_path, patients, "c.label, c.age, c.grade", toml)
    return tmp_path / "study.toml"


@pytest.mark.parametrize(("formula", "message"), [
    ("age + stage", "model 'm': formula \"age + stage\" names stage, which cohort all does not return"),
    ("age + rcs(grade, 3)", "model 'm': formula \"age + rcs(grade, 3)\": rcs(grade, 3): grade is categorical"),
])
def test_cohort_time_errors_name_the_model_and_formula(small_study: Path, formula: str, message: str) -> None:
    from pipeline.config import load_config

    small_study.write_text(small_study.read_text().replace('"age + grade"', f'"{formula}"'))
    study = load_config(small_study)
    with pytest.raises(ModelInputError) as err:
        assemble(study.models[0], load_cohort(study), {})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_too_few_values_for_the_knots_stop_the_fit_in_one_line(tmp_path: Path) -> None:
    from analytics.fit import FitError, fit

    patients = pl.DataFrame({"patient_id": [f"P{i:02d}" for i in range(40)], "center": ["A"] * 40,
                             "label": [i % 2 for i in range(40)], "dose": [float(i % 4) for i in range(40)]})
    toml = study_toml("knots", 1, "[[models]]\nname = \"m\"\nkind = \"logistic\"\nformula = \"rcs(dose, 5)\"\n",
                      split="internal_fraction = 0")
    study = build_study(tmp_path, patients, "c.label, c.dose", toml)
    with pytest.raises(FitError) as err:
        fit(study, progress=False)
    assert str(err.value).startswith("model 'm', ") and "\n" not in str(err.value)
    assert "rcs(dose, 5): dose has 4 distinct values on the training rows, too few for 5 knots" in str(err.value)


def test_nesting_of_formulas_term_by_term() -> None:
    from pipeline.formula import parse_formula, unspanned_terms

    def missing(small: str, large: str) -> list[str]:
        return unspanned_terms(parse_formula(small), parse_formula(large))

    assert missing("histol + age", "histol + stage + rcs(age, 4)") == []  # age lies in its spline's span
    assert missing('C(stage, ref = "II")', "stage + age") == []  # another reference codes the same space
    assert missing("rcs(age, 3)", "rcs(age, 4)") == ["rcs(age, 3)"]  # other knots: not nested
    assert missing("rcs(age, 4)", "age") == ["rcs(age, 4)"]
    assert missing("histol:stage", "histol + stage") == ["histol:stage"]
    assert missing("histol + stage", "histol * stage") == []
