"""Writes that are all or nothing: a temporary name beside the target, renamed when complete.

A reader (or a resumed run) therefore sees either the old file or the whole new
one. Temporary names are ``.<name>.<pid>.tmp`` so that files left by a killed
process can be recognised and removed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import CohortlabError

# errors meaning "no room": a full disk, a full quota, a file size limit (``ulimit -f``)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust-based writers (polars) report the OS error
_STALE = re.compile(r"\A\..+\.(\d+)\.(tmp|old)\Z")  # \Z: "$" would admit a final line break


class WriteError(CohortlabError, OSError):
    """A file or folder that could not be written (disk full, size limit, permissions); the target is unchanged."""

    def __init__(self, path: Path, code: int | None, reason: str):
        super().__init__(code, reason, str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        hint = " (the disk is full or a file size limit was reached)" if self.errno in NO_SPACE else ""
        return f"{self.path}: cannot write: {self.strerror}{hint}; nothing was replaced"


def write_error(path: Path, exc: BaseException, tmp: Path | None = None) -> WriteError | None:
    """``exc`` as a :class:`WriteError` naming ``path``, when it says that writing failed, else None.

    A write failed when the error is "no room" (:data:`NO_SPACE`; many writers
    do not say which file), or an operating-system error on the temporary
    ``tmp`` or a file in it. Other errors (a failed read, a bug) pass unchanged.
    """
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, OSError):
        code = exc.errno
    else:
        found = _OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found is not None else None
    if code in NO_SPACE:
        return WriteError(path, code, os.strerror(code))
    if isinstance(exc, OSError) and tmp is not None and exc.filename is not None:
        failed = Path(os.fsdecode(exc.filename))
        if failed == tmp or tmp in failed.parents:
            return WriteError(path, code, exc.strerror or str(exc))
    return None


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files and folders (``.<name>.<pid>.tmp`` / ``.old``) of processes that no longer run.

    They are what a killed run leaves behind; those of a running process
    (another shard, a concurrent command) are left alone. An ``.old`` folder
    whose target is missing (killed between the two renames of
    :func:`staged_dir`) is the last complete version: it is put back.
    Returns how many were removed or put back.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in sorted(folder.iterdir()):
        m = _STALE.match(p.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        target = folder / p.name[1:m.start(1) - 1]
        if m.group(2) == "old" and not target.exists():
            os.replace(p, target)
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


@contextmanager
def staged(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` when the block succeeds, and is removed when it fails.

    ``fsync`` flushes the file to disk before the rename (for files whose
    presence marks work as done).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        error = write_error(path, exc, tmp)
        if error is None or error is exc:
            raise
        raise error from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, fsync: bool = False) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with staged(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_text(data: Any, indent: int | None = None, default: Callable[[Any], Any] | None = None, end: str = "") -> str:
    """``data`` as JSON with keys sorted (the same data gives the same text), then ``end``; see :func:`write_json`."""
    return json.dumps(data, sort_keys=True, indent=indent, default=default) + end


def write_json(
    path: str | Path, data: Any, indent: int | None = None, default: Callable[[Any], Any] | None = None,
    end: str = "", fsync: bool = False,
) -> Path:
    """Replace ``path`` with ``data`` as JSON, keys sorted (the same data gives the same bytes), atomically.

    ``default`` turns values JSON does not know into ones it does (e.g. ``str``);
    ``end`` is written after the document (e.g. a newline).
    """
    return write_text(path, json_text(data, indent, default, end), fsync=fsync)


@contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces the folder ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        moved = path.exists()
        if moved:
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if moved:  # put the previous version back
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:
        error = write_error(path, exc, tmp)
        if error is None or error is exc:
            raise
        raise error from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
