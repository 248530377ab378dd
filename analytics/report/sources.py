"""What the report reads from one study run (it writes nothing but the report): metrics and curves,
the store, the cohort, the fitted-model records and the explanation manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from analytics.models.artifacts import FitRecord
from analytics.report.cells import ReportError
from analytics.validation import ValidateError, Validation
from pipeline import store
from pipeline.config import StudyConfig


@dataclass(frozen=True)
class Sources:
    """Everything the report reads from one study run."""

    study: StudyConfig
    validation: Validation | None
    curves: dict[str, Any]
    predictions: pl.DataFrame
    store_patients: pl.DataFrame
    feature_sets: pl.DataFrame
    coverage: dict[str, int]
    failed: pl.DataFrame
    variables: pl.DataFrame
    cohort: Any | None
    cohort_error: str | None
    manifests: dict[str, FitRecord]
    explain: dict[str, Any] | None
    warnings: tuple[str, ...] = ()
    summary: Any | None = None  # what the cohort stage left (analytics.cohort.summary.CohortSummary), if read


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None


def model_names(study: StudyConfig, validation: Validation | None, predictions: pl.DataFrame) -> list[str]:
    present = set(validation.models if validation is not None else ()) | set(predictions.get_column("model").unique().to_list())
    ordered = [m.name for m in study.models if m.name in present]
    return ordered + sorted(present - set(ordered))


def read_sources(study: StudyConfig) -> Sources:
    """Read metrics, curves, the store, the cohort, model and explanation manifests of ``study``."""
    from analytics.cohort import CohortError, feature_coverage, load_cohort
    from analytics.cohort.summary import read_summary
    from analytics.splits import SplitError

    out = study.report_dir
    metrics = _read_json(out / "metrics.json")
    curves = _read_json(out / "curves.json") or {}
    try:
        validation = (Validation.from_dict(metrics, str(out / "metrics.json"), order=[m.name for m in study.models],
                                           curves=curves) if metrics is not None else None)
    except ValidateError as exc:
        raise ReportError(str(exc)) from None
    explain = _read_json(out / "explain" / "manifest.json")
    warnings: list[str] = []
    con = store.connect(study.store_path, read_only=True)
    try:
        patients = store.query(con, "SELECT patient_id, center FROM patients ORDER BY patient_id")
        fsets = store.feature_sets(con)
        failed = store.failed_items(con)
        variables = store.query(con, "SELECT name, type, unit, role, label, n_missing FROM variables ORDER BY name")
        predictions = store.read_predictions(con)
        cohort, cohort_error, summary = None, None, None
        if study.cohort is not None:
            # what the cohort stage left, when validate computed the metrics from that same cohort: no SQL run
            # and no Table 1 computed here, so the report's time does not grow with the cohort
            summary = read_summary(study)
            if summary is not None and validation is not None and validation.cohort_hash not in (None, summary.hash):
                summary = None
            if summary is not None:
                cohort = summary.cohort(study.store_path)
            else:
                try:
                    cohort = load_cohort(study)
                except (CohortError, SplitError) as exc:
                    cohort_error = str(exc)
                    warnings.append(f"the cohort could not be loaded: {exc}")
        coverage: dict[str, int] = {}
        if summary is not None:
            names = set(fsets.get_column("name").to_list()) if fsets.height else set()
            coverage = {k: v for k, v in summary.coverage.items() if k in names}
        elif cohort is not None and fsets.height:
            refs = [f"{name}:instances" for name in fsets.get_column("name").to_list()]
            cov = feature_coverage(con, cohort.patient_ids, refs)
            coverage = {r["features"].split(":")[0]: int(r["patients"]) for r in cov.to_dicts()}
    finally:
        con.close()
    from analytics.models.persist import read_record

    manifests: dict[str, FitRecord] = {}
    for m in study.models:
        # every file of the model's folder checked against the store's sha256 first (one line naming a
        # changed file, or a folder an older cohortlab pickled)
        record = read_record(study.models_dir / m.name, study.store_path)
        if record is not None:
            manifests[m.name] = record
    if validation is not None and cohort is not None:
        if validation.cohort_hash not in (None, cohort.hash):
            warnings.append("the cohort has changed since the metrics were computed (cohort hash differs); "
                            "run `cohortlab validate` again")
        if predictions.height and validation.inputs_digest != _inputs_digest(study, predictions, cohort):
            warnings.append("the predictions or settings have changed since the metrics were computed; "
                            "run `cohortlab validate` again")
    return Sources(study, validation, curves, predictions, patients, fsets, coverage, failed, variables, cohort,
                   cohort_error, manifests, explain, tuple(warnings), summary)


def _inputs_digest(study: StudyConfig, predictions: pl.DataFrame, cohort: Any) -> str:
    """validate's digest of its inputs, recomputed to tell whether metrics.json is current."""
    from analytics.validation.stage import inputs_digest, outcome_columns

    cols = outcome_columns(study, cohort.frame.columns)
    return inputs_digest(study, predictions, cohort.frame.select(cols).rename({"split": "cohort_split"}))
