"""Fixtures of the cohort tests (helpers live in cohort_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import StudyConfig

from cohort_helpers import DEMO_VARIABLES, build_store, demo_patients, make_study


@pytest.fixture()
def demo_study(tmp_path: Path) -> StudyConfig:
    """The repository's demo cohort on a demo-like store (A development, B external)."""
    build_store(tmp_path / "store.duckdb", demo_patients(), DEMO_VARIABLES)
    return make_study(tmp_path, cohort={"name": "demo", "params": {"min_age": 18}},
                      split={"external_centers": ["B"], "internal_fraction": 0.25, "seed": 0})
