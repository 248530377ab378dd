"""The import contracts in pyproject.toml name every module they must, so a new module cannot slip past them."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import tomllib

import analytics

ROOT = Path(__file__).resolve().parents[2]
LAYERS = "the layers, top to bottom: entry points, report, validation, fit and explain, models, cohorts, statistics, store"
# the entry points, and the export of a model bundle (it reads the report's nomogram)
TOP = {"analytics.cli", "analytics.run", "analytics.demo", "analytics.stages", "analytics.export", "cohortlab"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _analytics_children() -> set[str]:
    return {f"analytics.{m.name}" for m in pkgutil.iter_modules(analytics.__path__)}


def _layers() -> list[list[str]]:
    """The layers contract's lines, top first, each split into its modules."""
    contract = _contracts()[LAYERS]
    assert contract["type"] == "layers" and "containers" not in contract
    return [[m.strip() for m in re.split(r"[|:]", line)] for line in contract["layers"]]


def test_every_analytics_module_sits_on_exactly_one_layer() -> None:
    named = [m for line in _layers() for m in line]
    assert len(named) == len(set(named)), "a module is named on two lines of the layers contract"
    missing = _analytics_children() - set(named)
    assert not missing, f"add {sorted(missing)} to the layers contract in pyproject.toml"
    assert not set(named) - _analytics_children() - {"cohortlab", "pipeline"}, "the layers contract names a module that is gone"


def test_the_store_is_the_bottom_layer_and_statistics_sit_alone_above_it() -> None:
    """With every analytics module on a line above, the layers keep all of them out of pipeline and stats."""
    lines = _layers()
    assert lines[-1] == ["pipeline"] and lines[-2] == ["analytics.stats"]
    assert _contracts()["analytics.stats imports nothing else of the project"]["forbidden_modules"] == ["pipeline"]


def test_the_entry_points_sit_above_everything_else() -> None:
    lines = _layers()
    report = lines.index(["analytics.report"])
    assert {m for line in lines[:report] for m in line} == TOP, "only the entry points sit above the report"


@pytest.mark.parametrize("package", ["analytics.report", "analytics.validation"])
def test_every_module_of_the_report_and_validation_packages_sits_on_their_inner_layers(package: str) -> None:
    """Each package has its own layers contract; a new module of it must be placed there, or the contract
    would not see it."""
    contract = next(c for c in _contracts().values() if c.get("containers") == [package])
    assert contract["type"] == "layers"
    named = [m.strip() for line in contract["layers"] for m in line.split("|")]
    children = {m.name for m in pkgutil.iter_modules(importlib.import_module(package).__path__)}
    assert len(named) == len(set(named)) and set(named) == children
