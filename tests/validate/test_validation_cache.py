"""validate recomputes only what changed: each model's metrics and each pair's comparisons are cached under a
digest of their inputs (analytics.validation.cache); the files written from the cache equal, byte for byte,
those computed without it; changed predictions recompute only that model and its pairs; a corrupt or
tampered entry is recomputed, never trusted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.fit import fit
from analytics.validation import stage
from pipeline import store
from pipeline.config import StudyConfig, load_config

N = 220
FILES = ("metrics.json", "metrics.csv", "curves.json")

BASE = """[[models]]
name = "full"
kind = "logistic"
clinical = ["x", "z", "grade"]
params = { penalty = "none" }
[[models]]
name = "cox"
kind = "cox"
clinical = ["x", "z"]
"""
ADDED = """[[models]]
name = "small"
kind = "logistic"
clinical = ["x"]
params = { penalty = "none" }
"""
SETTINGS = """[variables]
grade = { levels = ["low", "high"] }
"""
VALIDATION = """[validation]
n_boot = 20
folds = 2
horizons = [10]
"""


def _toml(models: str) -> str:
    return study_toml("cached", 4, models + VALIDATION, sections=SETTINGS)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("cached")
    rng = np.random.default_rng(8)
    x, z = rng.normal(size=N), rng.normal(size=N)
    grade = rng.choice(["low", "high"], N)
    lp = 0.9 * x - 0.5 * z + 0.4 * (grade == "high")
    t_event = rng.exponential(15.0 / np.exp(lp))
    t_cens = rng.uniform(4, 30, N)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 150, "A", "B"),
        "x": x.round(4), "z": z.round(4), "grade": grade,
        "label": (rng.random(N) < 1 / (1 + np.exp(-lp))).astype(int),
        "time": np.minimum(t_event, t_cens).round(3), "event": (t_event <= t_cens).astype(int),
    })
    out = build_study(tmp_path, patients, "c.label, c.time, c.event, c.x, c.z, c.grade", _toml(BASE))
    fit(out, progress=False)
    return tmp_path


@pytest.fixture()
def study(fitted: Path, tmp_path: Path) -> StudyConfig:
    """A fresh copy of the fitted study (a study folder is relocatable), not yet validated."""
    root = tmp_path / "study"
    shutil.copytree(fitted, root)
    return load_config(root / "study.toml")


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Replace ``stage.<name>`` by a wrapper that records the first argument of each call (the model or pair)."""
    calls: list[str] = []
    original: Callable[..., Any] = getattr(stage, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if isinstance(args[0], str) else f"{args[2]}-{args[3]}")
        return original(*args, **kwargs)

    monkeypatch.setattr(stage, name, wrapped)
    return calls


def _files(study: StudyConfig) -> dict[str, bytes]:
    return {f: (study.report_dir / f).read_bytes() for f in FILES}


def _cache_dir(study: StudyConfig) -> Path:
    return study.root / "cache" / "validation"


def _add_model(study: StudyConfig) -> StudyConfig:
    (study.root / "study.toml").write_text(_toml(BASE + ADDED), encoding="utf-8")
    grown = load_config(study.root / "study.toml")
    fit(grown, progress=False)
    return grown


def test_adding_a_model_validates_only_it_and_equals_the_uncached_files(
        study: StudyConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    models = _counting(monkeypatch, "_model_metrics")
    pairs = _counting(monkeypatch, "paired_comparisons")
    stage.validate(study, progress=False)
    assert sorted(models) == ["cox", "full"]
    grown = _add_model(study)
    models.clear()
    pairs.clear()
    result = stage.validate(grown, progress=False)
    assert not result.skipped
    assert models == ["small"]  # the unchanged models come from the cache
    assert pairs == ["full-small"]  # the only new pair of binary models
    cached = _files(grown)
    assert set(json.loads(cached["metrics.json"])["models"]) == {"full", "cox", "small"}
    # without the cache: every model computed again, the same bytes
    for path in _cache_dir(grown).iterdir():
        path.unlink()
    models.clear()
    stage.validate(grown, progress=False, force=True)
    assert sorted(models) == ["cox", "full", "small"]
    assert _files(grown) == cached
    # and from the cache alone (every entry present), once more the same bytes
    models.clear()
    stage.validate(grown, progress=False, force=False)
    (grown.report_dir / "metrics.json").unlink()  # makes the whole-validation shortcut miss
    stage.validate(grown, progress=False)
    assert models == []
    assert _files(grown) == cached


def test_changed_predictions_recompute_only_that_model(study: StudyConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    grown = _add_model(study)
    stage.validate(grown, progress=False)
    before = json.loads((grown.report_dir / "metrics.json").read_text())
    entries = sorted(p.name for p in _cache_dir(grown).iterdir())
    assert len([e for e in entries if e.startswith("model.")]) == 3
    assert len([e for e in entries if e.startswith("comparison.")]) == 1
    con = store.connect(grown.store_path)
    try:  # new predictions of one model (a monotone change: the same AUC, another calibration)
        con.execute("UPDATE predictions SET score = score * 0.5 WHERE model = 'small'")
    finally:
        con.close()
    models = _counting(monkeypatch, "_model_metrics")
    pairs = _counting(monkeypatch, "paired_comparisons")
    stage.validate(grown, progress=False)
    assert models == ["small"]
    assert pairs == ["full-small"]
    after = json.loads((grown.report_dir / "metrics.json").read_text())
    assert after["models"]["full"] == before["models"]["full"]
    assert after["models"]["cox"] == before["models"]["cox"]
    cal = "calibration"
    assert (after["models"]["small"]["splits"]["train"][cal] != before["models"]["small"]["splits"]["train"][cal])
    # the model's older entry (and its pair's) were replaced, not kept beside the new ones
    now = sorted(p.name for p in _cache_dir(grown).iterdir())
    assert len(now) == len(entries)
    assert [e for e in now if e.startswith("model.full.")] == [e for e in entries if e.startswith("model.full.")]
    assert [e for e in now if e.startswith("model.small.")] != [e for e in entries if e.startswith("model.small.")]


@pytest.mark.parametrize("damage", ["garbage", "tampered", "wrong_shape"])
def test_a_damaged_entry_is_recomputed(study: StudyConfig, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    stage.validate(study, progress=False)
    truth = _files(study)
    (entry,) = _cache_dir(study).glob("model.full.*.json")
    data = json.loads(entry.read_text())
    if damage == "garbage":
        entry.write_bytes(b"\x80not json{")
    elif damage == "tampered":  # a number changed without its checksum
        data["payload"]["metrics"]["splits"]["train"]["auc"]["estimate"] = 0.999
        entry.write_text(json.dumps(data))
    else:  # a consistent checksum over a payload of the wrong shape
        import hashlib

        data["payload"] = {"metrics": {"splits": "nope"}, "order": {}, "curves": {}, "notes": []}
        text = json.dumps(data["payload"], allow_nan=False, ensure_ascii=True, separators=(",", ":"))
        data["sha256"] = hashlib.sha256(text.encode()).hexdigest()
        entry.write_text(json.dumps(data))
    (study.report_dir / "metrics.json").unlink()
    models = _counting(monkeypatch, "_model_metrics")
    stage.validate(study, progress=False)
    assert models == ["full"]
    assert _files(study) == truth
    # the recomputed entry replaced the damaged one
    assert json.loads(entry.read_text())["payload"]["metrics"] == json.loads(
        json.dumps(json.loads(truth["metrics.json"])["models"]["full"]))
