"""The study store: one DuckDB file plus per-source instance Parquet files.

Layout beside ``store.duckdb``::

    store.duckdb
    instances/feature_set=<name>/<source_id>.parquet   one file per slide or scan

The schema lives in ``sql/schema.sql``; its version is kept in ``meta`` and
older stores are migrated by ``sql/migrations/NNN_*.sql``. Instance files are
written to a temporary name and renamed when complete, so a file that exists is
whole; whether it *counts* is decided by its ``embed_items`` row.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from pipeline import atomic

SCHEMA_VERSION = 1
INSTANCE_COLUMNS = ("source_id", "instance", "x", "y", "z", "level", "tissue_fraction", "embedding")


class StoreError(RuntimeError):
    """The store cannot be opened or a write would break one of its rules."""


def sql_dir() -> Path:
    """The folder of SQL files: the repository's ``sql/`` or the copy bundled in the wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "sql", here / "sql"):
        if (cand / "schema.sql").exists():
            return cand
    raise StoreError(f"cannot find sql/schema.sql beside {here}")


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    try:
        from importlib.metadata import version

        ver = version("cohortlab")
    except Exception:
        ver = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "pipeline", "sql"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            return f"{ver}+g{sha}{'.dirty' if dirty else ''}"
        except Exception:
            pass
    return ver


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# --- opening and migrating ----------------------------------------------------


def _migrations() -> list[tuple[int, Path]]:
    out = []
    for p in sorted((sql_dir() / "migrations").glob("*.sql")):
        m = re.match(r"(\d+)_", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return out


def _version(con: duckdb.DuckDBPyConnection) -> int | None:
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main'"
    ).fetchone()[0]
    if not has_meta:
        return None
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def _apply_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    version = _version(con)
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema version {version} is newer than this cohortlab ({SCHEMA_VERSION}); upgrade cohortlab"
        )
    if version == SCHEMA_VERSION:
        return
    with transaction(con):
        if version is None:
            con.execute((sql_dir() / "schema.sql").read_text())
            con.execute("INSERT OR REPLACE INTO meta VALUES ('created_with', ?)", [code_version()])
        else:
            for v, file in _migrations():
                if version < v <= SCHEMA_VERSION:
                    con.execute(file.read_text())
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])


def connect(path: str | Path, read_only: bool = False, wait_s: float = 60.0) -> duckdb.DuckDBPyConnection:
    """Open a study store, creating and migrating it unless ``read_only``.

    DuckDB lets one process write a file at a time; when another process (a
    second embedding shard, say) holds it, this waits up to ``wait_s`` seconds.
    Every connection gets a temporary view ``instances`` over the instance
    Parquet files whose ``embed_items`` row is ``done``.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"{path}: no store here (run `cohortlab ingest` first)")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise StoreError(f"{path}: cannot open store: {exc}") from None
            time.sleep(0.5)
    if read_only:
        if _version(con) is None:
            con.close()
            raise StoreError(f"{path}: not a cohortlab store (no schema version)")
    else:
        _apply_schema(con, path)
    refresh_instances_view(con, path)
    return con


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit on success, roll back on any exception."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def store_dir(con_or_path: duckdb.DuckDBPyConnection | str | Path) -> Path:
    if isinstance(con_or_path, (str, Path)):
        return Path(con_or_path).resolve().parent
    row = con_or_path.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return Path(row[0]).resolve().parent


# --- instances ----------------------------------------------------------------

_EMPTY_INSTANCES = (
    "SELECT NULL::VARCHAR AS feature_set, NULL::VARCHAR AS source_id, NULL::INTEGER AS instance, "
    "NULL::BIGINT AS x, NULL::BIGINT AS y, NULL::BIGINT AS z, NULL::INTEGER AS level, "
    "NULL::DOUBLE AS tissue_fraction, NULL::FLOAT[] AS embedding WHERE false"
)


def safe_name(source_id: str) -> str:
    """A file name for a source id: readable when it can be, unique always."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", source_id)
    if clean == source_id and not source_id.startswith("."):
        return source_id
    return f"{clean}-{hashlib.sha1(source_id.encode()).hexdigest()[:8]}"


