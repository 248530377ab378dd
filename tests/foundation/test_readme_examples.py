"""The README's study.toml examples are valid study files (a documented key that does not exist fails here)."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[2]
HEAD = """
[study]
name = "readme"

[manifests]
patients = "p.csv"
"""


def _toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


def test_backbone_ensemble_example_loads_with_one_mil_per_backbone(tmp_path: Path) -> None:
    blocks = [b for b in _toml_blocks((ROOT / "README.md").read_text(encoding="utf-8")) if 'kind = "voting"' in b]
    assert len(blocks) == 1
    (tmp_path / "study.toml").write_text(HEAD + blocks[0], encoding="utf-8")
    study = load_config(tmp_path / "study.toml")
    mils = [m for m in study.models if m.kind == "mil"]
    voting = [m for m in study.models if m.kind == "voting"]
    # one MIL per feature set, and the ensemble votes over exactly those models
    assert sorted(f for m in mils for f in m.features) == sorted(fs.name for fs in study.feature_sets)
    assert len(voting) == 1 and sorted(voting[0].members) == sorted(m.name for m in mils)
    assert {fs.encoder for fs in study.feature_sets} == {"resnet50", "inception_v3", "tf_efficientnet_b5",
                                                        "vit_small_patch16_224"}
