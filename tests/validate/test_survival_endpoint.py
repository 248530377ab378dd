"""Survival endpoints: a cohort may return time and event without a label; survival measures use every
patient with follow-up, labelled or not; the participant flow counts them as having an outcome."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from study_builders import build_study, study_toml

from analytics.cohort import load_cohort
from analytics.fit import fit, stored_predictions
from analytics.report import flow
from analytics.validation.stage import lp_calibration, validate
from pipeline.config import load_config

N = 160
# R's answers on Royston & Altman's own example (Rotterdam -> GBSG); made by tests/stats/royston_fixture.R
ROYSTON = Path(__file__).parents[1] / "stats" / "royston_fixture.json"


def _study(tmp_path: Path, with_label: bool, extra_models: str = "") -> Path:
    rng = np.random.default_rng(5)
    x = rng.normal(size=N)
    t_event = rng.exponential(20.0 / np.exp(1.2 * x))
    t_cens = rng.uniform(5, 40, N)
    time = np.minimum(t_event, t_cens).round(3)
    event = (t_event <= t_cens).astype(int)
    # a label "event within 10" known only where follow-up decides it: censored before 10 -> NULL
    label = np.where(event & (time <= 10), 1, np.where(time > 10, 0, -1))
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 110, "A", "B"),
        "x": x.round(4), "age": rng.normal(60, 8, N).round(1),
        "label": pl.Series(label).replace(-1, None), "time": time, "event": event,
    })
    cols = "c.label, c.time, c.event" if with_label else "c.time, c.event"
    build_study(tmp_path, patients, f"{cols}, c.x, c.age", study_toml("surv", 2, f"""[[models]]