def instance_path(store: str | Path, feature_set: str, source_id: str) -> Path:
    """Where a source's instance Parquet lives (absolute)."""
    return Path(store).resolve().parent / "instances" / f"feature_set={feature_set}" / f"{safe_name(source_id)}.parquet"


def refresh_instances_view(con: duckdb.DuckDBPyConnection, path: str | Path | None = None) -> None:
    """(Re)create the temporary ``instances`` view over done instance files."""
    base = store_dir(path if path is not None else con)
    rows = con.execute(
        "SELECT feature_set, path FROM embed_items WHERE status = 'done' AND path IS NOT NULL ORDER BY feature_set, source_id"
    ).fetchall()
    files = [str(base / p) for _, p in rows if (base / p).exists()]
    if not files:
        con.execute(f"CREATE OR REPLACE TEMP VIEW instances AS {_EMPTY_INSTANCES}")
        return
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con.execute(
        "CREATE OR REPLACE TEMP VIEW instances AS SELECT feature_set, source_id, instance, x, y, z, level, "
        f"tissue_fraction, embedding FROM read_parquet([{listing}], hive_partitioning = true, union_by_name = true)"
    )


def write_instances(path: str | Path, frame: pl.DataFrame) -> Path:
    """Write one source's instances atomically (temp file, fsync, rename).

    ``frame`` holds ``INSTANCE_COLUMNS``; ``embedding`` is a list/array of float32.
    """
    path = Path(path)
    missing = [c for c in INSTANCE_COLUMNS if c not in frame.columns]
    if missing:
        raise StoreError(f"{path}: instance frame lacks columns {missing}")
    frame = frame.select(INSTANCE_COLUMNS).with_columns(
        pl.col("embedding").cast(pl.List(pl.Float32)),
        pl.col("instance").cast(pl.Int32),
        pl.col("x").cast(pl.Int64), pl.col("y").cast(pl.Int64), pl.col("z").cast(pl.Int64),
        pl.col("level").cast(pl.Int32), pl.col("tissue_fraction").cast(pl.Float64),
    )
    with atomic.staged(path, fsync=True) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
    return path


def embeddings_matrix(column: pa.ChunkedArray | pa.Array | pl.Series, dim: int | None = None) -> np.ndarray:
    """Turn a list-of-float column into a float32 (n, dim) matrix without Python loops."""
    if isinstance(column, pl.Series):
        column = column.to_arrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=pa.list_(pa.float32()))
    n = len(column)
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    width = len(values) // n
    if width * n != len(values):
        raise StoreError("embeddings of different lengths in one feature set")
    return values.reshape(n, width)


def read_instances(
    con: duckdb.DuckDBPyConnection, feature_set: str, source_ids: Sequence[str] | None = None
) -> pl.DataFrame:
    """Instances of one feature set (optionally of some sources), ordered by source and instance."""
    sql = "SELECT i.*, e.patient_id FROM instances i JOIN embed_items e ON e.feature_set = i.feature_set AND e.source_id = i.source_id WHERE i.feature_set = ?"
    params: list[Any] = [feature_set]
    if source_ids is not None:
        sql += " AND i.source_id IN (SELECT unnest(?))"
        params.append(list(source_ids))
    return query(con, sql + " ORDER BY i.source_id, i.instance", params)


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
    """Run SQL with bound parameters and return a polars frame (via Arrow, no pandas)."""
    rel = con.sql(sql, params=params) if params else con.sql(sql)
    return pl.from_arrow(rel.to_arrow_table())


