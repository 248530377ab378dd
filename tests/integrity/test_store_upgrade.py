"""A store of schema 1 (absolute paths, fingerprints of size, time and absolute mask path) upgrades without re-embedding."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
from integrity_helpers import copy_study, tables

from pipeline import store
from pipeline.config import load_config
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
        for col in ("checksum", "file_bytes", "file_mtime_ns", "node", "device"):
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

    study = load_config(root)
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


def _make_schema_2(root: Path) -> None:
    """Turn a current store into what schema 2 wrote: no record of where each source was embedded."""
    con = duckdb.connect(str(root / "store.duckdb"))
    try:
        for col in ("node", "device"):
            con.execute(f"ALTER TABLE embed_items DROP COLUMN {col}")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    finally:
        con.close()


def _placement(root: Path) -> dict[str, tuple[str | None, str | None]]:
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        rows = store.embedded_items(con).select("feature_set", "source_id", "node", "device").iter_rows()
        return {f"{fs}/{sid}": (node, dev) for fs, sid, node, dev in rows}
    finally:
        con.close()


def _features_rows(capsys, root: Path) -> dict[str, list[str]]:
    """``cohortlab features``: the cells of each row of its sources table, by source id."""
    from analytics.cli import main

    assert main(["features", str(root)]) == 0
    out = capsys.readouterr().out
    table = out.split("sources (node and device", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("┆")]
        if len(cells) == 6 and cells[0] != "feature_set":  # not the header
            rows[f"{cells[0]}/{cells[1]}"] = cells
    return rows


def test_schema_2_store_upgrades_and_records_where_sources_are_embedded(embedded: Path, tmp_path: Path, capsys) -> None:
    import socket

    root = copy_study(embedded, tmp_path / "study")
    here = socket.gethostname()
    placed = _placement(root)
    assert placed and set(placed.values()) == {(here, "cpu")}  # the local runner records this host and device
    current = tables(root)
    _make_schema_2(root)

    # read-only, not migrated: features still shows every source, placement not recorded
    assert set(_placement(root).values()) == {(None, None)}
    rows = _features_rows(capsys, root)
    assert set(rows) == set(placed) and {tuple(r[4:]) for r in rows.values()} == {("-", "-")}

    study = load_config(root)
    runs = embed(study, device="cpu", progress=False).feature_sets
    assert [(r.done, r.failed, r.redone) for r in runs] == [(0, 0, [])] * len(runs)  # nothing embedded again
    assert tables(root)["embed_items"].equals(current["embed_items"])
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        assert store._version(con) == store.SCHEMA_VERSION == 5
    finally:
        con.close()

    # one source embedded again after the upgrade: its row says where; the others stay unrecorded
    fs, sid = sorted(placed)[0].split("/", 1)
    store.instance_path(root / "store.duckdb", fs, sid).unlink()
    runs = embed(study, feature_set=fs, device="cpu", progress=False).feature_sets
    assert (runs[0].done, [s for s, _ in runs[0].redone]) == (1, [sid])
    after = _placement(root)
    assert after[f"{fs}/{sid}"] == (here, "cpu")
    assert {k for k, v in after.items() if v == (None, None)} == set(placed) - {f"{fs}/{sid}"}
    rows = _features_rows(capsys, root)
    assert rows[f"{fs}/{sid}"][4:] == [here, "cpu"]
    assert sum(r[4:] == ["-", "-"] for r in rows.values()) == len(placed) - 1
