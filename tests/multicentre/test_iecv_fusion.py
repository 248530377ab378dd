"""Internal-external cross-validation of a model of other models' scores (a fusion model): in each fold its input
models are refitted on the other centres' development patients, the second stage is fitted on their out-of-fold
scores there (nested cross-fitting), and no fit of any model ever sees the left-out centre's patients."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from multicentre.iecv_helpers import centre_patients, iecv_settings, recording
from study_builders import build_study, study_toml

from analytics.cohort import load_cohort
from analytics.fit import fit, required_inputs
from analytics.iecv import iecv_model
from analytics.iecv_files import IECV_FOLDER, read_iecv
from analytics.models.persist import read_record
from analytics.validation.stage import validate
from pipeline.config import StudyConfig

SPLIT = 'external_centers = ["X"]\ninternal_fraction = 0.2\nseed = 1'
MODELS = """[[models]]
name = "age_m"
kind = "logistic"
clinical = ["age"]
params = { penalty = "none" }
[[models]]
name = "marker_m"
kind = "logistic"
clinical = ["marker"]
params = { penalty = "none" }
[[models]]
name = "fus"
kind = "logistic"
scores = ["age_m", "marker_m"]
params = { penalty = "none" }
""" + iecv_settings()


def _patients() -> pl.DataFrame:
    return centre_patients({"A": 90, "B": 90, "C": 90, "X": 60}, seed=17)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    root = tmp_path_factory.mktemp("fusion")
    s = build_study(root, _patients(), "c.label, c.age, c.marker", study_toml("fus", 4, MODELS, split=SPLIT))
    fit(s, progress=False)
    return s


def test_a_left_out_centre_never_enters_a_fit_of_the_fusion_model_or_its_inputs(study: StudyConfig) -> None:
    centre = dict(zip(_patients()["patient_id"], _patients()["center"]))
    calls: list[tuple[str, tuple[str, ...]]] = []
    shutil.rmtree(study.models_dir / IECV_FOLDER / "fus")
    cohort = load_cohort(study, features=required_inputs(study.models)[0])
    assert iecv_model(study, study.model("fus"), cohort, make=recording(calls)) is None
    seen = [(name, {centre[p] for p in ids}) for name, ids in calls]
    fusion = [c for name, c in seen if name == "fus"]
    assert sorted(tuple(sorted(c)) for c in fusion) == [("A", "B"), ("A", "C"), ("B", "C")]
    for name, c in seen:  # the input models' fits of a fold (inner folds included) lie inside that fold
        assert "X" not in c and any(c <= f for f in fusion), (name, c)
    assert {name for name, _ in seen} == {"age_m", "marker_m", "fus"}
    got = read_iecv(study.models_dir, "fus", read_record(study.models_dir / "fus", study.store_path).fit_key)
    assert got is not None and set(got.frame["group"]) == {"A", "B", "C"}
    assert got.frame["score"].is_finite().all() and got.frame.height == 270  # every development patient


def test_the_fusion_models_iecv_rows_are_validated(study: StudyConfig) -> None:
    validate(study, progress=False)
    rows = pl.read_csv(study.report_dir / "metrics.csv", infer_schema_length=0)
    mine = rows.filter((pl.col("model") == "fus") & (pl.col("split") == "iecv") & (pl.col("metric") == "auc"))
    assert sorted(mine["center"].to_list()) == ["A", "B", "C"]

