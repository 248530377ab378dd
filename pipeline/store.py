"""The study store: one DuckDB file plus per-source instance Parquet files.

Layout beside ``store.duckdb``::

    store.duckdb
    instances/feature_set=<name>/<source_id>.parquet   one file per slide or scan

The schema lives in ``sql/schema.sql``; its version is kept in ``meta`` and
older stores are migrated by ``sql/migrations/NNN_*.sql``. Instance files are
written to a temporary name and renamed when complete, so a file that exists is
whole; whether it *counts* is decided by its ``embed_items`` row, which also
records the file's sha256, size and modification time: a file that is missing,
unreadable, another source's or no longer the one recorded is left out of the
``instances`` view (listed in the TEMP table ``instances_left_out``, and
logged), and embedded again by the next ``embed``. Two checks, by cost: the
cheap one (:func:`check_instance_file`: size, footer, the ``source_id`` in the
footer's statistics) on every connection, and the content one
(:func:`verify_instance_file`: the sha256 of every byte too) wherever files
are about to be read for results (``refresh_instances_view(content=...)``).

The store is relocatable: ``embed_items.path`` is relative to the store's
folder, slide and scan paths are relative to the study folder (as the
manifests give them), and source fingerprints hold file content, never a path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.store")

SCHEMA_VERSION = 4
INSTANCE_COLUMNS = ("source_id", "instance", "x", "y", "z", "level", "tissue_fraction", "embedding")


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


def sql_dir() -> Path:
    """The folder of SQL files: the repository's ``sql/`` or the copy bundled in the wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "sql", here / "sql"):
        if (cand / "schema.sql").exists():
            return cand
    raise StoreError(f"cannot find sql/schema.sql beside {here}")


# the folders whose code makes the numbers: the wheel's packages and the SQL it bundles (pyproject.toml)
SOURCE_DIRS = ("pipeline", "analytics", "cohortlab", "sql")


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one.

    ``.dirty`` is appended when any file under :data:`SOURCE_DIRS` differs from the commit: an edit, or a
    new file git does not ignore (a new module changes results as much as an edited one). Tests,
    benchmarks and documents do not count.
    """
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
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=normal", "--", *SOURCE_DIRS],
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


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The first column of the first row of a query, or None when it returns no row."""
    row = con.execute(sql, params).fetchone() if params is not None else con.execute(sql).fetchone()
    return None if row is None else row[0]


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
    path = _scalar(con_or_path, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
    if not path:
        raise StoreError("this connection is not to a store file (an in-memory database has no folder)")
    return Path(path).resolve().parent


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


MAX_FILE_NAME_BYTES = 255  # the limit of one file name on Linux, macOS and Windows file systems
# the longest name a source's files get: the temporary of its slide thumbnail, ``.<name>.thumb.png.<pid>.tmp``
# (pids have at most 7 digits), longer than the instance file's ``.<name>.parquet.<pid>.tmp``
_LONGEST_NAME = ".{}.thumb.png.9999999.tmp"


def file_name_problem(source_id: str) -> str | None:
    """Why ``source_id`` cannot name its files (instances, cache, thumbnails), or None when it can.

    An id whose file name exceeds :data:`MAX_FILE_NAME_BYTES` would pass ingest
    and then fail every ``embed`` with "File name too long".
    """
    longest = len(os.fsencode(_LONGEST_NAME.format(safe_name(source_id))))
    if longest <= MAX_FILE_NAME_BYTES:
        return None
    room = MAX_FILE_NAME_BYTES - (longest - len(os.fsencode(safe_name(source_id))))
    return (f"id of {len(source_id)} characters ({len(source_id.encode())} bytes) is too long to name its files "
            f"(at most about {room} bytes fit in a file name of {MAX_FILE_NAME_BYTES}); shorten it")


@dataclass(frozen=True)
class FileStamp:
    """What an instance file was when written: sha256 of its bytes, size, modification time."""

    checksum: str
    bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class InstanceProblem:
    """A done item whose instance file cannot be served: missing, unreadable, or not the file recorded."""

    feature_set: str
    source_id: str
    path: str  # relative to the store's folder
    reason: str

    def __str__(self) -> str:
        return f"{self.feature_set} / {self.source_id}: {self.path}: {self.reason}"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks (the GIL released while hashing, so threads hash in parallel)."""
    with open(path, "rb") as fh:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+: reads into one buffer, ~15% faster
            return hashlib.file_digest(fh, "sha256").hexdigest()
        h = hashlib.sha256()
        while block := fh.read(chunk):
            h.update(block)
        return h.hexdigest()


def stamp_file(path: str | Path) -> FileStamp:
    """The :class:`FileStamp` of a file as it is now."""
    st = os.stat(path)
    return FileStamp(sha256_file(path), st.st_size, st.st_mtime_ns)


def check_instance_file(
    path: str | Path, recorded_bytes: int | None = None, source_id: str | None = None
) -> str | None:
    """Why an instance file cannot be read as one (``None`` when it can), cheaply.

    Only the size and the Parquet footer are looked at (no data page): a
    missing file, a size other than the one recorded, a damaged footer,
    (when no size is recorded) missing instance columns, and, given
    ``source_id``, a file whose footer statistics say it holds another
    source's instances (a copy of another source's file of the same size).
    A flipped bit in a data page passes; :func:`verify_instance_file` is the
    content check.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if recorded_bytes is not None and size != recorded_bytes:
        return f"{size} bytes, {recorded_bytes} when written ({'truncated' if size < recorded_bytes else 'changed'})"
    try:
        meta = pq.read_metadata(p)
    except Exception as exc:  # pyarrow raises several types for a damaged footer
        return _unreadable(exc)
    if recorded_bytes is None:  # no size to compare (an older store's row): look at the columns (~0.1 ms more)
        top = {meta.schema.column(i).path.split(".")[0] for i in range(meta.num_columns)}
        lacking = [c for c in INSTANCE_COLUMNS if c not in top]
        if lacking:
            return f"not an instance file (no column {', '.join(lacking)})"
    return None if source_id is None else _foreign_source(p, meta, source_id)


