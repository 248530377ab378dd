"""``pipeline.store`` is a package of small modules behind one import: every name the project uses is on it.

The names are read from the project's own source (``store.<name>`` after ``from pipeline import store``, and
``from pipeline.store import <names>``), so a name a caller uses and the package lost fails here, by name,
before the caller's own test runs into it.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import tomllib

import pipeline
from pipeline import store

ROOT = Path(pipeline.__file__).resolve().parents[1]
CALLERS = ("analytics", "pipeline", "cohortlab", "tests", "bench")
MAX_LINES = 700  # issue 22: no module of the project is over 700 lines


def _used_names(tree: ast.AST) -> set[str]:
    """Names a module takes from the store: ``store.x`` where ``store`` is bound to pipeline.store, and from-imports."""
    bound: set[str] = set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            bound |= {a.asname or a.name for a in node.names if a.name == "store"}
        elif isinstance(node, ast.ImportFrom) and node.module == "pipeline.store":
            names |= {a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            names.add(node.attr)
    return names


def _callers() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for top in CALLERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "store" not in path.read_text(errors="replace"):
                continue
            used = _used_names(ast.parse(path.read_text(), str(path)))
            for name in used:
                out.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return out


def test_every_name_a_caller_takes_from_the_store_is_on_the_package() -> None:
    used = _callers()
    # the walk finds the callers (a walk that found nothing would pass whatever the package holds)
    assert {"connect", "query", "StoreError", "sha256_file", "FeatureSetRecord"} <= set(used)
    lost = {name: sorted(files) for name, files in used.items() if not hasattr(store, name)}
    assert lost == {}


def test_the_package_exports_what_it_lists() -> None:
    assert sorted(n for n in store.__all__ if not hasattr(store, n)) == []
    assert len(store.__all__) == len(set(store.__all__))


def test_the_store_is_a_package_of_modules_of_at_most_700_lines() -> None:
    assert hasattr(store, "__path__"), "pipeline.store is one module, not a package"
    sizes = {p.name: len(p.read_text().splitlines()) for p in sorted(Path(store.__file__).parent.glob("*.py"))}
    assert len(sizes) > 2 and sum(sizes.values()) > MAX_LINES  # the store's code is here, in several modules
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_every_module_of_the_store_sits_on_its_layers_contract() -> None:
    """A new module of the store must be placed on the package's layers contract, or the contract would not see it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c.get("containers") == ["pipeline.store"])
    assert contract["type"] == "layers"
    named = [m.strip() for line in contract["layers"] for m in line.split("|")]
    children = {m.name for m in pkgutil.iter_modules(store.__path__)}
    assert len(named) == len(set(named)) and set(named) == children
