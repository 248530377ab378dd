"""``cohortlab demo``: write the synthetic two-centre study and run every stage on it.

The study is written once; a second ``demo`` in the same folder reuses it, so
every stage skips its finished work (``--fresh`` writes it again). The study is
only ever written into a missing or empty folder or over an earlier synthetic
study (its ``.cohortlab-demo`` marker): a real study is never replaced.
"""

from __future__ import annotations

from pathlib import Path

from analytics.run import RunResult, run
from pipeline.config import load_config
from pipeline.synth import check_replaceable, make_study


def demo(folder: str | Path = "demo", report_dir: str | Path | None = None, device: str = "auto",
         fresh: bool = False, progress: bool = True) -> RunResult:
    """Synthesise (or reuse) the demo study in ``folder`` and run it end to end.

    ``report_dir`` defaults to ``reports/demo`` under the current directory.

    Raises
    ------
    pipeline.synth.SynthFolderError
        When the study would be written into a folder that holds anything but a
        synthetic study (see :func:`pipeline.synth.check_replaceable`).
    """
    folder = Path(folder)
    toml = folder / "study.toml"
    if fresh or not toml.exists():
        check_replaceable(folder)  # before anything is printed or written
        target = Path(report_dir) if report_dir is not None else Path.cwd() / "reports" / "demo"
        print(f"writing the synthetic two-centre study to {folder}/", flush=True)
        make_study(folder, report_dir=target.resolve(), overwrite=True)
    return run(load_config(toml), device=device, progress=progress)
