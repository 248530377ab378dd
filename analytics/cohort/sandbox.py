"""The sandbox user SQL runs in: cohort files, view files and ``cohortlab sql``.

Design note: three independent layers, each enough to keep a statement from
writing a file; the second and third hold even when a statement gets past the
first.

1. **The parse tree** (:func:`check_tree`; with the statement-type check of
   :mod:`analytics.cohort.sql`). DuckDB's own parser serialises the statement
   (``json_serialize_sql``) and every node of it, at any depth, must be a query
   node (``SELECT_NODE``, ``SET_OPERATION_NODE``, ``RECURSIVE_CTE_NODE``,
   ``CTE_NODE``): a ``COPY_QUERY_NODE`` or ``INSERT/UPDATE/DELETE_QUERY_NODE``
   inside a CTE, a subquery or a set operation's arm is refused by name, and a
   statement DuckDB cannot serialise (anything but a SELECT) is refused. The
   size of the text and its number of query blocks are bounded
   (:data:`MAX_SQL_BYTES`, :data:`MAX_QUERY_NODES`): 20,000 ``UNION ALL`` arms
   take minutes and gigabytes to plan.
2. **The physical plan** (:func:`run`). Before it runs, a statement is planned
   with ``EXPLAIN (FORMAT json)`` (which runs nothing) and refused when any
   operator of the plan writes (:data:`WRITE_OPERATORS`: ``COPY_TO_FILE``,
   ``INSERT``, ``CREATE_TABLE_AS``, ...). This is DuckDB's own statement of
   what it would do, so it also covers a write the parse tree check does not
   know. :func:`run` is the only way user SQL reaches the connection.
3. **The connection** (:func:`connect`). A private in-memory DuckDB attaches
   the store read-only (no table can change); file access is limited to the
   given folders (the study's) and the store's ``instances/`` folder
   (``allowed_directories`` with ``enable_external_access = false``: no other
   file, no URL, no ``ATTACH`` elsewhere, no Python objects by name),
   extensions are neither installed nor loaded, the memory limit of ``[sql]``
   is set, and ``lock_configuration`` stops any ``SET`` / ``RESET`` from
   undoing it. The instance is private, so these settings never reach another
   connection of the same process. DuckDB's ``allowed_directories`` admits
   writes as well as reads below those folders, hence layers 1 and 2.

A before/after comparison of the study's files is not made: other cohortlab
processes (``embed``, ``fit``) write below the study while a query runs, so it
would name files no query wrote, and a walk over DICOM folders costs seconds.

Limits (:class:`pipeline.config.SqlLimits`, ``[sql]`` in study.toml): a
statement that runs longer than ``timeout_s`` is stopped with DuckDB's
``interrupt()``, and so is one whose caller presses Ctrl-C (the query stops,
not only Python); DuckDB's hints that suggest a ``SET`` (refused here) are
replaced by the study.toml key to change (:func:`message`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from analytics.cohort.errors import CohortError
from pipeline import store

log = logging.getLogger("cohortlab.sql")

ALIAS = "store"
_WORD = re.compile(r"[A-Za-z_]+")
_ANALYZE = re.compile(r"\banaly[sz]e\b", re.IGNORECASE)
_EXPLAIN = re.compile(r"\s*explain\b", re.IGNORECASE)
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")

MAX_SQL_BYTES = 1_000_000
"""The longest SQL text run (bytes, UTF-8): a cohort, a view or a ``cohortlab sql`` query."""
MAX_QUERY_NODES = 2000
"""The most query blocks (SELECTs and set operations) one statement may hold; planning grows faster than linearly."""
QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
"""The parse-tree node types that only read; any other ``*_NODE`` (COPY, INSERT, UPDATE, DELETE, ...) is refused."""
WRITE_OPERATORS = frozenset({
    "COPY_TO_FILE", "BATCH_COPY_TO_FILE", "COPY_DATABASE", "INSERT", "BATCH_INSERT", "DELETE", "DELETE_OPERATOR",
    "UPDATE", "MERGE_INTO", "CREATE_TABLE", "CREATE_TABLE_AS", "BATCH_CREATE_TABLE_AS", "CREATE_INDEX", "ALTER",
    "CREATE_SEQUENCE", "CREATE_VIEW", "CREATE_SCHEMA", "CREATE_MACRO", "CREATE_TYPE", "CREATE_SECRET", "DROP",
    "PRAGMA", "TRANSACTION", "ATTACH", "DETACH", "EXPORT", "VACUUM", "SET", "SET_VARIABLE", "RESET", "LOAD",
    "EXTENSION", "UPDATE_EXTENSIONS", "EXECUTE", "PREPARE", "EXPLAIN_ANALYZE", "CHECKPOINT",
})
"""Physical operators that write or change state; a plan holding one is not run."""
_WRITE_PREFIXES = ("COPY_", "BATCH_COPY", "CREATE_", "BATCH_CREATE", "INSERT", "MERGE_")
# a sentence of DuckDB's that suggests changing a setting ("Use \"SET max_expression_depth TO x\" to ...")
_SET_HINT = re.compile(r"[^.\n]*\b(?:SET|RESET|PRAGMA) [a-z_]+\s*(?:=|TO\b)[^.\n]*\.?")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _folder(path: Path) -> str:
    # a trailing separator: DuckDB matches prefixes, and /study must not admit /study-other
    return str(path).rstrip("/") + "/"


def connect(
    store_path: str | Path, folders: Iterable[str | Path] = (), wait_s: float = 60.0, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the store read-only in a sandbox that reads only ``folders`` and the store's instances.

    Parameters
    ----------
    store_path
        The study's ``store.duckdb``.
    folders
        Folders user SQL may read below (the study root); the store's
        ``instances/`` folder is always readable, as the ``instances`` view
        reads it.
    wait_s
        How long to wait while another process holds the store's write lock.
    memory_limit
        DuckDB's ``memory_limit`` (``[sql] memory_limit``, e.g. ``"4GB"``); ``None`` keeps DuckDB's default.

    Returns
    -------
    duckdb.DuckDBPyConnection
        Current database: the store (attached as ``store``, read-only), with
        the TEMP VIEW ``instances``; configuration locked.
    """
    path = Path(store_path).resolve()
    if not path.exists():
        raise store.StoreError(f"{path}: no store here (run `cohortlab ingest` first)")
    allowed = readable(path, folders)
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "temp_directory": f"{path}.tmp",  # DuckDB's own default for a file store, instead of ./.tmp
    })
    try:
        # allowed_* can only be set on a running database, and before external access is switched off
        con.execute(f"SET allowed_directories = [{', '.join(_quote(d) for d in allowed)}]")
        con.execute(f"SET allowed_paths = [{_quote(str(path))}, {_quote(f'{path}.wal')}]")
        if memory_limit is not None:
            try:
                con.execute(f"SET memory_limit = {_quote(memory_limit)}")
            except duckdb.Error as exc:
                raise CohortError(f"[sql] memory_limit = {memory_limit!r}: {str(exc).splitlines()[0]}") from None
        con.execute("SET enable_external_access = false")
        _attach(con, path, wait_s)
        con.execute(f"USE {ALIAS}")
        if not _is_store(con):
            raise store.StoreError(f"{path}: not a cohortlab store (no schema version)")
        store.refresh_instances_view(con, path)
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def readable(store_path: str | Path, folders: Iterable[str | Path] = ()) -> list[str]:
    """The folders (each ending in ``/``) below which :func:`connect` lets SQL read."""
    instances = Path(store_path).resolve().parent / "instances"
    return sorted({_folder(Path(f).resolve()) for f in folders} | {_folder(instances)})


