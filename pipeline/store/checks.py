"""Whether a done item's instance file is still the one recorded, by two checks of different cost.

The cheap one (:func:`check_instance_file`: size, footer, the ``source_id`` in
the footer's statistics) runs on every connection; the content one
(:func:`verify_instance_file`: the sha256 of every byte too) wherever files are
about to be read for results. A file that is missing, unreadable, another
source's or no longer the one recorded fails.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.store import hashing
from pipeline.store.embed_items import DoneFile
from pipeline.store.hashing import FileStamp, stamp_file
from pipeline.store.instance_files import INSTANCE_COLUMNS


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
            # looked up on its module at call time: one replacement there (a test counting hashes) reaches it
            digest = hashing.sha256_file(path)
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
