"""A model that predicts fewer patients than its cohort says so: in fit's result, the log, and run's summary."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from analytics.fit import fit, stored_predictions
from analytics.run import RunResult, StageOutcome
from pipeline import store

from model_helpers import ALL_KINDS, make_study, write_cohort_store

MIL = next(m for m in ALL_KINDS if m["kind"] == "mil")
CLIN = next(m for m in ALL_KINDS if m["name"] == "clin")


def test_patients_lost_to_damaged_instance_files_are_named(
    tmp_path: Path, cohort_data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    path = write_cohort_store(tmp_path, {**cohort_data, "lacking": []})
    os.truncate(store.instance_path(path, "tiles", "P07-S1"), 100)  # a training patient
    store.instance_path(path, "tiles", "P41-S1").unlink()  # an external one
    study = make_study(tmp_path, [{**CLIN, "grid": {"C": [1.0]}}, MIL])
    with caplog.at_level(logging.WARNING):
        result = fit(study, progress=False)

    n = cohort_data["patients"].height
    predicted = set(stored_predictions(study.store_path, "img_mil")["patient_id"])
    assert predicted == set(cohort_data["ids"]) - {"P07", "P41"}
    line = f"model 'img_mil': 2 of the cohort's {n} patients have no prediction, lacking tiles:instances (P07, P41)"
    assert f"warning: {line}" in str(result).splitlines()
    assert "model 'clin'" not in "\n".join(x for x in str(result).splitlines() if x.startswith("warning:"))
    fit_warnings = [r.getMessage() for r in caplog.records if r.name == "cohortlab.fit" and r.levelno == logging.WARNING]
    assert fit_warnings == [line]
    # the store said why: both files are named in its warning
    store_warnings = " ".join(r.getMessage() for r in caplog.records if r.name == "cohortlab.store")
    assert "P07-S1.parquet" in store_warnings and "P41-S1.parquet" in store_warnings

    # an up-to-date second fit warns again, and run's summary carries the line
    again = fit(study, progress=False)
    assert {m.status for m in again.models} == {"up to date"}
    assert f"warning: {line}" in str(again).splitlines()
    run = RunResult(study, [StageOutcome("fit", 1.0, True, str(again))])
    assert run.warnings[-1] == f"fit: {line}"  # after one line per damaged file, naming it and why
    assert [w.split(": ")[2] for w in run.warnings[:-1]] == ["tiles / P07-S1", "tiles / P41-S1"]
    assert f"  fit: {line}" in str(run).splitlines()
