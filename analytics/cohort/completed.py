"""A cohort once per imputation: its SQL run on each completed version of the store's ``clinical`` table.

``[imputation] from`` gives imputations of the manifest's clinical columns made elsewhere
(:mod:`analytics.impute.from_file` reads and checks them). Each completed table shadows ``clinical`` as a TEMP
table of the read-only sandbox connection (:mod:`analytics.cohort.sandbox`), so the cohort SQL and its views read
it unchanged and the store is never written; the SQL then runs as any cohort's does (parse tree and plan checked,
``[sql]`` limits). A cohort or view that names ``store.clinical`` would bypass the imputations and is refused.

Every imputation's result must hold the same patients as the observed run, with the same ``label``, ``time`` and
``event``: a ``WHERE`` on an imputed column, or an outcome computed from one, would give each imputation another
cohort, which no pooling can combine. The completions keep the observed cohort's rows, split and centre and take
the clinical columns from each run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import polars as pl

from analytics.cohort.checks import RESERVED, check_cohort
from analytics.cohort.errors import CohortError
from analytics.cohort.files import view_files
from analytics.cohort.frame import Cohort, _codes
from analytics.cohort.sandbox import ALIAS
from analytics.cohort.sql import Session, read_only, run_select
from pipeline import store
from pipeline.config import StudyConfig

SHADOWED = "clinical"
"""The store table each imputation's completed copy shadows."""
_REGISTERED = "_cohortlab_completed_clinical"
OUTCOME = ("label", "time", "event")
"""Cohort columns no imputation may change."""


def observed_clinical(session: Session) -> pl.DataFrame:
    """The store's ``clinical`` table as the cohort SQL sees it without imputations, in ``patient_id`` order."""
    return store.query(session.con, f"SELECT * FROM {ALIAS}.main.{SHADOWED} ORDER BY patient_id")


def _qualified_reads(con: duckdb.DuckDBPyConnection, text: str) -> bool:
    """Whether ``text`` reads ``store.clinical`` (or ``store.main.clinical``), which no TEMP table shadows."""
    rows = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [text]).fetchall()
    try:
        tree: Any = json.loads(rows[0][0]) if rows else {}
    except (ValueError, RecursionError):
        return False
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if (node.get("type") == "BASE_TABLE" and str(node.get("table_name", "")).lower() == SHADOWED
                    and ALIAS in (str(node.get("catalog_name", "")).lower(), str(node.get("schema_name", "")).lower())):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _shadow(con: duckdb.DuckDBPyConnection, table: pl.DataFrame) -> None:
    """Make ``table`` the session's ``clinical``: a TEMP table of the store table's own column types."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SHADOWED} AS SELECT * FROM {ALIAS}.main.{SHADOWED} LIMIT 0")
    con.register(_REGISTERED, table.to_arrow())
    try:
        con.execute(f"INSERT INTO temp.main.{SHADOWED} BY NAME SELECT * FROM {_REGISTERED}")
    finally:
        con.unregister(_REGISTERED)


def _same(a: pl.Series, b: pl.Series) -> pl.Series:
    """Per row: both missing, or equal."""
    return (a.is_null() & b.is_null()) | (a == b).fill_null(False)


def _aligned(cohort: Cohort, observed_ids: set[str], frame: pl.DataFrame, source: str, imp: int) -> pl.DataFrame:
    """Imputation ``imp``'s cohort rows checked against the observed run and laid out as ``cohort.frame``."""
    ids = set(frame["patient_id"].to_list())
    extra, gone = sorted(ids - observed_ids), sorted(observed_ids - ids)
    if extra or gone:
        who = (f"selects patient {extra[0]!r}, whom the observed data leave out" if extra
               else f"leaves out patient {gone[0]!r}, whom the observed data select")
        raise CohortError(f"{source}: on imputation {imp} the cohort {who}; a cohort may not select patients by an "
                          "imputed value (every imputation must give the same patients)")
    clinical = [c for c in cohort.frame.columns if c not in RESERVED]
    lacking = [c for c in clinical if c not in frame.columns]
    if lacking:
        raise CohortError(f"{source}: on imputation {imp} the cohort does not return {lacking}")
    keep = cohort.frame.select("patient_id").join(frame, on="patient_id", how="left", maintain_order="left")
    for col in OUTCOME:
        if col in cohort.frame.columns and col in keep.columns:
            same = _same(cohort.frame[col].cast(pl.Float64), keep[col].cast(pl.Float64))
            if not same.all():
                k = int((~same).arg_true()[0])
                raise CohortError(
                    f"{source}: imputation {imp} gives patient {cohort.frame['patient_id'][k]!r} {col} = "
                    f"{keep[col][k]}, the observed data {cohort.frame[col][k]}; outcomes are never imputed (leave "
                    f"the outcome out of the imputed columns, or do not compute {col} from an imputed column)")
    return cohort.frame.with_columns([keep[c].cast(cohort.frame[c].dtype, strict=False).alias(c) for c in clinical])


def completed_cohorts(
    study: StudyConfig, cohort: Cohort, fill: Callable[[pl.DataFrame], Sequence[pl.DataFrame]],
) -> tuple[pl.DataFrame, ...]:
    """Run ``cohort``'s SQL once per completed ``clinical`` table and return each run laid out as ``cohort.frame``.

    Parameters
    ----------
    study
        The study whose store, views and ``[sql]`` limits the cohort ran with.
    cohort
        The observed cohort (:func:`analytics.cohort.load_cohort`).
    fill
        Given the store's ``clinical`` table (:func:`observed_clinical`), returns its completed versions, one per
        imputation, same rows and columns.

    Returns
    -------
    tuple of polars DataFrame
        Per imputation, ``cohort.frame`` with its clinical columns from that imputation's run.

    Raises
    ------
    CohortError
        The cohort or a view reads ``store.clinical``; an imputation selects other patients, or changes an outcome.
    """
    source = str(cohort.file)
    views = view_files(study)
    with read_only(study.store_path, views, [study.root], study.sql) as session:
        for where, text in [(source, cohort.sql), *((str(p), p.read_text(encoding="utf-8")) for p in views.values())]:
            if _qualified_reads(session.con, text):
                raise CohortError(f"{where}: reads {ALIAS}.{SHADOWED}, which [imputation] from cannot fill; "
                                  f"name the table {SHADOWED} unqualified")
        patients = store.query(session.con, "SELECT patient_id FROM patients")["patient_id"]
        codes = _codes(study)
        observed = check_cohort(run_select(session, cohort.sql, cohort.params, source), source, patients, codes)
        observed_ids = set(observed["patient_id"].to_list())
        tables = fill(observed_clinical(session))
        out = []
        for i, table in enumerate(tables, start=1):
            _shadow(session.con, table)
            frame = check_cohort(run_select(session, cohort.sql, cohort.params, f"{source} (imputation {i})"),
                                 source, patients, codes)
            out.append(_aligned(cohort, observed_ids, frame, source, i))
    return tuple(out)


__all__ = ["OUTCOME", "SHADOWED", "completed_cohorts", "observed_clinical"]
