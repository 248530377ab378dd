"""The cohort stage's view of a cohort: the cohort without features, each feature set's coverage, and (as
``run`` runs the stage) the summary it leaves for the report (:mod:`analytics.cohort.summary`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from analytics.cohort.features import feature_coverage
from analytics.cohort.files import cohort_name, cohort_params, find_cohort, view_files
from analytics.cohort.frame import Cohort, _codes, build_cohort, complete_case_columns, verify_instances
from analytics.cohort.sql import Session, read_only
from analytics.cohort.summary import write_summary
from pipeline import store
from pipeline.config import StudyConfig


def cohort_overview(
    study: StudyConfig, name: str | None = None, params: Mapping[str, Any] | None = None, *,
    leave_summary: bool = False,
) -> tuple[Cohort, pl.DataFrame]:
    """A cohort without features, and how many of its patients have each feature set of the study.

    Parameters
    ----------
    study
        The study (its store, cohort section, split rule and feature sets).
    name
        Cohort name (default: ``[cohort] name``) or a path to a ``.sql`` file.
    params
        Parameters bound over the study's ``[cohort] params``.
    leave_summary
        When this is the study's own cohort with its own parameters, leave it for the report
        (:func:`analytics.cohort.summary.write_summary`: its frame, Table 1, the cohort's part of the
        participant flow, the coverage of the store's feature sets), unless already left.

    Returns
    -------
    cohort
        The checked, split cohort (no feature blocks or bags loaded).
    coverage
        :func:`~analytics.cohort.features.feature_coverage` of every
        ``feature_set:pooling`` and ``feature_set:instances`` in ``study.toml``;
        the instance files of every feature set are verified by content first
        (:func:`verify_instances`), and a patient whose files are all left out
        counts as missing ``feature_set:instances``.
    """
    name = cohort_name(study, name)
    file = find_cohort(study, name)
    views = view_files(study)
    with read_only(study.store_path, views, [study.root], study.sql) as session:
        left_out = verify_instances(session, study.store_path, [f.name for f in study.feature_sets])
        cohort = build_cohort(session, file, cohort_params(study, name, params), study.split,
                              name=Path(name).stem, views=views, store_path=study.store_path,
                              event_codes=_codes(study), complete_case=complete_case_columns(study))
        cohort = replace(cohort, left_out=left_out)
        refs = [f"{f.name}:{p}" for f in study.feature_sets for p in f.pooling]
        refs += [f"{f.name}:instances" for f in study.feature_sets]
        coverage = feature_coverage(session.con, cohort.patient_ids, refs)
        if leave_summary and study.cohort is not None and name == study.cohort.name and not params:
            _leave_summary(study, session, cohort)
    return cohort, coverage


def _leave_summary(study: StudyConfig, session: Session, cohort: Cohort) -> None:
    """Leave the study's own cohort for the report (:mod:`analytics.cohort.summary`): its frame, Table 1, the
    cohort's part of the participant flow and the coverage of the store's feature sets."""
    con = session.con
    centers = store.query(con, "SELECT patient_id, center FROM patients ORDER BY patient_id")
    stored = store.query(con, "SELECT name FROM feature_sets ORDER BY name").get_column("name").to_list()
    cov = feature_coverage(con, cohort.patient_ids, [f"{n}:instances" for n in stored]) if stored else None
    coverage = ({r["features"].split(":")[0]: int(r["patients"]) for r in cov.to_dicts()} if cov is not None else {})
    write_summary(study, cohort, centers, coverage)