def _unreadable(exc: BaseException) -> str:
    return f"not a readable Parquet file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"


def _foreign_source(path: Path, meta: pq.FileMetaData, source_id: str) -> str | None:
    """Why a file is not ``source_id``'s (it holds other sources' rows), from its footer when the statistics agree.

    Every row group's min and max of ``source_id`` equal to it settles it in
    the footer; otherwise (other ids, statistics absent or truncated) the one
    column is read.
    """
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    if "source_id" not in names:
        return "not an instance file (no column source_id)"
    j = names.index("source_id")
    settled = True
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(j).statistics
        if stats is None or not stats.has_min_max or not (stats.min == stats.max == source_id):
            settled = False
            break
    if settled:
        return None
    try:
        held = set(pq.read_table(path, columns=["source_id"]).column("source_id").unique().to_pylist())
    except Exception as exc:
        return _unreadable(exc)
    others = sorted(str(s) for s in held - {source_id})
    if not others:
        return None
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    return f"holds instances of source {', '.join(others[:3])}{more}, not of {source_id} (another source's file)"


# Within a verified_once() block: stat keys of files whose sha256 matched (see verified_once).
_VERIFIED: ContextVar[set[tuple[Any, ...]] | None] = ContextVar("cohortlab_verified_instances", default=None)


@contextmanager
def verified_once() -> Iterator[None]:
    """Within this block, an instance file whose sha256 matched is not hashed again while its ``stat`` is unchanged.

    One command then reads each file's bytes once (``cohortlab run`` loads
    the cohort in several stages). Nothing is kept past the block: every
    command verifies content afresh, so bit rot between commands is found (a
    cache kept across runs and keyed by size, time and inode would not see it,
    since bit rot changes none of them). Nested blocks share the outer one.
    """
    if _VERIFIED.get() is not None:
        yield
        return
    token = _VERIFIED.set(set())
    try:
        yield
    finally:
        _VERIFIED.reset(token)


def verify_instance_file(
    path: str | Path, stamp: FileStamp | None, n_instances: int | None = None, source_id: str | None = None
) -> tuple[str | None, FileStamp | None]:
    """Whether an instance file is still the one recorded, by content: ``(problem or None, stamp to record or None)``.

    With a recorded stamp, the cheap checks (:func:`check_instance_file`,
    ``source_id`` included when given) are followed by the sha256 of the whole
    file against the recorded one, whatever the modification time says (bit
    rot keeps it). When the bytes match but the time differs (a copy, a
    ``touch``), the fresh stamp is returned to be recorded. Without one (rows
    of an older store), every page is decoded and the row count compared, and
    the file's stamp is returned to be recorded.
    """
    problem = check_instance_file(path, stamp.bytes if stamp is not None else None, source_id)
    if problem is not None:
        return problem, None
    if stamp is None:
        try:
            rows = pq.read_table(path).num_rows  # decodes every page: the file reads
        except Exception as exc:
            return _unreadable(exc), None
        if n_instances is not None and rows != n_instances:
            return f"not the file recorded ({rows} instances, {n_instances} recorded)", None
        return None, stamp_file(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", None
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, stamp.checksum)
    seen = _VERIFIED.get()
    if seen is None or key not in seen:
        try:
            digest = sha256_file(path)
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})", None
        if digest != stamp.checksum:
            return "not the file that was written (sha256 differs)", None
        if seen is not None:
            seen.add(key)
    fresh = FileStamp(stamp.checksum, st.st_size, st.st_mtime_ns)
    return None, (None if fresh == stamp else fresh)


