"""Fixtures for model tests: one cohort with every kind of input, fitted once per session."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from pipeline.config import StudyConfig

from model_helpers import ALL_KINDS, make_study, write_cohort_store


@pytest.fixture(scope="session")
def cohort_data() -> dict[str, Any]:
    """48 patients (24 train, 12 internal, 12 external) with a learnable signal in every input.

    ``marker`` and the first image-feature dimensions carry the label; a few
    positive patients' bags hold a "key" instance; ages have gaps (imputed);
    two patients have no image features (``img``) and no instance bags
    (``tiles``): missing inputs.
    """
    rng = np.random.default_rng(11)
    n = 48
    ids = [f"P{i:02d}" for i in range(n)]
    label = np.array([i % 2 for i in range(n)], dtype=np.int64)
    split = np.array(["train"] * 24 + ["internal"] * 12 + ["external"] * 12, dtype=object)
    center = np.where(split == "external", "B", "A")
    age = np.round(rng.normal(50, 10, n), 1)
    age[[3, 20, 30]] = np.nan
    marker = np.round(label * 1.2 + rng.normal(0, 1, n), 3)
    patients = pl.DataFrame({
        "patient_id": ids, "center": center.tolist(), "label": label, "split": split.tolist(),
        "age": pl.Series(age).fill_nan(None), "sex": rng.choice(["F", "M"], n).tolist(), "marker": marker,
    })
    feats = rng.normal(size=(n, 12)).astype(np.float32)
    feats[:, :2] += 1.0 * label[:, None]
    bags = {}
    for i, pid in enumerate(ids):
        b = rng.normal(size=(int(rng.integers(6, 12)), 8)).astype(np.float32)
        if label[i]:
            b[0, :3] += 3.0
        bags[pid] = b
    lacking = ["P05", "P40"]
    return {"patients": patients, "features": feats, "bags": bags, "lacking": lacking, "ids": ids}


@pytest.fixture(scope="session")
def fitted_study(tmp_path_factory: pytest.TempPathFactory, cohort_data: dict[str, Any]) -> StudyConfig:
    """The all-kinds study, fitted once (tests must not change it: copy it first)."""
    from analytics.fit import fit

    root = tmp_path_factory.mktemp("fitted")
    write_cohort_store(root, cohort_data)
    study = make_study(root, ALL_KINDS)
    fit(study, progress=False)
    return study
