"""A fitted model as one typed record: FitRecord writes manifest.json byte for byte and reads it back typed;
the FittedModel view; what the likelihood-ratio test needs is saved at fit time, so validate never runs fit."""

from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.models.artifacts import FitRecord, RecordError
from pipeline import store
from pipeline.config import StudyConfig
from pipeline.errors import CohortlabError

N = 120
MODELS = """
[[models]]
name = "old"
kind = "logistic"
clinical = ["age"]
params = { C = inf }
[[models]]
name = "new"
kind = "logistic"
clinical = ["age", "marker"]
params = { C = inf }
[[models]]
name = "kernel"
kind = "svm"
clinical = ["age", "marker"]
[validation]
n_boot = 20
added_value = [["new", "old"]]
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    from analytics.fit import fit

    root = tmp_path_factory.mktemp("record")
    rng = np.random.default_rng(3)
    age = rng.normal(55, 10, N).round(1)
    marker = rng.normal(0, 1, N).round(3)
    label = (rng.random(N) < 1 / (1 + np.exp(-(0.03 * (age - 55) + 1.2 * marker)))).astype(int)
    patients = pl.DataFrame({"patient_id": [f"P{i:03d}" for i in range(N)],
                             "center": np.where(np.arange(N) < 85, "A", "B"), "age": age, "marker": marker,
                             "label": label})
    study = build_study(root, patients, "c.label, c.age, c.marker", study_toml("rec", 2, MODELS))
    fit(study, progress=False)
    return study


def _manifest(study: StudyConfig, name: str) -> bytes:
    return (study.models_dir / name / "manifest.json").read_bytes()


def test_the_record_writes_the_manifest_byte_for_byte(fitted: StudyConfig) -> None:
    for name in ("old", "new", "kernel"):
        raw = _manifest(fitted, name)
        record = FitRecord.from_json(raw)
        assert record.to_json().encode("utf-8") == raw, name
        assert (record.name, record.kind, record.endpoint) == (name, "logistic" if name != "kernel" else "svm",
                                                               "binary")
        assert record.fit_key and record.predictions_hash and record.format == 2


def test_an_older_manifest_of_the_same_format_reads_with_defaults(fitted: StudyConfig) -> None:
    data = json.loads(_manifest(fitted, "new"))
    for key in ("oof_c", "horizons", "input_columns", "free_parameters", "nesting", "tuning", "device", "versions"):
        data.pop(key, None)
    record = FitRecord.from_dict(data)
    assert record.horizons == [] and record.oof_c is None and record.free_parameters is None
    assert record.versions == {} and record.nesting is None and record.optimistic_reason is None
    assert record.saved_columns == data["columns"]  # input_columns absent: the columns it uses
    assert "free_parameters" not in record.to_dict() and "mil" not in record.to_dict()
    # an unknown key (written by a later version) is ignored, a null container takes its default
    assert FitRecord.from_dict({**data, "later": 1, "dropped": None}).dropped == {}


@pytest.mark.parametrize("text, expect", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"name": "m"}', "key 'kind' is missing"),
    (b'{"name": "m", "kind": "logistic", "seed": "one"}', "key 'seed' is a str, not a int"),
    (b'{"name": "m", "kind": "logistic", "horizons": 5}', "key 'horizons' is a int, not a list"),
])
def test_a_damaged_manifest_is_one_line_naming_the_file_and_key(text: bytes, expect: str) -> None:
    with pytest.raises(RecordError) as err:
        FitRecord.from_json(text, "models/m/manifest.json")
    assert isinstance(err.value, CohortlabError)
    assert str(err.value).startswith("models/m/manifest.json: ") and expect in str(err.value)
    assert "\n" not in str(err.value)


def test_the_fitted_model_view(fitted: StudyConfig) -> None:
    from analytics.models.persist import load_model, read_record

    new = load_model(fitted.models_dir / "new", fitted.store_path)
    assert new.record == read_record(fitted.models_dir / "new", fitted.store_path)
    con = store.connect(fitted.store_path, read_only=True)
    try:
        rows = store.read_predictions(con, "new")
    finally:
        con.close()
    assert new.predictions.sort("patient_id").equals(rows.cast(dict(new.predictions.schema)))
    assert new.coefficients is not None and new.coefficients.size == new.record.free_parameters == 2
    assert new.attention is None and new.horizon_risks is None
    kernel = load_model(fitted.models_dir / "kernel", fitted.store_path)
    assert kernel.coefficients is None and kernel.fitted is None and kernel.record.free_parameters is None
    assert not (fitted.models_dir / "kernel" / "fitted.parquet").exists()


def test_fit_saves_the_training_fit_the_lr_test_reads(fitted: StudyConfig) -> None:
    from analytics.cohort import load_cohort
    from analytics.fit import predict, required_inputs
    from analytics.models.persist import load_model

    specs = [m for m in fitted.models if m.name in ("new", "old")]
    features, bags = required_inputs(specs)
    cohort = load_cohort(fitted, features=features, bags=bags, on_missing="keep")
    train = cohort.frame.filter(pl.col("split") == "train").get_column("patient_id").to_list()
    for name, k in (("old", 1), ("new", 2)):
        fm = load_model(fitted.models_dir / name, fitted.store_path)
        assert fm.record.free_parameters == k and json.loads(_manifest(fitted, name))["free_parameters"] == k
        saved = fm.fitted
        assert saved is not None and saved.get_column("patient_id").to_list() == train
        again = predict(fitted, name, cohort).filter(pl.col("patient_id").is_in(train))
        assert np.array_equal(saved.get_column("score").to_numpy(), again.get_column("score").to_numpy())


def test_validate_runs_the_lr_test_without_the_fit_stage(fitted: StudyConfig,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics.validation.stage import validate

    monkeypatch.setitem(sys.modules, "analytics.fit", None)  # importing it now fails
    validate(fitted, progress=False, force=True)
    train = [a for a in json.loads((fitted.report_dir / "metrics.json").read_text())["added_value"]
             if a["split"] == "train"][0]
    assert train["lr_test_reason"] is None and train["lr_test"]["df"] == 1
    assert train["lr_test"]["statistic"] > 0