def _workers(n: int) -> int:
    # hashing and Parquet reads release the GIL: a few threads use the cores (and the disk's queue)
    return max(1, min(8, os.cpu_count() or 1, n))


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(_scalar(
        con, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
        "AND column_name = ?", [table, column],
    ))


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


def check_done_files(
    base: str | Path, files: Sequence[DoneFile], content: bool | Collection[str] = False
) -> list[tuple[str | None, FileStamp | None]]:
    """Check done items' instance files in parallel threads: per file ``(problem or None, fresh stamp or None)``.

    Every file is checked to be in its feature set's folder (the ``instances``
    view takes the feature set from it) and to hold its own ``source_id``.
    ``content`` (``True``, or the feature sets to verify so) adds the sha256
    check of :func:`verify_instance_file`; other files get the cheap check of
    :func:`check_instance_file` (size and footer).
    """
    root = Path(base)

    def one(f: DoneFile) -> tuple[str | None, FileStamp | None]:
        if Path(f.path).parent.name != f"feature_set={f.feature_set}":
            return f"not in the folder of feature set {f.feature_set}", None
        if content is True or (not isinstance(content, bool) and f.feature_set in content):
            return verify_instance_file(root / f.path, f.stamp, f.n_instances, f.source_id)
        return check_instance_file(root / f.path, f.file_bytes, f.source_id), None

    workers = _workers(len(files))
    if workers == 1:
        return [one(f) for f in files]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cohortlab-verify") as pool:
        # each task runs in a copy of this context: a verified_once() block reaches the threads
        futures = [pool.submit(copy_context().run, one, f) for f in files]
        return [fut.result() for fut in futures]


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
    frame = pl.from_arrow(rel.to_arrow_table())
    assert isinstance(frame, pl.DataFrame)  # a table always converts to a frame
    return frame


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


def feature_set_record(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    """One ``feature_sets`` row (name, modality, encoder, params ...) as a dict; None when no such feature set."""
    rec = query(con, "SELECT * FROM feature_sets WHERE name = ?", [name])
    return None if rec.height == 0 else rec.row(0, named=True)


# each modality's sources: table, id column and the columns holding file paths (relative to the study)
SOURCE_TABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "wsi": ("slides", "slide_id", ("path",)),
    "ct": ("scans", "scan_id", ("image_path", "mask_path")),
}


def source_rows(con: duckdb.DuckDBPyConnection, modality: str, root: str | Path) -> dict[str, dict[str, Any]]:
    """Every slide (``wsi``) or scan (``ct``) of the store, ``source_id -> row`` sorted by id, with its file
    paths made absolute against the study folder ``root`` (as the study resolves them).

    Raises
    ------
    ValueError
        An unknown modality.
    """
    if modality not in SOURCE_TABLES:
        raise ValueError(f"unknown modality {modality!r}")
    table, id_col, path_cols = SOURCE_TABLES[modality]
    out: dict[str, dict[str, Any]] = {}
    for row in query(con, f"SELECT * FROM {table} ORDER BY {id_col}").to_dicts():
        for c in path_cols:
            if row.get(c) is not None:
                p = Path(row[c])
                row[c] = str(p if p.is_absolute() else (Path(root) / p).resolve())
        out[str(row[id_col])] = row
    return out


def patient_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The ids of the store's ``patients`` table."""
    return {str(r[0]) for r in con.execute("SELECT patient_id FROM patients").fetchall()}


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


def record_model_artifacts(con: duckdb.DuckDBPyConnection, model: str, digests: Mapping[str, str]) -> None:
    """Replace the sha256 of every file of ``model``'s folder (``file -> hex digest``) in one transaction.

    The store is the trust anchor of a model folder: a file is read back only if its digest matches the one
    recorded here when ``cohortlab fit`` wrote it (:mod:`analytics.models.persist`).
    """
    recorded_at = _now()
    with transaction(con):
        con.execute("DELETE FROM model_artifacts WHERE model = ?", [model])
        if digests:
            con.executemany("INSERT INTO model_artifacts VALUES (?, ?, ?, ?)",
                            [[model, name, digest, recorded_at] for name, digest in sorted(digests.items())])