def _attach(con: duckdb.DuckDBPyConnection, path: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con.execute(f"ATTACH {_quote(str(path))} AS {ALIAS} (READ_ONLY)")
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise store.StoreError(f"{path}: cannot open store: {exc}") from None
            time.sleep(0.5)
        except duckdb.Error as exc:
            raise store.StoreError(f"{path}: cannot open store: {str(exc).splitlines()[0]}") from None


def _is_store(con: duckdb.DuckDBPyConnection) -> bool:
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = 'meta'"
    ).fetchone()
    if not (has_meta and has_meta[0]):
        return False
    return con.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone() is not None


# --- what a statement is ---------------------------------------------------------------------------


def mask(text: str) -> str:
    """``text`` with comments, string literals and quoted names blanked (same length), so keywords can be found.

    Block comments are taken as not nested: where DuckDB nests them, more of
    the text is left visible here, which can only make a check stricter.
    """
    out = list(text)
    n, i = len(text), 0

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        if text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            blank(i, j)
            i = j
        elif text[i] in "'\"":
            quote = text[i]
            escapes = quote == "'" and i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
            j = i + 1
            while j < n:
                if (escapes and text[j] == "\\") or text.startswith(quote * 2, j):  # an escaped character
                    j += 2
                elif text[j] == quote:
                    break
                else:
                    j += 1
            blank(i + 1, j)
            i = j + 1
        elif text[i] == "$" and (m := _DOLLAR.match(text, i)) and (i == 0 or not text[i - 1].isalnum()):
            close = text.find(m.group(0), m.end())
            j = n if close < 0 else close + len(m.group(0))
            blank(i, j)
            i = j
        else:
            i += 1
    return "".join(out)


