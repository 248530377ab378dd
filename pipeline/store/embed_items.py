"""Feature sets and their embedding items: the immutable definitions, and one ``embed_items`` row per source.

A done item's row records its instance file (path relative to the store's
folder) with the file's sha256, size and modification time
(:class:`~pipeline.store.hashing.FileStamp`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from pipeline.store.base import StoreError, _has_column, _now, query
from pipeline.store.hashing import FileStamp
from pipeline.store.version import code_version


@dataclass(frozen=True)
class FeatureSetRecord:
    name: str
    modality: str
    encoder: str
    weights: str
    params: dict[str, Any]
    dim: int | None = None


def feature_set_params(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``params`` of a ``feature_sets`` row (stored as JSON text; a dict passes through)."""
    raw = (record or {}).get("params")
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return {}
    return dict(raw or {})


def register_feature_set(con: duckdb.DuckDBPyConnection, rec: FeatureSetRecord) -> None:
    """Add a feature set, or check that an existing one has the same definition.

    A feature set is immutable: a second registration that differs in any
    parameter is refused, so every stored number traces to one definition.
    """
    params = json.dumps(rec.params, sort_keys=True, default=str)
    row = con.execute(
        "SELECT modality, encoder, weights, params, dim FROM feature_sets WHERE name = ?", [rec.name]
    ).fetchone()
    if row is None:
        con.execute(
            "INSERT INTO feature_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [rec.name, rec.modality, rec.encoder, rec.weights, params, rec.dim, code_version(), _now()],
        )
        return
    old = {"modality": row[0], "encoder": row[1], "weights": row[2], "params": json.loads(row[3])}
    new = {"modality": rec.modality, "encoder": rec.encoder, "weights": rec.weights, "params": json.loads(params)}
    diff = [k for k in old if old[k] != new[k]]
    if diff:
        detail = "; ".join(f"{k}: stored {old[k]!r}, now {new[k]!r}" for k in diff)
        raise StoreError(
            f"feature set '{rec.name}' already exists with a different definition ({detail}); "
            "a feature set is immutable: give the changed one a new name"
        )
    if rec.dim is not None and row[4] is None:
        con.execute("UPDATE feature_sets SET dim = ? WHERE name = ?", [rec.dim, rec.name])
    elif rec.dim is not None and row[4] != rec.dim:
        raise StoreError(f"feature set '{rec.name}': dimension {rec.dim} differs from stored {row[4]}")


