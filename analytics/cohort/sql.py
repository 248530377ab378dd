"""Running user SQL read-only: views, one checked SELECT with bound parameters, in the sandbox.

* Every ``sql/views/<name>.sql`` (and ``<study>/views/<name>.sql``, which wins)
  holds one SELECT and becomes the TEMP VIEW ``<name>`` on the connection. A
  view that does not bind on this store is skipped and named in the error of
  any query that then fails to find it; a view named like a table or view of
  the store (``clinical.sql``) is refused, as it would hide it.
* A statement runs only when it is exactly one SELECT (``WITH`` / ``FROM`` /
  ``VALUES`` are SELECTs) whose parse tree holds only query nodes at any depth
  (no COPY or data change in a CTE); anything else is refused before it runs
  (EXPLAIN ANALYZE too: it runs what it explains). The sandbox
  (:mod:`analytics.cohort.sandbox`) then refuses a plan that writes, and the
  connection is read-only anyway. ``[sql]`` limits the time and memory of a
  statement.
* Named parameters (``$min_age``) are bound by DuckDB, never pasted into the
  text; one the SQL needs but nobody gave, or one given but not used, is an error.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from analytics.cohort import sandbox
from analytics.cohort.errors import CohortError
from analytics.cohort.files import view_files
from pipeline import store
from pipeline.config import NAME, SqlLimits, StudyConfig

log = logging.getLogger("cohortlab.cohort")

_TRAILING = re.compile(r";(\s|--[^\n]*)*$")  # a closing semicolon and any comments after it


def create_views(con: duckdb.DuckDBPyConnection, files: Mapping[str, Path]) -> dict[str, str]:
    """Create each view file as a TEMP VIEW; returns ``name -> reason`` for views that did not bind.

    Views may use each other: creation is retried until no further view binds.
    A view is created, never run, here; each is checked as a cohort's SQL is
    (:func:`analytics.cohort.sandbox.check_tree`), and the plan of any query
    that reads it includes it.
    """
    pending: dict[str, str] = {}
    taken = _store_relations(con)
    for name, path in files.items():
        if not NAME.match(name):
            raise CohortError(f"{path}: a view's file name becomes its name; use letters, digits, '_' and '-'")
        if name.lower() in taken:
            raise CohortError(f"{path}: a view named '{name}' would hide the store's {taken[name.lower()]} "
                              f"'{name}'; rename the file")
        text = path.read_text(encoding="utf-8")
        sandbox.check_size(text, str(path))
        stmts = _parse(con, text, str(path))
        if len(stmts) != 1 or stmts[0].type != duckdb.StatementType.SELECT:
            raise CohortError(f"{path}: a view file holds exactly one SELECT")
        if stmts[0].named_parameters:
            raise CohortError(f"{path}: a view cannot take parameters ({sorted(stmts[0].named_parameters)})")
        sandbox.check_tree(con, text, str(path))
        pending[name] = _TRAILING.sub("", text.strip())
    failed: dict[str, str] = {}
    while pending:
        failed = {}
        for name, text in pending.items():
            try:
                con.execute(f"CREATE OR REPLACE TEMP VIEW {store.quote_ident(name)} AS\n{text}\n")
            except duckdb.Error as exc:
                failed[name] = str(exc).splitlines()[0]
        if len(failed) == len(pending):
            break
        pending = {n: pending[n] for n in failed}
    for name, reason in failed.items():
        log.info("view %s not created on this store: %s", name, reason)
    return failed


def _store_relations(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """``lower-case name -> "table" | "view"`` of the store's tables and views and the session's own (``instances``)."""
    rows = con.execute(
        "SELECT lower(table_name), CASE WHEN table_type = 'VIEW' THEN 'view' ELSE 'table' END "
        "FROM information_schema.tables WHERE table_catalog IN (current_database(), 'temp')"
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


@dataclass(frozen=True)
class Session:
    """A read-only connection, the views that could not be created on it (name -> reason), the folders it reads,
    and the ``[sql]`` limits of the statements run on it."""

    con: duckdb.DuckDBPyConnection
    view_failures: dict[str, str]
    readable: tuple[str, ...] = ()
    limits: SqlLimits | None = None


@contextmanager
def read_only(
    store_path: str | Path, views: Mapping[str, Path] | None = None, folders: Sequence[str | Path] = (),
    limits: SqlLimits | None = None,
) -> Iterator[Session]:
    """Open the store read-only in the SQL sandbox, with the shared views as TEMP views; closed on exit.

    The connection reads files only below ``folders`` (the study root) and the
    store's ``instances/`` folder, and loads no extension
    (:func:`analytics.cohort.sandbox.connect`); the views are created inside it.
    ``limits`` (the study's ``[sql]``; default :class:`~pipeline.config.SqlLimits`)
    bound each statement's time and memory.
    """
    limits = limits if limits is not None else SqlLimits()
    con = sandbox.connect(store_path, folders, memory_limit=limits.memory_limit)
    try:
        yield Session(con, create_views(con, views or {}), tuple(sandbox.readable(store_path, folders)), limits)
    finally:
        con.close()


def _parse(con: duckdb.DuckDBPyConnection, text: str, source: str) -> list[Any]:
    try:
        return list(con.extract_statements(text))
    except duckdb.Error as exc:
        raise CohortError(f"{source}: the SQL does not parse: {sandbox.message(exc)}") from None


def _bind(stmt: Any, params: Mapping[str, Any], source: str) -> dict[str, Any]:
    used = set(stmt.named_parameters)
    positional = sorted(u for u in used if u.isdigit())
    if positional:
        raise CohortError(f"{source}: uses positional parameters (?, $1); name them ($min_age) so they can be bound")
    missing = sorted(used - set(params))
    unknown = sorted(set(params) - used)
    if unknown:  # a misspelt name is both unknown and missing: name it first, with the likely intent
        hints = {u: difflib.get_close_matches(u, missing, n=1) for u in unknown}
        named = ", ".join(u + (f" (did you mean ${hints[u][0]}?)" if hints[u] else "") for u in unknown)
        raise CohortError(
            f"{source}: unknown parameter(s) {named}; the SQL uses "
            f"{', '.join('$' + u for u in sorted(used)) or 'no parameters'}"
            + (f"; {', '.join('$' + m for m in missing)} not given" if missing else "")
        )
    if missing:
        raise CohortError(
            f"{source}: parameter(s) {', '.join('$' + m for m in missing)} not given; set them in study.toml "
            f"[cohort] params or pass --param {missing[0]}=..."
        )
    return {k: params[k] for k in sorted(used)}


def run_select(
    session: Session,
    text: str,
    params: Mapping[str, Any] | None = None,
    source: str = "query",
    allow_explain: bool = False,
) -> pl.DataFrame:
    """Run one read-only statement with bound named parameters and return a polars frame.

    Anything but a single SELECT (or, when ``allow_explain``, a plain EXPLAIN
    of one SELECT) is refused before it runs. EXPLAIN ANALYZE is refused
    always: it runs the statement it explains. The SELECT's parse tree must
    hold only query nodes (:func:`analytics.cohort.sandbox.check_tree`), and
    it runs through :func:`analytics.cohort.sandbox.run` (plan checked,
    ``[sql] timeout_s``, Ctrl-C stops it).
    """
    sandbox.check_size(text, source)
    stmts = _parse(session.con, text, source)
    if len(stmts) != 1:
        raise CohortError(f"{source}: holds {len(stmts)} statements; give exactly one SELECT (nothing was run)")
    kind = stmts[0].type
    explain = allow_explain and kind == duckdb.StatementType.EXPLAIN
    explained = sandbox.explained_query(session.con, text) if explain else None
    if not (kind == duckdb.StatementType.SELECT or explained is not None):
        what = sandbox.statement_name(kind, text)
        article = "an" if what[0] in "AEIO" or what == "UPDATE" else "a"
        runs = ", which runs the statement it explains" if what == "EXPLAIN ANALYZE" else ""
        reads = "SELECT / WITH / FROM" + (", or EXPLAIN of a SELECT" if allow_explain else "")
        raise CohortError(
            f"{source}: is {article} {what} statement{runs}; cohort and ad-hoc SQL may only read ({reads}); "
            "nothing was run and the store is unchanged"
        )
    sandbox.check_tree(session.con, explained if explained is not None else text, source)
    values = _bind(stmts[0], params or {}, source)
    limits = session.limits if session.limits is not None else SqlLimits()
    try:
        return sandbox.run(session.con, text, values or None, source=source, plan=explained,
                           timeout_s=limits.timeout_s)
    except duckdb.Error as exc:
        msg = sandbox.message(exc, limits.memory_limit)
        if isinstance(exc, duckdb.PermissionException):  # the sandbox refused a file, URL or extension
            msg = f"{msg.splitlines()[0]}; SQL here reads files only below {', '.join(session.readable)}"
        if session.view_failures and "Catalog Error" in msg:
            skipped = "; ".join(f"{n}: {r}" for n, r in sorted(session.view_failures.items()))
            msg += f" (views not available on this store: {skipped})"
        raise CohortError(f"{source}: {msg}") from None
    except pl.exceptions.DuplicateError as exc:
        raise CohortError(f"{source}: the result has duplicate column names ({exc}); alias them") from None


def run_sql(study: StudyConfig, query: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """One read-only query on a study's store (``cohortlab sql``), with its views; a SELECT or EXPLAIN of one."""
    with read_only(study.store_path, view_files(study), [study.root], study.sql) as session:
        return run_select(session, query, params or {}, source="query", allow_explain=True)
