"""A clinical-only study on nwtco fitted end to end: the final models (fitted on every training patient of
study 3) predict study 4's children as R's glm and coxph with the same formulas do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.fit import fit, stored_predictions
from pipeline.config import StudyConfig

VARIABLES = """[variables]
histol = { levels = ["FH", "UH"] }
stage = { levels = ["I", "II", "III", "IV"] }
age = { type = "numeric", unit = "months" }
"""


def _models(logistic: str, cox: str) -> str:
    return f"""[[models]]
name = "logit"
kind = "logistic"
formula = "{logistic}"
params = {{ penalty = "none" }}
[[models]]
name = "cox"
kind = "cox"
formula = "{cox}"
[[models]]
name = "logit_main"
kind = "logistic"
clinical = ["histol", "stage", "age"]
params = {{ penalty = "none" }}
[[models]]
name = "cox_main"
kind = "cox"
clinical = ["histol", "stage", "age"]
[[models]]
name = "logit_l2"
kind = "logistic"
formula = "{logistic}"
grid = {{ C = [1.0] }}
[validation]
folds = 2
horizons = [1095]
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, reference: dict[str, Any]) -> StudyConfig:
    d = reference["data"]
    patients = pl.DataFrame({
        "patient_id": [f"N{s:04d}" for s in d["seqno"]],
        "center": ["A" if s == 3 else "B" for s in d["study"]],  # study 3 develops, study 4 validates
        "label": d["rel"], "time": d["edrel"], "event": d["rel"],
        "age": d["age"], "histol": d["histol"], "stage": d["stage"],
    })
    root = tmp_path_factory.mktemp("nwtco")
    models = reference["models"]
    toml = study_toml("nwtco", 1, _models(models["logistic"]["formula"], models["cox"]["formula"]),
                      sections=VARIABLES, split='external_centers = ["B"]\ninternal_fraction = 0')
    study = build_study(root, patients, "c.label, c.time, c.event, c.age, c.histol, c.stage", toml)
    fit(study, progress=False)
    return study


def _external(study: StudyConfig, model: str) -> np.ndarray:
    frame = stored_predictions(study.store_path, model).filter(pl.col("split") == "external").sort("patient_id")
    return frame["score"].to_numpy()


def test_logistic_formula_predicts_as_glm(study: StudyConfig, reference: dict[str, Any]) -> None:
    expected = np.asarray(reference["models"]["logistic"]["predicted"])
    got = _external(study, "logit")
    assert got.shape == expected.shape == (2171,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)


def test_cox_formula_predicts_as_coxph(study: StudyConfig, reference: dict[str, Any]) -> None:
    expected = np.asarray(reference["models"]["cox"]["lp"])
    got = _external(study, "cox")
    assert got.shape == expected.shape == (2171,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("model", "key", "value"), [("logit_main", "logistic_main", "predicted"),
                                                     ("cox_main", "cox_main", "lp")])
def test_clinical_lists_of_regressions_are_treatment_coded_as_r(study: StudyConfig, reference: dict[str, Any],
                                                                model: str, key: str, value: str) -> None:
    expected = np.asarray(reference["models"][key][value])
    np.testing.assert_allclose(_external(study, model), expected, rtol=0, atol=1e-8 if value == "predicted" else 1e-6)


def _prep(study: StudyConfig, model: str) -> Any:
    from analytics.models.persist import load_model

    learner = load_model(study.models_dir / model, study.store_path).learner
    return learner.pipeline_.named_steps["prep"] if hasattr(learner, "pipeline_") else learner.prep_


def test_saved_designs_name_r_columns_and_scale_only_penalised_fits(study: StudyConfig,
                                                                    reference: dict[str, Any]) -> None:
    names = {m: list(_prep(study, m).named_transformers_["design"].named_steps["design"].names_)
             for m in ("logit", "logit_main", "cox", "logit_l2")}
    assert names["logit"] == [c for c in reference["models"]["logistic"]["coef"] if c != "(Intercept)"]
    assert names["cox"] == list(reference["models"]["cox"]["coef"])
    assert names["logit_main"] == ["histolUH", "stageII", "stageIII", "stageIV", "age"]  # the declared order
    steps = {m: list(_prep(study, m).named_transformers_["design"].named_steps) for m in ("logit", "logit_l2")}
    assert steps == {"logit": ["impute", "design"], "logit_l2": ["impute", "design", "scale"]}
    p = _external(study, "logit_l2")
    assert ((p > 0) & (p < 1)).all() and np.corrcoef(p, _external(study, "logit"))[0, 1] > 0.95


def test_the_formula_fills_the_clinical_inputs(study: StudyConfig) -> None:
    assert study.model("logit").clinical == ["histol", "stage", "age"]
    assert study.model("cox").clinical == ["histol", "stage", "age"]
    again = StudyConfig.model_validate({**study.model_dump(exclude={"root"}), "root": Path(study.root)})
    assert again.model("logit").formula == study.model("logit").formula
