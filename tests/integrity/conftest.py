"""One small synthetic study, ingested and embedded once per session; tests work on copies of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from pipeline import synth
from pipeline.config import load_config, to_toml
from pipeline.embed import embed
from pipeline.ingest import ingest

# the demo's WSI feature set and the CT radiomics one (masks in the scan fingerprint), and fast models
FEATURE_SETS = ("wsi_resnet18", "ct_radiomics")
MODELS = ("clinical", "wsi_svm", "ct_svm")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the test machine's cores are shared (see tests/wsi/conftest.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a small synthetic study after ``ingest`` and ``embed`` (do not change it: copy it)."""
    toml = synth.make_study(tmp_path_factory.mktemp("integrity") / "study", seed=0, small=True)
    data = tomllib.loads(toml.read_text(encoding="utf-8"))
    data["feature_sets"] = [f for f in data["feature_sets"] if f["name"] in FEATURE_SETS]
    data["models"] = [m for m in data["models"] if m["name"] in MODELS]
    data["validation"] = {"n_boot": 50}
    toml.write_text(to_toml(data), encoding="utf-8")
    study = load_config(toml)
    ingest(study, progress=False)
    result = embed(study, device="cpu", progress=False)
    assert [(r.name, r.failed) for r in result.feature_sets] == [(n, 0) for n in FEATURE_SETS]
    return toml.parent

