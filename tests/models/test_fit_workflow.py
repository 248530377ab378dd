"""``cohortlab fit`` end to end: predictions table, saved models, reload, resume, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from analytics.cli import main
from analytics.cohort import load_cohort
from analytics.fit import FitError, fit, predict, required_inputs, stored_predictions, write_predictions
from analytics.models import load_model
from pipeline.config import StudyConfig
from pipeline.errors import CohortlabError

from model_helpers import ALL_KINDS, copy_study, make_study, write_cohort_store
from model_leakage import artefacts

SECOND_STAGE = {"fusion", "vote", "stack"}
USES_IMAGES = {"img_svm", "img_xgb", "img_mil"} | SECOND_STAGE


def test_predictions_table_has_oof_rows_for_train_and_final_rows_for_held_out(
    fitted_study: StudyConfig, cohort_data: dict[str, Any]
) -> None:
    rows = stored_predictions(fitted_study.store_path)
    patients = cohort_data["patients"]
    split = dict(zip(patients["patient_id"], patients["split"]))
    assert sorted(rows["model"].unique().to_list()) == sorted(m["name"] for m in ALL_KINDS)
    for name, part in rows.group_by("model"):
        name = name[0]
        lacking = set(cohort_data["lacking"]) if name in USES_IMAGES else set()
        assert set(part["patient_id"]) == set(cohort_data["ids"]) - lacking, name
        assert part["split"].to_list() == [split[p] for p in part["patient_id"]]
        train = part.filter(pl.col("split") == "train")
        assert train["fold"].null_count() == 0 and set(train["fold"].to_list()) == {0, 1, 2}
        assert part.filter(pl.col("split") != "train")["fold"].null_count() == part.height - train.height
        assert ((part["score"] >= 0) & (part["score"] <= 1)).all()


def test_second_run_skips_every_model_and_reports_missing_inputs(fitted_study: StudyConfig, tmp_path: Path) -> None:
    study = copy_study(fitted_study, tmp_path / "again")
    result = fit(study, progress=False)
    assert {m.status for m in result.models} == {"up to date"}
    assert result.model("img_mil").missing == {"tiles:instances": ["P05", "P40"]}
    assert result.model("fusion").missing == {"score:img_svm": ["P05", "P40"], "score:img_mil": ["P05", "P40"]}
    assert result.model("clin").missing == {}
    text = str(result)
    assert "img_mil" in text and "up to date" in text and "tiles:instances: 2 (P05, P40)" in text
    assert "3 outer folds" in text


def test_two_runs_give_byte_identical_predictions_and_models(fitted_study: StudyConfig, tmp_path: Path) -> None:
    study = copy_study(fitted_study, tmp_path / "rerun", models=False)
    con_rows = stored_predictions(study.store_path)
    assert con_rows.height == stored_predictions(fitted_study.store_path).height  # copied store holds the old rows
    write_predictions(study.store_path, "clin", con_rows.head(0))  # drop one model's rows: must come back
    result = fit(study, progress=False)
    assert {m.status for m in result.models} == {"fitted"}
    a, b = stored_predictions(fitted_study.store_path), stored_predictions(study.store_path)
    assert a["patient_id"].to_list() == b["patient_id"].to_list()
    assert a["score"].to_numpy().tobytes() == b["score"].to_numpy().tobytes()
    assert a.equals(b)
    assert artefacts(fitted_study) == artefacts(study)


def test_saved_models_reload_and_predict_the_stored_scores(fitted_study: StudyConfig) -> None:
    features, bags = required_inputs(fitted_study.models)
    cohort = load_cohort(fitted_study, features=features, bags=bags)
    stored = stored_predictions(fitted_study.store_path)
    for spec in fitted_study.models:
        scores = predict(fitted_study, spec.name, cohort)
        assert scores["patient_id"].to_list() == cohort.patient_ids
        held = stored.filter((pl.col("model") == spec.name) & (pl.col("split") != "train"))
        got = dict(zip(scores["patient_id"], scores["score"]))
        # held-out rows were written by the final model: reloading it gives the same bits
        assert np.array_equal(np.array([got[p] for p in held["patient_id"]]), held["score"].to_numpy()), spec.name
        lacking = scores.filter(pl.col("score").is_null())["patient_id"].to_list()
        assert lacking == (["P05", "P40"] if spec.name in USES_IMAGES else [])


def test_manifest_records_inputs_provenance_and_choices(fitted_study: StudyConfig) -> None:
    model = load_model(fitted_study.models_dir / "fusion", fitted_study.store_path)
    m = model.manifest
    assert m["inputs"] == ["img_svm", "img_mil"] and m["clinical"] == ["marker", "sex"]
    assert set(m["input_hashes"]) == {"img_svm", "img_mil"}
    assert len(m["cohort"]["hash"]) == 64 and m["outer_folds"]["k"] == 3
    assert m["chosen"]["C"] == 1.0 and m["columns"]["numeric"] == ["marker", "score:img_svm", "score:img_mil"]
    assert {"scikit-learn", "torch", "xgboost", "numpy", "cohortlab"} <= set(m["versions"])
    svm = load_model(fitted_study.models_dir / "img_svm", fitted_study.store_path).manifest
    assert svm["features"] == ["img:mean"] and svm["feature_sets"]["img"]["weights"] == "random"
    assert svm["chosen"]["pca"] == 4 and svm["chosen"]["C"] in (0.1, 1.0)
    assert len(svm["fold_chosen"]) == 3


def test_attention_of_every_predicted_patient_is_saved(fitted_study: StudyConfig) -> None:
    att = pl.read_parquet(fitted_study.models_dir / "img_mil" / "attention.parquet")
    assert {"patient_id", "source_id", "instance", "x", "y", "z", "attention", "split",
                                      "fold"} <= set(att.columns)
    predicted = stored_predictions(fitted_study.store_path, "img_mil")
    assert set(att["patient_id"]) == set(predicted["patient_id"])
    assert {"train", "internal", "external"} == set(att["split"])
    sums = att.group_by("patient_id").agg(pl.col("attention").sum())["attention"].to_numpy()
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    assert (att.group_by("patient_id").agg(pl.col("source_id").first())["source_id"].str.ends_with("-S1")).all()


def test_stacking_meta_learner_is_trained_on_the_out_of_fold_table(fitted_study: StudyConfig) -> None:
    stack = load_model(fitted_study.models_dir / "stack", fitted_study.store_path)
    matrix = stack.learner.model_.training_matrix_
    oof = stored_predictions(fitted_study.store_path).filter(pl.col("split") == "train")
    table = oof.pivot(on="model", index="patient_id", values="score").sort("patient_id")
    table = table.drop_nulls(["clin", "img_svm", "img_xgb"])
    assert np.array_equal(matrix, table.select("clin", "img_svm", "img_xgb").to_numpy())


def test_changed_config_refits_that_model_and_its_dependents_only(fitted_study: StudyConfig, tmp_path: Path) -> None:
    models = [dict(m) for m in ALL_KINDS]
    models[1] = {**models[1], "params": {"pca": 3}}
    copy = copy_study(fitted_study, tmp_path / "changed")
    study = make_study(copy.root, models)
    status = {m.name: m.status for m in fit(study, progress=False).models}
    assert status == {"clin": "up to date", "img_svm": "fitted", "img_xgb": "up to date", "img_mil": "up to date",
                      "fusion": "fitted", "vote": "fitted", "stack": "fitted"}


def test_fitting_one_model_fits_what_it_needs(fitted_study: StudyConfig, tmp_path: Path) -> None:
    study = copy_study(fitted_study, tmp_path / "one", models=False)
    result = fit(study, models=["fusion"], progress=False)
    assert [m.name for m in result.models] == ["img_svm", "img_mil", "fusion"]
    assert sorted(p.name for p in study.models_dir.iterdir() if p.name != ".crossfit") == ["fusion", "img_mil", "img_svm"]
    # the fits that fusion's nested cross-fitting read, kept for later runs
    assert sorted(p.name for p in (study.models_dir / ".crossfit").iterdir()) == ["img_mil.parquet", "img_svm.parquet"]


def test_a_failing_model_writes_nothing_and_names_itself(tmp_path: Path, cohort_data: dict[str, Any]) -> None:
    write_cohort_store(tmp_path, cohort_data)
    models = [ALL_KINDS[0], {"name": "too_many_pcs", "kind": "svm", "features": ["img"], "params": {"pca": 40}}]
    study = make_study(tmp_path, models)
    with pytest.raises(FitError, match="model 'too_many_pcs', outer fold 0: .*n_components=40"):
        fit(study, progress=False)
    assert sorted(p.name for p in study.models_dir.iterdir()) == ["clin"]
    assert stored_predictions(study.store_path)["model"].unique().to_list() == ["clin"]


@pytest.mark.parametrize(("model", "message"), [
    ({"name": "m", "kind": "svm", "features": ["img"], "params": {"gama": 1}},
     r"model 'm': unknown parameter\(s\) \['gama'\] for svm"),
    ({"name": "m", "kind": "logistic", "clinical": ["age", "weight"]},
     r"test.sql\): no column\(s\) \['weight'\]"),
    ({"name": "m", "kind": "mil", "features": ["tiles:mean"]}, r"model 'm': a mil model reads instance bags"),
    ({"name": "m", "kind": "logistic", "features": ["nope"]}, r"no pooled features 'nope:mean'"),
])
def test_bad_model_entries_get_clear_errors(tmp_path: Path, cohort_data: dict[str, Any], model: dict[str, Any],
                                            message: str) -> None:
    write_cohort_store(tmp_path, cohort_data)
    study = make_study(tmp_path, [model], feature_sets=("img", "tiles", "nope"))
    with pytest.raises(CohortlabError, match=message):
        fit(study, progress=False)
    assert not study.models_dir.exists()


def test_cli_fit_prints_the_result(tmp_path: Path, cohort_data: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    write_cohort_store(tmp_path, cohort_data)
    make_study(tmp_path, [ALL_KINDS[0]])  # writes the cohort file
    (tmp_path / "study.toml").write_text(
        '[study]\nname = "t"\n[manifests]\npatients = "patients.csv"\n[cohort]\nname = "test"\n'
        '[split]\ncolumn = "split"\n[validation]\nfolds = 3\n'
        '[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age", "sex", "marker"]\ngrid = { C = [1.0] }\n'
        '[[models]]\nname = "bad"\nkind = "xgboost"\nclinical = ["marker"]\nparams = { depth = 2 }\n'
    )
    assert main(["fit", str(tmp_path / "study.toml"), "--model", "clin"]) == 0
    out = capsys.readouterr().out
    assert "clin" in out and "logistic" in out and "fitted" in out
    assert main(["fit", str(tmp_path / "study.toml")]) == 1
    err = capsys.readouterr().err
    assert "model 'bad': unknown parameter(s) ['depth'] for xgboost" in err
    manifest = json.loads((tmp_path / "models" / "clin" / "manifest.json").read_text())
    assert manifest["name"] == "clin"


def test_unlabelled_training_patients_are_reported_and_not_predicted(tmp_path: Path,
                                                                     cohort_data: dict[str, Any]) -> None:
    patients = cohort_data["patients"].with_columns(
        pl.when(pl.col("patient_id").is_in(["P02", "P30"])).then(None).otherwise(pl.col("label")).alias("label"))
    write_cohort_store(tmp_path, {**cohort_data, "patients": patients})
    study = make_study(tmp_path, [{**ALL_KINDS[0], "grid": {"C": [1.0]}}])
    result = fit(study, progress=False)
    assert result.model("clin").unlabelled == ["P02"]  # P30 is internal: unlabelled but still scored
    rows = stored_predictions(study.store_path, "clin")
    assert "P02" not in rows["patient_id"].to_list()
    assert rows.filter(pl.col("patient_id") == "P30")["split"].to_list() == ["internal"]
    assert "unlabelled training patients (not used): 1 (P02)" in str(result)
