"""What a path is, checked before a reader opens it.

Opening a named pipe (FIFO) blocks until something writes to it, and a
device or socket is no data file either, so every path a manifest gives is
checked with :func:`file_kind` (a ``stat``, which never blocks) before it is
opened.
"""

from __future__ import annotations

import stat
from pathlib import Path


def file_kind(path: str | Path) -> str | None:
    """What ``path`` is when it is not a regular file ("a folder", "a named pipe (FIFO)", ...), else None.

    Symbolic links are followed; ``path`` must exist.
    """
    mode = Path(path).stat().st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def irregular_entry(folder: str | Path) -> tuple[Path, str] | None:
    """The first entry of ``folder`` (not recursing) that is neither a regular file nor a folder, and its kind."""
    for entry in sorted(Path(folder).iterdir()):
        try:
            kind = file_kind(entry)
        except OSError:  # a dangling link: a reader skips it or reports it
            continue
        if kind is not None and kind != "a folder":
            return entry, kind
    return None


__all__ = ["file_kind", "irregular_entry"]
