"""A store of schema 1 (absolute paths, fingerprints of size, time and absolute mask path) upgrades without re-embedding."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
from integrity_helpers import copy_study, tables

from pipeline import store
from pipeline.config import load_study
from pipeline.embed import embed
from pipeline.ingest import ingest


def _old_rule(path: Path, *extra: object) -> str:
    """How schema-1 stores fingerprinted a file: its size and modification time, plus manifest fields."""
    st = path.stat()
    return hashlib.sha1(json.dumps([st.st_size, st.st_mtime_ns, *extra], default=str).encode()).hexdigest()[:16]


def _make_schema_1(root: Path) -> None:
    """Turn a current store into what schema 1 wrote for the same study."""
    con = duckdb.connect(str(root / "store.duckdb"))
    try:
        for col in ("checksum", "file_bytes", "file_mtime_ns"):
            con.execute(f"ALTER TABLE embed_items DROP COLUMN {col}")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        con.execute("UPDATE patients SET source_file = ? || '/' || source_file", [str(root)])
        for sid, rel in con.execute("SELECT slide_id, path FROM slides").fetchall():
            fp = _old_rule(root / rel, None)
            con.execute("UPDATE slides SET path = ?, fingerprint = ? WHERE slide_id = ?", [str(root / rel), fp, sid])
            con.execute("UPDATE embed_items SET fingerprint = ? WHERE source_id = ?", [fp, sid])
        for sid, image, mask, label in con.execute("SELECT scan_id, image_path, mask_path, mask_label FROM scans").fetchall():
            fp = _old_rule(root / image, str(root / mask), label) + _old_rule(root / mask)
            con.execute("UPDATE scans SET image_path = ?, mask_path = ?, fingerprint = ? WHERE scan_id = ?",
                        [str(root / image), str(root / mask), fp, sid])
            con.execute("UPDATE embed_items SET fingerprint = ? WHERE source_id = ?", [fp, sid])
    finally:
        con.close()


def _checksums(root: Path) -> dict[str, str]:
    con = duckdb.connect(str(root / "store.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT feature_set || '/' || source_id, checksum FROM embed_items").fetchall())
    finally:
        con.close()


def test_schema_1_store_upgrades_and_keeps_its_embeddings(embedded: Path, tmp_path: Path) -> None:
    root = copy_study(embedded, tmp_path / "study")
    current = tables(root)
    checksums = _checksums(root)
    _make_schema_1(root)

    # read-only, not migrated: queries still work
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        assert store._version(con) == 1
        n = con.execute("SELECT count(*) FROM instances").fetchone()[0]
        assert n > 0 and store.unreadable_instances(con) == []
    finally:
        con.close()

    study = load_study(root)
    result = ingest(study, progress=False)
    assert result.changes["slides"].updated == current["slides"].height
    assert result.changes["scans"].updated == current["scans"].height
    upgraded = tables(root)
    for name in ("patients", "slides", "scans"):
        assert upgraded[name].equals(current[name]), name  # relative paths, content fingerprints

    runs = embed(study, device="cpu", progress=False).feature_sets
    assert [(r.done, r.failed, r.redone) for r in runs] == [(0, 0, [])] * len(runs)
    after = tables(root)["embed_items"]
    assert after.equals(current["embed_items"])  # fingerprints moved over
    assert _checksums(root) == checksums  # and each instance file's sha256 recorded
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        assert store._version(con) == store.SCHEMA_VERSION
    finally:
        con.close()
