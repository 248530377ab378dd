"""Honest exit codes: a failed stage, a study that cannot fit its models, models without predictions and a
full disk all end the command with a non-zero status and one clear line, never "done" or a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from analytics.cli import main
from pipeline import store
from pipeline.config import StudyConfig

ROOT = Path(__file__).resolve().parents[2]


def _bare_study(root: Path, extra: str = "", slides: bool = False) -> Path:
    """Three patients; with ``slides`` a slide manifest whose file is missing (moved away)."""
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"patient_id": ["P1", "P2", "P3"], "center": ["A", "A", "B"], "age": [50, 61, 47],
                  "label": [0, 1, 1]}).write_csv(root / "patients.csv")
    manifests = 'patients = "patients.csv"\n'
    if slides:
        pl.DataFrame({"slide_id": ["P1-S1"], "patient_id": ["P1"], "path": ["slides/P1-S1.tiff"]}).write_csv(
            root / "slides.csv")
        manifests += 'slides = "slides.csv"\n'
    (root / "study.toml").write_text(f'[study]\nname = "bare"\n[manifests]\n{manifests}{extra}', encoding="utf-8")
    return root / "study.toml"


def test_run_and_demo_exit_non_zero_when_a_stage_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = _bare_study(tmp_path / "study", slides=True)
    assert main(["run", str(toml)]) == 1
    out = capsys.readouterr().out
    assert "FAIL ingest" in out and "stopped" in out and "file not found" in out
    # `demo` on an existing folder reuses its study.toml and runs it: the same failure, the same exit status
    assert main(["demo", str(toml.parent)]) == 1
    assert "FAIL ingest" in capsys.readouterr().out
    # the control: with the slide manifest gone the same study runs, and the status is 0
    toml.write_text(toml.read_text().replace('slides = "slides.csv"\n', ""))
    assert main(["run", str(toml)]) == 0
    assert "done" in capsys.readouterr().out


def test_run_refuses_models_without_a_cohort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cohorts").mkdir()
    (tmp_path / "cohorts" / "adults.sql").write_text("SELECT patient_id, label FROM clinical")
    toml = _bare_study(tmp_path, '[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age"]\n')
    assert main(["run", str(toml)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "1 model(s) (clin) but no [cohort] section" in err and 'add [cohort] with name = "adults"' in err
    assert not (tmp_path / "store.duckdb").exists(), "no stage may run"


@pytest.fixture()
def interrupted(reported: tuple[StudyConfig, Path], tmp_path: Path) -> Path:
    """A copy of the validated study in which model 'weak' lost its predictions (a fit that was interrupted)."""
    study, _ = reported
    shutil.copytree(study.root, tmp_path / "copy")
    con = store.connect(tmp_path / "copy" / "store.duckdb")
    try:
        con.execute("DELETE FROM predictions WHERE model = 'weak'")
    finally:
        con.close()
    return tmp_path / "copy" / "study.toml"


def test_validate_names_models_without_predictions(interrupted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = interrupted.parent / "reports" / "rep" / "metrics.json"
    before = metrics.read_bytes()
    assert main(["validate", str(interrupted)]) == 1
    err = capsys.readouterr().err
    assert "no predictions for model(s) weak" in err and "--partial" in err
    assert metrics.read_bytes() == before, "nothing is written"

    assert main(["validate", str(interrupted), "--partial"]) == 0
    out = capsys.readouterr().out
    assert "left out: model weak: no predictions" in out
    assert "left out: comparison good vs weak: weak not validated" in out
    data = json.loads(metrics.read_text())
    assert set(data["models"]) == {"good"} and data["comparisons"] == []
    assert "left out of this partial validation: comparison good vs weak: weak not validated" in data["notes"]


def test_disk_full_is_one_line_naming_the_file(reported: tuple[StudyConfig, Path], tmp_path: Path) -> None:
    """A file size limit (as `ulimit -f`) stops the write of metrics.json: one line, exit 1, nothing half-written."""
    study, _ = reported
    copy = tmp_path / "copy"
    shutil.copytree(study.root, copy)
    out = copy / "reports" / "rep"
    for name in ("metrics.json", "metrics.csv", "curves.json"):
        (out / name).unlink()
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
            "from analytics.cli import main\n"
            f"sys.exit(main(['validate', {str(copy / 'study.toml')!r}]))\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", cwd=ROOT, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [(f"error: {out / 'metrics.json'}: cannot write: File too large (the disk is full or a file "
                      "size limit was reached); nothing was replaced")], proc.stderr
    assert not (out / "metrics.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