def feature_sets(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Feature sets with provenance and embedding progress."""
    return query(
        con,
        """
            SELECT f.name, f.modality, f.encoder, f.weights, f.dim, f.code_version, f.created_at, f.params,
                   count(e.source_id) FILTER (WHERE e.status = 'done')   AS done,
                   count(e.source_id) FILTER (WHERE e.status = 'failed') AS failed,
                   sum(e.n_instances) FILTER (WHERE e.status = 'done')::BIGINT AS instances
            FROM feature_sets f LEFT JOIN embed_items e ON e.feature_set = f.name
            GROUP BY ALL ORDER BY f.name
        """,
    )


def feature_set_record(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    """One ``feature_sets`` row (name, modality, encoder, params ...) as a dict; None when no such feature set."""
    rec = query(con, "SELECT * FROM feature_sets WHERE name = ?", [name])
    return None if rec.height == 0 else rec.row(0, named=True)


def record_item(
    con: duckdb.DuckDBPyConnection,
    feature_set: str,
    source_id: str,
    patient_id: str,
    status: str,
    n_instances: int | None = None,
    error: str | None = None,
    seconds: float | None = None,
    path: str | None = None,
    fingerprint: str | None = None,
    stamp: FileStamp | None = None,
    node: str | None = None,
    device: str | None = None,
) -> None:
    """Upsert one ``embed_items`` row (``path`` relative to the store folder, ``stamp`` of the file written there).

    ``node`` and ``device`` say where the source was embedded (a Ray node's address or the host's name,
    and the torch device); ``None`` when not known.
    """
    if status not in ("done", "failed"):
        raise StoreError(f"embed item status must be done or failed, not {status!r}")
    con.execute(
        "INSERT OR REPLACE INTO embed_items (feature_set, source_id, patient_id, status, n_instances, error, seconds, "
        "path, fingerprint, updated_at, checksum, file_bytes, file_mtime_ns, node, device) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [feature_set, source_id, patient_id, status, n_instances, error, seconds, path, fingerprint, _now(),
         *((stamp.checksum, stamp.bytes, stamp.mtime_ns) if stamp is not None else (None, None, None)), node, device],
    )


def record_stamps(con: duckdb.DuckDBPyConnection, feature_set: str, stamps: Mapping[str, FileStamp]) -> None:
    """Record new stamps of done items' instance files (``source_id -> stamp``) in one statement.

    For files whose time changed with their bytes the same (a copy), and for an older store's rows.
    """
    if not stamps:
        return
    table = pa.table({
        "source_id": pa.array(list(stamps), type=pa.string()),
        "checksum": pa.array([s.checksum for s in stamps.values()], type=pa.string()),
        "file_bytes": pa.array([s.bytes for s in stamps.values()], type=pa.int64()),
        "file_mtime_ns": pa.array([s.mtime_ns for s in stamps.values()], type=pa.int64()),
    })
    con.register("_stamps_new", table)
    try:
        con.execute(
            "UPDATE embed_items SET checksum = n.checksum, file_bytes = n.file_bytes, file_mtime_ns = n.file_mtime_ns "
            "FROM _stamps_new n WHERE embed_items.feature_set = ? AND embed_items.source_id = n.source_id",
            [feature_set],
        )
    finally:
        con.unregister("_stamps_new")


def done_items(con: duckdb.DuckDBPyConnection, feature_set: str) -> dict[str, str | None]:
    """source_id -> fingerprint of the items already embedded for a feature set."""
    rows = con.execute(
        "SELECT source_id, fingerprint FROM embed_items WHERE feature_set = ? AND status = 'done'", [feature_set]
    ).fetchall()
    return dict(rows)


@dataclass(frozen=True)
class DoneFile:
    """A done ``embed_items`` row's instance file as recorded: path relative to the store's folder, and its stamp."""

    feature_set: str
    source_id: str
    path: str
    n_instances: int | None
    file_bytes: int | None
    stamp: FileStamp | None  # None in rows written before checksums were recorded


def done_files(con: duckdb.DuckDBPyConnection, feature_set: str | None = None) -> list[DoneFile]:
    """The done items' instance files as ``embed_items`` records them, ordered by feature set and source."""
    # a read-only connection to a store of schema 1 (not migrated) has no recorded stamps
    cols = ("checksum", "file_bytes", "file_mtime_ns") if _has_column(con, "embed_items", "file_bytes") \
        else ("NULL::VARCHAR", "NULL::BIGINT", "NULL::BIGINT")
    sql = (
        f"SELECT feature_set, source_id, path, n_instances, {', '.join(cols)} FROM embed_items "
        "WHERE status = 'done' AND path IS NOT NULL"
    )
    params: list[Any] = []
    if feature_set is not None:
        sql += " AND feature_set = ?"
        params.append(feature_set)
    out = []
    for fs, sid, rel, n, checksum, size, mtime in con.execute(sql + " ORDER BY feature_set, source_id", params).fetchall():
        stamp = FileStamp(checksum, int(size), int(mtime)) if checksum is not None and size is not None \
            and mtime is not None else None
        out.append(DoneFile(fs, sid, rel, n, size, stamp))
    return out


def embedded_items(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per source of each feature set: status, instances, and the node and device that embedded it.

    ``node`` and ``device`` are null for sources embedded before schema 3 recorded them (and on a
    read-only connection to such a store, not migrated).
    """
    have = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = 'embed_items'"
    ).fetchall()}
    where = ", ".join(c if c in have else f"NULL::VARCHAR AS {c}" for c in ("node", "device"))
    return query(
        con,
        f"SELECT feature_set, source_id, status, n_instances, {where} FROM embed_items ORDER BY feature_set, source_id",
    )


def failed_items(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Sources that could not be embedded: feature_set, source_id, patient_id, error."""
    return query(
        con,
        "SELECT feature_set, source_id, patient_id, error FROM embed_items WHERE status = 'failed' "
        "ORDER BY feature_set, source_id",
    )