def is_explain_analyze(text: str) -> bool:
    """Whether an EXPLAIN statement's text runs what it explains (``ANALYZE`` / ``ANALYSE``, also as an option)."""
    return bool(_ANALYZE.search(mask(text)))


def statement_name(kind: duckdb.StatementType, text: str) -> str:
    """The statement as its author wrote it: ``INSTALL`` (DuckDB types it LOAD), ``RESET``, ``EXPLAIN ANALYZE``, ..."""
    words = [w.upper() for w in _WORD.findall(mask(text)[:400])]
    if kind == duckdb.StatementType.EXPLAIN:
        return "EXPLAIN ANALYZE" if is_explain_analyze(text) else "EXPLAIN"
    if kind == duckdb.StatementType.LOAD:
        return "INSTALL" if "INSTALL" in words[:2] else "LOAD"
    if kind in (duckdb.StatementType.SET, duckdb.StatementType.CALL, duckdb.StatementType.TRANSACTION) and words:
        return words[0]  # SET / RESET / USE, CALL / CHECKPOINT, BEGIN / COMMIT
    return kind.name


def explained_select(con: duckdb.DuckDBPyConnection, text: str) -> bool:
    """Whether a plain EXPLAIN (no ANALYZE) explains exactly one SELECT (options such as ``(FORMAT json)`` allowed)."""
    return explained_query(con, text) is not None


def explained_query(con: duckdb.DuckDBPyConnection, text: str) -> str | None:
    """The SELECT a plain EXPLAIN (no ANALYZE) explains, or ``None`` when it explains anything else."""
    if is_explain_analyze(text):
        return None
    masked = mask(text)
    m = _EXPLAIN.match(masked)
    if m is None:
        return None
    rest = m.end() + len(masked[m.end():]) - len(masked[m.end():].lstrip())
    candidates = [text[rest:]]
    if masked.startswith("(", rest):  # an option list, or a parenthesised SELECT
        depth = 0
        for j in range(rest, len(masked)):
            depth += {"(": 1, ")": -1}.get(masked[j], 0)
            if depth == 0:
                candidates.append(text[j + 1:])
                break
    for inner in candidates:
        try:
            stmts = con.extract_statements(inner)
        except duckdb.Error:
            continue
        if len(stmts) == 1 and stmts[0].type == duckdb.StatementType.SELECT:
            return inner
    return None


# --- layer 1: the parse tree ----------------------------------------------------------------------


