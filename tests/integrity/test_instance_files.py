"""A damaged instance file: queries go on without it and say so; ``embed`` embeds exactly that source again."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from integrity_helpers import copy_study, pooled, tables

from analytics.cli import main
from pipeline import store
from pipeline.config import load_config
from pipeline.embed import embed

FS, VICTIM, OTHER = "wsi_resnet18", "P005-S1", "P004-S1"


def _file(root: Path, source: str = VICTIM, feature_set: str = FS) -> Path:
    return store.instance_path(root / "store.duckdb", feature_set, source)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a data page, the footer intact: same size, other content
    path.write_bytes(bytes(data))


DAMAGE = {
    "deleted": lambda p, root: p.unlink(),
    "truncated": lambda p, root: os.truncate(p, p.stat().st_size // 2),
    "replaced": lambda p, root: shutil.copyfile(_file(root, OTHER), p),  # another source's (valid) file
    "modified": lambda p, root: _flip_byte(p),
}


def test_truncated_file_is_left_out_of_queries_and_reported(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    root = copy_study(embedded, tmp_path / "study")
    con = store.connect(root / "store.duckdb", read_only=True)
    n_victim, total = con.execute(
        f"SELECT count(*) FILTER (WHERE source_id = '{VICTIM}'), count(*) FROM instances WHERE feature_set = '{FS}'"
    ).fetchone()
    con.close()
    assert n_victim > 0
    os.truncate(_file(root), 4000)

    assert main(["sql", str(root), "SELECT 42 AS answer"]) == 0
    out, err = capsys.readouterr()
    assert "42" in out
    assert f"{FS} / {VICTIM}" in err and "truncated" in err
    assert main(["sql", str(root), f"SELECT count(*) AS n FROM instances WHERE feature_set = '{FS}'"]) == 0
    assert str(total - n_victim) in capsys.readouterr().out
    logged = (root / "logs" / "cohortlab.log").read_text(encoding="utf-8")
    assert "left out of the instances view" in logged and f"feature_set={FS}/{VICTIM}.parquet" in logged

    with caplog.at_level(logging.WARNING, logger="cohortlab.store"):
        con = store.connect(root / "store.duckdb", read_only=True)
    try:
        problems = store.unreadable_instances(con)
        assert [(p.feature_set, p.source_id) for p in problems] == [(FS, VICTIM)]
        assert problems[0].reason.startswith("4000 bytes") and "truncated" in problems[0].reason
        assert con.execute("SELECT count(DISTINCT source_id) FROM instances WHERE source_id = ?", [VICTIM]).fetchone() == (0,)
    finally:
        con.close()
    assert any(VICTIM in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    assert main(["features", str(root)]) == 0
    assert f"{FS} / {VICTIM}" in capsys.readouterr().out


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_file_is_embedded_again_and_only_it(embedded: Path, tmp_path: Path, damage: str) -> None:
    root = copy_study(embedded, tmp_path / "study")
    original = pl.read_parquet(_file(root))
    before = pooled(root, FS)
    DAMAGE[damage](_file(root), root)

    result = embed(load_config(root), device="cpu", progress=False)
    runs = {r.name: r for r in result.feature_sets}
    n_sources = len(tables(root)["slides"])
    assert (runs[FS].done, runs[FS].failed, runs[FS].skipped) == (1, 0, n_sources - 1)
    assert [sid for sid, _ in runs[FS].redone] == [VICTIM]
    assert f"warning: {VICTIM} embedded again" in str(result)
    assert runs["ct_radiomics"].done == 0 and not runs["ct_radiomics"].redone
    # the same embeddings as the first run, and the same pooled features
    assert pl.read_parquet(_file(root)).equals(original)
    after = pooled(root, FS)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        assert store.unreadable_instances(con) == []
    finally:
        con.close()
    # and a second run has nothing left to do
    again = {r.name: r for r in embed(load_config(root), device="cpu", progress=False).feature_sets}
    assert (again[FS].done, again[FS].redone) == (0, [])


def test_new_file_times_alone_cost_a_hash_once_not_an_embedding(embedded: Path, tmp_path: Path) -> None:
    """A copy that does not keep file times: the sha256s match, nothing is embedded, and the new times are recorded."""
    root = copy_study(embedded, tmp_path / "study", keep_times=False)
    result = embed(load_config(root), device="cpu", progress=False)
    assert [(r.done, r.redone) for r in result.feature_sets] == [(0, [])] * len(result.feature_sets)
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        rows = con.execute("SELECT path, checksum, file_bytes, file_mtime_ns FROM embed_items WHERE status = 'done'").fetchall()
    finally:
        con.close()
    for rel, checksum, size, mtime in rows:
        st = (root / rel).stat()
        assert (size, mtime) == (st.st_size, st.st_mtime_ns), rel
        assert checksum == store.sha256_file(root / rel)


def test_status_file_of_a_replaced_output_is_not_folded(embedded: Path, tmp_path: Path) -> None:
    """A status file left by a killed run counts only if its instance file is still the one it describes."""
    from pipeline.embed import embed_source, fold_status_files, list_sources, make_embedder

    root = copy_study(embedded, tmp_path / "study")
    study = load_config(root)
    con = store.connect(study.store_path)
    try:
        con.execute("DELETE FROM embed_items WHERE feature_set = ? AND source_id = ?", [FS, VICTIM])
        sources = {s.source_id: s for s in list_sources(con, study, "wsi")}
    finally:
        con.close()
    embedder = make_embedder(study.feature_set(FS), "cpu")
    try:
        status = embed_source(embedder, sources[VICTIM], FS, study.store_path)
    finally:
        embedder.close()
    assert status["status"] == "done" and status["checksum"] == store.sha256_file(_file(root))
    _flip_byte(_file(root))
    con = store.connect(study.store_path)
    try:
        assert fold_status_files(con, study, FS, sources) == 0
        assert con.execute("SELECT count(*) FROM embed_items WHERE source_id = ?", [VICTIM]).fetchone() == (0,)
    finally:
        con.close()
