"""``cohortlab run``: every stage from manifests to report, each skipping finished work.

ingest -> embed -> cohort -> fit -> validate -> explain -> report. Every stage
is resumable on its own (ingest writes nothing when the manifests are
unchanged, embed skips done sources, fit skips models whose inputs are
unchanged, validate and explain skip when their inputs' digests match), so
re-running a finished study does no work again and gives identical metrics.
A stage that fails stops the stages after it; the summary says which and why.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import store
from pipeline.config import Study

log = logging.getLogger("cohortlab.run")


@dataclass
class StageOutcome:
    name: str
    seconds: float
    ok: bool
    summary: str


@dataclass
class RunResult:
    study: Study
    stages: list[StageOutcome] = field(default_factory=list)
    failed_inputs: list[tuple[str, str, str]] = field(default_factory=list)  # feature set, source, error
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stages)

    def __str__(self) -> str:
        lines = [f"study {self.study.study.name}: {'done' if self.ok else 'stopped'}"]
        for s in self.stages:
            lines.append(f"  {'ok  ' if s.ok else 'FAIL'} {s.name:<9} {s.seconds:6.1f} s  {s.summary.splitlines()[0] if s.summary else ''}")
        failed = [s for s in self.stages if not s.ok]
        for s in failed:
            lines.append(f"\n{s.name} failed:\n{s.summary}")
        if self.failed_inputs:
            lines.append(f"\n{len(self.failed_inputs)} input(s) could not be embedded (recorded in embed_items; the run went on):")
            lines += [f"  {fs}: {src}: {err}" for fs, src, err in self.failed_inputs[:20]]
            if len(self.failed_inputs) > 20:
                lines.append(f"  ... and {len(self.failed_inputs) - 20} more (cohortlab features study.toml)")
        if self.report is not None:
            lines.append(f"\nreport: {self.report}")
        return "\n".join(lines)


def _stages(study: Study, device: str, progress: bool) -> list[tuple[str, Callable[[], Any]]]:
    def ingest() -> Any:
        from pipeline.ingest import ingest as f

        return f(study, progress=progress)

    def embed() -> Any:
        from pipeline.embed import embed as f

        return f(study, device=device, progress=progress)

    def cohort() -> Any:
        from analytics.cohort import load_cohort

        c = load_cohort(study)
        counts = c.counts()
        return f"cohort '{c.name}': {len(c)} patients\n{counts}"

    def fit() -> Any:
        from analytics.fit import fit as f

        return f(study)

    def validate() -> Any:
        from analytics.validate import validate as f

        return f(study, progress=progress)

    def explain() -> Any:
        from analytics.explain import explain as f

        return f(study)

    def report() -> Any:
        from analytics.report import report as f

        return f(study)

    stages: list[tuple[str, Callable[[], Any]]] = [("ingest", ingest)]
    if study.feature_sets:
        stages.append(("embed", embed))
    if study.cohort is not None:
        stages.append(("cohort", cohort))
        if study.models:
            stages += [("fit", fit), ("validate", validate), ("explain", explain)]
    stages.append(("report", report))
    return stages


def _failed_inputs(study: Study) -> list[tuple[str, str, str]]:
    if not study.store_path.exists():
        return []
    con = store.connect(study.store_path, read_only=True)
    try:
        return store.failed_items(con).select("feature_set", "source_id", "error").rows()
    finally:
        con.close()


def run(study: Study, device: str = "auto", progress: bool = True) -> RunResult:
    """Run every stage of ``study`` in order, each skipping work already done."""
    result = RunResult(study)
    stages = _stages(study, device, progress)
    for i, (name, stage) in enumerate(stages, 1):
        if progress:
            print(f"[{i}/{len(stages)}] {name}", flush=True)
        t0 = time.perf_counter()
        try:
            out = stage()
            ok, summary = True, str(out) if out is not None else ""
            if name == "report" and out is not None:
                result.report = Path(out)
        except Exception as exc:  # a failed stage stops the ones after it
            log.error("stage %s failed: %s\n%s", name, exc, traceback.format_exc())
            ok, summary = False, f"{type(exc).__name__}: {exc}"
        result.stages.append(StageOutcome(name, time.perf_counter() - t0, ok, summary))
        log.info("stage %s: %s in %.1f s", name, "ok" if ok else "failed", time.perf_counter() - t0)
        if not ok:
            break
    result.failed_inputs = _failed_inputs(study)
    return result
