"""The code version stamped on everything the store records: package version, git commit, dirty or not."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
    root = Path(__file__).resolve().parents[2]  # this file is <root>/pipeline/store/version.py
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
