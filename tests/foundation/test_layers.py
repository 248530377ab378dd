"""The import contracts in pyproject.toml name every module they must, so a new module cannot slip past them."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import tomllib

import analytics

ROOT = Path(__file__).resolve().parents[2]
TOP = {"analytics.cli", "analytics.run", "analytics.demo"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _analytics_children() -> set[str]:
    return {f"analytics.{m.name}" for m in pkgutil.iter_modules(analytics.__path__)}


def test_stats_contract_forbids_every_other_analytics_module() -> None:
    contract = _contracts()["analytics.stats imports nothing else of the project"]
    missing = _analytics_children() - {"analytics.stats"} - set(contract["forbidden_modules"])
    assert not missing, f"add {sorted(missing)} to the stats contract in pyproject.toml"


def test_top_layer_contract_covers_every_module_below_the_top() -> None:
    contract = _contracts()["the CLI, the runner and the notebook API sit on top: nothing below imports them"]
    assert TOP | {"cohortlab"} == set(contract["forbidden_modules"])
    missing = _analytics_children() - TOP - set(contract["source_modules"])
    assert not missing, f"add {sorted(missing)} to the top-layer contract in pyproject.toml"
