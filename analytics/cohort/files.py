"""Finding a cohort's files: its SQL, the shared views, and the parameters bound to it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analytics.cohort.errors import CohortError
from pipeline import store
from pipeline.config import NAME, StudyConfig


def cohort_dirs(study: StudyConfig) -> list[Path]:
    """Folders searched for ``<name>.sql``, first match wins: the study's, then the repository's."""
    return [study.root / "cohorts", store.sql_dir() / "cohorts"]


def cohort_name(study: StudyConfig, name: str | None) -> str:
    """``name``, else the study's ``[cohort] name``; an error naming study.toml when there is neither."""
    if name is not None:
        return name
    if study.cohort is None:
        raise CohortError(f"{study.root / 'study.toml'}: no [cohort] name; name a cohort")
    return study.cohort.name


def find_cohort(study: StudyConfig, name: str) -> Path:
    """The SQL file of cohort ``name`` (a name, or a path to a ``.sql`` file)."""
    if name.endswith(".sql"):
        for cand in (Path(name), study.root / name):
            if cand.is_file():
                return cand.resolve()
        raise CohortError(f"cohort file {name} not found (looked in . and {study.root})")
    if not NAME.match(name):
        raise CohortError(f"cohort name {name!r}: use letters, digits, '_' and '-', or give a path to a .sql file")
    for folder in cohort_dirs(study):
        cand = folder / f"{name}.sql"
        if cand.is_file():
            return cand.resolve()
    known = sorted({p.stem for d in cohort_dirs(study) if d.is_dir() for p in d.glob("*.sql")})
    raise CohortError(
        f"no cohort named '{name}' in {' or '.join(str(d) for d in cohort_dirs(study))}"
        f" (known: {', '.join(known) or 'none'})"
    )


def view_files(study: StudyConfig | None = None) -> dict[str, Path]:
    """``name -> file`` of the shared views; the study's ``views/`` wins over ``sql/views/``."""
    folders = [store.sql_dir() / "views"] + ([study.root / "views"] if study is not None else [])
    out: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.glob("*.sql")):
                out[p.stem] = p
    return out


def cohort_params(study: StudyConfig, name: str | None, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters to bind: the study's ``[cohort] params`` (for its own cohort) overlaid by ``params``."""
    out: dict[str, Any] = {}
    if study.cohort is not None and (name is None or name == study.cohort.name):
        out.update(study.cohort.params)
    out.update(params or {})
    return out
