"""A clinical-only survival study on survival::lung (the 226 complete cases of zph_lung.json), fitted once.

The cox model uses R's formula of tests/survival_regression/zph_fixture.R (``ph.karno + ecog + rcs(age, 4) +
sex``); every patient is a training patient, so the spline's knots and the final fit are R's. ph.karno violates
proportional hazards (cox.zph p = 0.024).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from pipeline.config import StudyConfig

FIXTURE = Path(__file__).parents[1] / "survival_regression" / "zph_lung.json"

MODELS = """[[models]]
name = "cox"
kind = "cox"
formula = "ph_karno + ecog + rcs(age, 4) + sex"
[[models]]
name = "cox_main"
kind = "cox"
clinical = ["age", "sex", "ecog"]
[[models]]
name = "cox_ridge"
kind = "cox"
clinical = ["age", "sex"]
params = { penalizer = 0.1 }
[validation]
folds = 2
n_boot = 0
horizons = [365, 730]
"""

VARIABLES = """[variables]
ecog = { levels = ["0", "1", "2"] }
age = { type = "numeric", unit = "years" }
time = { unit = "days" }
"""


@pytest.fixture(scope="session")
def lung() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def lung_patients(lung: dict[str, Any]) -> pl.DataFrame:
    X = np.asarray(lung["X"], dtype=float)
    n = len(X)
    ecog = np.where(X[:, 1] == 1, "1", np.where(X[:, 2] == 1, "2", "0"))
    return pl.DataFrame({"patient_id": [f"L{i:03d}" for i in range(n)], "center": ["A"] * n,
                         "time": lung["time"], "event": [int(s) for s in lung["status"]], "ph_karno": X[:, 0],
                         "ecog": ecog, "age": X[:, 3], "sex": X[:, 6]})


def lung_study(root: Path, lung: dict[str, Any], models: str = MODELS, split: str = "internal_fraction = 0") -> StudyConfig:
    toml = study_toml("lung", 1, models, study='endpoint = "survival"', sections=VARIABLES, split=split)
    return build_study(root, lung_patients(lung), "c.time, c.event, c.ph_karno, c.ecog, c.age, c.sex", toml)


@pytest.fixture(scope="module")
def fitted_lung(tmp_path_factory: pytest.TempPathFactory, lung: dict[str, Any]) -> StudyConfig:
    from analytics.fit import fit

    study = lung_study(tmp_path_factory.mktemp("lung"), lung)
    fit(study, progress=False)
    return study
