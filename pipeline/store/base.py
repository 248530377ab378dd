"""What every part of the store uses: its error, identifier quoting, transactions and queries."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.errors import CohortlabError


class StoreError(CohortlabError, RuntimeError):
    """The store cannot be opened or a write would break one of its rules."""


CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (``"a""b"`` for ``a"b``): the one way a name goes into SQL text.

    Any name is then one identifier, whatever it holds (quotes, ``;``, SQL
    keywords); values are never pasted, always bound.

    Raises
    ------
    StoreError
        The name is empty or holds a NUL or another control character (no
        table or column is named so on purpose, and a terminal would hide it).
    """
    if not name:
        raise StoreError("an empty name cannot be a table or column name")
    bad = CONTROL_CHARACTER.search(name)
    if bad is not None:
        raise StoreError(f"name {name!r} holds the control character {bad.group(0)!r}; rename it")
    return '"' + name.replace('"', '""') + '"'


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The first column of the first row of a query, or None when it returns no row."""
    row = con.execute(sql, params).fetchone() if params is not None else con.execute(sql).fetchone()
    return None if row is None else row[0]


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(_scalar(
        con, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
        "AND column_name = ?", [table, column],
    ))


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


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
    """Run SQL with bound parameters and return a polars frame (via Arrow, no pandas)."""
    rel = con.sql(sql, params=params) if params else con.sql(sql)
    frame = pl.from_arrow(rel.to_arrow_table())
    assert isinstance(frame, pl.DataFrame)  # a table always converts to a frame
    return frame


def store_dir(con_or_path: duckdb.DuckDBPyConnection | str | Path) -> Path:
    if isinstance(con_or_path, (str, Path)):
        return Path(con_or_path).resolve().parent
    path = _scalar(con_or_path, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
    if not path:
        raise StoreError("this connection is not to a store file (an in-memory database has no folder)")
    return Path(path).resolve().parent
