"""The R side of a benchmark: run one of bench/'s reference scripts with ``Rscript`` and read the JSON object it
prints on its last line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def reference(script: str, *args: object) -> dict[str, Any] | None:
    """``Rscript bench/<script> args...``'s last line of output as JSON; None without ``Rscript`` or when the script
    fails (the end of its stderr is printed)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    done = subprocess.run([rscript, str(BENCH / script), *map(str, args)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"R reference {script} failed: {done.stderr.strip()[-400:]}", file=sys.stderr, flush=True)
        return None
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
