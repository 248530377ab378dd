"""Constant and all-missing predictors: left out before fitting, named once per model (why, too), no raw
scikit-learn warnings, and the model manifest lists the columns actually used."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.config import StudyConfig, load_config
from pipeline.ingest import ingest

N = 72
SKLEARN_EMPTY = "Skipping features without any observed values"


def _study(root: Path, clinical: list[str], name: str = "clin") -> StudyConfig:
    rng = np.random.default_rng(8)
    label = (np.arange(N) % 2).astype(int)
    pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": ["A"] * 48 + ["B"] * 24,
        "age": rng.normal(55, 8, N).round(1), "marker": (label * 1.3 + rng.normal(0, 1, N)).round(3),
        "const": [5.0] * N, "empty": pl.Series([None] * N, dtype=pl.Float64), "site": ["X"] * N,
        "label": label,
    }).write_csv(root / "patients.csv")
    (root / "cohorts").mkdir(exist_ok=True)
    (root / "cohorts" / "all.sql").write_text(
        "SELECT p.patient_id, p.center, c.label, c.age, c.marker, c.const, c.empty, c.site\n"
        "FROM patients p JOIN clinical c USING (patient_id)\n")
    (root / "study.toml").write_text(f"""
[study]
name = "dropped"
seed = 2
[manifests]
patients = "patients.csv"
[variables]
const = {{ type = "numeric" }}
empty = {{ type = "numeric" }}
site = {{ type = "categorical" }}
label = {{ type = "binary", role = "outcome" }}
[cohort]
name = "all"
[split]
external_centers = ["B"]
internal_fraction = 0.25
seed = 0
[[models]]
name = "{name}"
kind = "logistic"
clinical = {json.dumps(clinical)}
""", encoding="utf-8")
    study = load_config(root / "study.toml")
    ingest(study, progress=False)
    return study


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from analytics.fit import fit, stored_predictions

    root = tmp_path_factory.mktemp("dropped")
    study = _study(root, ["age", "marker", "const", "empty", "site"])
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logging.getLogger("cohortlab").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit(study, progress=False)
    finally:
        logging.getLogger("cohortlab").removeHandler(handler)
    return {"study": study, "result": result, "warnings": [str(w.message) for w in caught],
            "log": [r.getMessage() for r in records if r.levelno >= logging.WARNING],
            "predictions": stored_predictions(study.store_path, "clin")}


def test_no_raw_scikit_learn_warnings(fitted: dict) -> None:
    assert not [w for w in fitted["warnings"] if SKLEARN_EMPTY in w]


def test_one_warning_per_model_names_each_column_and_why(fitted: dict) -> None:
    mine = [m for m in fitted["log"] if "left out" in m]
    assert len(mine) == 1
    text = mine[0]
    assert "'clin'" in text
    assert "empty (all missing" in text
    assert "const, site (constant" in text
    assert "age" not in text and "marker" not in text
    # and the fit summary printed by `cohortlab fit` carries the same line
    assert f"warning: {text}" in str(fitted["result"]).splitlines()


def test_manifest_lists_the_columns_used(fitted: dict) -> None:
    man = json.loads((fitted["study"].models_dir / "clin" / "manifest.json").read_text())
    assert man["columns"] == {"features": [], "numeric": ["age", "marker"], "categorical": []}
    assert man["input_columns"]["numeric"] == ["age", "marker", "const", "empty"]
    assert man["input_columns"]["categorical"] == ["site"]
    assert man["dropped"] == {"const": "constant", "empty": "all missing", "site": "constant"}
    assert fitted["result"].model("clin").dropped == man["dropped"]


def test_predictions_equal_a_model_without_those_columns(fitted: dict, tmp_path: Path) -> None:
    """Independent truth: the same model fitted on age and marker alone predicts the same scores."""
    from analytics.fit import fit, stored_predictions

    study = _study(tmp_path, ["age", "marker"])
    fit(study, progress=False)
    plain = stored_predictions(study.store_path, "clin")
    got = fitted["predictions"]
    assert got["patient_id"].to_list() == plain["patient_id"].to_list()
    assert got["score"].to_numpy() == pytest.approx(plain["score"].to_numpy(), abs=1e-9)


def test_saved_model_predicts_a_cohort_with_all_its_input_columns(fitted: dict) -> None:
    from analytics.cohort import load_cohort
    from analytics.fit import predict

    study = fitted["study"]
    scores = predict(study, "clin", load_cohort(study))
    held = fitted["predictions"].filter(pl.col("split") != "train")
    got = dict(zip(scores["patient_id"].to_list(), scores["score"].to_list()))
    assert [got[p] for p in held["patient_id"].to_list()] == pytest.approx(held["score"].to_list(), abs=1e-12)


def test_only_uninformative_inputs_is_a_clear_error(tmp_path: Path) -> None:
    from analytics.fit import FitError, fit

    study = _study(tmp_path, ["const", "empty"])
    with pytest.raises(FitError, match=r"model 'clin'.*every input column is constant or missing.*const \(constant\)"):
        fit(study, progress=False)


def test_explain_reads_a_model_with_columns_left_out(fitted: dict, tmp_path: Path) -> None:
    """The explanation of such a model runs, reproduces its scores, and gives the left-out columns no weight."""
    import shutil

    from analytics.explain import Settings, explain

    src = fitted["study"]
    shutil.copytree(src.root, tmp_path / "copy")
    study = load_config(tmp_path / "copy" / "study.toml")
    result = explain(study, settings=Settings(max_rows=20), progress=False)
    (summary,) = result.models
    assert summary.status == "explained" and summary.explained > 0, str(result)
    assert summary.additivity_error is not None and summary.additivity_error < 1e-6
    values = pl.read_parquet(study.report_dir / "explain" / "clin" / "shap_values.parquet")
    left_out = values.filter(pl.col("feature").is_in(["const", "empty", "site"]))
    assert left_out.height and (left_out["value"].abs() < 1e-12).all()
    assert (values.filter(pl.col("feature") == "marker")["value"].abs() > 1e-6).any()


def test_constant_image_features_stay_and_features_without_values_go() -> None:
    """Hand-made table: a dead encoder unit (constant) stays in the feature block; a feature column with no
    value goes; clinical columns go when constant among the rows with a value."""
    import pandas as pd

    from analytics.models.data import Columns, uninformative

    table = pd.DataFrame({
        "img:mean:0": [0.0, 0.0, 0.0, 0.0], "img:mean:1": [np.nan] * 4, "img:mean:2": [0.1, 0.4, 0.2, 0.3],
        "x": [1.0, np.nan, 1.0, 1.0], "y": [1.0, 2.0, np.nan, 1.0],
        "c": ["a", None, "a", "a"], "d": ["a", "b", None, "a"],
    })
    columns = Columns(("img:mean:0", "img:mean:1", "img:mean:2"), ("x", "y"), ("c", "d"))
    assert uninformative(table, columns) == {"img:mean:1": "all missing", "x": "constant", "c": "constant"}
