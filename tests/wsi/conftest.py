"""Fixtures for the whole-slide tests: the real slides in tests/data/wsi and small study stores."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline import store
from pipeline.config import StudyConfig, parse_study

WSI_DATA = Path(__file__).resolve().parent.parent / "data" / "wsi"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the test machine's two cores are shared, and oversubscribed
    OpenMP threads spin-wait (a small resnet18 batch went from 0.05 s to 0.8 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def wsi_data() -> Path:
    return WSI_DATA


@pytest.fixture(scope="session")
def cmu() -> Path:
    return WSI_DATA / "CMU-1-Small-Region.svs"


def feature_set(name: str = "r18", **kw: Any) -> dict[str, Any]:
    """A small WSI feature set: resnet18 with random weights, in-process reading."""
    return {"name": name, "modality": "wsi", "encoder": "resnet18", "weights": "random", "num_workers": 0, "batch_size": 16, **kw}


def build_study(
    root: Path,
    slides: list[tuple[str, str, str, float | None]],
    feature_sets: list[dict[str, Any]],
    copy: bool = False,
) -> StudyConfig:
    """A study whose store already holds ``slides`` as (slide_id, patient_id, file in tests/data/wsi, mpp override).

    With ``copy`` each slide file is copied into the study folder under its slide id
    (distinct files for the same image) and referenced by a relative path.
    """
    root.mkdir(parents=True, exist_ok=True)
    study = parse_study(
        {"study": {"name": "wsitest"}, "manifests": {"patients": "patients.csv"}, "feature_sets": feature_sets}, root
    )
    con = store.connect(study.store_path)
    try:
        with store.transaction(con):
            for pid in sorted({s[1] for s in slides}):
                con.execute("INSERT INTO patients VALUES (?, 'A', NULL, NULL)", [pid])
            for sid, pid, name, mpp in slides:
                src = WSI_DATA / name
                if copy:
                    dst = root / "slides" / f"{sid}{src.suffix}"
                    dst.parent.mkdir(exist_ok=True)
                    shutil.copyfile(src, dst)
                    path, full = str(dst.relative_to(root)), dst
                else:
                    path, full = str(src), src
                con.execute(
                    "INSERT INTO slides (slide_id, patient_id, path, mpp, mpp_source, fingerprint) VALUES (?, ?, ?, ?, ?, ?)",
                    [sid, pid, path, mpp, "manifest" if mpp else "metadata", store.file_fingerprint(full, mpp)],
                )
    finally:
        con.close()
    return study


@pytest.fixture(scope="session")
def make_study() -> Callable[..., StudyConfig]:
    return build_study


@pytest.fixture(scope="session")
def fs_dict() -> Callable[..., dict[str, Any]]:
    return feature_set
