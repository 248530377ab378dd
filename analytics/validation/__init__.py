"""The typed result of validation: every measure of every model and split, with its interval.

:class:`Validation` is what :func:`analytics.validation.stage.validate` computes and what
it writes ``metrics.json``, ``metrics.csv`` and ``curves.json`` from, so the three
agree by construction; :meth:`Validation.from_json` reads them back (notebooks,
the report). In a notebook::

    v = cohortlab.load_study("study.toml").validation()
    v.summary                      # polars: model, split, measure, estimate, low, high, method, ...
    v.print_summary()              # a fixed-width table
    v.compare("fusion", "clinical")  # paired DeLong test per split
    v.curve("fusion", "external", "roc")

The measures of one split are a declarative table, :data:`MEASURES`: one row per
measure with its name (as in ``metrics.csv``), the function that computes it,
how its interval (or value) is obtained, and what it needs (a threshold,
bootstrap resamples, follow-up, risk groups). :func:`measure_split` runs the
table; a measure that cannot be computed on a split is left out with a note.

Numbers are held as written: floats rounded to 12 significant digits,
undefined values (NaN) as ``None``.

The package, one job per module:

* :mod:`~analytics.validation.values`: numbers as written, :class:`Estimate`, :class:`ValidateError`;
* :mod:`~analytics.validation.measures`: the measures table of one split (:data:`MEASURES`,
  :func:`measure_split`) and its result, :class:`SplitMetrics`;
* :mod:`~analytics.validation.records`: per-centre metrics, thresholds, comparisons, added value;
* :mod:`~analytics.validation.subgroups`: the measures per subgroup;
* :mod:`~analytics.validation.internal`: the optimism-corrected internal validation from fit's replicates;
* :mod:`~analytics.validation.result`: :class:`Validation`, written as and read from the metrics files;
* :mod:`~analytics.validation.stage`: the validate stage (:func:`analytics.validation.stage.validate`),
  imported on its own: it reads the store and the cohort, the rest of the package does not.
"""

from __future__ import annotations

from analytics.validation.internal import CorrectedCurve, InternalMetrics, InternalRow
from analytics.validation.measures import (
    CURVES,
    MEASURES,
    MeasureRow,
    Need,
    SplitInputs,
    SplitMetrics,
    Value,
    horizon_name,
    ipcw_name,
    measure_split,
)
from analytics.validation.records import (
    AddedValue,
    CenterMetrics,
    Cutpoints,
    ModelMetrics,
    PairedComparison,
    Threshold,
    added_value_inputs,
    paired_comparisons,
)
from analytics.validation.result import CSV_COLUMNS, SUMMARY_COLUMNS, SUMMARY_SCHEMA, Validation
from analytics.validation.subgroups import SubgroupMetrics, subgroup_labels, subgroup_metrics, subgroup_order
from analytics.validation.values import (
    CALIBRATION,
    THRESHOLD_CHOSEN_ON,
    Estimate,
    LogRank,
    ValidateError,
    clean,
    fmt_number,
    jsonable,
    safe,
)

__all__ = [
    "AddedValue",
    "CALIBRATION",
    "CSV_COLUMNS",
    "CURVES",
    "CenterMetrics",
    "CorrectedCurve",
    "Cutpoints",
    "Estimate",
    "LogRank",
    "InternalMetrics",
    "InternalRow",
    "MEASURES",
    "MeasureRow",
    "ModelMetrics",
    "Need",
    "PairedComparison",
    "SUMMARY_COLUMNS",
    "SUMMARY_SCHEMA",
    "SplitInputs",
    "SplitMetrics",
    "SubgroupMetrics",
    "THRESHOLD_CHOSEN_ON",
    "Threshold",
    "ValidateError",
    "Validation",
    "Value",
    "added_value_inputs",
    "clean",
    "fmt_number",
    "horizon_name",
    "ipcw_name",
    "jsonable",
    "measure_split",
    "paired_comparisons",
    "safe",
    "subgroup_labels",
    "subgroup_metrics",
    "subgroup_order",
]