name = "cox"
kind = "cox"
clinical = ["x", "age"]
{extra_models}
[validation]
n_boot = 50
folds = 3
horizons = [8, 15]
""", study='endpoint = "survival"'))
    return tmp_path


def _metrics(root: Path) -> dict:
    study = load_config(root / "study.toml")
    fit(study, progress=False)
    validate(study, progress=False, force=True)
    return json.loads((study.report_dir / "metrics.json").read_text())


def test_survival_metrics_use_unlabelled_patients(tmp_path: Path) -> None:
    root = _study(tmp_path, with_label=True)
    study = load_config(root / "study.toml")
    cohort = load_cohort(study)
    unlabelled = cohort.frame.filter(pl.col("label").is_null())
    assert unlabelled.height > 10  # the censored-before-10 patients
    metrics = _metrics(root)
    preds = stored_predictions(study.store_path, "cox").join(cohort.frame.select("patient_id", "time", "event"),
                                                             on="patient_id")
    for split in ("train", "internal", "external"):
        part = preds.filter(pl.col("split") == split)
        m = metrics["models"]["cox"]["splits"][split]
        # every patient with follow-up, labelled or not
        assert m["n_survival"] == part.height == int((cohort.split == split).sum())
        assert m["n_events"] == int(part["event"].sum())
        harrell = concordance_index(part["time"].to_numpy(), -part["score"].to_numpy(), part["event"].to_numpy())
        assert m["c_index"]["estimate"] == pytest.approx(harrell, abs=1e-9)
    ext = metrics["models"]["cox"]["splits"]["external"]
    assert ext["c_index"]["estimate"] > 0.65 and ext["c_index_uno"]["estimate"] > 0.6
    assert 0.6 < ext["auc_t8"]["estimate"] <= 1 and 0 < ext["brier_t8"]["estimate"] < 0.25
    # training patients in the outer folds include the unlabelled ones
    train_ids = set(preds.filter(pl.col("split") == "train")["patient_id"].to_list())
    assert set(unlabelled.filter(pl.col("split") == "train")["patient_id"].to_list()) <= train_ids


def test_a_cohort_without_label_fits_and_validates(tmp_path: Path) -> None:
    root = _study(tmp_path, with_label=False)
    study = load_config(root / "study.toml")
    cohort = load_cohort(study)
    assert cohort.frame["label"].null_count() == cohort.frame.height
    # splits are stratified on the event: every split holds events and censored patients
    for split in ("train", "internal", "external"):
        ev = cohort.frame.filter(pl.col("split") == split)["event"]
        assert 0 < ev.sum() < ev.len()
    metrics = _metrics(root)
    for split in ("train", "internal", "external"):
        m = metrics["models"]["cox"]["splits"][split]
        assert m["n"] == 0 and m["n_survival"] == int((cohort.split == split).sum())
        assert {"c_index", "c_index_uno", "auc_t8", "auc_t15", "brier_t8", "brier_t15", "ici_t8", "e90_t15"} <= set(m)
        assert "auc" not in m
    curves = json.loads((study.report_dir / "curves.json").read_text())["cox"]["external"]
    assert {"t8", "t15"} <= set(curves["horizons"])
    assert curves["decision_at"]["horizon"] == 8.0 and len(curves["decision_at"]["net_benefit"]) > 5
    roc = curves["horizons"]["t8"]["time_roc"]
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == pytest.approx(1.0) and roc["fpr"][-1] == pytest.approx(1.0)


def test_flow_counts_follow_up_as_an_outcome() -> None:
    patients = pl.DataFrame({"patient_id": ["a", "b", "c", "d"], "center": ["X"] * 4})
    frame = pl.DataFrame({"patient_id": ["a", "b", "c"], "label": [1, None, None], "time": [1.0, 2.0, None],
                          "event": [1, 0, None], "center": ["X"] * 3, "split": ["train"] * 3})
    preds = pl.DataFrame({"model": ["m", "m"], "patient_id": ["a", "b"]})
    binary = flow(patients, frame, preds, ["m"])
    assert [r["total"] for r in binary["rows"]] == [4, 3, 1, 1]
    surv = flow(patients, frame, preds, ["m"], survival=True, endpoint="survival")
    assert [r["total"] for r in surv["rows"]] == [4, 3, 2, 2]
    assert surv["splits"][0]["cells"][-1] == "2 (1)"


def test_report_shows_survival_models(tmp_path: Path) -> None:
    from analytics.report import write_report

    root = _study(tmp_path, with_label=True)
    metrics = _metrics(root)
    study = load_config(root / "study.toml")
    html = write_report(study, progress=False).path.read_text(encoding="utf-8")
    for split in ("train", "internal", "external"):
        assert f'id="fig-horizons-cox-{split}"' in html
        m = metrics["models"]["cox"]["splits"][split]
        for name in ("c_index", "c_index_uno", "auc_t8", "brier_t15"):
            e = m[name]
            assert f'data-metric="cox|{split}|{name}">{e["estimate"]:.3f}' in html
    ext = metrics["models"]["cox"]["splits"]["external"]
    # external validation of the linear predictor
    assert 0.3 < ext["lp_calibration_slope"]["estimate"] < 2.5
    assert abs(ext["baseline_survival_diff_t8"]["estimate"]) < 0.5
    # and the numbers are those of the external patients' stored scores (the statistic itself: test below)
    cohort = load_cohort(study).frame.select("patient_id", "time", "event")
    part = (stored_predictions(study.store_path, "cox").filter(pl.col("split") == "external")
            .join(cohort, on="patient_id"))
    cph = CoxPHFitter().fit(pd.DataFrame({"lp": part["score"].to_numpy(), "time": part["time"].to_numpy(),
                                          "event": part["event"].to_numpy()}), "time", "event",
                            fit_options={"precision": 1e-12})  # lifelines' default stops 2e-6 short of coxph
    assert ext["lp_calibration_slope"]["estimate"] == pytest.approx(float(cph.params_["lp"]), abs=1e-6)
    assert ext["lp_calibration_slope"]["high"] - ext["lp_calibration_slope"]["low"] == pytest.approx(
        2 * 1.959963984540054 * float(cph.standard_errors_["lp"]), abs=1e-6)
    assert "With a known outcome (label, or time and event)" in html
    assert "calibration slope of the linear predictor and the difference in baseline survival" in html  # TRIPOD


def test_lp_calibration_matches_r_on_the_royston_altman_example() -> None:
    """Calibration slope (with its Wald interval) and baseline-survival difference at 3 and 5 years agree with
    R survival on 686 GBSG patients: the slope (coxph, Efron ties) to 1e-6, the difference (survfit of the
    offset model, Breslow) to 1e-10."""
    ref = json.loads(ROYSTON.read_text(encoding="utf-8"))
    data = pl.read_csv(ROYSTON.with_suffix(".csv"))
    assert (data.height, int(data["status"].sum())) == (ref["n"], ref["events"])
    time = data["rfstime"].to_numpy() / 365.25
    event = data["status"].to_numpy().astype(np.float64)
    lp = data["lp"].to_numpy()
    h0 = np.asarray(ref["h0_development"])
    risk = 1.0 - np.exp(-np.outer(np.exp(lp), h0))  # the development model's saved risk at the horizons
    out, notes = lp_calibration(time, event, lp, ref["horizons"], risk, 0.95)
    assert notes == []
    slope = out["lp_calibration_slope"]
    r = ref["slope"]
    assert (slope.estimate, slope.low, slope.high) == pytest.approx((r["coef"], r["low"], r["high"]), abs=1e-6)
    assert slope.level == 0.95
    for t, diff in zip(ref["horizons"], ref["baseline_survival_diff"]):
        assert out[f"baseline_survival_diff_t{t:g}"].estimate == pytest.approx(diff, abs=1e-10)  # same arithmetic


STACKED = """
[[models]]
name = "forest"
kind = "rsf"
clinical = ["x", "age"]
params = {n_estimators = 30}
[[models]]
name = "noise"
kind = "cox"
clinical = ["age"]
[[models]]
name = "stack"
kind = "stacking"
members = ["cox", "noise"]
[[models]]
name = "vote"
kind = "voting"
members = ["cox", "forest"]
"""


def test_stacking_and_voting_take_survival_scores(tmp_path: Path) -> None:
    root = _study(tmp_path, with_label=True, extra_models=STACKED)
    study = load_config(root / "study.toml")
    assert study.endpoint("stack") == study.endpoint("vote") == "survival"
    metrics = _metrics(root)
    manifest = json.loads((study.models_dir / "stack" / "manifest.json").read_text())
    coef = manifest["chosen"]["coefficients"]
    assert coef["cox"] > 0.5 > abs(coef["noise"])  # the Cox meta-learner leans on the informative member
    for name in ("stack", "vote", "forest"):
        ext = metrics["models"][name]["splits"]["external"]
        assert ext["c_index"]["estimate"] > 0.6, name
    assert "auc_t8" in metrics["models"]["stack"]["splits"]["external"]  # absolute risk from the meta Cox
    assert "auc_t8" not in metrics["models"]["vote"]["splits"]["external"]  # an average of risks has none


def test_explain_skips_survival_models_with_a_note(tmp_path: Path) -> None:
    from analytics.explain.study import explain

    root = _study(tmp_path, with_label=True, extra_models=STACKED)
    study = load_config(root / "study.toml")
    fit(study, progress=False)
    result = explain(study, progress=False)
    status = {m.name: m.status for m in result.models}
    assert set(status.values()) == {"not explained"} and set(status) == {m.name for m in study.models}
    assert any("stack: a stacking model of a survival endpoint" in n for n in result.notes)
