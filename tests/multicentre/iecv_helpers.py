"""Shared pieces of the internal-external cross-validation tests: a glm's study.toml lines, patients of several
centres, and a learner factory that records what every fit sees."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from analytics.models import registry

GLM = """[[models]]
name = "glm"
kind = "logistic"
clinical = ["age", "marker"]
params = { penalty = "none" }
"""


def iecv_settings(n_boot: int = 0) -> str:
    """``[validation]`` with IECV on, two outer folds, and one local process."""
    return (f"[validation]\nn_boot = {n_boot}\nfolds = 2\ninternal_external = true\n"
            "[compute]\nn_jobs = 1\n")


def centre_patients(sizes: Mapping[str, int], seed: int, width: int = 3) -> pl.DataFrame:
    """Patients of each centre (``sizes``: centre -> patients): age, a marker and a label from
    ``logit P = -0.8 + 0.03 (age - 60) + marker``; ids are the centre and a ``width``-digit number."""
    rng = np.random.default_rng(seed)
    frames = []
    for center, n in sizes.items():
        age = rng.normal(60, 10, n)
        marker = rng.normal(0, 1, n)
        eta = -0.8 + 0.03 * (age - 60) + marker
        frames.append(pl.DataFrame({"patient_id": [f"{center}{i:0{width}d}" for i in range(n)], "center": center,
                                    "label": rng.binomial(1, 1 / (1 + np.exp(-eta))), "age": age.round(2),
                                    "marker": marker.round(4)}))
    return pl.concat(frames)


def recording(seen: list[tuple[str, tuple[str, ...]]]) -> Any:
    """A ``make`` for :func:`analytics.iecv.iecv_model` whose learners append (model, patient ids) of every fit."""
    def make(spec: Any, seed: int) -> Any:
        learner = registry.build_learner(spec, seed)
        inner = learner.fit

        def fit_recorded(data: Any, y: Any) -> Any:
            seen.append((spec.name, tuple(data.patient_ids)))
            return inner(data, y)

        learner.fit = fit_recorded
        return learner
    return make
