"""``explain(study)`` end to end on a small fitted study whose slides are the real CMU-1 slide."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest

from analytics.cli import main
from analytics.explain import Settings, explain
from analytics.explain.manifest import FIGURE_KINDS
from analytics.explain.shap_values import ExplainError
from analytics.fit import fit
from analytics.models.persist import read_predictions
from pipeline.config import StudyConfig

from explain_helpers import build_study

SETTINGS = Settings(nsamples=64, top_k=3)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    study = build_study(tmp_path_factory.mktemp("study"))
    fit(study, progress=False)
    return study


@pytest.fixture(scope="module")
def first(fitted: StudyConfig) -> tuple[StudyConfig, object, dict[str, bytes]]:
    result = explain(fitted, settings=SETTINGS, progress=False)
    folder = fitted.report_dir / "explain"
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return fitted, result, files


def _manifest(study: StudyConfig) -> dict:
    return json.loads((study.report_dir / "explain" / "manifest.json").read_text())


def test_every_model_is_explained_with_its_explainer(first: tuple) -> None:
    study, result, _ = first
    got = {m.name: (m.status, m.explainer, m.space) for m in result.models}
    assert got == {
        "clin": ("explained", "linear", "log-odds"), "xgb": ("explained", "tree", "log-odds"),
        "img_svm": ("explained", "kernel", "probability"), "fusion": ("explained", "kernel", "probability"),
        "vote": ("explained", "kernel", "probability"), "mil": ("explained", "attention", "attention weight"),
    }
    assert not [n for n in result.notes if "differ" in n or "additivity" in n], result.notes
    text = str(result)
    assert "manifest.json" in text and "fusion" in text and "tree" in text


def test_manifest_lists_every_written_file(first: tuple) -> None:
    study, _, files = first
    m = _manifest(study)
    listed = {f["path"] for f in m["figures"]} | {v["path"] for v in m["values"]}
    assert listed == set(files) - {"manifest.json"}
    assert {f["kind"] for f in m["figures"]} <= set(FIGURE_KINDS)
    assert {f["kind"] for f in m["figures"]} == set(FIGURE_KINDS) - {"ct_slice_attention"}
    assert all(f["caption"] and f["model"] in m["models"] for f in m["figures"])
    assert all(f["path"].endswith(".png") for f in m["figures"])
    assert set(m["models"]) == {"clin", "xgb", "img_svm", "fusion", "vote", "mil"}


def test_written_values_are_additive_and_reproduce_the_saved_predictions(first: tuple) -> None:
    study, _, _ = first
    for model in ("clin", "xgb", "img_svm", "fusion", "vote"):
        values = pl.read_parquet(study.report_dir / "explain" / model / "shap_values.parquet")
        per = values.group_by("patient_id").agg(pl.col("value").sum(), pl.col("base_value").first(),
                                                pl.col("output").first(), pl.col("space").first(),
                                                pl.col("split").first()).sort("patient_id")
        np.testing.assert_allclose((per["base_value"] + per["value"]).to_numpy(), per["output"].to_numpy(), atol=1e-4)
        assert set(per["split"]) <= {"internal", "external"}
        saved = read_predictions(study.models_dir / model, study.store_path)
        score = dict(zip(saved["patient_id"].to_list(), saved["score"].to_list()))
        out = per["output"].to_numpy()
        prob = 1 / (1 + np.exp(-out)) if per["space"][0] == "log-odds" else out
        np.testing.assert_allclose(prob, [score[p] for p in per["patient_id"]], atol=1e-6)
        groups = pl.read_parquet(study.report_dir / "explain" / model / "shap_groups.parquet")
        assert groups.group_by("patient_id").agg(pl.col("value").sum()).sort("patient_id")["value"].to_list() == \
            pytest.approx(per["value"].to_list(), abs=1e-9)
    fusion = pl.read_parquet(study.report_dir / "explain" / "fusion" / "shap_values.parquet")
    assert set(fusion["feature"]) == {"score:img_svm", "score:clin", "marker", "sex"}
    xgb = pl.read_parquet(study.report_dir / "explain" / "xgb" / "shap_groups.parquet")
    assert set(xgb["group"]) == {"img:mean", "marker"}


def test_waterfalls_default_to_the_extreme_external_patients(first: tuple) -> None:
    study, _, _ = first
    m = _manifest(study)
    for model in ("clin", "fusion"):
        values = pl.read_parquet(study.report_dir / "explain" / model / "shap_values.parquet")
        ext = values.filter(pl.col("split") == "external").group_by("patient_id").agg(pl.col("output").first())
        ext = ext.sort(["output", "patient_id"])
        want = {ext["patient_id"][0], ext["patient_id"][-1]}
        got = {f["patient_id"] for f in m["figures"] if f["model"] == model and f["kind"] == "shap_waterfall"}
        assert got == want


def test_attention_figures_show_the_saved_attention(first: tuple) -> None:
    study, _, _ = first
    m = _manifest(study)
    heat = [f for f in m["figures"] if f["kind"] == "attention_heatmap"]
    tiles = [f for f in m["figures"] if f["kind"] == "top_tiles"]
    assert len(heat) == len(tiles) == 2
    shown = pl.read_parquet(study.report_dir / "explain" / "mil" / "attention.parquet")
    saved = pl.read_parquet(study.models_dir / "mil" / "attention.parquet")
    joined = shown.join(saved, on=["patient_id", "source_id", "instance"], suffix="_saved")
    assert joined.height == shown.height
    np.testing.assert_array_equal(joined["attention"].to_numpy(), joined["attention_saved"].to_numpy())
    preds = read_predictions(study.models_dir / "mil", study.store_path).filter(pl.col("split") == "external").sort("score")
    assert {f["patient_id"] for f in heat} == {preds["patient_id"][0], preds["patient_id"][-1]}


def test_rerun_does_no_work(first: tuple) -> None:
    study, _, files = first
    folder = study.report_dir / "explain"
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    again = explain(study, settings=SETTINGS, progress=False)
    assert again.skipped == ["clin", "xgb", "img_svm", "fusion", "vote", "mil"]
    assert all(m.seconds == 0.0 for m in again.models)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == stamps
    assert {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    # a different setting is different work
    changed = explain(study, models=["vote"], settings=Settings(nsamples=32, top_k=3), progress=False)
    assert [m.status for m in changed.models] == ["explained"]
    explain(study, models=["vote"], settings=SETTINGS, progress=False)


def test_same_inputs_give_byte_identical_files(first: tuple) -> None:
    study, _, files = first
    backup = study.report_dir / "explain-first"
    shutil.copytree(study.report_dir / "explain", backup)
    try:
        shutil.rmtree(study.report_dir / "explain")
        explain(study, settings=SETTINGS, progress=False)
        folder = study.report_dir / "explain"
        assert {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    finally:
        shutil.rmtree(study.report_dir / "explain", ignore_errors=True)
        shutil.copytree(backup, study.report_dir / "explain")
        shutil.rmtree(backup)


def test_one_model_and_chosen_patients(first: tuple) -> None:
    study, _, files = first
    pid = "P005"
    result = explain(study, models=["clin", "mil"], patients=[pid], settings=SETTINGS, progress=False)
    assert [(m.name, m.status) for m in result.models] == [("clin", "explained"), ("mil", "explained")]
    m = _manifest(study)
    waterfalls = [f for f in m["figures"] if f["model"] == "clin" and f["kind"] == "shap_waterfall"]
    assert [f["patient_id"] for f in waterfalls] == [pid]
    assert {f["patient_id"] for f in m["figures"] if f["model"] == "mil"} == {pid}
    # the patient is explained whatever its split; the others keep their entries and files
    values = pl.read_parquet(study.report_dir / "explain" / "clin" / "shap_values.parquet")
    assert pid in set(values["patient_id"])
    assert {f["path"] for f in m["figures"] if f["model"] == "fusion"} == {
        p for p in files if p.startswith("fusion/") and p.endswith(".png")}
    listed = {f["path"] for f in m["figures"]} | {v["path"] for v in m["values"]}
    on_disk = {str(p.relative_to(study.report_dir / "explain")) for p in (study.report_dir / "explain").rglob("*")
               if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    # back to the defaults for the other tests' sake
    explain(study, settings=SETTINGS, progress=False)


def test_a_model_no_longer_fitted_is_dropped_from_the_manifest(first: tuple) -> None:
    study, _, _ = first
    saved, away = study.models_dir / "vote", study.models_dir.parent / "vote-away"
    shutil.move(saved, away)
    try:
        result = explain(study, settings=SETTINGS, progress=False)
        assert [m.status for m in result.models if m.name == "vote"] == ["not fitted"]
        assert any("vote: not fitted" in n for n in result.notes)
        m = _manifest(study)
        assert "vote" not in m["models"] and not any(f["model"] == "vote" for f in m["figures"])
        assert not (study.report_dir / "explain" / "vote").exists()
    finally:
        shutil.move(away, saved)
    again = explain(study, settings=SETTINGS, progress=False)
    assert [m.status for m in again.models if m.name == "vote"] == ["explained"]
    assert again.skipped == ["clin", "xgb", "img_svm", "fusion", "mil"]


def test_bad_names_are_clear_errors(fitted: StudyConfig) -> None:
    with pytest.raises(ExplainError, match="no model named nope"):
        explain(fitted, models=["nope"], progress=False)
    with pytest.raises(ExplainError, match="P999 not in the store"):
        explain(fitted, patients=["P999"], progress=False)


def test_cli_calls_explain(first: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    study, _, _ = first
    assert main(["explain", str(study.root / "study.toml"), "--model", "vote", "--model", "clin"]) == 0
    out = capsys.readouterr().out
    assert "manifest.json" in out and "vote" in out and "clin" in out and "fusion" not in out
    assert main(["explain", str(study.root / "study.toml"), "--model", "nope"]) == 1
    assert "no model named nope" in capsys.readouterr().err
