"""Model kinds are traits: only the kind table and the learner registry name kinds, and they agree.

The guard reads the source of ``analytics``, ``pipeline`` and ``cohortlab`` and fails on any comparison of
a ``kind`` with a model kind's name (``kind == "mil"``, ``spec.kind in ("voting", "stacking")``), on a
membership test against a list of kinds (``kind in SURVIVAL_KINDS``), and on a tuple that lists model kinds:
a stage reads ``Model.traits`` instead.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from analytics.models import registry
from pipeline.config import SURVIVAL_KINDS, Model
from pipeline.model_kinds import KINDS, KindTraits, kinds_where

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("analytics", "pipeline", "cohortlab")
# the kind table and the kind -> learner map are the only places that name kinds
# the statistics' public names cause_specific_cox and fine_gray are also the names of the kinds that fit them
ALLOWED = {"pipeline/model_kinds.py", "analytics/models/registry.py", "analytics/stats/__init__.py"}
COMPARE = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _is_kind(node: ast.AST) -> bool:
    """``kind``, ``spec.kind``, ``self.kind``, ``m["kind"]`` or ``x.get("kind")``."""
    if isinstance(node, ast.Name):
        return node.id == "kind"
    if isinstance(node, ast.Attribute):
        return node.attr == "kind"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "kind"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "kind"
    return False


def _kind_names(node: ast.AST) -> list[str]:
    """The model kinds a constant or a tuple / list / set of constants names."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in KINDS]


def _is_kind_list(node: ast.AST) -> bool:
    """A name such as ``SURVIVAL_KINDS`` or ``classical.KINDS``: a list of kinds kept apart from the table."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith("KINDS") and name != "FIGURE_KINDS"


def offences(source: str) -> list[tuple[int, str]]:
    """Line and text of each model-kind comparison or kind list in ``source``."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            ops = [op for op in node.ops if isinstance(op, COMPARE)]
            if not ops or not any(_is_kind(o) for o in operands):
                continue
            if any(_kind_names(o) for o in operands) or any(_is_kind_list(o) for o in operands):
                found.append((node.lineno, lines[node.lineno - 1].strip()))
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(_kind_names(node)) >= 2:
            found.append((node.lineno, lines[node.lineno - 1].strip()))
    return found


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_stage_compares_a_model_kind() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {text}"
           for path in _sources() if path.relative_to(ROOT).as_posix() not in ALLOWED
           for line, text in offences(path.read_text(encoding="utf-8"))]
    assert not bad, "read Model.traits instead of comparing kinds:\n" + "\n".join(bad)


def test_the_grep_of_the_acceptance_finds_only_other_kinds() -> None:
    # the issue's own check: lines with `kind ==`, `kind in` ... compare no model kind's name
    out = subprocess.run(["grep", "-rn", r"kind ==\|kind in\|kind !=\|kind not in", *PACKAGES, "--include=*.py"],
                         cwd=ROOT, capture_output=True, text=True, check=False).stdout
    quoted = re.compile(r"""["']([a-z_]+)["']""")
    bad = [line for line in out.splitlines()
           if line.split(":", 1)[0] not in ALLOWED and set(quoted.findall(line.split(":", 2)[2])) & set(KINDS)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("snippet", [
    'if spec.kind == "mil": pass',
    'x = kind in ("mil", "mil_cox")',
    'if m.kind != "rsf": pass',
    'if spec.kind in SURVIVAL_KINDS: pass',
    'if kind not in classical.KINDS: pass',
    'if manifest.get("kind") == "voting": pass',
    'CLASSICAL = ("logistic", "svm", "xgboost")',
])
def test_the_guard_catches_each_form(snippet: str) -> None:
    assert offences(snippet), snippet


@pytest.mark.parametrize("snippet", [
    'if var.kind == "continuous": pass',
    'if kind == "a folder": pass',
    'if spec.traits.bags: pass',
    'spec = {"name": "m", "kind": "svm"}',
    'if self.kind not in FIGURE_KINDS: pass',
])
def test_the_guard_passes_other_kinds(snippet: str) -> None:
    assert not offences(snippet), snippet


def test_every_kind_has_a_learner_and_a_row() -> None:
    assert set(registry._LEARNERS) == set(KINDS)


def test_kind_lists_are_views_of_the_table() -> None:
    assert SURVIVAL_KINDS == ("cox", "coxnet", "rsf", "xgboost_cox", "mil_cox", "cause_specific_cox", "fine_gray")
    assert kinds_where(competing="cause_specific") == ("cause_specific_cox",)
    assert kinds_where(harmonisable=True) == ("logistic", "svm", "xgboost")
    assert kinds_where(bags=True) == ("mil", "mil_cox")
    assert kinds_where(ensemble=True) == ("voting", "stacking")


@pytest.mark.parametrize(("kind", "artifact"), [
    ("logistic", "skops"), ("svm", "skops"), ("xgboost", "skops"), ("stacking", "skops"), ("cox", "skops"),
    ("mil_cox", "skops"), ("mil", "torch"), ("voting", "none"),
])
def test_artifact_formats_are_those_saved_before(kind: str, artifact: str) -> None:
    assert KINDS[kind].artifact == artifact


def test_model_traits_is_its_row() -> None:
    spec = Model(name="m", kind="mil_cox", features=["wsi"])
    assert spec.traits is KINDS["mil_cox"]
    assert spec.traits.survival and spec.traits.bags and spec.traits.explainer == "attention"
    with pytest.raises(AttributeError):
        spec.traits.endpoint = "binary"  # type: ignore[misc]  # frozen: one record per kind


def test_an_unknown_kind_is_refused_naming_the_kinds() -> None:
    with pytest.raises(ValueError, match=r"kind\n.*Input should be one of 'logistic', 'svm'"):
        Model(name="m", kind="forest", clinical=["age"])


def test_a_shipped_kind_cannot_be_registered_again_or_removed() -> None:
    with pytest.raises(ValueError, match="exists already"):
        registry.register_kind("svm", KindTraits(endpoint="binary", reads="table", saved="none"),
                               lambda spec, seed: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="ships with cohortlab"):
        registry.unregister_kind("cox")
    assert "cox" in KINDS and "svm" in KINDS
