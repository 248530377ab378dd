"""CPU seconds of a benchmark and the worker processes it starts (the machine may be shared: wall time varies
with the other work on it, CPU time much less)."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def cpu_seconds() -> float:
    """User + system seconds of this process, of its finished children and of its live descendants (joblib's
    and Ray's worker processes outlive a call: they are read from ``/proc``)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live_descendants()


def live_descendants() -> float:
    """CPU seconds (user + system, their own finished children included) of the live descendants of this
    process, from ``/proc/<pid>/stat``; 0 where there is no ``/proc``."""
    parent: dict[int, int] = {}
    spent: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
        pid = int(stat.parent.name)
        # after the command's closing parenthesis: state, ppid, ..., utime (12th), stime, cutime, cstime
        parent[pid] = int(fields[1])
        spent[pid] = sum(int(x) for x in fields[11:15]) / tick
    mine: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in mine}
        mine |= frontier
    return sum(spent[pid] for pid in mine)
