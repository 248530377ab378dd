"""The validation report: one self-contained HTML file per study, ``<report_dir>/index.html``.

What it reads (it writes nothing but the report):

* ``metrics.json`` / ``curves.json`` from :mod:`analytics.validation.stage`, read back
  as a :class:`~analytics.validation.Validation` (every number in the
  performance, comparison and survival tables comes from it, formatted, never
  recomputed);
* the store: patients, feature-set provenance, failed embedding items, the
  ``variables`` dictionary and the ``predictions`` table (for the ROC curves and
  their bootstrap bands, and the calibration rugs);
* the cohort as the cohort stage left it (:mod:`analytics.cohort.summary`: its
  frame, Table 1 and the cohort's part of the participant flow) when validate
  computed the metrics from that same cohort, else the cohort itself
  (:func:`analytics.cohort.load_cohort`): participant flow, Table 1, missing data;
* model manifests ``<study>/models/<name>/manifest.json`` when ``fit`` wrote
  them (else the ``study.toml`` entries), and ``<report_dir>/explain/manifest.json``.

Curves are drawn thinned by Ramer–Douglas–Peucker to 0.001 of each axis
(:func:`analytics.figures.thin`; ``curves.json`` keeps every point), so the
report's time does not grow with the number of patients. Figures are PNGs
embedded as base64 ``data:`` URIs, the CSS is inline and
there are no scripts, so the file reads offline and prints (print CSS starts
each section on a new page and keeps table rows and figures whole). Every
performance cell carries ``data-metric="model|split|metric"`` (metric names as
in ``metrics.csv``; per-centre cells ``model|center:<centre>/<split>|metric``)
so the numbers can be checked against ``metrics.json``. A number that is not
defined for the data (one class, constant predictions, a model no better than
chance ...) is shown as "–" in an element of class ``na`` whose ``title`` says why.
Same inputs give a byte-identical file: no time stamps, PNGs without
software metadata, seeded bootstraps.

The package, one job per module:

* :mod:`~analytics.report.sources`: what the report reads from a run (:class:`Sources`);
* :mod:`~analytics.report.cells`: number formatting, table cells and why a number is missing;
* :mod:`~analytics.report.tables`: flow, missing data, feature sets, performance, comparisons, added value;
* :mod:`~analytics.report.fitted`: views of the fitted-model records (models table, sample size, nomograms,
  ComBat);
* :mod:`~analytics.report.plots`: the figures, embedded as PNG data URIs;
* :mod:`~analytics.report.context`: every section assembled, and the TRIPOD+AI facts
  (:mod:`~analytics.report.tripod` fills the checklist);
* :mod:`~analytics.report.writer`: the HTML, and ``index.html`` written unless its inputs are unchanged
  (:func:`write_report`, the report stage).
"""

from __future__ import annotations

from analytics.report.cells import (
    COMPLETE_CASES,
    FOLLOWED,
    FOLLOWED_IPCW,
    NA,
    SPLIT_NAMES,
    THRESHOLD_MEASURES,
    Cell,
    Embedded,
    ReportError,
    fmt,
    fmt_count,
    fmt_interval,
    fmt_p,
    measure_basis,
    metric_cell,
    missing_reason,
    na_cell,
    noted,
    split_notes,
)
from analytics.report.context import SECTIONS, build_context
from analytics.report.fitted import (
    MIL_SHOWN,
    class_weights,
    harmonization_blocks,
    load_fitted,
    manifest_facts,
    model_rows,
    nomogram_figures,
    parameter_count,
    sample_size_rows,
    training_estimates,
    tuning_text,
)
from analytics.report.plots import (
    BUDGET_WORDS,
    EXPLAIN_TYPES,
    calibration_figures,
    decision_figures,
    decision_overlays,
    explain_budget,
    explanation_figures,
    forest,
    horizon_blocks,
    km_at_risk,
    roc_figures,
    scored_predictions,
    subgroup_blocks,
    survival_blocks,
)
from analytics.report.sources import Sources, read_sources
from analytics.report.tables import (
    HORIZON_ROWS,
    IPCW_ROWS,
    METRIC_ROWS,
    UNDEFINED_COMPARISON,
    added_value_blocks,
    comparisons,
    feature_set_rows,
    flow,
    missing_data,
    performance,
    weights_text,
)
from analytics.report.writer import (
    DIGEST_MARK,
    TEMPLATES,
    ReportOutcome,
    environment,
    inputs_digest,
    render,
    rendered_digest,
    write_report,
)

__all__ = [
    "BUDGET_WORDS",
    "COMPLETE_CASES",
    "Cell",
    "DIGEST_MARK",
    "EXPLAIN_TYPES",
    "Embedded",
    "FOLLOWED",
    "FOLLOWED_IPCW",
    "HORIZON_ROWS",
    "IPCW_ROWS",
    "METRIC_ROWS",
    "MIL_SHOWN",
    "NA",
    "ReportError",
    "ReportOutcome",
    "SECTIONS",
    "SPLIT_NAMES",
    "Sources",
    "TEMPLATES",
    "THRESHOLD_MEASURES",
    "UNDEFINED_COMPARISON",
    "added_value_blocks",
    "build_context",
    "calibration_figures",
    "class_weights",
    "comparisons",
    "decision_figures",
    "decision_overlays",
    "environment",
    "explain_budget",
    "explanation_figures",
    "feature_set_rows",
    "flow",
    "fmt",
    "fmt_count",
    "fmt_interval",
    "fmt_p",
    "forest",
    "harmonization_blocks",
    "horizon_blocks",
    "inputs_digest",
    "km_at_risk",
    "load_fitted",
    "manifest_facts",
    "measure_basis",
    "metric_cell",
    "missing_data",
    "missing_reason",
    "model_rows",
    "na_cell",
    "nomogram_figures",
    "noted",
    "parameter_count",
    "performance",
    "read_sources",
    "render",
    "rendered_digest",
    "roc_figures",
    "sample_size_rows",
    "scored_predictions",
    "split_notes",
    "subgroup_blocks",
    "survival_blocks",
    "training_estimates",
    "tuning_text",
    "weights_text",
    "write_report",
]
