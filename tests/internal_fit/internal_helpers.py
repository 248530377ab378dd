"""A small binary study with internal validation switched on, and ways to read what fit left of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from study_builders import build_study, study_toml

from pipeline.config import StudyConfig

N = 90


def patients(seed: int = 5, n: int = N) -> pl.DataFrame:
    """``n`` patients of centres A and B with an age, a marker and a label that depends on both."""
    rng = np.random.default_rng(seed)
    age = rng.normal(55, 10, n).round(1)
    marker = rng.normal(0, 1, n).round(3)
    label = (rng.random(n) < 1 / (1 + np.exp(-(0.03 * (age - 55) + 1.0 * marker)))).astype(int)
    return pl.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)],
                         "center": np.where(np.arange(n) < int(0.75 * n), "A", "B"), "age": age, "marker": marker,
                         "label": label})


def models(internal: str = "bootstrap", B: int = 6, n_jobs: int = 1, extra: str = "") -> str:
    """A tuned logistic regression (its C grid searched inside every replicate) and the validation settings."""
    return f"""
[[models]]
name = "clin"
kind = "logistic"
clinical = ["age", "marker"]
[validation]
n_boot = 20
folds = 3
internal = "{internal}"
B = {B}
{extra}
[compute]
n_jobs = {n_jobs}
"""


def make(root: Path, **kw: object) -> StudyConfig:
    """Write and ingest the study under ``root`` (``kw``: :func:`models`' settings)."""
    root.mkdir(parents=True, exist_ok=True)
    return build_study(root, patients(), "c.label, c.age, c.marker", study_toml("internal", 3, models(**kw)))  # type: ignore[arg-type]


def replicate_files(study: StudyConfig, model: str = "clin") -> dict[str, bytes]:
    """Every replicate file of the model's current key, by name."""
    from analytics.models.artifacts import FitRecord

    record = FitRecord.from_json((study.models_dir / model / "manifest.json").read_bytes())
    assert record.internal is not None
    folder = study.models_dir / record.internal["folder"]
    return {p.name: p.read_bytes() for p in sorted(folder.glob("rep_*.npz"))}


def survival_study(root: Path, n: int = 120, internal: str = "bootstrap") -> StudyConfig:
    """A Cox model on a censored outcome (one predictor with an effect), B = 3, horizons 8 and 15."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=n)
    t_event = rng.exponential(20.0 / np.exp(1.2 * x))
    t_cens = rng.uniform(3, 40, n)
    frame = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(n)], "center": np.where(np.arange(n) < 90, "A", "B"),
        "x": x.round(4), "age": rng.normal(60, 8, n).round(1), "label": (t_event <= 10).astype(int),
        "time": np.minimum(t_event, t_cens).round(3), "event": (t_event <= t_cens).astype(int),
    })
    body = """[[models]]
name = "cox"
kind = "cox"
clinical = ["x", "age"]
[validation]
n_boot = 20
folds = 3
horizons = [8, 15]
internal = "bootstrap"
B = 3
[compute]
n_jobs = 1
""".replace('internal = "bootstrap"', f'internal = "{internal}"')
    root.mkdir(parents=True, exist_ok=True)
    return build_study(root, frame, "c.label, c.time, c.event, c.x, c.age",
                       study_toml("surv", 3, body, study='endpoint = "survival"'))
