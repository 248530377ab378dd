"""A Cox model validated on three external centres: per-centre C, O:E at the horizon from the Kaplan-Meier
risk and the calibration slope of the linear predictor, pooled across centres (split ``meta``)."""

from __future__ import annotations

import csv

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.fit import fit, stored_predictions
from analytics.stats import meta_analysis
from analytics.stats.cox_validation import cox_one
from analytics.validation.stage import load_validation, validate
from pipeline.config import StudyConfig

SPLIT = 'external_centers = ["C", "D", "E"]\ninternal_fraction = 0\nseed = 1'
MODELS = """[[models]]
name = "cox"
kind = "cox"
clinical = ["age", "marker"]
[validation]
n_boot = 20
folds = 2
horizons = [5]
updating = true
internal_external = true
[compute]
n_jobs = 1
"""


def _patients() -> pl.DataFrame:
    rng = np.random.default_rng(11)
    frames = []
    for center, n, rate in (("A", 220, 0.08), ("B", 220, 0.08), ("C", 140, 0.08), ("D", 140, 0.14), ("E", 140, 0.05)):
        age = rng.normal(60, 10, n)
        marker = rng.normal(0, 1, n)
        t = rng.exponential(1 / (rate * np.exp(0.03 * (age - 60) + 0.7 * marker)))
        c = rng.uniform(2, 12, n)
        frames.append(pl.DataFrame({"patient_id": [f"{center}{i:03d}" for i in range(n)], "center": center,
                                    "label": (t <= 5).astype(int), "time": np.minimum(t, c).round(3),
                                    "event": (t <= c).astype(int), "age": age.round(2), "marker": marker.round(4)}))
    return pl.concat(frames)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    root = tmp_path_factory.mktemp("mc_surv")
    s = build_study(root, _patients(), "c.label, c.time, c.event, c.age, c.marker",
                    study_toml("mcs", 5, MODELS, split=SPLIT))
    fit(s, progress=False)
    validate(s, progress=False)
    return s


def test_cox_model_centres_and_pooled_slope_and_oe(study: StudyConfig) -> None:
    with (study.report_dir / "metrics.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == "cox"]
    per = {(r["center"], r["metric"]): r for r in rows if r["split"] == "external" and r["center"]}
    preds = stored_predictions(study.store_path, "cox").filter(pl.col("split") == "external").join(
        _patients().select("patient_id", "center", "time", "event"), on="patient_id")
    slopes, ses = [], []
    for center in ("C", "D", "E"):
        part = preds.filter(pl.col("center") == center)
        f = cox_one(part["time"].to_numpy(), part["event"].to_numpy().astype(float), part["score"].to_numpy())
        assert float(per[(center, "lp_calibration_slope")]["estimate"]) == pytest.approx(f.coef, rel=1e-9)
        slopes.append(f.coef)
        ses.append(f.se)
        assert {(center, "c_index"), (center, "oe_ratio_t5"), (center, "auc_t5"), (center, "brier_t5"),
                (center, "lp_mean")} <= set(per)
    meta = {r["metric"]: r for r in rows if r["split"] == "meta"}
    want = meta_analysis.pool("lp_calibration_slope", slopes, [s**2 for s in ses])
    assert float(meta["lp_calibration_slope"]["estimate"]) == pytest.approx(want.estimate, rel=1e-9)
    assert {"c_index", "oe_ratio_t5", "c_index_prediction_interval"} <= set(meta)
    frame = load_validation(study).meta()
    external = frame.filter(pl.col("source") == "external")
    assert set(external["measure"]) == {"c_index", "oe_ratio_t5", "lp_calibration_slope", "auc_t5"}
    # centre D's hazard is higher than the model's: more events observed than expected by 5
    assert float(per[("D", "oe_ratio_t5")]["estimate"]) > float(per[("E", "oe_ratio_t5")]["estimate"])


def test_report_shows_the_survival_measures_by_centre(study: StudyConfig) -> None:
    from analytics.report import write_report

    html = write_report(study, progress=False).path.read_text(encoding="utf-8")
    assert '<section id="sec-multicentre">' in html
    assert "<th class=\"num\">C (Harrell)</th>" in html and "O:E at 5" in html
    assert '<figure id="fig-meta-cox-lp_calibration_slope">' in html


def test_cox_model_is_recalibrated_for_each_centre_as_apparent(study: StudyConfig) -> None:
    """Baseline survival at the horizon re-estimated with the linear predictor as an offset (update_cox, equal
    to R survfit in test_meta_stats.py); centre D's higher hazard gives a lower baseline survival there."""
    from analytics.stats.updating import update_cox

    data = __import__("json").loads((study.report_dir / "metrics.json").read_text())
    upd = {u["center"]: u for u in data["multicentre"]["cox"]["updated"]}
    assert set(upd) == {"C", "D", "E"}
    preds = stored_predictions(study.store_path, "cox").filter(pl.col("split") == "external").join(
        _patients().select("patient_id", "center", "time", "event"), on="patient_id")
    part = preds.filter(pl.col("center") == "D")
    want = update_cox(part["time"].to_numpy(), part["event"].to_numpy().astype(float), part["score"].to_numpy(), [5])
    assert upd["D"]["coef"]["baseline_survival"] == pytest.approx(list(want.baseline_survival), rel=1e-9)
    assert upd["D"]["coef"]["baseline_survival"][0] < upd["E"]["coef"]["baseline_survival"][0]
    assert upd["D"]["choice"] in ("baseline", "baseline and slope")
    assert upd["D"]["measures"]["oe_ratio_t5"]["method"].startswith("apparent")
    # recalibrated on D itself: its apparent O:E at 5 is close to 1
    assert abs(upd["D"]["measures"]["oe_ratio_t5"]["estimate"] - 1) < 0.1
    assert any(n.startswith("cox-updated-D: apparent performance") for n in data["notes"])


def test_cox_model_iecv_over_the_two_development_centres_is_pooled_by_fixed_effect(study: StudyConfig) -> None:
    with (study.report_dir / "metrics.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == "cox"]
    assert {r["center"] for r in rows if r["split"] == "iecv"} == {"A", "B"}
    pooled = {r["metric"]: r for r in rows if r["split"] == "meta_iecv"}
    assert pooled["c_index"]["method"].startswith("fixed effect")  # two centres: no tau² or prediction interval
    assert "c_index_tau2" not in pooled and "c_index_prediction_interval" not in pooled
