"""params.penalty: checked when study.toml is loaded; "none" fits by maximum likelihood, as glm, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from regression_helpers import data, fixture
from study_builders import build_study, study_toml, write_study

from pipeline.config import ConfigError, load_config

_PATIENTS = pl.DataFrame({"patient_id": ["a", "b", "c", "d"], "center": ["A"] * 4, "label": [0, 1, 0, 1],
                          "age": [1.0, 2.0, 3.0, 4.0]})


def _model(params: str, grid: str = "") -> str:
    return ('[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age"]\n'
            f"params = {{ {params} }}\n" + (f"grid = {{ {grid} }}\n" if grid else ""))


@pytest.mark.parametrize(("params", "grid", "message"), [
    ('penalty = "ridge"', "", "models.clin.params.penalty = 'ridge': use one of 'l2', 'l1', 'elasticnet', 'none'"),
    ('penalty = "none"', "C = [0.1, 1.0]", 'models.clin.params.penalty = "none" is maximum likelihood (as R\'s glm): '
                                          "remove models.clin.grid.C"),
    ('penalty = "none", C = 1.0', "", "remove models.clin.params.C"),
    ('penalty = "l2"', 'penalty = ["l2", "none"]', "models.clin.grid.penalty: ['none'] cannot be tuned"),
])
def test_bad_penalty_is_a_config_error_at_load(tmp_path: Path, params: str, grid: str, message: str) -> None:
    path = write_study(tmp_path, _PATIENTS, "c.label, c.age", study_toml("s", 1, _model(params, grid)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_valid_penalties_load(tmp_path: Path) -> None:
    for params in ('penalty = "none"', 'penalty = "l1"', 'penalty = "elasticnet", l1_ratio = 0.3'):
        path = write_study(tmp_path, _PATIENTS, "c.label, c.age", study_toml("s", 1, _model(params)))
        assert load_config(path).models[0].params["penalty"] in ("none", "l1", "elasticnet")


def test_penalty_none_fits_glm_end_to_end(tmp_path: Path) -> None:
    """A clinical-only logistic model with penalty "none" through cohortlab's fit equals
    glm(rel ~ age + histol + stage) (numeric inputs): coefficients, standard errors and the final model's
    fitted probabilities of every patient."""
    from analytics.fit import fit
    from analytics.models.artifacts import ml_regression_reason
    from analytics.models.glm import MLLogistic
    from analytics.models.persist import load_model

    d = data()
    patients = pl.DataFrame({"patient_id": [f"W{i:04d}" for i in d["seqno"]], "center": ["A"] * d.height,
                             "label": d["rel"], "age": d["age"].cast(pl.Float64),
                             "histol": d["histol"].cast(pl.Float64), "stage": d["stage"].cast(pl.Float64)})
    body = ('[[models]]\nname = "glm"\nkind = "logistic"\nclinical = ["age", "histol", "stage"]\n'
            'params = { penalty = "none" }\n')
    study = build_study(tmp_path, patients, "c.label, c.age, c.histol, c.stage",
                        study_toml("nwtco", 1, body, split="internal_fraction = 0\nseed = 1"))
    assert ml_regression_reason(study.model("glm")) is None
    fit(study, progress=False)
    model = load_model(study.models_dir / "glm", study.store_path)
    clf = model.learner.pipeline_.named_steps["clf"]
    assert isinstance(clf, MLLogistic)
    assert model.record.free_parameters == 3
    g = fixture()["glm_numeric"]
    # an unpenalised design is not standardised (analytics.models.classical.regression_preprocessor): its
    # coefficients are glm's as they stand
    np.testing.assert_allclose(np.r_[clf.intercept_, clf.coef_[0]], g["estimate"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(clf.se_, g["se"], rtol=0, atol=1e-9)
    fitted = model.fitted.sort("patient_id")
    x = patients.sort("patient_id").select("age", "histol", "stage").to_numpy()
    expected = 1 / (1 + np.exp(-(g["estimate"][0] + x @ np.asarray(g["estimate"][1:]))))
    np.testing.assert_allclose(fitted["score"].to_numpy(), expected, rtol=0, atol=1e-10)


def test_separation_in_a_study_fit_is_one_line_naming_the_model(tmp_path: Path) -> None:
    """Every patient of grade g4 has the event: fit stops with one line naming the model and the separation."""
    from analytics.fit import fit
    from pipeline.errors import CohortlabError

    rng = np.random.default_rng(1)
    n = 80
    grade = np.array(["g1", "g2", "g3", "g4"])[np.arange(n) % 4]
    label = np.where(grade == "g4", 1, (rng.random(n) < 0.3).astype(int))
    patients = pl.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "center": ["A"] * n, "label": label,
                             "age": rng.normal(50, 10, n).round(1), "grade": grade.tolist()})
    body = '[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age", "grade"]\nparams = { penalty = "none" }\n'
    study = build_study(tmp_path, patients, "c.label, c.age, c.grade",
                        study_toml("s", 1, body, split="internal_fraction = 0\nseed = 1"))
    with pytest.raises(CohortlabError) as err:
        fit(study, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "model 'clin'" in msg and "separation" in msg and "numerically 0 or 1" in msg
