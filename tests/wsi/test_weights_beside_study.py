"""A weights file named relatively in study.toml is found beside study.toml, whatever the working directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch

from pipeline.config import load_config
from pipeline.wsi.embedder import make_embedder

STUDY = """
[study]
name = "w"

[manifests]
patients = "p.csv"

[[feature_sets]]
name = "wsi_local"
modality = "wsi"
encoder = "resnet18"
weights = "{weights}"
mpp = 2.0
tile_size = 32
"""


def test_relative_weights_file_resolves_against_the_study_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study_dir = tmp_path / "study"
    (study_dir / "weights").mkdir(parents=True)
    torch.manual_seed(7)
    path = study_dir / "weights" / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    (study_dir / "study.toml").write_text(STUDY.format(weights="weights/r18.pth"), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the file is not reachable from here by its relative name
    fs = load_config(study_dir / "study.toml").feature_set("wsi_local")
    assert fs.weights == "weights/r18.pth"  # what the study says is kept as written (it is recorded so)
    assert Path(fs.weights_source()) == study_dir.resolve() / "weights" / "r18.pth"
    record = make_embedder(fs, "cpu").record()
    assert record.weights == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.params["weights_spec"] == "weights/r18.pth"


def test_named_weights_and_missing_files_pass_through_unchanged(tmp_path: Path) -> None:
    (tmp_path / "study.toml").write_text(STUDY.format(weights="missing.pth"), encoding="utf-8")
    fs = load_config(tmp_path / "study.toml").feature_set("wsi_local")
    assert fs.weights_source() == "missing.pth"  # the loader's own "no such file" error then names it
    for named in ("random", "pretrained", "hf-hub:MahmoodLab/UNI"):
        (tmp_path / "study.toml").write_text(STUDY.format(weights=named), encoding="utf-8")
        assert load_config(tmp_path / "study.toml").feature_set("wsi_local").weights_source() == named
