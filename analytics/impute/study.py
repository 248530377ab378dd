"""``cohortlab impute``: the development imputation of a study alone, written to ``imputations/``.

The development (training) patients of the study's cohort are imputed with the outcome in the models (the label;
for a survival outcome each cause's event indicator and Nelson-Aalen cumulative hazard, never the raw time) and
the auxiliary columns as predictors. The folder is written whole or not at all:

* ``imputations/long.csv``: ``mice::complete(imp, "long")`` format (``.imp``, ``patient_id``, the cohort's
  clinical columns), which ``[imputation] from`` reads;
* ``imputations/trace.csv``: the chains' per-iteration mean and SD of each imputed column;
* ``imputations/md_pattern.csv``: the missingness pattern, as ``mice::md.pattern``;
* ``imputations/summary.json``: settings, methods, outcome columns, split-R̂, out-of-range counts, flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from analytics.cohort import load_cohort
from analytics.cohort.checks import RESERVED
from pipeline.atomic import json_text, staged_dir
from pipeline.config import StudyConfig

from .chains import Imputations, Settings, impute
from .diagnostics import Diagnostics, Pattern, diagnose, md_pattern, trace_table
from .longformat import write_long
from .outcome import nelson_aalen
from .spec import ImputationError

FOLDER = "imputations"


@dataclass(frozen=True)
class StudyImputation:
    """What ``cohortlab impute`` did: the folder written, the imputations, their diagnostics and pattern."""

    folder: Path
    imputations: Imputations
    diagnostics: Diagnostics
    pattern: Pattern
    outcome: list[str]
    dropped_unlabelled: int


def outcome_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """The outcome's columns for the imputation models (White & Royston 2009).

    A binary label enters as it is. A survival outcome enters as the event indicator and the Nelson-Aalen
    cumulative hazard (``nelson_aalen``); with competing causes (event codes 1, 2, ...) as each cause's indicator
    (``event_k``) and cause-specific cumulative hazard (``nelson_aalen_k``). The raw time never enters.
    """
    cols: list[pl.Series] = []
    if "time" in frame.columns and "event" in frame.columns:
        time = frame["time"].cast(pl.Float64).to_numpy()
        event = frame["event"].cast(pl.Int64).to_numpy()
        causes = sorted(int(c) for c in np.unique(event) if c > 0)
        if len(causes) <= 1:
            ind = (event > 0).astype(np.int64)
            cols += [pl.Series("event", ind), pl.Series("nelson_aalen", nelson_aalen(time, ind))]
        else:
            for k in causes:
                ind = (event == k).astype(np.int64)
                cols += [pl.Series(f"event_{k}", ind), pl.Series(f"nelson_aalen_{k}", nelson_aalen(time, ind))]
    elif "label" in frame.columns:
        cols.append(frame["label"].cast(pl.Int64))
    return pl.DataFrame(cols) if cols else pl.DataFrame()


def _settings(study: StudyConfig) -> Settings:
    s = study.imputation
    if s is None or s.method != "mice":
        raise ImputationError(f"{study.root / 'study.toml'}: cohortlab impute needs an [imputation] table with "
                              f"method = \"mice\" (it has {'none' if s is None else 'method = ' + repr(s.method)})")
    if s.from_ is not None:
        raise ImputationError(f"{study.root / 'study.toml'}: [imputation] from = {s.from_!r} reads imputations made "
                              "elsewhere; remove it to make them with cohortlab impute")
    n_jobs = (os.cpu_count() or 1) if study.compute.n_jobs == -1 else study.compute.n_jobs
    return Settings(m=s.m, maxit=s.maxit, seed=study.study.seed if s.seed is None else s.seed, methods=dict(s.methods),
                    donors=s.donors, n_jobs=max(1, min(n_jobs, s.m)))


def _declared_levels(study: StudyConfig, columns: list[str]) -> dict[str, list[str]]:
    """``[variables]`` levels of the cohort's text columns, in their declared order."""
    return {c: list(v.levels) for c, v in study.variables.items() if c in columns and v.levels is not None}


def impute_study(study: StudyConfig, progress: Callable[[int], None] | None = None) -> StudyImputation:
    """Impute the study's development patients and write ``imputations/`` (replacing it in one step).

    Parameters
    ----------
    study : StudyConfig
        With an ``[imputation]`` table, ``method = "mice"``.
    progress : callable, optional
        Called with the chain iterations just finished (``m · maxit`` in all).

    Returns
    -------
    StudyImputation
    """
    settings = _settings(study)
    assert study.imputation is not None
    cohort = load_cohort(study)
    clinical = [c for c in cohort.frame.columns if c not in RESERVED]
    try:
        study.imputation.check_columns(clinical, str(cohort.file))
    except ValueError as exc:
        raise ImputationError(str(exc)) from None
    if not clinical:
        raise ImputationError(f"{cohort.file}: the cohort has no clinical columns to impute")
    dev = cohort.frame.filter(pl.col("split") == "train")
    dropped = 0
    if "label" in dev.columns and not ("time" in dev.columns and "event" in dev.columns):
        dropped = int(dev["label"].null_count())
        dev = dev.filter(pl.col("label").is_not_null())
    if dev.height == 0:
        raise ImputationError(f"{cohort.file}: no development (train) patients to impute")
    outcome = outcome_columns(dev)
    clash = [c for c in outcome.columns if c in clinical]
    if clash:
        raise ImputationError(f"{cohort.file}: column(s) {clash} clash with the outcome columns of the imputation "
                              "models; rename them in the cohort SQL")
    data = pl.concat([dev.select(clinical), outcome], how="horizontal")
    ids = dev["patient_id"].to_list()
    text = [c for c in clinical if data[c].dtype in (pl.String, pl.Categorical)]
    settings = replace(settings, levels=_declared_levels(study, text))
    imp = impute(data, settings, ids=ids, progress=progress)
    diagnostics = diagnose(imp)
    pattern = md_pattern(dev.select(clinical))
    folder = study.root / FOLDER
    with staged_dir(folder) as tmp:
        long = imp.long().select(".imp", "patient_id", *clinical)
        write_long(long, tmp / "long.csv")
        trace_table(imp).write_csv(tmp / "trace.csv")
        _pattern_frame(pattern).write_csv(tmp / "md_pattern.csv")
        summary = {"m": settings.m, "maxit": settings.maxit, "seed": settings.seed, "patients": dev.height,
                   "split": "train", "methods": {k: v for k, v in imp.methods.items() if v},
                   "outcome_columns": outcome.columns, "auxiliary": list(study.imputation.auxiliary),
                   "unlabelled_left_out": dropped,
                   "rhat": {k: (None if not np.isfinite(v) else v) for k, v in diagnostics.rhat.items()},
                   "out_of_range": diagnostics.out_of_range, "flags": diagnostics.flags}
        (tmp / "summary.json").write_text(json_text(summary, indent=2, end="\n"), encoding="utf-8")
    return StudyImputation(folder, imp, diagnostics, pattern, outcome.columns, dropped)


def _pattern_frame(p: Pattern) -> pl.DataFrame:
    """md.pattern as a table: ``count``, one 0/1 column per variable, ``missing``; a last row of column totals."""
    data: dict[str, list[int | None]] = {"count": [*p.counts.tolist(), None]}
    for j, c in enumerate(p.columns):
        data[c] = [*p.observed[:, j].tolist(), int(p.missing_per_column[j])]
    data["missing"] = [*p.missing_per_pattern.tolist(), p.total]
    return pl.DataFrame(data)
