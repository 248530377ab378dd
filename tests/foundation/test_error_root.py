"""One root for every error raised on purpose, and how the CLI shows errors: one line for those, a traceback
and the study log's place for anything else."""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import pkgutil
from pathlib import Path

import polars as pl
import pytest

import analytics
import pipeline
from analytics.cli import main
from pipeline import store
from pipeline.errors import CohortlabError

from store_builders import write_patients

ROOT = Path(__file__).resolve().parents[2]
# the error classes the project defined when the root came in; a rename must show up here
EXPECTED = {
    "ConfigError", "StoreError", "IngestError", "ManifestError", "EncoderError", "SlideError", "MissingMppError",
    "NoTissueError", "ScanError", "RadiomicsError", "WriteError", "CohortError", "SplitError", "FitError",
    "ModelInputError", "ModelSpecError", "PersistError", "ExplainError", "ValidateError", "ReportError", "UserError",
}


def _modules() -> list[str]:
    names = []
    for package in (analytics, pipeline):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.append(info.name)
    return names


def test_every_error_class_of_the_project_derives_from_the_root() -> None:
    found: dict[str, type] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException) and cls_name.endswith("Error"):
                found[f"{name}.{cls_name}"] = cls
    assert EXPECTED <= {k.rsplit(".", 1)[1] for k in found}, "an error class is missing from the walk"
    outside = sorted(k for k, cls in found.items() if not issubclass(cls, CohortlabError))
    assert outside == []
    # the second base stays, so `except ValueError` / `except OSError` code keeps working
    by_name = {k.rsplit(".", 1)[1]: cls for k, cls in found.items()}
    assert issubclass(by_name["ConfigError"], ValueError) and issubclass(by_name["StoreError"], RuntimeError)
    assert issubclass(by_name["WriteError"], OSError) and issubclass(by_name["MissingMppError"], ValueError)


def test_the_library_does_not_import_the_cli() -> None:
    importers = []
    for path in sorted((ROOT / "analytics").rglob("*.py")) + sorted((ROOT / "pipeline").rglob("*.py")):
        if path == ROOT / "analytics" / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "analytics.cli" or n.startswith("analytics.cli.") for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def _study(root: Path, models: bool = True) -> Path:
    """Six patients in a store, a cohort, and (with ``models``) one model never fitted."""
    root.mkdir(parents=True)
    patients = pl.DataFrame({"patient_id": [f"P{i}" for i in range(6)], "center": ["A"] * 4 + ["B"] * 2,
                             "age": [50, 61, 47, 38, 70, 55], "label": [0, 1, 0, 1, 0, 1]})
    con = store.connect(root / "store.duckdb")
    try:
        write_patients(con, patients, [{"name": "age", "type": "numeric"}, {"name": "label", "type": "binary"}])
    finally:
        con.close()
    (root / "cohorts").mkdir()
    (root / "cohorts" / "all.sql").write_text("SELECT patient_id, label, age FROM clinical")
    text = ('[study]\nname = "errs"\n[manifests]\npatients = "patients.csv"\n[cohort]\nname = "all"\n'
            '[split]\nexternal_centers = ["B"]\n')
    if models:
        text += '[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age"]\n'
    (root / "study.toml").write_text(text, encoding="utf-8")
    return root / "study.toml"


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_validate_before_fit_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = _study(tmp_path / "s")
    assert main(["validate", str(toml)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: {tmp_path / 's' / 'store.duckdb'}: no predictions yet; run `cohortlab fit` first"


def test_an_error_the_cli_never_listed_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report's own error (a metrics.json cut short) was not among the CLI's known errors: it printed a traceback."""
    toml = _study(tmp_path / "s")
    metrics = tmp_path / "s" / "reports" / "errs" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"models": {', encoding="utf-8")
    assert main(["report", str(toml)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {metrics}: not valid JSON (line 1, column 13)")  # the end of the 12 characters


def test_a_missing_argument_is_a_usage_message_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Missing argument 'study'" in err


def test_a_bug_keeps_its_traceback_and_names_the_study_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import analytics.validation.stage

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug in validate")

    monkeypatch.setattr(analytics.validation.stage, "validate", broken)
    toml = _study(tmp_path / "s")
    assert main(["validate", str(toml)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    log = tmp_path / "s" / "logs" / "cohortlab.log"
    assert err[0] == "Traceback (most recent call last):"
    assert "ZeroDivisionError: a bug in validate" in err
    assert err[-1].endswith(str(log)) and "log" in err[-1].removesuffix(str(log))
    logged = log.read_text(encoding="utf-8")
    assert "Traceback" in logged and "ZeroDivisionError: a bug in validate" in logged


def test_each_command_logs_to_its_own_study_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _study(tmp_path / "a"), _study(tmp_path / "b")
    assert main(["validate", str(first)]) == 1
    assert main(["validate", str(second)]) == 1
    capsys.readouterr()
    log_a = (tmp_path / "a" / "logs" / "cohortlab.log").read_text(encoding="utf-8")
    log_b = (tmp_path / "b" / "logs" / "cohortlab.log").read_text(encoding="utf-8")
    assert str(tmp_path / "a" / "store.duckdb") in log_a and str(tmp_path / "b" / "store.duckdb") in log_b
    assert str(tmp_path / "b") not in log_a and str(tmp_path / "a") not in log_b
    assert not [h for h in logging.getLogger().handlers
                if isinstance(h, logging.FileHandler) and h.baseFilename.endswith("cohortlab.log")]
