"""The ``instances`` view of a connection: the done items' instance files that pass their check, and reads of it.

A file that fails (:mod:`pipeline.store.checks`) is left out of the view,
listed in the TEMP table ``instances_left_out`` and logged, and embedded again
by the next ``embed``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.store.base import _scalar, query, store_dir
from pipeline.store.checks import check_done_files
from pipeline.store.embed_items import done_files

log = logging.getLogger("cohortlab.store")


_EMPTY_INSTANCES = (
    "SELECT NULL::VARCHAR AS feature_set, NULL::VARCHAR AS source_id, NULL::INTEGER AS instance, "
    "NULL::BIGINT AS x, NULL::BIGINT AS y, NULL::BIGINT AS z, NULL::INTEGER AS level, "
    "NULL::DOUBLE AS tissue_fraction, NULL::FLOAT[] AS embedding WHERE false"
)


@dataclass(frozen=True)
class InstanceProblem:
    """A done item whose instance file cannot be served: missing, unreadable, or not the file recorded."""

    feature_set: str
    source_id: str
    path: str  # relative to the store's folder
    reason: str

    def __str__(self) -> str:
        return f"{self.feature_set} / {self.source_id}: {self.path}: {self.reason}"


def unreadable_instances(
    con: duckdb.DuckDBPyConnection, path: str | Path | None = None, feature_set: str | None = None,
    content: bool | Collection[str] = False,
) -> list[InstanceProblem]:
    """Done items whose instance file is missing, unreadable, another source's or (``content``) not the file written.

    See :func:`check_done_files`: without ``content`` only sizes and footers
    are read; with it (``True``, or some feature sets) every byte is hashed.
    These are the files the ``instances`` view leaves out; ``cohortlab embed``
    embeds their sources again.
    """
    base = store_dir(path if path is not None else con)
    files = done_files(con, feature_set)
    return [InstanceProblem(f.feature_set, f.source_id, f.path, reason)
            for f, (reason, _) in zip(files, check_done_files(base, files, content)) if reason is not None]


LEFT_OUT_TABLE = "instances_left_out"
"""TEMP table beside the ``instances`` view: the done items' files it leaves out (feature_set, source_id, path, reason)."""


def refresh_instances_view(
    con: duckdb.DuckDBPyConnection, path: str | Path | None = None, content: bool | Collection[str] = False
) -> list[InstanceProblem]:
    """(Re)create the temporary ``instances`` view over done instance files that pass their check.

    Files that fail (see :func:`unreadable_instances`; ``content`` as there)
    are left out, listed in the TEMP table ``instances_left_out`` (so that
    coverage counts their patients as missing) and logged as a warning, so
    one damaged file does not stop every query; they are returned so that a
    caller can show them.
    """
    base = store_dir(path if path is not None else con)
    done = done_files(con)
    files: list[str] = []
    problems: list[InstanceProblem] = []
    for f, (reason, _) in zip(done, check_done_files(base, done, content)):
        if reason is None:
            files.append(str(base / f.path))
        else:
            problems.append(InstanceProblem(f.feature_set, f.source_id, f.path, reason))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {LEFT_OUT_TABLE} "
                "(feature_set VARCHAR, source_id VARCHAR, path VARCHAR, reason VARCHAR)")
    if problems:
        con.executemany(f"INSERT INTO {LEFT_OUT_TABLE} VALUES (?, ?, ?, ?)",
                        [[p.feature_set, p.source_id, p.path, p.reason] for p in problems])
        more = f"; and {len(problems) - 10} more (cohortlab verify)" if len(problems) > 10 else ""
        log.warning(
            "%d instance file(s) left out of the instances view (run `cohortlab embed` to embed them again): %s%s",
            len(problems), "; ".join(str(p) for p in problems[:10]), more,
        )
    if not files:
        con.execute(f"CREATE OR REPLACE TEMP VIEW instances AS {_EMPTY_INSTANCES}")
        return problems
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con.execute(
        "CREATE OR REPLACE TEMP VIEW instances AS SELECT feature_set, source_id, instance, x, y, z, level, "
        f"tissue_fraction, embedding FROM read_parquet([{listing}], hive_partitioning = true, union_by_name = true)"
    )
    return problems


def left_out_instances(con: duckdb.DuckDBPyConnection) -> list[InstanceProblem]:
    """The files the connection's ``instances`` view leaves out, as its last refresh found them (none before one)."""
    exists = _scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [LEFT_OUT_TABLE])
    if not exists:
        return []
    rows = con.execute(f"SELECT feature_set, source_id, path, reason FROM temp.main.{LEFT_OUT_TABLE} "
                       "ORDER BY feature_set, source_id").fetchall()
    return [InstanceProblem(*r) for r in rows]


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
