"""Opening a store: waiting for another process's lock, creating or migrating the schema, the ``instances`` view."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from pipeline.store.base import StoreError
from pipeline.store.instances_view import refresh_instances_view
from pipeline.store.schema import _apply_schema, _version


def _open(path: Path, read_only: bool, wait_s: float, share_writer: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to ``path``, waiting up to ``wait_s`` seconds while another process holds its lock.

    ``share_writer``: when this process already holds the store open for writing, share that database
    (DuckDB refuses a second, read-only configuration of it); only for callers that just read.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.ConnectionException:
            if not share_writer:
                raise
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise StoreError(f"{path}: cannot open store: {exc}") from None
            time.sleep(0.5)


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
    con = _open(path, read_only, wait_s)
    try:
        if read_only:
            if _version(con) is None:
                raise StoreError(f"{path}: not a cohortlab store (no schema version)")
        else:
            _apply_schema(con, path)
    except BaseException:  # a refused file stays closed, so the caller (or the next connect) finds it as it was
        con.close()
        raise
    refresh_instances_view(con, path)
    return con
