"""Drawing a report figure leaves the process's matplotlib backend alone (a notebook keeps its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import io
import matplotlib
matplotlib.use("svg")  # stands for a notebook's inline backend
import analytics.figures as figures
from analytics.explain import plots
fig = figures.new_figure(2.0, 1.5)
fig.add_subplot().plot([0, 1], [0, 1])
buf = io.BytesIO()
figures.save_png(fig, buf)
assert buf.getvalue()[:8] == b"\\x89PNG\\r\\n\\x1a\\n", buf.getvalue()[:8]
print(matplotlib.get_backend())
"""


def test_importing_and_drawing_figures_keeps_the_backend() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "svg"
