"""``[imputation] from``: imputations made elsewhere, read against the store, giving the cohort's m completed versions.

``from = "manifests/imputed.csv"`` names one file in ``mice::complete(imp, "long")`` format
(:func:`analytics.impute.longformat.read_long`) whose imputations fill the missing cells of the store's ``clinical``
table; ``from = { train = "...", internal = "...", external = "..." }`` names one file per split, each filling only
its split's cohort patients (patients of other splits it holds are ignored). The cohort SQL then runs once per
imputation (:func:`analytics.cohort.completed.completed_cohorts`), and the cohort carries the m results as
:attr:`analytics.cohort.Cohort.completions`.

Checks, each an :class:`~analytics.impute.ImputationError` naming the file: the file lies inside the study folder
(after following symbolic links) and is a regular file; those of :func:`read_long` (an imputed value contradicting
an observed one, a patient missing from an imputation, unequal patient counts across ``.imp``, an unknown patient or
column, a cell left missing, each naming the line, patient and imputation); the same m in every file; every cohort
patient missing a value of an imputed column is in a file. Outcome columns (``[variables]`` role outcome, time or
event) are checked against the observed values but never filled.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from analytics.cohort import Cohort
from analytics.cohort.completed import completed_cohorts
from pipeline.config import StudyConfig
from pipeline.files import file_kind

from .longformat import LongImputations, read_long
from .spec import ImputationError

log = logging.getLogger("cohortlab.impute")

OUTCOME_ROLES = ("outcome", "time", "event")
"""``[variables]`` roles whose columns an imputation never fills."""


def _key(split: str | None) -> str:
    return "[imputation] from" if split is None else f"[imputation] from.{split}"


def from_paths(study: StudyConfig) -> dict[str | None, Path]:
    """The ``from`` files, ``split -> path`` (``None``: one file for every split), each checked to be a regular file
    inside the study folder once symbolic links are followed.

    Raises
    ------
    ImputationError
        A file is missing, leads outside the study folder, or is no regular file (a folder, a FIFO, ...).
    """
    s = study.imputation
    if s is None:
        return {}
    root = study.root.resolve()
    out: dict[str | None, Path] = {}
    for split, name in s.from_files().items():
        path = study.root / name
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError:
            raise ImputationError(f"{path}: no such imputations file ({_key(split)})") from None
        except (OSError, RuntimeError) as exc:  # a loop of symbolic links
            raise ImputationError(f"{path}: cannot be opened ({_key(split)}): {exc}") from None
        if not real.is_relative_to(root):
            raise ImputationError(f"{path}: {_key(split)} leads outside the study folder {root} (to {real}); "
                                  "imputations are read only from inside it")
        kind = file_kind(real)
        if kind is not None:
            raise ImputationError(f"{path}: {_key(split)} is {kind}, not a CSV file")
        out[split] = real  # the file checked, not a name a link could later redirect
    return out


def _fill(cohort: Cohort, files: dict[str | None, Path], observed: pl.DataFrame) -> list[pl.DataFrame]:
    """The store's ``clinical`` table completed once per imputation from ``files``."""
    variables = cohort.variables
    roles = dict(zip(variables["name"].to_list(), variables["role"].to_list())) if variables.height else {}
    unfilled = [c for c in observed.columns if roles.get(c) in OUTCOME_ROLES]
    split_of = dict(zip(cohort.patient_ids, cohort.split.tolist()))
    ids = observed["patient_id"].cast(pl.String)
    reads: dict[str | None, LongImputations] = {}
    for split, path in files.items():
        reads[split] = read_long(path, observed, partial=True, unfilled=unfilled)
        for flag in reads[split].flags:
            log.warning("%s: %s", path, flag)
    ms = {split: r.m for split, r in reads.items()}
    if len(set(ms.values())) > 1:
        detail = ", ".join(f"{files[s]}: {m}" for s, m in ms.items())
        raise ImputationError(f"[imputation] from: the files hold different numbers of imputations ({detail}); "
                              "give each split the same m")
    m = next(iter(ms.values()))
    rows = {split: pl.Series([True] * observed.height) if split is None
            else ids.is_in([p for p, s in split_of.items() if s == split]) for split in reads}
    tables: list[pl.DataFrame] = []
    for i in range(m):
        table = observed
        for split, r in reads.items():
            table = table.with_columns([r.completed[i][c].zip_with(rows[split], table[c]).alias(c)
                                        for c in r.columns])
        tables.append(table)
    _check_covered(cohort, files, reads, tables[0])
    return tables


def _check_covered(cohort: Cohort, files: dict[str | None, Path], reads: dict[str | None, LongImputations],
                   completed: pl.DataFrame) -> None:
    """Every cohort patient with a missing value of an imputed column got one from a file."""
    imputed = list(dict.fromkeys(c for r in reads.values() for c in r.columns))
    mine = completed.filter(pl.col("patient_id").is_in(cohort.patient_ids))
    split_of = dict(zip(cohort.patient_ids, cohort.split.tolist()))
    for col in imputed:
        left = mine.filter(pl.col(col).is_null())
        if not left.height:
            continue
        pid = str(left["patient_id"][0])
        split = split_of.get(pid)
        if None in files:
            raise ImputationError(f"{files[None]}: patient {pid!r} of cohort {cohort.name} lacks {col} and is in no "
                                  "imputation of this file")
        if split in files:
            raise ImputationError(f"{files[split]}: patient {pid!r} ({split} split) lacks {col} and is in no "
                                  "imputation of this file")
        raise ImputationError(f"[imputation] from names no file for the {split} split, and its patient {pid!r} lacks "
                              f"{col}; add from.{split} = \"...\"")


def with_imputations(study: StudyConfig, cohort: Cohort) -> Cohort:
    """``cohort`` with :attr:`~analytics.cohort.Cohort.completions` from ``[imputation] from`` (unchanged without it).

    Parameters
    ----------
    study
        The study the cohort was loaded from.
    cohort
        :func:`analytics.cohort.load_cohort`'s result.

    Returns
    -------
    Cohort
        With one completed frame per imputation.
    """
    files = from_paths(study)
    if not files:
        return cohort
    completions = completed_cohorts(study, cohort, lambda observed: _fill(cohort, files, observed))
    log.info("cohort %s: %d imputations read from %s", cohort.name, len(completions),
             ", ".join(str(p) for p in files.values()))
    return replace(cohort, completions=completions)


def from_record(study: StudyConfig) -> dict[str, Any] | None:
    """What ``[imputation] from`` names, for a record or the report: the files by split and whether held-out patients
    were imputed apart from the development ones (one file per split); None without ``from``."""
    s = study.imputation
    if s is None or s.from_ is None:
        return None
    files = s.from_files()
    return {"files": {"all" if k is None else k: v for k, v in files.items()}, "per_split": None not in files}


__all__ = ["OUTCOME_ROLES", "from_paths", "from_record", "with_imputations"]
