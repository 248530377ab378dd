"""The fitted study the tests of scoring and bundles share (fitted once per session)."""

from __future__ import annotations

import pytest
from predict_helpers import COLUMNS, VARIABLES, patients
from study_builders import study_toml, write_study

import cohortlab

MODELS = """[[models]]
name = "glm"
kind = "logistic"
formula = "age + sex + grade"
params = { penalty = "none" }
[[models]]
name = "ridge"
kind = "logistic"
clinical = ["age", "sex", "grade"]
grid = { C = [1.0] }
[[models]]
name = "svm"
kind = "svm"
clinical = ["age", "sex", "grade"]
grid = { C = [1.0] }
[[models]]
name = "boost"
kind = "xgboost"
clinical = ["age", "sex", "grade"]
grid = { n_estimators = [5], max_depth = [2] }
[[models]]
name = "vote"
kind = "voting"
members = ["glm", "svm"]
[[models]]
name = "cox"
kind = "cox"
formula = "age + sex + grade"
[[models]]
name = "published"
kind = "fixed"
formula = "age + sex + grade"
coefficients = { "(Intercept)" = -6.0, age = 0.09, sexM = 0.7, grademid = 0.5, gradehigh = 1.2 }
threshold = 0.4
"""


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> cohortlab.Study:
    root = tmp_path_factory.mktemp("predict")
    body = MODELS + "\n[validation]\nfolds = 2\nn_boot = 0\nhorizons = [50, 80]\n[explain]\nenabled = false\n"
    toml = study_toml("predicttest", 7, body, sections=VARIABLES)
    s = cohortlab.load_study(write_study(root, patients(), COLUMNS, toml, where="c.age >= 30"))
    s.ingest(progress=False)
    s.fit(progress=False)
    s.validation(progress=False)
    return s


