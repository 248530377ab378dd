"""Faults of the machine, not of the input (issue 21, item 7 of Why): a full disk during ingest, a failed
``sql --out`` write, a read-only study folder. Each is one line naming the file, and nothing is half-written.

A real full disk and a real read-only folder need ``mount`` (tests run as root, so ``chmod`` blocks nothing);
where it is not allowed those tests are skipped and the simulated ones still run.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from study_builders import build_study, study_toml, write_study

import cohortlab
from analytics import cli
from analytics.cli import main
from pipeline import ingest as ingest_module
from pipeline import store
from pipeline.config import load_config
from pipeline.errors import CohortlabError
from pipeline.ingest import ingest

PATIENTS = pl.DataFrame({
    "patient_id": [f"P{i:02d}" for i in range(12)],
    "center": ["A"] * 8 + ["B"] * 4,
    "label": [0, 1] * 6,
    "age": [40.0 + i for i in range(12)],
})
WAL_FULL = 'Could not write file "{wal}": No space left on device'


def _study(root: Path) -> Path:
    """A small ingested study; returns its study.toml."""
    root.mkdir(parents=True, exist_ok=True)
    build_study(root, PATIENTS, "c.label, c.age", study_toml("faults", 1, ""))
    return root / "study.toml"


def _rows(toml: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(load_config(toml).store_path), read_only=True)
    try:
        return con.execute("SELECT * FROM patients JOIN clinical USING (patient_id) ORDER BY patient_id").fetchall()
    finally:
        con.close()


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err and "Logging error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# --- a full disk during ingest ----------------------------------------------------------------------------


class _FailingCommit:
    """A store connection whose COMMIT fails as DuckDB's does when the disk is full: the transaction is gone
    (rolled back here for real), and after a fatal error the database refuses even ROLLBACK."""

    def __init__(self, con: duckdb.DuckDBPyConnection, kind: type[duckdb.Error], wal: str) -> None:
        self._con, self._kind, self._wal, self._dead = con, kind, wal, False

    def execute(self, sql: str, *args: Any) -> Any:
        if self._dead:
            raise duckdb.FatalException("FATAL Error: database has been invalidated because of a previous fatal error")
        if sql.strip().upper() == "COMMIT":
            self._con.execute("ROLLBACK")
            self._dead = self._kind is duckdb.FatalException
            raise self._kind(WAL_FULL.format(wal=self._wal))
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _fail_commits(monkeypatch: pytest.MonkeyPatch, kind: type[duckdb.Error]) -> None:
    """From now on, ingest's store connections fail to commit as on a full disk."""
    connect = store.connect

    def failing(path: Any, *args: Any, **kwargs: Any) -> Any:
        return _FailingCommit(connect(path, *args, **kwargs), kind, f"{path}.wal")

    monkeypatch.setattr(ingest_module.store, "connect", failing)


def _changed_manifest(toml: Path) -> None:
    changed = PATIENTS.with_columns(pl.col("age") + 1.0)
    changed.write_csv(toml.parent / "patients.csv")


