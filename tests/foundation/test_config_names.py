"""One name rule for the study, its feature sets and its models, each error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, check_name, load_config

BASE = """
[study]
name = "s1"

[manifests]
patients = "p.csv"

[[feature_sets]]
name = "wsi_r18"
modality = "wsi"
encoder = "resnet18"
mpp = 1.0

[[models]]
name = "clin"
kind = "logistic"
clinical = ["age"]
"""


@pytest.mark.parametrize("where, old", [("study.name", '"s1"'), ("feature_sets[0].name", '"wsi_r18"'), ("models[0].name", '"clin"')])
@pytest.mark.parametrize("bad", ["1st", "has space", "x/y", "_x", "", "ünï"])
def test_every_name_follows_one_rule(tmp_path: Path, where: str, old: str, bad: str) -> None:
    (tmp_path / "study.toml").write_text(BASE.replace(f"name = {old}", f'name = "{bad}"'), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "study.toml")
    text = str(info.value)
    assert f"key '{where}'" in text and "must start with a letter and hold only letters, digits, '_' and '-'" in text


@pytest.mark.parametrize("good", ["a", "wsi_resnet50", "ct-r3d18", "A1_b-2"])
def test_valid_names_pass(tmp_path: Path, good: str) -> None:
    assert check_name(good) == good
    for old in ('"s1"', '"wsi_r18"'):
        (tmp_path / "study.toml").write_text(BASE.replace(f"name = {old}", f'name = "{good}"'), encoding="utf-8")
        load_config(tmp_path / "study.toml")
