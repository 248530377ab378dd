"""Model folders are written all or nothing: a full disk is one line naming the folder, the old model stays,
and the temporary folders a killed run left behind are removed by the next ``fit``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import polars as pl
import pytest

from analytics.cli import main
from pipeline import atomic
from pipeline.config import StudyConfig, to_toml

from model_helpers import copy_study


def _toml(study: StudyConfig) -> Path:
    """study.toml of an in-memory test study, so that the command line can run it."""
    data = study.model_dump(mode="json", exclude={"root"}, exclude_none=True, exclude_defaults=True)
    path = study.root / "study.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def _dead_pid() -> int:
    """The id of a process that has finished (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_next_fit_removes_temporaries_of_dead_runs(fitted_study: StudyConfig, tmp_path: Path) -> None:
    study = copy_study(fitted_study, tmp_path / "study")
    toml = _toml(study)
    models = study.models_dir
    dead = _dead_pid()
    stale = models / f".clin.{dead}.tmp"
    stale.mkdir()
    (stale / "model.skops").write_bytes(b"half a model file")
    stale_old = models / f".vote.{dead}.old"
    stale_old.mkdir()
    live = models / f".clin.{os.getpid()}.tmp"  # a run that is still going: not ours to remove
    live.mkdir()
    kept = _tree(models / "clin")
    assert main(["fit", str(toml)]) == 0
    assert not stale.exists() and not stale_old.exists()
    assert live.is_dir()
    assert _tree(models / "clin") == kept


def test_disk_full_while_saving_a_model(fitted_study: StudyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    study = copy_study(fitted_study, tmp_path / "study")
    toml = _toml(study)
    # a new grid makes `fit` refit 'clin'; the disk fills up while its predictions are written
    text = toml.read_text(encoding="utf-8")
    assert "C = [0.1, 1.0]" in text
    toml.write_text(text.replace("C = [0.1, 1.0]", "C = [0.5, 2.0]", 1), encoding="utf-8")
    before = _tree(study.models_dir / "clin")

    def full(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        # what polars raises when the device is full
        raise pl.exceptions.ComputeError("parquet: File out of specification: underlying IO error: "
                                         "No space left on device (os error 28)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    assert main(["fit", str(toml)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = re.findall(r"error: [^\r\n]*", err)  # (after the progress bars' control characters)
    assert len(lines) == 1, err
    # the first file written under models/ for 'clin' is named (the model folder, or its fold cache)
    assert re.fullmatch(rf"error: {re.escape(str(study.models_dir))}/\S*clin\S*: cannot write: {os.strerror(28)} "
                        r"\(the disk is full or a file size limit was reached\); nothing was replaced", lines[0]), lines
    assert _tree(study.models_dir / "clin") == before, "the model fitted before is unchanged"
    assert not [p for p in study.models_dir.rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_killed_between_renames_puts_the_last_version_back(tmp_path: Path) -> None:
    """A run killed after moving the old folder aside, before moving the new one in: the old one comes back."""
    dead = _dead_pid()
    aside = tmp_path / f".clin.{dead}.old"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    replaced = tmp_path / f".vote.{dead}.old"  # the new folder made it: the old one is garbage
    replaced.mkdir()
    (tmp_path / "vote").mkdir()
    assert atomic.remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clin", "vote"]
    assert (tmp_path / "clin" / "manifest.json").read_text() == "{}"


def test_write_error_only_for_writes(tmp_path: Path) -> None:
    """A failed read inside a staged write is not reported as a failed write."""
    with pytest.raises(FileNotFoundError), atomic.staged(tmp_path / "out.txt"):
        (tmp_path / "missing.txt").read_text()
    with (pytest.raises(atomic.WriteError, match=r"out\.txt: cannot write: Permission denied; nothing was replaced"),
          atomic.staged(tmp_path / "out.txt") as tmp):
        raise PermissionError(13, "Permission denied", str(tmp))
    assert not list(tmp_path.iterdir())