def check_size(text: str, source: str) -> None:
    """Refuse SQL text over :data:`MAX_SQL_BYTES` (before parsing it: the parser's time grows with the text)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SQL_BYTES:
        raise CohortError(f"{source}: {size:,} bytes of SQL, over the {MAX_SQL_BYTES:,} run here; nothing was run")


def check_tree(con: duckdb.DuckDBPyConnection, text: str, source: str) -> None:
    """Refuse SQL whose parse tree holds anything but query nodes, at any depth, or is too large.

    Parameters
    ----------
    con
        Any DuckDB connection (only its parser is used; nothing runs).
    text
        One SELECT statement.
    source
        What the error names: the file, or ``query``.

    Raises
    ------
    CohortError
        One line naming ``source`` and what was found: a ``COPY_QUERY_NODE`` in a CTE, a statement DuckDB
        cannot serialise (it is no SELECT), a text over :data:`MAX_SQL_BYTES` or a statement of more than
        :data:`MAX_QUERY_NODES` query blocks.
    """
    check_size(text, source)
    refused = "cohort and ad-hoc SQL may only read; nothing was run and no file was changed"
    row = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [text]).fetchone()
    try:
        tree = json.loads(row[0]) if row is not None else {}
    except (ValueError, RecursionError):
        raise CohortError(f"{source}: the SQL is nested too deeply to be checked; nothing was run") from None
    if not isinstance(tree, dict) or tree.get("error", True):
        why = str(tree.get("error_message", "no parse tree")) if isinstance(tree, dict) else "no parse tree"
        why = _SET_HINT.sub("", why).strip() or why
        raise CohortError(f"{source}: cannot be checked as one plain SELECT ({why}); {refused}")
    found: list[str] = []
    queries = 0
    stack: list[Any] = [tree.get("statements")]
    while stack:  # iterative: a deep tree must not exhaust Python's recursion
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind.endswith("_NODE"):
                if kind in QUERY_NODES:
                    queries += 1
                elif kind not in found:
                    found.append(kind)
            info = node.get("info_type")  # a statement's own settings (COPY_INFO, ...): no query holds one
            if isinstance(info, str) and info not in found:
                found.append(info)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if found:
        raise CohortError(f"{source}: holds {', '.join(sorted(found))} inside the SELECT (a COPY or data change "
                          f"in a CTE or subquery); {refused}")
    if queries > MAX_QUERY_NODES:
        raise CohortError(f"{source}: holds {queries:,} SELECT blocks and set operations, over the "
                          f"{MAX_QUERY_NODES:,} run here (planning grows faster than the text); nothing was run")


# --- layer 2: the plan, and running with limits ---------------------------------------------------------


def writing_operators(con: duckdb.DuckDBPyConnection, text: str, params: Mapping[str, Any] | None = None) -> list[str]:
    """The operators of ``text``'s physical plan that write or change state (empty: it only reads).

    The plan comes from ``EXPLAIN (FORMAT json)``, which plans and runs nothing.
    A statement that cannot be planned raises DuckDB's error, as running it would.
    """
    rows = con.execute(f"EXPLAIN (FORMAT json) {text}", dict(params) if params else None).fetchall()
    found: list[str] = []
    for row in rows:
        try:
            stack: list[Any] = [json.loads(row[1])]
        except (ValueError, TypeError, IndexError, RecursionError):
            return [f"an unreadable plan ({str(row[0])[:40]})"]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                name = str(node.get("name", "")).strip().upper()
                if name and (name in WRITE_OPERATORS or name.startswith(_WRITE_PREFIXES)) and name not in found:
                    found.append(name)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return found


def run(
    con: duckdb.DuckDBPyConnection,
    text: str,
    params: Mapping[str, Any] | None = None,
    *,
    source: str = "query",
    plan: str | None = None,
    timeout_s: float | None = None,
) -> pl.DataFrame:
    """Run one statement on a sandbox connection: refused when its plan writes, stopped at ``timeout_s`` or Ctrl-C.

    Parameters
    ----------
    con
        A connection of :func:`connect`.
    text
        The statement, with ``$name`` parameters.
    params
        Values bound to the parameters.
    source
        What errors name: the file, or ``query``.
    plan
        The statement whose plan is checked, when ``text`` is a plain ``EXPLAIN`` of it; default ``text``.
    timeout_s
        Seconds after which the statement is interrupted (``None``: no limit).

    Raises
    ------
    CohortError
        The plan writes (naming the operators), the statement ran past ``timeout_s``, or Ctrl-C stopped it.
    duckdb.Error
        DuckDB's own error of the statement.
    """
    planned = plan if plan is not None else text
    stmts = con.extract_statements(planned)
    # with ``plan``, ``text`` must be a plain EXPLAIN (which runs nothing); ANALYZE would run what it explains
    plain_explain = plan is None or (not is_explain_analyze(text) and [
        st.type for st in con.extract_statements(text)] == [duckdb.StatementType.EXPLAIN])
    if len(stmts) != 1 or stmts[0].type != duckdb.StatementType.SELECT or not plain_explain:
        raise CohortError(f"{source}: not one SELECT (or a plain EXPLAIN of one); cohort and ad-hoc SQL may only "
                          "read; nothing was run and no file was changed")
    try:
        writes = writing_operators(con, planned, params)
    except duckdb.InterruptException:
        raise
    except duckdb.Error:  # a SELECT that cannot be planned cannot run either: running it reports DuckDB's own error
        writes = []
    if writes:
        raise CohortError(f"{source}: its plan writes ({', '.join(writes)}); cohort and ad-hoc SQL may only read; "
                          "nothing was run and no file was changed")
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["frame"] = store.query(con, text, dict(params) if params else None)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    # DuckDB holds the calling thread until a query ends, so Python would see Ctrl-C only afterwards: the
    # statement runs in a worker while this thread waits, and turns Ctrl-C or the deadline into interrupt()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    log.info("%s: running (timeout %s)", source, "none" if timeout_s is None else f"{timeout_s:g} s")
    spill = _SpillWatch(con)
    threading.Thread(target=work, name="cohortlab-sql", daemon=True).start()
    try:
        while not done.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))):
            spill.look()
            if deadline is not None and time.monotonic() >= deadline:
                con.interrupt()
                done.wait()
                if "frame" not in outcome:
                    raise CohortError(
                        f"{source}: stopped after {timeout_s:g} s, the limit set by [sql] timeout_s in study.toml "
                        "(raise it there for a longer query); nothing was written")
    except KeyboardInterrupt:
        con.interrupt()
        done.wait(10)  # the statement stops within moments of interrupt(); the connection closes after it
        # an error, not KeyboardInterrupt: the command line prints it as one line (typer would exit silently)
        raise CohortError(f"{source}: interrupted (Ctrl-C); the statement was stopped and nothing was written") \
            from None
    finally:
        spill.close()
    if "error" in outcome:
        raise outcome["error"]
    if spill.peak:
        # the statement needed more than [sql] memory_limit and ran on by writing to the temporary folder
        log.warning("%s: the statement spilled %s to %s (it needed more than [sql] memory_limit = %s); it ran "
                    "to the end", source, _size(spill.peak), spill.folder or "the temporary folder",
                    spill.limit or "DuckDB's default")
    frame = outcome["frame"]
    assert isinstance(frame, pl.DataFrame)
    return frame


class _SpillWatch:
    """How much a running statement has written to DuckDB's temporary folder (its peak, in bytes), read every
    time :meth:`look` is called, on a second connection to the same database (the first one is busy)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.peak = 0
        self.folder: str | None = None
        self.limit: str | None = None
        try:
            self.cursor: duckdb.DuckDBPyConnection | None = con.cursor()
            self.folder = str(self.cursor.execute("SELECT current_setting('temp_directory')").fetchone()[0])
            self.limit = str(self.cursor.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        except duckdb.Error:
            self.cursor = None

    def look(self) -> None:
        if self.cursor is None:
            return
        try:
            row = self.cursor.execute("SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()").fetchone()
        except duckdb.Error:
            return
        self.peak = max(self.peak, int(row[0]) if row else 0)

    def close(self) -> None:
        self.look()
        if self.cursor is not None:
            self.cursor.close()


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def message(exc: duckdb.Error, memory_limit: str | None = None) -> str:
    """DuckDB's error text without hints to ``SET`` a setting (refused here), pointing at ``[sql]`` keys instead."""
    text = str(exc)
    if isinstance(exc, duckdb.OutOfMemoryException):
        now = f" (now {memory_limit!r})" if memory_limit else ""
        return (f"{text.splitlines()[0]}; raise [sql] memory_limit in study.toml{now}, or make the query "
                "read fewer rows or columns")
    lines = [line for line in text.splitlines()
             if not (line.lstrip().startswith("*") and _SET_HINT.search(line)) and "Possible solutions" not in line]
    return _SET_HINT.sub("", "\n".join(lines)).rstrip()
