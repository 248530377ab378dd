"""The sandbox user SQL runs in: cohort files, view files and ``cohortlab sql``.

Two layers. Either one keeps SQL from reading or writing outside the study;
inside it, where the connection may read it may also write, so the statement
check alone keeps files there unchanged.

* **The connection** (:func:`connect`). A private in-memory DuckDB attaches the
  store read-only; before any user SQL runs, file access is limited to the
  given folders (the study's) and the store's ``instances/`` folder
  (``allowed_directories`` with ``enable_external_access = false``: no other
  file, no URL, no ``ATTACH`` elsewhere, no Python objects by name), extensions
  are neither installed nor loaded, and ``lock_configuration`` stops any
  ``SET`` / ``RESET`` from undoing it. The instance is private, so these
  settings never reach another connection of the same process.
* **The statement** (:func:`statement_name`, :func:`explained_select`). The
  caller runs a statement only when it reads: ``EXPLAIN ANALYZE`` runs what it
  explains (a ``COPY ... TO`` writes its file), so it is named as such and
  refused like the statement itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path

import duckdb

from pipeline import store

ALIAS = "store"
_WORD = re.compile(r"[A-Za-z_]+")
_ANALYZE = re.compile(r"\banaly[sz]e\b", re.IGNORECASE)
_EXPLAIN = re.compile(r"\s*explain\b", re.IGNORECASE)
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _folder(path: Path) -> str:
    # a trailing separator: DuckDB matches prefixes, and /study must not admit /study-other
    return str(path).rstrip("/") + "/"


def connect(
    store_path: str | Path, folders: Iterable[str | Path] = (), wait_s: float = 60.0
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
    if is_explain_analyze(text):
        return False
    masked = mask(text)
    m = _EXPLAIN.match(masked)
    if m is None:
        return False
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
            return True
    return False
