"""A small clinical study for the tests of published models and of scoring new patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from study_builders import study_toml, write_study

VARIABLES = """[variables]
sex = { levels = ["F", "M"] }
grade = { levels = ["low", "mid", "high"] }
age = { type = "numeric", unit = "years" }
"""
COLUMNS = "c.label, c.age, c.sex, c.grade, c.time, c.event"


def patients(n: int = 160, seed: int = 3) -> pl.DataFrame:
    """Patients of centres A (development) and B (external): age, sex, grade, a 0/1 label and follow-up."""
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(60, 10, n), 1)
    sex = rng.choice(["F", "M"], n)
    grade = rng.choice(["low", "mid", "high"], n)
    lp = -6 + 0.09 * age + 0.7 * (sex == "M") + np.select([grade == "mid", grade == "high"], [0.5, 1.2], 0.0)
    label = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    time = np.round(rng.exponential(80 * np.exp(-(lp - lp.mean()))), 1) + 1
    event = (time < 100).astype(int)
    return pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(n)], "center": ["A" if i % 4 else "B" for i in range(n)],
        "age": age, "sex": sex, "grade": grade, "label": label, "time": np.minimum(time, 100.0), "event": event,
    })


def write(root: Path, models: str, *, study: str = "", validation: str = "") -> Path:
    """``study.toml`` of :func:`patients` with ``models`` (``[[models]]`` entries); its path."""
    body = models + "\n[validation]\nfolds = 2\nn_boot = 0\n" + validation + "\n[explain]\nenabled = false\n"
    toml = study_toml("fixedtest", 7, body, study=study, sections=VARIABLES)
    return write_study(root, patients(), COLUMNS, toml)


KINDS = ("glm", "ridge", "svm", "boost", "vote", "cox", "published")
"""The models of the shared fitted study (conftest.py): one of every clinical kind."""


def new_patients() -> pl.DataFrame:
    """Every patient of :func:`patients` as a new-patients file reads (text columns, no outcome)."""
    return pl.read_csv(Path(__file__).parent / "ci_data.csv", infer_schema=False).drop("label", "time", "event", "split")
