"""study.toml validation: errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

BASE = """
[study]
name = "s1"

[manifests]
patients = "p.csv"

[[feature_sets]]
name = "wsi_r18"
modality = "wsi"
encoder = "resnet18"
weights = "random"
mpp = 1.0

[[models]]
name = "clin"
kind = "logistic"
clinical = ["age"]
"""


def _load(tmp_path: Path, text: str):
    (tmp_path / "study.toml").write_text(text)
    return load_config(tmp_path / "study.toml")


def test_valid_study_resolves_paths(tmp_path: Path) -> None:
    s = _load(tmp_path, BASE)
    assert s.store_path == tmp_path.resolve() / "store.duckdb"
    assert s.report_dir == tmp_path.resolve() / "reports" / "s1"
    assert s.feature_set("wsi_r18").target_mpp() == 1.0
    assert s.validation.n_boot == 2000 and s.split.internal_fraction == 0.25


@pytest.mark.parametrize(
    "edit, key, message",
    [
        (('mpp = 1.0', 'mpp = -1.0'), "feature_sets[0].mpp", "greater than 0"),
        (('mpp = 1.0', 'mpp = 1.0\nwindow = [-100, 200]'), "feature_sets[0]", "do not apply to modality 'wsi'"),
        (('mpp = 1.0', 'mpp = 1.0\ntile_sise = 224'), "feature_sets[0].tile_sise", "unknown key"),
        (('kind = "logistic"', 'kind = "forest"'), "models[0].kind", "Input should be"),
        (('clinical = ["age"]', 'features = ["nope"]'), "(top level)", "unknown feature set 'nope'"),
        (('name = "s1"', 'name = "1 bad"'), "study.name", "must start with a letter"),
        (('patients = "p.csv"', ''), "manifests.patients", "Field required"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, edit: tuple[str, str], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, BASE.replace(*edit))
    text = str(info.value)
    assert f"key '{key}'" in text and message in text and "study.toml" in text


def test_magnification(tmp_path: Path) -> None:
    s = _load(tmp_path, BASE.replace("mpp = 1.0", 'magnification = "40x"'))
    assert s.feature_set("wsi_r18").target_mpp() == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="20x"):
        _load(tmp_path, BASE.replace("mpp = 1.0", 'magnification = "twenty"'))


def test_model_references_must_be_defined_earlier(tmp_path: Path) -> None:
    text = BASE + '\n[[models]]\nname = "fusion"\nkind = "svm"\nscores = ["later"]\n'
    with pytest.raises(ConfigError, match="'later' must name a model defined earlier"):
        _load(tmp_path, text)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        _load(tmp_path, "[study\nname=1")
    with pytest.raises(ConfigError, match="no such study file"):
        load_config(tmp_path / "nope.toml")


def test_to_toml_round_trips_through_the_parser(tmp_path: Path) -> None:
    import tomllib

    from pipeline.config import to_toml

    data = {
        "study": {"name": "s1", "description": 'quote " and \\ back', "seed": 3},
        "manifests": {"patients": "p.csv"},
        "feature_sets": [{"name": "a", "modality": "wsi", "encoder": "resnet18", "mpp": 1.0, "pooling": ["mean"]}],
        "models": [{"name": "m", "kind": "svm", "clinical": ["age"], "grid": {"C": [0.1, 1.0]}, "params": {"probability": True}}],
    }
    text = to_toml(data)
    assert tomllib.loads(text) == data
    (tmp_path / "study.toml").write_text(text)
    assert load_config(tmp_path).models[0].grid == {"C": [0.1, 1.0]}
    with pytest.raises(TypeError, match="cannot write"):
        to_toml({"study": {"x": object()}})
