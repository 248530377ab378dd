"""A name that says Error is an exception of the project's root; a manifest's problems are records, raised
together in one ManifestError that names each file, line and column."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pipeline
from pipeline import manifest
from pipeline.errors import CohortlabError
from pipeline.ingest import IngestError
from pipeline.manifest import ManifestError, read_manifest

ROOT = Path(pipeline.__file__).resolve().parents[1]  # the source tree under test


def test_every_class_named_error_is_an_exception() -> None:
    # read from the source (importing every module to look takes seconds); that each such exception derives
    # from CohortlabError is test_error_root's check
    named, not_exceptions = [], []
    for path in sorted(p for pkg in ("pipeline", "analytics", "cohortlab") for p in (ROOT / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                named.append(node.name)
                bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                if not bases or not all(b.endswith(("Error", "Exception")) for b in bases):
                    not_exceptions.append(f"{path.relative_to(ROOT)}: {node.name}({', '.join(bases)})")
    assert "ManifestError" in named  # the walk reached the manifests
    assert not_exceptions == []
    assert all(issubclass(cls, CohortlabError) for cls in (ManifestError, IngestError))


def test_a_manifests_problems_are_records_raised_together(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_text("patient_id,\"a\"\"b\",\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    problems = info.value.errors
    assert len(problems) == 2 and all(isinstance(p, manifest.CellProblem) for p in problems)
    assert not issubclass(manifest.CellProblem, BaseException)
    assert info.value.error is problems[0]
    assert (problems[0].file, problems[0].row) == (path, 1)
    assert str(info.value) == "; ".join(str(p) for p in problems)
    assert str(problems[0]).startswith(f"{path}, line 1: ")
