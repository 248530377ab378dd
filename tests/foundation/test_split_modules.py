"""``analytics.fit`` and ``pipeline.config`` keep every name their callers import after their parts moved out.

The fit stage's outer folds, plan, results, predictions table and scoring, and the study file's sections, live
in sibling modules. The names callers take are read from the project's own source (``from analytics.fit import
...``, ``fit.<name>`` after ``from analytics import fit``; the same for ``pipeline.config``), so a name a caller
uses and the module lost fails here, by name, before the caller's own test runs into it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import tomllib

import pipeline

ROOT = Path(pipeline.__file__).resolve().parents[1]
CALLERS = ("analytics", "pipeline", "cohortlab", "tests", "bench")
MOVED = {
    "analytics.fit": ("analytics.outer_folds", "analytics.fit_plan", "analytics.fit_results",
                      "analytics.prediction_table", "analytics.scoring"),
    "pipeline.config": ("pipeline.config_base", "pipeline.config_variables", "pipeline.config_feature_sets",
                        "pipeline.config_validation", "pipeline.config_run"),
}


def _used_names(module: str) -> dict[str, set[str]]:
    """Each name callers take from ``module``, with the files that take it."""
    parent, _, leaf = module.rpartition(".")
    out: dict[str, set[str]] = {}
    for top in CALLERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if module not in text and f"import {leaf}" not in text:
                continue
            tree = ast.parse(text, str(path))
            bound = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == parent
                     for a in n.names if a.name == leaf}
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == module
                     for a in n.names}
            names |= {n.attr for n in ast.walk(tree)
                      if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in bound}
            for name in names - {"*"}:
                out.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return out


@pytest.mark.parametrize("module, known", [
    ("analytics.fit", {"fit", "FitError", "OuterFolds", "outer_folds", "stored_predictions", "predict",
                       "required_inputs", "write_predictions", "FitResult"}),
    ("pipeline.config", {"StudyConfig", "load_config", "ConfigError", "Model", "FeatureSet", "ValidationSettings",
                         "Variable", "Compute", "SqlLimits", "ExplainSection", "RESERVED", "NAME", "check_name"}),
])
def test_every_name_a_caller_takes_is_still_on_the_module(module: str, known: set[str]) -> None:
    used = _used_names(module)
    # the walk finds the callers (a walk that found nothing would pass whatever the module holds)
    assert known <= set(used)
    mod = importlib.import_module(module)
    assert {name: sorted(files) for name, files in used.items() if not hasattr(mod, name)} == {}


@pytest.mark.parametrize("module", sorted(MOVED))
def test_a_moved_name_is_the_same_object_on_both_modules(module: str) -> None:
    """``analytics.fit.OuterFolds`` is ``analytics.outer_folds.OuterFolds`` (an isinstance check or a pydantic field
    annotation holds whichever module a caller imported it from)."""
    mod = importlib.import_module(module)
    for part in MOVED[module]:
        sub = importlib.import_module(part)
        names = [n for n in sub.__all__ if hasattr(mod, n)]
        assert names, f"{module} re-exports nothing of {part}"
        assert [n for n in names if getattr(mod, n) is not getattr(sub, n)] == []


def test_the_parts_sit_below_their_module_on_the_layers_contracts() -> None:
    """The fit stage's parts sit on lines below analytics.fit's; the study file's sections below pipeline.config."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for module, parts in MOVED.items():
        contract = next(c for c in config["tool"]["importlinter"]["contracts"]
                        if c["type"] == "layers" and "containers" not in c
                        and any(module in [m.strip() for m in line.split("|")] for line in c["layers"]))
        lines = [[m.strip() for m in line.split("|")] for line in contract["layers"]]
        top = next(i for i, line in enumerate(lines) if module in line)
        placed = {m: i for i, line in enumerate(lines) for m in line if m in parts}
        assert set(placed) == set(parts) and min(placed.values()) > top
