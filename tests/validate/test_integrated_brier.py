"""The integrated Brier score of survival models in validation: the saved risk grid and ``ibs``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from censored_helpers import censored_study

from analytics import stats
from analytics.cohort import load_cohort
from analytics.fit import fit, stored_predictions
from analytics.models.persist import read_horizon_risks, read_risk_grid, risk_grid_times
from analytics.validation.stage import load_validation, validate

SPLITS = ("train", "internal", "external")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from analytics.report import write_report

    study = censored_study(tmp_path_factory.mktemp("ibs"), label_horizon="")
    fit(study, progress=False)
    validate(study, progress=False, force=True)
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    html = write_report(study, progress=False).path.read_text(encoding="utf-8")
    yield {"study": study, "metrics": metrics, "html": html}


def test_risk_grid_times_span_zero_to_the_last_horizon() -> None:
    grid = risk_grid_times([8.0, 15.0], points=5)
    assert grid == [3.0, 6.0, 8.0, 9.0, 12.0, 15.0]
    assert risk_grid_times([]) == []
    assert len(risk_grid_times([1, 3, 5])) == 100  # 1, 3 and 5 are on the evenly spaced grid


def test_saved_grid_agrees_with_the_horizon_risks(run: dict[str, Any]) -> None:
    folder = run["study"].models_dir / "cox"
    grid = read_risk_grid(folder, run["study"].store_path)
    assert grid is not None
    assert sorted(set(grid["time"].to_list())) == risk_grid_times([8.0, 15.0])
    at = read_horizon_risks(folder, run["study"].store_path)
    assert at is not None
    both = at.join(grid.rename({"time": "horizon", "risk": "grid_risk"}), on=["patient_id", "horizon"])
    assert both.height == at.height
    assert np.array_equal(both["risk"].to_numpy(), both["grid_risk"].to_numpy())
    # risks grow with time for every patient
    wide = grid.sort("time").group_by("patient_id").agg(pl.col("risk"))
    assert all(np.all(np.diff(np.asarray(r)) >= 0) for r in wide["risk"].to_list())


def test_ibs_equals_integrated_brier_on_the_saved_risks(run: dict[str, Any]) -> None:
    study, metrics = run["study"], run["metrics"]
    cohort = load_cohort(study)
    grid = read_risk_grid(study.models_dir / "cox", study.store_path)
    assert grid is not None
    times = sorted(set(grid["time"].to_list()))
    for split in SPLITS:
        part = (stored_predictions(study.store_path, "cox").filter(pl.col("split") == split)
                .join(cohort.frame.select("patient_id", "time", "event"), on="patient_id"))
        ids = part["patient_id"].to_list()
        wide = grid.filter(pl.col("patient_id").is_in(ids)).pivot("time", index="patient_id", values="risk")
        risk = part.select("patient_id").join(wide, on="patient_id", how="left").drop("patient_id").to_numpy()
        time, event = part["time"].to_numpy(), part["event"].to_numpy()
        assert time.max() > times[-1]  # follow-up past the last horizon: the whole grid is used
        want = stats.integrated_brier(time, event, risk, times)
        got = metrics["models"]["cox"]["splits"][split]["ibs"]
        assert got["estimate"] == pytest.approx(want, rel=1e-10)
        assert "[0, 15]" in got["method"] and "Graf 1999" in got["method"]
        # the step integral of Brier(t) over [0, 15], by hand
        bs = stats.brier(time, event, risk, times).estimate
        hand = float(np.sum(bs[:-1] * np.diff(times))) / times[-1]
        assert got["estimate"] == pytest.approx(hand, rel=1e-10)
        assert 0 < got["estimate"] < 0.25
    # binary models have no risk grid and no ibs
    assert all("ibs" not in m for m in metrics["models"]["logit"]["splits"].values())


def test_ibs_in_the_summary_and_the_report(run: dict[str, Any]) -> None:
    study, metrics = run["study"], run["metrics"]
    summary = load_validation(study).summary.filter((pl.col("model") == "cox") & (pl.col("measure") == "ibs"))
    assert sorted(summary["split"].to_list()) == sorted(SPLITS)
    for split in SPLITS:
        e = metrics["models"]["cox"]["splits"][split]["ibs"]
        assert summary.filter(pl.col("split") == split)["estimate"].item() == e["estimate"]
        assert f'data-metric="cox|{split}|ibs">{e["estimate"]:.3f}' in run["html"]
    assert "Integrated Brier score, IPCW" in run["html"]
