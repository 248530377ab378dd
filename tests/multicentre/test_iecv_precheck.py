"""``internal_external = true`` with fewer than two development centres (or groups, after pooling the small
centres) is refused when ``cohortlab fit`` starts, before any model is fitted: one line naming the model, the
centres and their events, exit status 1, and no model folder written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.cli import main
from analytics.fit import fit
from pipeline.config import ConfigError, load_config

SPLIT = 'external_centers = ["X"]\ninternal_fraction = 0.2\nseed = 1'
MODELS = """[[models]]
name = "glm"
kind = "logistic"
clinical = ["age"]
params = { penalty = "none" }
[validation]
n_boot = 0
folds = 2
internal_external = true
[compute]
n_jobs = 1
"""


def _patients(sizes: dict[str, int]) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    frames = []
    for center, n in sizes.items():
        age = rng.normal(60, 10, n)
        label = (np.arange(n) % 3 == 0).astype(int)  # a third events: every centre has both outcomes
        frames.append(pl.DataFrame({"patient_id": [f"{center}{i:03d}" for i in range(n)], "center": center,
                                    "label": label, "age": age.round(2)}))
    return pl.concat(frames)


def _built(root: Path, sizes: dict[str, int]) -> Path:
    study = build_study(root, _patients(sizes), "c.label, c.age", study_toml("pre", 1, MODELS, split=SPLIT))
    return study.root / "study.toml"


def test_fit_refuses_one_development_centre_before_any_fit(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    toml = _built(tmp_path, {"A": 90, "X": 40})
    capsys.readouterr()
    assert main(["fit", str(toml)]) == 1
    assert not (load_config(toml).models_dir / "glm").exists(), "no model folder may be written"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # nothing started: not even a progress bar
    assert "study.toml: model glm: [validation] internal_external needs at least two development centres" in err
    # A's development patients (training and internal hold-out): 30 of its 90 are events
    assert re.search(r"the development centres are: A \(30 events of 90\)$", err), err


def test_small_centres_pooled_into_one_group_are_refused_before_any_fit(tmp_path: Path) -> None:
    # A and B each have fewer than 10 events: pooled, they are one "small centres" group, too few to leave out
    toml = _built(tmp_path, {"A": 24, "B": 21, "X": 40})
    study = load_config(toml)
    with pytest.raises(ConfigError) as raised:
        fit(study, progress=False)
    assert not (study.models_dir / "glm").exists(), "no model folder may be written"
    assert re.search(r"model glm: .*A \(8 events of 24\), B \(7 events of 21\)$", str(raised.value)), raised.value
