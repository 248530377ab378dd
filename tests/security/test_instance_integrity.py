"""Changed bytes in instance files do not go unnoticed (issue 21, item 4 of Why).

Three faults, each through the command line and the notebook API:

* one flipped bit in an instance Parquet with its modification time put back (as
  bit rot keeps it): ``features``, ``cohort``, ``verify``, ``fit`` and the notebook
  name the file, readers leave it out, ``embed`` embeds it again;
* another source's file of the same size copied over one (``cp``): the ``source_id``
  inside is checked against the ``embed_items`` row, even by the cheap check of ``sql``;
* a deleted file: the coverage of ``cohortlab cohort`` counts its patient as missing.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
import tomllib

import cohortlab
from analytics.cli import main
from pipeline import store, synth
from pipeline.config import load_config, to_toml
from pipeline.embed import embed
from pipeline.ingest import ingest
from pipeline.store import hashing as store_hashing

FS, VICTIM, OTHER = "wsi_resnet18", "P005-S1", "P004-S1"
VICTIM_PATIENT = "P005"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic study (one WSI feature set, one small MIL model) after ingest and embed; copy it, never change it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's cores are shared
    try:
        toml = synth.make_study(tmp_path_factory.mktemp("instances") / "study", seed=0, small=True)
        data = tomllib.loads(toml.read_text(encoding="utf-8"))
        data["feature_sets"] = [f for f in data["feature_sets"] if f["name"] == FS]
        data["models"] = [{"name": "wsi_mil", "kind": "mil", "features": [FS],
                           "params": {"max_epochs": 2, "hidden": 8, "attention_dim": 4}}]
        data["validation"] = {"n_boot": 20}
        toml.write_text(to_toml(data), encoding="utf-8")
        study = load_config(toml)
        ingest(study, progress=False)
        result = embed(study, device="cpu", progress=False)
        assert [(r.name, r.failed) for r in result.feature_sets] == [(FS, 0)]
    finally:
        torch.set_num_threads(threads)
    return toml.parent


def _copy(embedded: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedded, tmp_path / "study", copy_function=shutil.copy2))


def _file(root: Path, source: str = VICTIM) -> Path:
    return store.instance_path(root / "store.duckdb", FS, source)


def _rel(root: Path, source: str = VICTIM) -> str:
    return f"instances/feature_set={FS}/{source}.parquet"


def _flip_bit_keep_mtime(path: Path) -> bytes:
    """One bit flipped in a data page (footer intact, same size), the modification time put back; the new bytes."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    return bytes(data)


def _same_size_pair(root: Path) -> None:
    """Make VICTIM's and OTHER's files the same size (same tiles and embeddings, own source_id), as recorded."""
    other = pl.read_parquet(_file(root, OTHER))
    store.write_instances(_file(root, OTHER), other)
    store.write_instances(_file(root, VICTIM), other.with_columns(pl.lit(VICTIM).alias("source_id")))
    con = store.connect(root / "store.duckdb")
    try:
        store.record_stamps(con, FS, {s: store.stamp_file(_file(root, s)) for s in (VICTIM, OTHER)})
        con.execute("UPDATE embed_items SET n_instances = ? WHERE feature_set = ? AND source_id = ?",
                    [other.height, FS, VICTIM])
    finally:
        con.close()
    assert _file(root, VICTIM).stat().st_size == _file(root, OTHER).stat().st_size


def _coverage(out: str) -> tuple[int, int, str]:
    """Patients, missing and missing ids of the ``wsi_resnet18:instances`` row of ``cohortlab cohort``'s table."""
    line = next(x for x in out.splitlines() if f"{FS}:instances" in x)
    cells = [c.strip() for c in line.replace("┆", "│").split("│")[1:-1]]
    return int(cells[1]), int(cells[2]), cells[3]


# --- a flipped bit, the modification time kept ------------------------------------------------------------


