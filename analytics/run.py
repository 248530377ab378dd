"""``cohortlab run``: every stage from manifests to report, each skipping finished work.

ingest -> embed -> cohort -> fit -> validate -> explain -> report. Every stage
is resumable on its own (ingest writes nothing when the manifests are
unchanged, embed skips done sources, fit skips models whose inputs are
unchanged, validate, explain and report skip when their inputs' digests
match), so re-running a finished study does no work again and gives identical
outputs. ``[explain] enabled = false`` skips the explain stage. A stage that
fails stops the stages after it; the summary says which and why, and the run
is not ``ok`` (the CLI exits non-zero). A study with models but no
``[cohort]`` is refused before any stage runs.

The stages, what each needs and how its result prints come from
:data:`analytics.stages.STAGES`, as for the CLI's verbs and the notebook's
``Study``: embed runs on Ray when study.toml sets ``[compute] ray``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from analytics import stages
from pipeline import store
from pipeline.config import ConfigError, StudyConfig

log = logging.getLogger("cohortlab.run")


@dataclass
class StageOutcome:
    name: str
    seconds: float
    ok: bool
    summary: str
    skipped: bool = False  # switched off, or its inputs unchanged: nothing was done

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else "skip" if self.skipped else "ok"


@dataclass
class RunResult:
    study: StudyConfig
    stages: list[StageOutcome] = field(default_factory=list)
    failed_inputs: list[tuple[str, str, str]] = field(default_factory=list)  # feature set, source, error
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stages)

    @property
    def warnings(self) -> list[str]:
        """The ``warning:`` lines of the stages' summaries (a model short of patients, a file embedded again ...)."""
        return [f"{s.name}: {line.strip().removeprefix('warning:').strip()}"
                for s in self.stages if s.ok for line in s.summary.splitlines() if line.strip().startswith("warning:")]

    def __str__(self) -> str:
        lines = [f"study {self.study.study.name}: {'done' if self.ok else 'stopped'}"]
        for s in self.stages:
            lines.append(f"  {s.status:<4} {s.name:<9} {s.seconds:6.1f} s  {s.summary.splitlines()[0] if s.summary else ''}")
        if self.warnings:
            lines.append(f"\n{len(self.warnings)} warning(s):")
            lines += [f"  {w}" for w in self.warnings]
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


def _stages(study: StudyConfig, device: str, progress: bool) -> list[tuple[str, Callable[[], Any]]]:
    """The stages ``run`` runs for ``study`` (:func:`analytics.stages.for_run`), each bound to it and the settings."""
    return [(s.name, partial(s.run, study, device=device, progress=progress)) for s in stages.for_run(study)]


def _failed_inputs(study: StudyConfig) -> list[tuple[str, str, str]]:
    if not study.store_path.exists():
        return []
    con = store.connect(study.store_path, read_only=True)
    try:
        return store.failed_items(con).select("feature_set", "source_id", "error").rows()
    finally:
        con.close()


def check_runnable(study: StudyConfig) -> None:
    """Refuse a study whose models could never be fitted by ``run`` (models but no ``[cohort]``).

    Raises
    ------
    ConfigError
        Naming study.toml, the models, and the section to add.
    """
    if not study.models or study.cohort is not None:
        return
    from analytics.cohort import cohort_dirs

    dirs = [d for d in cohort_dirs(study) if d.is_dir()]
    found = [sorted(p.stem for p in d.glob("*.sql")) for d in dirs]
    own = found[0] if dirs and dirs[0] == study.root / "cohorts" else []
    example = own[0] if len(own) == 1 else "<name>"
    known = sorted({n for names in found for n in names})
    raise ConfigError(
        f"{study.root / 'study.toml'}: {len(study.models)} model(s) ({', '.join(m.name for m in study.models)}) "
        f"but no [cohort] section, so none could be fitted: add [cohort] with name = \"{example}\" "
        f"(<name>.sql in {' or '.join(str(d) for d in cohort_dirs(study))}; found: {', '.join(known) or 'none'})")


def run(study: StudyConfig, device: str = "auto", progress: bool = True) -> RunResult:
    """Run every stage of ``study`` in order, each skipping work already done.

    Raises
    ------
    ConfigError
        The study has models but no ``[cohort]`` to fit them on (see :func:`check_runnable`).
    """
    check_runnable(study)
    result = RunResult(study)
    bound = _stages(study, device, progress)
    with store.verified_once():  # each instance file is hashed once per run, not once per stage
        _run_stages(result, bound, progress)
    result.failed_inputs = _failed_inputs(study)
    return result


def _run_stages(result: RunResult, bound: list[tuple[str, Callable[[], Any]]], progress: bool) -> None:
    for i, (name, stage) in enumerate(bound, 1):
        if progress:
            print(f"[{i}/{len(bound)}] {name}", flush=True)
        t0 = time.perf_counter()
        try:
            out = stage()
            ok, summary = True, stages.BY_NAME[name].show(out) if out is not None else ""
            if name == "report" and out is not None:
                result.report = Path(getattr(out, "path", out))
        except Exception as exc:  # a failed stage stops the ones after it
            log.error("stage %s failed: %s\n%s", name, exc, traceback.format_exc())
            ok, summary = False, f"{type(exc).__name__}: {exc}"
        skipped = ok and getattr(out, "skipped", False) is True
        result.stages.append(StageOutcome(name, time.perf_counter() - t0, ok, summary, skipped))
        log.info("stage %s: %s in %.1f s", name, "skipped" if skipped else "ok" if ok else "failed",
                 time.perf_counter() - t0)
        if not ok:
            break
