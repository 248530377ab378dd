"""A small synthetic study written once per test session (about a second)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline import synth


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of ``make_study(..., small=True)`` with seed 0."""
    return synth.make_study(tmp_path_factory.mktemp("synth") / "demo", seed=0, small=True).parent


@pytest.fixture(scope="session")
def small_truth() -> dict[str, synth.Patient]:
    """The latent truth behind the small study, by patient id."""
    return {p.patient_id: p for p in synth.make_patients(synth.SMALL_PATIENTS, 0)}


@pytest.fixture(scope="session")
def manifests(small_study: Path) -> dict[str, list[dict[str, str]]]:
    """Rows of the small study's three manifests, read with the csv module."""
    out = {}
    for name in ("patients", "slides", "scans"):
        with open(small_study / "manifests" / f"{name}.csv", newline="", encoding="utf-8") as fh:
            out[name] = list(csv.DictReader(fh))
    return out
