"""The fit summary counts a patient without a binary label but with follow-up as used by the survival
models, and lists it as unused only by the binary ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from study_builders import build_study, study_toml

from analytics.cohort import load_cohort
from analytics.fit import fit, stored_predictions
from pipeline.config import load_config

N = 90


def _study(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    x = rng.normal(size=N)
    t_event = rng.exponential(20.0 / np.exp(x))
    t_cens = rng.uniform(3, 40, N)
    time = np.minimum(t_event, t_cens).round(3)
    event = (t_event <= t_cens).astype(int)
    # "event by 10", unknown where follow-up ends before 10; P000 has neither label nor follow-up
    label = np.where(event & (time <= 10), 1, np.where(time > 10, 0, -1))
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": ["A"] * N, "x": x.round(4),
        "split": np.where(np.arange(N) < 70, "train", "internal"),
        "label": pl.Series(label).replace(-1, None).scatter(0, None),
        "time": pl.Series(time).scatter(0, None), "event": pl.Series(event).scatter(0, None),
    })
    build_study(tmp_path, patients, "c.split, c.label, c.time, c.event, c.x", study_toml("counts", 1, """[[models]]
name = "logit"
kind = "logistic"
clinical = ["x"]
grid = { C = [1.0] }
[[models]]
name = "cox"
kind = "cox"
clinical = ["x"]
[validation]
folds = 3
horizons = [8]
""", split='column = "split"'))
    return tmp_path / "study.toml"


def test_survival_models_use_training_patients_without_a_label(tmp_path: Path) -> None:
    study = load_config(_study(tmp_path))
    frame = load_cohort(study).frame.filter(pl.col("split") == "train")
    no_label = sorted(frame.filter(pl.col("label").is_null())["patient_id"].to_list())
    followed = frame.filter(pl.col("time").is_not_null() & pl.col("event").is_not_null())
    assert len(no_label) > 3 and "P000" in no_label
    result = fit(study, progress=False)
    # the binary model leaves out every training patient without a label; the Cox model only P000
    assert result.model("logit").unlabelled == no_label
    assert result.model("cox").unlabelled == ["P000"]
    assert result.model("logit").counts["train"] == frame.height - len(no_label)
    assert result.model("cox").counts["train"] == followed.height == frame.height - 1
    cox_ids = set(stored_predictions(study.store_path, "cox").filter(pl.col("split") == "train")["patient_id"])
    assert set(no_label) - {"P000"} <= cox_ids
    text = str(result)
    assert "unlabelled training patients (not used): 1 (P000)" in text
    others = [p for p in no_label if p != "P000"]
    assert f"  logit: {len(others)} ({', '.join(others[:8])}" in text and text.count("used by cox") == 1
    # up to date: the same counts from the saved manifests
    again = fit(load_config(tmp_path / "study.toml"), progress=False)
    assert {m.status for m in again.models} == {"up to date"}
    assert [line for line in str(again).splitlines() if line.startswith(("training", "  logit", "unlabelled"))] == \
        [line for line in text.splitlines() if line.startswith(("training", "  logit", "unlabelled"))]


def test_a_survival_model_saved_without_its_risk_grid_or_at_other_horizons_is_refitted(tmp_path: Path) -> None:
    toml = _study(tmp_path)
    fit(load_config(toml), progress=False)
    grid = tmp_path / "models" / "cox" / "risk_grid.parquet"
    grid.unlink()  # as saved before the grid was
    again = fit(load_config(toml), progress=False)
    assert {m.name: m.status for m in again.models} == {"logit": "up to date", "cox": "fitted"}
    assert grid.exists()
    assert {m.status for m in fit(load_config(toml), progress=False).models} == {"up to date"}
    toml.write_text(toml.read_text().replace("horizons = [8]", "horizons = [5, 8]"))
    moved = fit(load_config(toml), progress=False)
    assert {m.name: m.status for m in moved.models} == {"logit": "up to date", "cox": "fitted"}
    assert sorted(set(pl.read_parquet(grid)["time"].to_list()))[-1] == 8.0
    assert sorted(set(pl.read_parquet(tmp_path / "models" / "cox" / "horizon_risks.parquet")["horizon"])) == [5.0, 8.0]
