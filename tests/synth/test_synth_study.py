"""The study folder: study.toml validates, manifests are complete, files are reproducible."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline import synth
from pipeline.config import load_config
from pipeline.synth import study as synth_study


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_study_toml_validates_with_the_demo_settings(small_study: Path) -> None:
    study = load_config(small_study / "study.toml")
    assert study.study.name == "demo" and study.study.seed == 0
    fs = {f.name: f for f in study.feature_sets}
    assert set(fs) == {"wsi_resnet18", "ct_r3d18", "ct_radiomics"}
    assert (fs["wsi_resnet18"].encoder, fs["wsi_resnet18"].weights, fs["wsi_resnet18"].mpp) == ("resnet18", "random", 1.0)
    assert (fs["wsi_resnet18"].tile_size, fs["wsi_resnet18"].tissue_threshold) == (224, 0.25)
    assert (fs["ct_r3d18"].encoder, fs["ct_r3d18"].mode, fs["ct_r3d18"].spacing) == ("r3d_18", "3d", [1.0, 1.0, 1.0])
    assert fs["ct_r3d18"].margin_mm == 5 and fs["ct_r3d18"].weights == "random"
    assert (fs["ct_radiomics"].encoder, fs["ct_radiomics"].mode) == ("radiomics", "radiomics")
    models = {m.name: m for m in study.models}
    binary = [n for n, m in models.items() if m.kind not in ("cox", "mil_cox")]
    assert binary == ["clinical", "wsi_svm", "wsi_mil", "ct_svm", "ct_xgb", "fusion", "ensemble"]
    assert models["clinical"].kind == "logistic"
    assert models["clinical"].clinical == ["age", "sex", "esr", "anti_ssa", "igg"]
    assert models["wsi_svm"].features == ["wsi_resnet18:mean"]
    assert models["wsi_mil"].kind == "mil" and models["wsi_mil"].features == ["wsi_resnet18"]
    assert models["ct_svm"].features == ["ct_radiomics:mean"]
    assert models["ct_xgb"].kind == "xgboost" and models["ct_xgb"].features == ["ct_radiomics:mean"]
    assert models["ct_xgb"].clinical == ["age", "sex", "esr", "anti_ssa", "igg"]
    assert {k: g.cuts for k, g in study.validation.subgroups.items()} == {"sex": [], "age": [60.0]}
    assert models["fusion"].scores == ["wsi_svm", "ct_svm"] and models["fusion"].clinical == ["anti_ssa", "igg"]
    assert models["ensemble"].kind == "voting" and models["ensemble"].members == ["wsi_svm", "wsi_mil"]
    roles = {k: v.role for k, v in study.variables.items()}
    assert roles["high_risk"] == "outcome" and roles["followup_months"] == "time"
    assert roles["event"] == "event" and roles["center"] == "strata"
    units = {k: v.unit for k, v in study.variables.items()}
    assert (units["esr"], units["igg"], units["age"], units["followup_months"]) == ("mm/h", "g/L", "years", "months")
    assert study.cohort is not None and study.cohort.name == "demo" and study.cohort.params == {"min_age": 18}
    assert study.split.external_centers == ["B"] and study.split.internal_fraction == 0.25
    assert study.validation.n_boot == 500 and study.validation.compare == [["fusion", "clinical"]]
    assert study.report.dir is None and study.report_dir == small_study / "reports" / "demo"


def test_manifests_are_complete_and_their_paths_exist(small_study: Path, manifests: dict, small_truth: dict) -> None:
    study = load_config(small_study)
    header = (small_study / "manifests" / "patients.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(synth.PATIENT_COLUMNS)
    ids = [r["patient_id"] for r in manifests["patients"]]
    assert ids == sorted(small_truth) and len(ids) == synth.SMALL_PATIENTS
    for r in manifests["patients"]:
        assert list(r.values()) == small_truth[r["patient_id"]].row()
    assert {r["patient_id"] for r in manifests["slides"]} == set(ids)
    assert {r["patient_id"] for r in manifests["scans"]} == set(ids)
    for r in manifests["slides"]:
        assert study.path(r["path"]).is_file()
    for r in manifests["scans"]:
        assert study.path(r["image_path"]).is_file() and study.path(r["mask_path"]).is_file()
    # some patients have a second slide, for per-patient pooling
    per_patient = [sum(s["patient_id"] == i for s in manifests["slides"]) for i in ids]
    assert max(per_patient) == 2 and min(per_patient) == 1


def test_missing_values_are_empty_cells() -> None:
    rows = [p.row() for p in synth.make_patients(60, 0)]
    columns = list(synth.PATIENT_COLUMNS)
    for name in ("esr", "igg"):
        cells = [r[columns.index(name)] for r in rows]
        assert "" in cells and all(c == "" or float(c) > 0 for c in cells)
    for name in ("patient_id", "center", "age", "sex", "anti_ssa", "high_risk", "followup_months", "event"):
        assert all(r[columns.index(name)] != "" for r in rows)
    assert {r[columns.index("anti_ssa")] for r in rows} == {"positive", "negative"}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(small_study: Path, tmp_path: Path) -> None:
    first = _hashes(small_study)
    assert len(first) == 5 + len(list((small_study / "slides").iterdir())) + 2 * synth.SMALL_PATIENTS
    again = synth.make_study(tmp_path / "again", seed=0, small=True).parent
    assert _hashes(again) == first
    other = synth.make_study(tmp_path / "other", seed=1, small=True).parent
    differ = _hashes(other)
    common = set(first) & set(differ)
    assert "manifests/patients.csv" in common
    assert all(first[k] != differ[k] for k in common if k.startswith(("slides/", "scans/")) or k.endswith("patients.csv"))


def test_report_dir_is_written_relative_to_the_study(tmp_path: Path) -> None:
    toml = synth.make_study(tmp_path / "studies" / "demo", n_patients=10, small=True, report_dir=tmp_path / "out" / "rep")
    study = load_config(toml)
    assert study.report.dir == "../../out/rep"
    assert study.report_dir.resolve() == (tmp_path / "out" / "rep").resolve()


def test_an_existing_study_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    synth.make_study(folder, n_patients=10, seed=0, small=True)
    (folder / "store.duckdb").write_text("kept")
    before = _hashes(folder)
    with pytest.raises(FileExistsError, match="already holds"):
        synth.make_study(folder, n_patients=10, seed=1, small=True)
    assert _hashes(folder) == before
    synth.make_study(folder, n_patients=10, seed=1, small=True, overwrite=True)
    after = _hashes(folder)
    assert after["store.duckdb"] == before["store.duckdb"]
    assert after["manifests/patients.csv"] != before["manifests/patients.csv"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".synth-")]


def test_a_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(synth_study, "write_scan", broken)  # the name make_study calls
    folder = tmp_path / "demo"
    with pytest.raises(OSError, match="disk full"):
        synth.make_study(folder, n_patients=10, small=True)
    assert list(folder.iterdir()) == []