@pytest.mark.parametrize("kind", [duckdb.FatalException, duckdb.TransactionException, duckdb.IOException])
def test_a_full_disk_at_commit_is_one_line_naming_the_store_and_changes_nothing(
    kind: type[duckdb.Error], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = _study(tmp_path)
    before = _rows(toml)
    _changed_manifest(toml)
    _fail_commits(monkeypatch, kind)
    capsys.readouterr()
    assert main(["ingest", str(toml)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    store_path = str(tmp_path / "store.duckdb")
    assert f"disk full (or not writable) while writing {store_path}" in line and "No space left" in line
    with pytest.raises(CohortlabError, match="disk full"):  # the library
        ingest(load_config(toml), progress=False)
    assert _rows(toml) == before


def test_the_notebook_api_gets_the_same_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = _study(tmp_path)
    before = _rows(toml)
    _changed_manifest(toml)
    _fail_commits(monkeypatch, duckdb.FatalException)
    with pytest.raises(CohortlabError, match=r"while writing .*store\.duckdb"):
        cohortlab.load_study(toml).ingest(progress=False)
    assert _rows(toml) == before


def test_another_duckdb_fatal_error_is_not_called_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    toml = _study(tmp_path)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise duckdb.FatalException("FATAL Error: an internal invariant broke")

    monkeypatch.setattr(ingest_module, "_replace", broken)
    _changed_manifest(toml)
    assert main(["ingest", str(toml)]) == 1
    err = capsys.readouterr().err
    assert "disk full" not in err and "Traceback" in err  # a bug keeps its traceback


@pytest.fixture()
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (skipped where mounting is not allowed)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(folder: Path, leave_kb: int) -> None:
    import shutil

    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave_kb * 1024, 0))


def test_a_really_full_disk_during_ingest(small_tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    many = pl.DataFrame({
        "patient_id": [f"P{i:05d}" for i in range(3000)],
        "center": ["A", "B"] * 1500,
        "label": [0, 1] * 1500,
        **{f"v{j}": [float(i * 31 + j) / 7 for i in range(3000)] for j in range(12)},
    })
    toml = write_study(small_tmpfs, PATIENTS, "c.label, c.age", study_toml("full", 1, ""))
    ingest(load_config(toml), progress=False)
    before = _rows(toml)
    many.write_csv(small_tmpfs / "patients.csv")
    _fill(small_tmpfs, 150)
    assert main(["ingest", str(toml)]) == 1
    err = capsys.readouterr().err
    line = _one_error_line(err)
    assert "disk full (or not writable) while writing" in line and str(small_tmpfs) in line
    (small_tmpfs / "filler").unlink()
    assert _rows(toml) == before


# --- sql --out ---------------------------------------------------------------------------------------------


def test_sql_out_on_a_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    toml = _study(tmp_path)
    out = tmp_path / "out.csv"

    def no_space(self: pl.DataFrame, *args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device (os error 28)")  # how polars reports it: no file, no errno

    monkeypatch.setattr(pl.DataFrame, "write_csv", no_space)
    assert main(["sql", str(toml), "SELECT * FROM patients", "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "No space left" in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sql_out_into_an_unwritable_place_names_the_file_not_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _study(tmp_path)
    out = tmp_path / "result.parquet"

    def read_only(self: pl.DataFrame, file: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(30, "Read-only file system", str(file))  # the writer names its temporary file

    monkeypatch.setattr(pl.DataFrame, "write_parquet", read_only)
    assert main(["sql", str(toml), "SELECT * FROM patients", "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and ".tmp" not in line and "Read-only file system" in line
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    out = blocked / "sub" / "r.csv"
    assert main(["sql", str(toml), "SELECT 1 AS one", "--out", str(out)]) == 1
    assert f"--out {out}:" in _one_error_line(capsys.readouterr().err)


# --- a read-only study folder ----------------------------------------------------------------------------


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", [["sql", "SELECT count(*) AS n FROM patients"], ["cohort"], ["features"]])
def test_read_commands_work_when_the_log_folder_cannot_be_written(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = _study(tmp_path / "study")
    logs = load_config(toml).log_dir
    import shutil

    shutil.rmtree(logs, ignore_errors=True)
    logs.write_text("a file where the log folder should be")  # mkdir fails as on a read-only folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    before = _hashes(tmp_path / "study")
    capsys.readouterr()
    assert main([command[0], str(toml), *command[1:]]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: cannot write the study log")]
    assert len(warnings) == 1 and "Traceback" not in err
    fallback = cli.fallback_log_dir(logs, "faults") / "cohortlab.log"
    assert str(fallback) in warnings[0] and fallback.is_file()
    assert "command: " in fallback.read_text()
    assert _hashes(tmp_path / "study") == before


def test_two_studies_of_one_name_log_apart(tmp_path: Path) -> None:
    a = cli.fallback_log_dir(tmp_path / "a" / "logs", "demo")
    b = cli.fallback_log_dir(tmp_path / "b" / "logs", "demo")
    assert a != b and a.parent == b.parent and a.name.startswith("demo-")
    assert cli.fallback_log_dir(tmp_path / "x", "../../etc").parent == a.parent


@pytest.fixture()
def read_only_study(tmp_path: Path) -> Iterator[Path]:
    """A study folder bind-mounted read-only onto itself (skipped where mounting is not allowed)."""
    root = tmp_path / "study"
    root.mkdir()
    toml = _study(root)
    import shutil

    shutil.rmtree(load_config(toml).log_dir, ignore_errors=True)
    done = subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode(errors='replace').strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(root)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield toml
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def test_a_really_read_only_study_answers_sql_cohort_and_features(
    read_only_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(OSError):
        (read_only_study.parent / "probe").write_text("x")
    for command in (["sql", "SELECT count(*) AS n FROM patients"], ["cohort"], ["features"]):
        capsys.readouterr()
        assert main([command[0], str(read_only_study), *command[1:]]) == 0, capsys.readouterr().err
        err = capsys.readouterr().err
        assert "warning: cannot write the study log" in err and "Read-only file system" in err
    out = read_only_study.parent / "out.csv"
    assert main(["sql", str(read_only_study), "SELECT 1 AS one", "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and ".tmp" not in line
    # the notebook API reads it too (it writes no log)
    assert cohortlab.load_study(read_only_study).sql("SELECT count(*) AS n FROM patients")["n"][0] == 12


def test_a_log_that_fills_the_disk_warns_once_instead_of_a_traceback_per_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import logging

    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        target = cli._log_to(tmp_path / "logs", "full")
        handler = next(h for h in root.handlers if h not in before)
        assert isinstance(handler, logging.FileHandler) and target == Path(handler.baseFilename)
        handler.stream = FullDisk()
        for i in range(3):
            logging.getLogger("cohortlab").warning("record %d", i)
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
            h.close()
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count("warning: cannot write the log") == 1 and "No space left on device" in err
