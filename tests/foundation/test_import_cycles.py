"""No two sibling modules import each other, counting the imports import-linter does not see: those
inside functions and under ``if TYPE_CHECKING:`` (a circle hidden there is still a circle)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).resolve().parents[1]  # the source tree under test
PACKAGES = ("pipeline", "analytics", "cohortlab")


def _module(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imports(path: Path) -> set[str]:
    """Every module an import statement anywhere in the file names (``from a import b`` names a and a.b)."""
    name, is_package = _module(path)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package upwards
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    names = {_module(p)[0] for p in files}
    return {_module(p)[0]: {m for m in _imports(p) if m in names} for p in files}


def _sibling_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Per package, the children that reach themselves (a module stands for everything below it)."""
    cycles = []
    for parent in sorted({m.rsplit(".", 1)[0] for m in graph if "." in m}):
        def child(m: str, parent: str = parent) -> str | None:
            return f"{parent}.{m[len(parent) + 1:].split('.')[0]}" if m.startswith(parent + ".") else None

        edges: dict[str, set[str]] = defaultdict(set)
        for m, deps in graph.items():
            a = child(m)
            for b in filter(None, map(child, deps)) if a else ():
                if b != a:
                    edges[a].add(b)
        on_cycle = []
        for start in sorted(edges):
            seen, todo = set(), [start]
            while todo:
                for nxt in edges.get(todo.pop(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            if start in seen:
                on_cycle.append(start)
        if on_cycle:
            cycles.append(on_cycle)
    return cycles


def test_the_stain_reference_does_not_import_the_embedder() -> None:
    # the embedder uses the reference; the reference asks only for what it cuts tiles with (TileCutter)
    assert "pipeline.wsi.embedder" not in _imports(ROOT / "pipeline" / "wsi" / "stain_reference.py")
    assert "pipeline.wsi.stain_reference" in _imports(ROOT / "pipeline" / "wsi" / "embedder.py")


def test_no_import_cycle_between_sibling_modules_even_hidden() -> None:
    assert _sibling_cycles(_graph()) == []


def test_the_check_sees_a_circle_hidden_in_a_function() -> None:
    graph = {"p.a": {"p.b.c"}, "p.b": set(), "p.b.c": {"q"}, "q": set(), "p.d": {"p.a"}}
    assert _sibling_cycles(graph) == []
    graph["p.b"] = {"p.d"}  # p.a -> p.b -> p.d -> p.a
    assert _sibling_cycles(graph) == [["p.a", "p.b", "p.d"]]
