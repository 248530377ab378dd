"""Rendering the report's HTML and writing ``index.html``, or not when its inputs have not changed."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from analytics.report.cells import fmt, fmt_p
from analytics.report.context import build_context
from analytics.report.figure_cache import FigureCache
from analytics.report.missing import imputation_files
from analytics.report.sources import Sources, read_sources
from pipeline import atomic, store
from pipeline.config import StudyConfig

log = logging.getLogger("cohortlab.report")

TEMPLATES = Path(__file__).resolve().parent / "templates"
# the analytics package: its code is what renders the report (any change to it renders again)
ANALYTICS = Path(__file__).resolve().parents[1]


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (autoescaped, strict about undefined names)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["fmt_p"] = fmt_p
    return env


@functools.lru_cache(maxsize=1)
def _shared_environment() -> jinja2.Environment:
    # one per process: its templates are compiled once (a changed template file is reloaded: jinja2 compares
    # each file's modification time on every lookup)
    return environment()


def render(ctx: Mapping[str, Any]) -> str:
    """The report's HTML for a context from :func:`build_context`."""
    return _shared_environment().get_template("report.html.j2").render(**ctx)


DIGEST_MARK = "<!-- report inputs "  # the last line of index.html: the digest of what it was rendered from
_DIGEST_LINE = re.compile(r"<!-- report inputs ([0-9a-f]{64}) -->\s*$")


@dataclass(frozen=True)
class ReportOutcome:
    """The report file, and whether it was left as it was (its inputs had not changed)."""

    path: Path
    skipped: bool = False

    def __str__(self) -> str:
        return f"{self.path}" + (" (unchanged: same inputs as when it was rendered; not rendered again)"
                                 if self.skipped else "")


def _renderer_files() -> list[Path]:
    """The code and templates that turn the sources into HTML (a change to any of them re-renders)."""
    return sorted(p for p in ANALYTICS.rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".css"))


def inputs_digest(src: Sources) -> str:
    """sha256 of everything :func:`build_context` reads: files, store tables, cohort, settings and code.

    The study folder's own location is left out: a moved study whose
    contents are unchanged is not rendered again.
    """
    from importlib.metadata import version

    study = src.study
    h = hashlib.sha256()

    def add(label: str, data: bytes | str) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        h.update(f"{label}:{len(raw)}:".encode())
        h.update(raw)

    add("study", study.model_dump_json(exclude={"root"}))
    for name in ("metrics.json", "curves.json", "explain/manifest.json"):
        path = study.report_dir / name
        add(name, path.read_bytes() if path.is_file() else b"-")
    for i, item in enumerate((src.explain or {}).get("figures", []) if isinstance(src.explain, dict) else []):
        figure = study.report_dir / "explain" / str(item.get("path", "")) if isinstance(item, dict) else None
        add(f"figure {i}", figure.read_bytes() if figure is not None and figure.is_file() else b"-")
    for label, data in imputation_files(study):  # the missing-data section's diagnostics
        add(label, data)
    for label, frame in (("predictions", src.predictions), ("patients", src.store_patients),
                         ("feature_sets", src.feature_sets), ("failed", src.failed), ("variables", src.variables)):
        add(label, _frame_bytes(frame))
    add("coverage", json.dumps(src.coverage, sort_keys=True))
    add("cohort", src.cohort.hash if src.cohort is not None else f"none: {src.cohort_error}")
    add("manifests", json.dumps({k: r.to_dict() for k, r in src.manifests.items()}, sort_keys=True, default=str))
    add("warnings", "\n".join(src.warnings))
    add("code", store.code_version())
    for path in _renderer_files():
        add(str(path.relative_to(ANALYTICS)), path.read_bytes())
    for lib in ("jinja2", "matplotlib", "numpy", "polars"):
        add(lib, version(lib))
    return h.hexdigest()


def _frame_bytes(frame: pl.DataFrame) -> bytes:
    """A frame's schema, height and values as bytes to digest: polars' hash of each row, in order (the same
    values give the same hashes under one polars version, which the digest holds too), a fraction of the time
    of a text form for the millions of rows of a registry's predictions."""
    head = f"{frame.schema}:{frame.height}:".encode()
    if frame.width == 0 or frame.height == 0:
        return head
    return head + frame.hash_rows(seed=0).to_numpy().tobytes()


def rendered_digest(path: Path) -> str | None:
    """The inputs digest recorded at the end of an existing report, else None."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 200))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = _DIGEST_LINE.search(tail)
    return found.group(1) if found else None


def write_report(study: StudyConfig, force: bool = False, progress: bool = True) -> ReportOutcome:
    """Write ``<report_dir>/index.html`` for ``study``, unless the existing one was rendered from the same inputs.

    The file is written to a temporary name and renamed when complete; its
    last line records :func:`inputs_digest`, which the next call compares
    (``force`` renders regardless).
    """
    src = read_sources(study)
    for w in src.warnings:
        log.warning("%s", w)
    target = study.report_dir / "index.html"
    atomic.remove_stale_temporaries(study.report_dir)
    digest = inputs_digest(src)
    if not force and rendered_digest(target) == digest:
        log.info("report unchanged (same inputs): %s", target)
        return ReportOutcome(target, skipped=True)
    # figures drawn for an earlier report from the same data are reused; the ones it no longer shows are removed
    figure_cache = FigureCache(study.root / "cache" / "figures")
    html = render(build_context(src, progress=progress, figure_cache=figure_cache)) + f"{DIGEST_MARK}{digest} -->\n"
    figure_cache.prune()
    log.info("report figures: %d drawn, %d from the cache", figure_cache.misses, figure_cache.hits)
    atomic.write_text(target, html)
    log.info("report written: %s (%d bytes)", target, len(html.encode("utf-8")))
    return ReportOutcome(target)