# --- feature sets and embedding items ------------------------------------------


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
) -> None:
    """Upsert one ``embed_items`` row (``path`` relative to the store folder)."""
    if status not in ("done", "failed"):
        raise StoreError(f"embed item status must be done or failed, not {status!r}")
    con.execute(
        "INSERT OR REPLACE INTO embed_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [feature_set, source_id, patient_id, status, n_instances, error, seconds, path, fingerprint, _now()],
    )


def done_items(con: duckdb.DuckDBPyConnection, feature_set: str) -> dict[str, str | None]:
    """source_id -> fingerprint of the items already embedded for a feature set."""
    rows = con.execute(
        "SELECT source_id, fingerprint FROM embed_items WHERE feature_set = ? AND status = 'done'", [feature_set]
    ).fetchall()
    return dict(rows)


# --- pooled patient features ----------------------------------------------------


def write_patient_features(
    con: duckdb.DuckDBPyConnection,
    feature_set: str,
    pooling: str,
    patient_ids: Sequence[str],
    matrix: np.ndarray,
    n_instances: Sequence[int],
) -> None:
    """Replace the pooled features of one (feature set, pooling) in one transaction."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(patient_ids) or len(n_instances) != len(patient_ids):
        raise StoreError(f"patient features for {feature_set}/{pooling}: shapes do not agree")
    if not np.isfinite(matrix).all():
        raise StoreError(f"patient features for {feature_set}/{pooling}: non-finite values")
    dim = matrix.shape[1]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim).cast(pa.list_(pa.float32()))
    table = pa.table(
        {
            "feature_set": pa.array([feature_set] * len(patient_ids)),
            "pooling": pa.array([pooling] * len(patient_ids)),
            "patient_id": pa.array(list(patient_ids), type=pa.string()),
            "n_instances": pa.array(list(n_instances), type=pa.int32()),
            "embedding": emb,
        }
    )
    with transaction(con):
        con.execute("DELETE FROM patient_features WHERE feature_set = ? AND pooling = ?", [feature_set, pooling])
        con.register("_pf_new", table)
        try:
            con.execute("INSERT INTO patient_features SELECT * FROM _pf_new")
        finally:
            con.unregister("_pf_new")


def read_patient_features(
    con: duckdb.DuckDBPyConnection, feature_set: str, pooling: str
) -> tuple[list[str], np.ndarray]:
    """Patient ids (sorted) and the float32 matrix of one pooled feature set."""
    tbl = con.sql(
        "SELECT patient_id, embedding FROM patient_features WHERE feature_set = ? AND pooling = ? ORDER BY patient_id",
        params=[feature_set, pooling],
    ).to_arrow_table()
    return tbl.column("patient_id").to_pylist(), embeddings_matrix(tbl.column("embedding"))


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


def failed_items(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Sources that could not be embedded: feature_set, source_id, patient_id, error."""
    return query(
        con,
        "SELECT feature_set, source_id, patient_id, error FROM embed_items WHERE status = 'failed' "
        "ORDER BY feature_set, source_id",
    )


def read_predictions(con: duckdb.DuckDBPyConnection, model: str | None = None) -> pl.DataFrame:
    """Rows of the ``predictions`` table (of one model), ordered by model and patient."""
    sql = "SELECT model, patient_id, split, score, fold FROM predictions"
    params: list[Any] = []
    if model is not None:
        sql += " WHERE model = ?"
        params.append(model)
    return query(con, sql + " ORDER BY model, patient_id", params or None)


def file_fingerprint(path: str | Path, *extra: Any) -> str:
    """Cheap identity of a file (size, mtime) plus the manifest fields that change its meaning."""
    p = Path(path)
    parts: list[Any] = []
    if p.is_dir():
        for f in sorted(p.iterdir()):
            st = f.stat()
            parts += [f.name, st.st_size, st.st_mtime_ns]
    else:
        st = p.stat()
        parts += [st.st_size, st.st_mtime_ns]
    parts += list(extra)
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]