def test_flipped_bit_is_named_by_features_cohort_and_verify(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _copy(embedded, tmp_path)
    flipped = _flip_bit_keep_mtime(_file(root))
    listing = sorted(p.name for p in _file(root).parent.iterdir())

    assert main(["features", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{FS} / {VICTIM}: {_rel(root)}: not the file that was written (sha256 differs)" in out

    assert main(["cohort", str(root)]) == 0
    out = capsys.readouterr().out
    assert _coverage(out) == (15, 1, VICTIM_PATIENT)  # one patient missing: the one whose file is left out
    assert f"{FS} / {VICTIM}" in out and "sha256 differs" in out

    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "verified 17 instance file(s), 0 model folder(s): 1 problem(s)" in out
    row = next(line for line in out.splitlines() if _rel(root) in line)
    assert FS in row and VICTIM in row and "sha256 differs" in row
    # checking wrote nothing: the damaged file is as it was, no status or temporary file appeared
    assert _file(root).read_bytes() == flipped
    assert sorted(p.name for p in _file(root).parent.iterdir()) == listing


def test_flipped_bit_is_found_by_the_notebook_api(
    embedded: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _copy(embedded, tmp_path)
    study = cohortlab.load_study(root)
    _flip_bit_keep_mtime(_file(root))

    cohort = study.cohort()
    assert VICTIM_PATIENT in cohort.patient_ids
    with caplog.at_level(logging.WARNING, logger="cohortlab"):
        bags = cohort.bags(FS)  # read on demand, verified by content first: the changed file is left out
    assert VICTIM_PATIENT in bags.missing
    assert any(f"{FS} / {VICTIM}" in r.getMessage() and "sha256 differs" in r.getMessage() for r in caplog.records)

    result = study.verify()
    assert not result.ok and result.checked == {"instance": 17, "model": 0}
    assert [(p.kind, p.file, p.feature_set, p.source) for p in result.problems] == [
        ("instance", _rel(root), FS, VICTIM)]
    assert "sha256 differs" in result.problems[0].reason
    assert result.table().row(0, named=True)["source"] == VICTIM


def test_verify_passes_a_clean_study_and_flags_unrecorded_checksums(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _copy(embedded, tmp_path)
    assert main(["verify", str(root)]) == 0
    assert "verified 17 instance file(s), 0 model folder(s): no problem" in capsys.readouterr().out
    assert cohortlab.load_study(root).verify().ok
    # a row from before checksums were kept: nothing to compare with, which verify says (and embed mends)
    con = store.connect(root / "store.duckdb")
    try:
        con.execute("UPDATE embed_items SET checksum = NULL WHERE source_id = ?", [VICTIM])
    finally:
        con.close()
    assert main(["verify", str(root)]) == 1
    assert "no sha256 recorded" in capsys.readouterr().out
    embed(load_config(root), device="cpu", progress=False)
    assert main(["verify", str(root)]) == 0


def store_problems(root: Path) -> list[store.InstanceProblem]:
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        return store.unreadable_instances(con, content=True)
    finally:
        con.close()


def test_flipped_bit_is_embedded_again(embedded: Path, tmp_path: Path) -> None:
    root = _copy(embedded, tmp_path)
    original = _file(root).read_bytes()
    _flip_bit_keep_mtime(_file(root))
    result = embed(load_config(root), device="cpu", progress=False)
    run = result.feature_sets[0]
    assert [sid for sid, _ in run.redone] == [VICTIM] and "sha256 differs" in run.redone[0][1]
    assert (run.done, run.failed) == (1, 0)
    assert f"warning: {VICTIM} embedded again" in str(result)
    assert _file(root).read_bytes() == original  # the same embedding again
    assert store_problems(root) == []


def test_fit_leaves_the_flipped_file_out_and_warns(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    root = _copy(embedded, tmp_path)
    _flip_bit_keep_mtime(_file(root))
    assert main(["fit", str(root)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("warning: instance file left out"))
    assert f"{FS} / {VICTIM}: {_rel(root)}: not the file that was written (sha256 differs)" in line
    logged = (root / "logs" / "cohortlab.log").read_text(encoding="utf-8")
    assert "WARNING" in logged and f"{FS} / {VICTIM}" in logged and "sha256 differs" in logged

    # the notebook: the same warning on the result, and in the log records
    with caplog.at_level(logging.WARNING, logger="cohortlab"):
        result = cohortlab.load_study(root).fit(progress=False)
    assert [t.split(":")[0] for t in result.left_out] == [f"{FS} / {VICTIM}"]
    assert any(VICTIM in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert "warning: instance file left out" in str(result)


def test_run_cohort_stage_warns_of_a_file_left_out(embedded: Path, tmp_path: Path) -> None:
    """``run``'s cohort stage verifies every feature set by content (its embed stage re-embeds such a file first)."""
    from analytics.run import RunResult, StageOutcome, _stages

    root = _copy(embedded, tmp_path)
    _flip_bit_keep_mtime(_file(root))
    study = load_config(root)
    stage = dict(_stages(study, "cpu", False))["cohort"]
    with store.verified_once():
        summary = str(stage())
    result = RunResult(study, [StageOutcome("cohort", 0.1, True, summary)])
    assert result.warnings == [f"cohort: instance file left out: {FS} / {VICTIM}: {_rel(root)}: "
                               "not the file that was written (sha256 differs)"]


# --- another source's file of the same size copied over one ---------------------------------------------


def test_copied_file_of_equal_size_is_left_out_even_by_sql(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _copy(embedded, tmp_path)
    _same_size_pair(root)
    query = f"SELECT source_id, count(*) AS n FROM instances WHERE source_id IN ('{VICTIM}', '{OTHER}') GROUP BY ALL ORDER BY 1"
    assert main(["sql", str(root), query]) == 0
    before = capsys.readouterr().out
    assert VICTIM in before and OTHER in before
    n = pl.read_parquet(_file(root, OTHER)).height

    shutil.copyfile(_file(root, OTHER), _file(root, VICTIM))  # cp P004-S1.parquet P005-S1.parquet
    assert main(["sql", str(root), query]) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if OTHER in line or VICTIM in line]
    assert len(rows) == 1 and OTHER in rows[0] and f" {n} " in rows[0]  # once, not twice; the victim left out
    assert f"{FS} / {VICTIM}: {_rel(root)}: holds instances of source {OTHER}, not of {VICTIM}" in err

    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert _rel(root) in out and f"holds instances of source {OTHER}" in out

    cohort = cohortlab.load_study(root).cohort()
    assert VICTIM_PATIENT in cohort.bags(FS).missing
    bags = cohort.bags(FS)
    pos = list(bags.patient_ids).index("P004")
    assert set(bags.instances[pos]["source_id"].to_list()) == {OTHER}
    assert bags.embeddings[pos].shape[0] == n


# --- a deleted file -----------------------------------------------------------------------------------------


def test_deleted_file_counts_as_missing_in_cohort_coverage(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _copy(embedded, tmp_path)
    _file(root).unlink()
    assert main(["cohort", str(root)]) == 0
    out = capsys.readouterr().out
    assert _coverage(out) == (15, 1, VICTIM_PATIENT)
    assert f"{FS} / {VICTIM}: {_rel(root)}: missing" in out

    from analytics.cohort import cohort_overview

    cohort, coverage = cohort_overview(load_config(root))
    row = coverage.filter(pl.col("features") == f"{FS}:instances").row(0, named=True)
    assert (row["patients"], row["missing"], row["missing ids"]) == (len(cohort) - 1, 1, VICTIM_PATIENT)
    assert [(p.source_id, p.reason) for p in cohort.left_out] == [(VICTIM, "missing")]


# --- the cost rules: content verified once per command, afresh by every command -----------------------------


def test_each_command_hashes_each_file_once(embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    root = _copy(embedded, tmp_path)
    hashed: list[str] = []
    real = store.sha256_file

    def counting(path: str | Path, chunk: int = 1 << 20) -> str:
        hashed.append(Path(path).name)
        return real(path, chunk)

    monkeypatch.setattr(store_hashing, "sha256_file", counting)  # where the checks look it up
    for _ in range(2):  # no cache across commands: a second command hashes again
        assert main(["cohort", str(root)]) == 0
        assert sorted(hashed) == sorted(f"{s}.parquet" for s in _sources(root)) and len(hashed) == 17
        hashed.clear()
    capsys.readouterr()
    with store.verified_once():  # within one block (one command), each file once, however often it is read
        assert store_problems(root) == [] and store_problems(root) == []
    assert len(hashed) == 17


def _sources(root: Path) -> list[str]:
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        return [f.source_id for f in store.done_files(con, FS)]
    finally:
        con.close()


def test_source_check_reads_the_footer_and_survives_long_ids(tmp_path: Path) -> None:
    """Footer statistics may be truncated for a long id: the column is then read, and a match is no problem."""
    long_id = "S" * 300
    frame = pl.DataFrame({
        "source_id": [long_id] * 3, "instance": [0, 1, 2], "x": [0] * 3, "y": [0] * 3, "z": [None] * 3,
        "level": [0] * 3, "tissue_fraction": [1.0] * 3, "embedding": [[0.0, 1.0]] * 3,
    })
    path = store.write_instances(tmp_path / "a.parquet", frame)
    size = path.stat().st_size
    assert store.check_instance_file(path, size, long_id) is None
    assert store.check_instance_file(path, size, "other").startswith(f"holds instances of source {long_id}")
    stamp = store.stamp_file(path)
    assert store.verify_instance_file(path, stamp, 3, long_id) == (None, None)
    assert "holds instances" in store.verify_instance_file(path, stamp, 3, "other")[0]
