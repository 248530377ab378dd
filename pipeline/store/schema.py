"""The store's schema: the SQL files, the schema version kept in ``meta``, creation and migration.

The schema lives in ``sql/schema.sql``; its version is kept in ``meta`` and
older stores are migrated by ``sql/migrations/NNN_*.sql``.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from pipeline.store.base import StoreError, _scalar, transaction
from pipeline.store.version import code_version

SCHEMA_VERSION = 5


def sql_dir() -> Path:
    """The folder of SQL files: the repository's ``sql/`` or the copy bundled in the wheel."""
    # this file is pipeline/store/schema.py: the repository's sql/ sits beside pipeline/, the wheel's inside it
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "sql", here / "sql"):
        if (cand / "schema.sql").exists():
            return cand
    raise StoreError(f"cannot find sql/schema.sql beside {here}")


def _migrations() -> list[tuple[int, Path]]:
    out = []
    for p in sorted((sql_dir() / "migrations").glob("*.sql")):
        m = re.match(r"(\d+)_", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return out


def _version(con: duckdb.DuckDBPyConnection) -> int | None:
    has_meta = _scalar(
        con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main'"
    )
    if not has_meta:
        return None
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None
    except (duckdb.Error, ValueError):  # a table named meta that is not cohortlab's
        raise StoreError(f"{_database_file(con)}: not a cohortlab store (its table 'meta' is not cohortlab's); "
                         "give [study] store a new file name") from None


def _database_file(con: duckdb.DuckDBPyConnection) -> str:
    path = _scalar(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
    return str(path or "the database")


def _foreign_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables and views of a database that has no cohortlab schema version: another program's data."""
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = current_database() "
        "ORDER BY ALL"
    ).fetchall()
    return [name if schema == "main" else f"{schema}.{name}" for schema, name in rows]


def _apply_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    version = _version(con)
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema version {version} is newer than this cohortlab ({SCHEMA_VERSION}); upgrade cohortlab"
        )
    if version == SCHEMA_VERSION:
        return
    if version is None:
        # a DuckDB file of something else: adding cohortlab's tables to it would change another program's data
        foreign = _foreign_tables(con)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise StoreError(f"{path}: is a DuckDB database but not a cohortlab store (it holds {shown} and no "
                             "cohortlab schema version); nothing was written: give [study] store a new file name")
    with transaction(con):
        if version is None:
            con.execute((sql_dir() / "schema.sql").read_text())
            con.execute("INSERT OR REPLACE INTO meta VALUES ('created_with', ?)", [code_version()])
        else:
            for v, file in _migrations():
                if version < v <= SCHEMA_VERSION:
                    con.execute(file.read_text())
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