def model_artifacts(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, str]:
    """The sha256 recorded for each file of ``model``'s folder (empty: none recorded, e.g. a store migrated from
    schema 3, or a read-only connection to a store not migrated yet)."""
    has_table = _scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
                             "AND table_name = 'model_artifacts'")
    if not has_table:
        return {}
    rows = con.execute("SELECT file, sha256 FROM model_artifacts WHERE model = ? ORDER BY file", [model]).fetchall()
    return {str(f): str(d) for f, d in rows}


def recorded_model_artifacts(path: str | Path, model: str, wait_s: float = 60.0) -> dict[str, str]:
    """:func:`model_artifacts` of the store at ``path``, opened read-only (and without the ``instances`` view:
    nothing else is read). Waits up to ``wait_s`` seconds while another process writes the store."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no store here (run `cohortlab ingest` first)")
    con = _open(path, True, wait_s, share_writer=True)
    try:
        if _version(con) is None:
            raise StoreError(f"{path}: not a cohortlab store (no schema version)")
        return model_artifacts(con, model)
    finally:
        con.close()


PREDICTION_COLUMNS = ("model", "patient_id", "split", "score", "fold")


def replace_predictions(con: duckdb.DuckDBPyConnection, model: str, frame: pl.DataFrame) -> None:
    """Replace one model's rows of the ``predictions`` table (``PREDICTION_COLUMNS`` of ``frame``) in one
    transaction: a reader sees the old rows or the new ones, never a mix."""
    table = frame.select(list(PREDICTION_COLUMNS)).to_arrow()
    with transaction(con):
        con.execute("DELETE FROM predictions WHERE model = ?", [model])
        con.register("_cohortlab_predictions", table)
        try:
            con.execute("INSERT INTO predictions SELECT model, patient_id, split, score, fold "
                        "FROM _cohortlab_predictions")
        finally:
            con.unregister("_cohortlab_predictions")


def read_predictions(con: duckdb.DuckDBPyConnection, model: str | None = None) -> pl.DataFrame:
    """Rows of the ``predictions`` table (of one model), ordered by model and patient.

    The one reader of predictions for validation, the report, explanations and the notebook: ``fit`` writes
    each model's rows here and, as a checked copy, in its model folder (``predictions.parquet``, whose hash
    the model's record holds); ``fit`` rewrites the rows when they differ from the folder's.
    """
    sql = "SELECT model, patient_id, split, score, fold FROM predictions"
    params: list[Any] = []
    if model is not None:
        sql += " WHERE model = ?"
        params.append(model)
    return query(con, sql + " ORDER BY model, patient_id", params or None)


SAMPLE_ABOVE = 64 << 20  # bytes; larger files (whole-slide images) are fingerprinted by samples
_EDGE = 1 << 20
_BLOCK = 64 << 10
_BLOCKS = 14


def json_digest(payload: Any) -> str:
    """sha256 (hex) of ``payload`` as JSON with sorted keys (other values by ``str``): equal data, equal digest."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def content_digest(path: str | Path, sample_above: int | None = SAMPLE_ABOVE) -> str:
    """sha256 of a file's content, or of a folder's files (a DICOM series) by name and content.

    Files up to ``sample_above`` bytes (every file when ``None``) are hashed
    whole. A larger one is hashed by its size, its first and last MiB and
    evenly spaced 64 KiB blocks between them: a few MiB read whatever its
    size, enough to tell scanner outputs apart. No path and no time goes in,
    so a copied or moved file keeps its digest.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{content_digest(f, sample_above)}\0".encode())
        return h.hexdigest()
    size = p.stat().st_size
    if sample_above is None or size <= sample_above:
        return sha256_file(p)
    h.update(f"sampled:{size}\0".encode())
    step = (size - 2 * _EDGE - _BLOCK) // (_BLOCKS + 1)
    with open(p, "rb") as fh:
        h.update(fh.read(_EDGE))
        for k in range(1, _BLOCKS + 1):
            fh.seek(_EDGE + k * step)
            h.update(fh.read(_BLOCK))
        fh.seek(size - _EDGE)
        h.update(fh.read(_EDGE))
    return h.hexdigest()


def file_fingerprint(path: str | Path, *extra: Any, sample_above: int | None = SAMPLE_ABOVE) -> str:
    """Identity of a source file: its content (:func:`content_digest`) plus the manifest fields that change its meaning.

    Paths and modification times stay out, so a study folder can be copied or
    moved without its sources counting as changed.
    """
    parts = [content_digest(path, sample_above), *extra]
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]
