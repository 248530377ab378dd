"""The files of internal-external cross-validation (:mod:`analytics.iecv` writes them during ``cohortlab fit``):
their names, and :func:`read_iecv`, which validation reads them back with, checked against the sha256 recorded
when they were written."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.errors import CohortlabError

IECV_FOLDER = ".iecv"
CURRENT = "current.json"


class IecvError(CohortlabError, RuntimeError):
    """IECV files that cannot be read back as written (named)."""


def file_name(group: str) -> str:
    """The file of one left-out group: its name made safe for a file system, and a hash (two names that read
    the same after that stay apart)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", group)[:40]
    return f"{slug}-{hashlib.sha256(group.encode()).hexdigest()[:8]}.parquet"


@dataclass(frozen=True)
class IecvPredictions:
    """A model's IECV scores (patient_id, center, group, score, risk_<j>), the groups and the horizons."""

    frame: pl.DataFrame
    groups: dict[str, list[str]]
    horizons: list[float]


def read_iecv(models_dir: Path, name: str, fit_key: str | None) -> IecvPredictions | None:
    """The IECV predictions of model ``name`` when they are complete and of its current fit (``fit_key``); None
    otherwise.

    Raises
    ------
    IecvError
        A file is not the one written (its sha256 differs from ``current.json``'s), or cannot be read.
    """
    base = models_dir / IECV_FOLDER / name
    path = base / CURRENT
    if not path.exists():
        return None
    try:
        cur = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IecvError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if fit_key is None or cur.get("fit_key") != fit_key:
        return None
    frames = []
    for g, sha in cur["sha256"].items():
        f = base / cur["key"] / file_name(g)
        if not f.exists():
            return None
        raw = f.read_bytes()
        if hashlib.sha256(raw).hexdigest() != sha:
            raise IecvError(f"{f}: not the file written by `cohortlab fit` (sha256 differs); run `cohortlab fit` "
                            "again to rewrite it")
        frames.append(pl.read_parquet(io.BytesIO(raw)))
    return IecvPredictions(pl.concat(frames, how="diagonal_relaxed"), cur["groups"], list(cur.get("horizons") or []))


def iecv_digest(models_dir: Path, names: list[str]) -> str:
    """What validation reads of the models' IECV: each one's ``current.json`` (its files' sha256), or ``-``."""
    h = hashlib.sha256()
    for name in names:
        path = models_dir / IECV_FOLDER / name / CURRENT
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"-") + b"\0")
    return h.hexdigest()
