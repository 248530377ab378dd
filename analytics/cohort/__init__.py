"""Cohorts: SQL files that pick patients, checked, split, and joined with stored features.

A cohort is one read-only SQL query (``sql/cohorts/<name>.sql``, or
``<study>/cohorts/<name>.sql``, which wins on a name clash) that returns one row
per patient: ``patient_id`` and ``label`` (0/1/NULL), optionally ``time``,
``event``, ``center``, ``split``, and any clinical columns.

Running one:

* The store is opened read-only in a sandbox (:mod:`analytics.cohort.sandbox`):
  SQL reads files only below the study's folder and the store's ``instances/``,
  no URL, no extension, and cannot change that configuration. Every
  ``sql/views/<name>.sql`` (and ``<study>/views/<name>.sql``, which wins)
  holds one SELECT and becomes the TEMP VIEW ``<name>`` on that connection. A
  view that does not bind on this store (it names a column the store lacks) is
  skipped and named in the error of any cohort that then fails to find it.
* The file must hold exactly one SELECT (``WITH`` / ``FROM`` / ``VALUES`` are
  SELECTs) whose parse tree holds only query nodes at any depth; anything else
  (INSERT, CREATE, DROP, COPY, ATTACH, SET, ..., or a COPY or data change
  inside a CTE) is refused before it runs (EXPLAIN ANALYZE too: it runs what it
  explains); a plan that writes is refused too, and the read-only connection
  refuses writes to the store anyway. ``[sql]`` in study.toml bounds each
  statement's time and memory; Ctrl-C stops one.
* Named parameters (``$min_age``, ``$centers`` a list) are bound by DuckDB,
  never pasted into the text. Values come from ``study.toml``
  (``[cohort] params``, applied to the study's own cohort) overlaid by the
  caller's (``--param name=value``). A parameter the SQL needs but nobody gave,
  or one given but not used (a misspelt name, with the likely intended one),
  is an error.
* Checks, each naming the file, the column and the result rows: columns
  ``patient_id`` and ``label`` present; at least one row; ``patient_id`` not
  NULL, unique and present in the store's ``patients``; ``label`` and ``event``
  0, 1 or NULL (``event``: the declared status codes or NULL when the study's
  event variable declares ``codes``, competing causes); ``time`` numeric and not
  negative.
* Rows are ordered by ``patient_id`` (whatever the SQL's order), ``center``
  comes from ``patients`` when the SQL does not return it, and the split rule
  (:mod:`analytics.splits`) adds ``split``.

The result, :class:`Cohort`, is what models consume; see its docstring.

Modules: :mod:`~analytics.cohort.files` (finding SQL files),
:mod:`~analytics.cohort.sql` (the read-only runner) and its
:mod:`~analytics.cohort.sandbox`, :mod:`~analytics.cohort.checks` (row checks),
:mod:`~analytics.cohort.features` (feature and bag readers),
:mod:`~analytics.cohort.frame` (the :class:`Cohort` and building one),
:mod:`~analytics.cohort.overview` (the cohort stage) and :mod:`~analytics.cohort.summary` (what it leaves
for the report).
"""

from __future__ import annotations

from analytics.cohort import sandbox
from analytics.cohort.checks import RESERVED, check_cohort
from analytics.cohort.errors import CohortError
from analytics.cohort.features import (
    DEFAULT_POOLING,
    Bags,
    FeatureBlock,
    feature_coverage,
    feature_key,
    read_bags,
    read_block,
)
from analytics.cohort.files import cohort_dirs, cohort_name, cohort_params, find_cohort, view_files
from analytics.cohort.frame import Cohort, build_cohort, load_cohort, verify_instances
from analytics.cohort.overview import cohort_overview
from analytics.cohort.sql import Session, create_views, read_only, run_select, run_sql

__all__ = [
    "DEFAULT_POOLING",
    "RESERVED",
    "Bags",
    "Cohort",
    "CohortError",
    "FeatureBlock",
    "Session",
    "build_cohort",
    "check_cohort",
    "cohort_dirs",
    "cohort_name",
    "cohort_overview",
    "cohort_params",
    "create_views",
    "feature_coverage",
    "feature_key",
    "find_cohort",
    "load_cohort",
    "read_bags",
    "read_block",
    "read_only",
    "run_select",
    "run_sql",
    "sandbox",
    "verify_instances",
    "view_files",
]
