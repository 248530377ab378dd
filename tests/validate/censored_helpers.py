"""A small censored study: a label "event by 10" (unknown where follow-up ends before 10), time and event,
a binary logistic model and a Cox model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from study_builders import build_study, study_toml

from pipeline.config import StudyConfig

N = 160
HORIZON = 10.0


def censored_study(tmp_path: Path, label_horizon: str = f"label_horizon = {HORIZON:g}") -> StudyConfig:
    """Write, ingest and load the study (``label_horizon``: the [validation] line, or "")."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=N)
    t_event = rng.exponential(20.0 / np.exp(1.2 * x))
    t_cens = rng.uniform(3, 40, N)
    time = np.minimum(t_event, t_cens).round(3)
    event = (t_event <= t_cens).astype(int)
    label = np.where(event & (time <= HORIZON), 1, np.where(time > HORIZON, 0, -1))
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 110, "A", "B"),
        "x": x.round(4), "age": rng.normal(60, 8, N).round(1),
        "label": pl.Series(label).replace(-1, None), "time": time, "event": event,
    })
    return build_study(tmp_path, patients, "c.label, c.time, c.event, c.x, c.age", _toml(label_horizon))


def write_toml(root: Path, label_horizon: str) -> None:
    """Rewrite only ``study.toml`` (``label_horizon`` as in :func:`censored_study`)."""
    (root / "study.toml").write_text(_toml(label_horizon), encoding="utf-8")


def _toml(label_horizon: str) -> str:
    """study.toml: a logistic and a Cox model on x and age, bootstrap, folds and horizons."""
    return study_toml("censored", 3, f"""[[models]]
name = "logit"
kind = "logistic"
clinical = ["x", "age"]
[[models]]
name = "cox"
kind = "cox"
clinical = ["x", "age"]
[validation]
n_boot = 20
folds = 3
horizons = [8, 15]
{label_horizon}
""")
