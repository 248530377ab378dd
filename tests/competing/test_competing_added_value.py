"""Added value between two competing-risk models (ΔAUC(t), ΔBrier(t) with paired influence-function SEs) against
riskRegression::Score's contrasts, wired into validation; internal validation (optimism) of AUC(t) and Brier(t)
of the cause; and the participant flow counting events per cause."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics import stats
from analytics.stats.competing_contrast import time_contrasts
from analytics.stats.competing_internal import optimism_competing
from analytics.stats.resampling import Replicate
from pipeline.config import StudyConfig

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "competing_contrast.json").read_text())
MGUS = pd.read_csv(DATA / "mgus2.csv")
TOL = 1e-6


def test_contrasts_equal_score_contrasts_cause_one() -> None:
    auc, brier = time_contrasts(MGUS.etime, MGUS.event, np.asarray(REF["risk"]["old"]),
                                np.asarray(REF["risk"]["new"]), REF["times"], cause=1)
    for res, table, column in ((auc, REF["auc"], "delta.AUC"), (brier, REF["brier"], "delta.Brier")):
        c = table["contrasts"]
        rows = [i for i, (m, r) in enumerate(zip(c["model"], c["reference"])) if (m, r) == ("new", "old")]
        assert len(rows) == 2
        np.testing.assert_allclose(res.times, np.take(c["times"], rows))
        for mine, theirs in ((res.delta, column), (res.se, "se"), (res.low, "lower"), (res.high, "upper"),
                             (res.p, "p")):
            np.testing.assert_allclose(mine, np.take(c[theirs], rows), rtol=0, atol=TOL)
        score = table["score"]
        metric = "AUC" if column == "delta.AUC" else "Brier"
        for name, mine in (("old", res.old), ("new", res.new)):
            ref = [v for m, v in zip(score["model"], score[metric]) if m == name]
            np.testing.assert_allclose(mine, ref, rtol=0, atol=TOL)


def test_contrast_of_a_model_with_itself_is_zero_and_marginals_match() -> None:
    rng = np.random.default_rng(1)
    n = 200
    time = rng.exponential(5, n).round(2)
    status = rng.choice([0, 1, 2], n, p=[0.3, 0.4, 0.3])
    risk = rng.uniform(0.05, 0.9, (n, 2))
    other = np.clip(risk + rng.normal(0, 0.1, risk.shape), 0, 1)
    auc, brier = time_contrasts(time, status, risk, other, [2, 4], cause=2)
    np.testing.assert_allclose(auc.new, stats.time_auc(time, status, other, [2, 4], cause=2).estimate, atol=1e-12)
    np.testing.assert_allclose(brier.old, stats.brier(time, status, risk, [2, 4], cause=2).estimate, atol=1e-12)
    same, _ = time_contrasts(time, status, risk, risk, [2, 4], cause=2)
    assert np.all(same.delta == 0) and np.all(same.se == 0)
    with pytest.raises(ValueError, match=r"risk_new must lie in \[0, 1\].*row 3, column 1"):
        bad = other.copy()
        bad[3, 1] = 1.5
        time_contrasts(time, status, risk, bad, [2, 4], cause=2)
    single = (status > 0).astype(int)  # one event type: the same contrast without a cause
    a1, _ = time_contrasts(time, single, risk, other, [2, 4])
    np.testing.assert_allclose(a1.old, stats.time_auc(time, single, risk, [2, 4]).estimate, atol=1e-12)


def test_flow_counts_events_per_cause_not_the_sum_of_codes() -> None:
    from analytics.cohort.summary import cohort_flow

    frame = pl.DataFrame({"patient_id": ["a", "b", "c", "d", "e"], "label": [None] * 5,
                          "center": ["A", "A", "A", "B", "B"], "split": ["train"] * 3 + ["external"] * 2,
                          "time": [1.0, 2.0, 3.0, 4.0, 5.0], "event": [2, 2, 1, 0, 2]},
                         schema_overrides={"label": pl.Int64})
    centers = frame.select("patient_id", "center")
    flow = cohort_flow(frame, centers, True, "event", {0: "censored", 1: "progression", 2: "death"})
    cells = {s["split"]: s["cells"] for s in flow["splits"]}
    assert cells["train"] == ["3 (1 progression, 2 death)", "–", "3 (1 progression, 2 death)"]
    assert cells["external"] == ["–", "2 (0 progression, 1 death)", "2 (0 progression, 1 death)"]
    plain = cohort_flow(frame.with_columns((pl.col("event") > 0).cast(pl.Int64)), centers, True, "event")
    assert {s["split"]: s["cells"] for s in plain["splits"]}["train"] == ["3 (3)", "–", "3 (3)"]


# --- wired into validation -----------------------------------------------------------------------------------

CODES = '[variables]\nstatus = { role = "event", codes = { "0" = "censored", "1" = "progression", "2" = "death" } }'
MODELS = """[[models]]
name = "csc"
kind = "cause_specific_cox"
clinical = ["x", "age"]

[[models]]
name = "fg"
kind = "fine_gray"
clinical = ["age"]

[[models]]
name = "cox_cs"
kind = "cox"
clinical = ["x"]
competing = "cause_specific"

[validation]
cause = "progression"
n_boot = 0
horizons = [4, 8]
added_value = [["csc", "fg"], ["cox_cs", "fg"]]
internal = "bootstrap"
B = 4
"""


def _patients(n: int = 120, seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t1, t2, c = rng.exponential(10 / np.exp(0.8 * x)), rng.exponential(15, n), rng.uniform(2, 25, n)
    time = np.minimum.reduce([t1, t2, c])
    return pl.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)],
                         "center": np.where(np.arange(n) < 80, "A", "B"), "x": x.round(4),
                         "age": rng.normal(60, 8, n).round(1), "time": time.round(3),
                         "status": np.select([time == t1, time == t2], [1, 2], 0)})


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    from analytics.fit import fit
    from analytics.validation.stage import validate

    root = tmp_path_factory.mktemp("competing_added")
    study = build_study(root, _patients(), "c.time, c.status AS event, c.x, c.age",
                        study_toml("cra", 1, MODELS, study='endpoint = "survival"', sections=CODES))
    fit(study, progress=False)
    validate(study, progress=False, force=True)
    return study


def _risks(study: StudyConfig, model: str, split: str) -> pl.DataFrame:
    from analytics.cohort import load_cohort
    from analytics.models.persist import read_horizon_risks

    frame = load_cohort(study).frame.filter(pl.col("split") == split).select("patient_id", "time", "event")
    risks = read_horizon_risks(study.models_dir / model, study.store_path)
    assert risks is not None
    return risks.pivot(on="horizon", index="patient_id", values="risk").join(frame, on="patient_id")


def test_validation_adds_delta_auc_and_brier_of_the_cause(validated: StudyConfig) -> None:
    metrics = json.loads((validated.report_dir / "metrics.json").read_text())
    pairs = [a for a in metrics["added_value"] if (a["new"], a["old"]) == ("csc", "fg")]
    assert {a["split"] for a in pairs} == {"train", "internal", "external"}
    ext = next(a for a in pairs if a["split"] == "external")
    new, old = _risks(validated, "csc", "external"), _risks(validated, "fg", "external")
    both = new.join(old.select("patient_id", *[pl.col(c).alias(f"old_{c}") for c in ("4.0", "8.0")]),
                    on="patient_id")
    time, status = both["time"].to_numpy(), both["event"].to_numpy()
    usable = [t for t in (4.0, 8.0) if t < time.max()]
    auc, brier = time_contrasts(time, status, both.select([f"old_{t}" for t in usable]).to_numpy(),
                                both.select([str(t) for t in usable]).to_numpy(), usable, cause=1)
    assert ext["n"] == both.height and ext["n_positive"] == int((status == 1).sum())
    assert [h["time"] for h in ext["horizons"]] == usable
    for h in ext["horizons"]:
        assert h["cause"] == "progression"
        for key, res in (("auc", auc), ("brier", brier)):
            for field in ("delta", "se", "low", "high", "p"):
                assert h[key][field] == pytest.approx(res.row(h["time"])[field], abs=1e-9)
    # the long table: one row per horizon and measure, labelled with the cause
    table = pl.read_csv(validated.report_dir / "metrics.csv")
    rows = table.filter((pl.col("model") == "csc vs fg") & (pl.col("split") == "external"))
    assert set(rows["metric"].to_list()) == {f"delta_{k}_t{t:g}" for k in ("auc", "brier") for t in usable}
    assert rows["cause"].unique().to_list() == ["progression"]


def test_added_value_refused_for_a_cause_specific_hazard_model(validated: StudyConfig) -> None:
    metrics = json.loads((validated.report_dir / "metrics.json").read_text())
    assert not [a for a in metrics["added_value"] if a["new"] == "cox_cs"]
    assert any("added value cox_cs over fg" in n and "no cumulative incidence" in n for n in metrics["notes"])
    # the cached Validation reads the records back with their horizons
    from analytics.validation.stage import load_validation

    v = load_validation(validated)
    assert any(a.horizons for a in v.added_value)


def test_cohort_summary_flow_counts_each_cause(validated: StudyConfig) -> None:
    from analytics.cohort import load_cohort
    from analytics.cohort.summary import read_summary, write_summary

    cohort = load_cohort(validated)
    write_summary(validated, cohort, cohort.frame.select("patient_id", "center"), {})
    summary = read_summary(validated)
    assert summary is not None
    total = summary.flow(True, "survival")["splits"][0]["cells"][-1]
    part = cohort.frame.filter(pl.col("split") == summary.flow(True, "survival")["splits"][0]["split"])
    ev = part["event"].to_numpy()
    assert total == f"{part.height} ({int((ev == 1).sum())} progression, {int((ev == 2).sum())} death)"


# --- internal validation of the cause ------------------------------------------------------------------------


def _sample(n: int = 150, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    time = rng.exponential(5, n).round(2) + 0.01
    status = rng.choice([0, 1, 2], n, p=[0.3, 0.4, 0.3])
    return time, status, rng.uniform(0.05, 0.9, (n, 2))


def test_optimism_of_the_cause_by_hand() -> None:
    time, status, risk = _sample()
    n = time.size
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, n)
    boot_risk = np.clip(risk + rng.normal(0, 0.05, risk.shape), 0, 1)
    same = Replicate(np.arange(n), np.zeros(n), np.zeros(n), risk, risk)  # the full data again: no optimism
    boot = Replicate(idx, np.zeros(n), np.zeros(n), boot_risk[idx], boot_risk)
    failed = Replicate(np.arange(0), np.zeros(0), np.zeros(0), None, None, "no event in the resample")
    res = optimism_competing(time, status, risk, [same, boot, failed], [2, 4], cause=2)
    table = {r["index"]: r for r in res.table.iter_rows(named=True)}
    assert list(table) == ["AUC(t=2)", "AUC(t=4)", "Brier(t=2)", "Brier(t=4)"]
    assert res.replicates == 3 and res.failed == 1 and res.reasons == {"no event in the resample": 1}
    for j, t in enumerate((2, 4)):
        auc = stats.time_auc(time, status, risk[:, j], [t], cause=2).estimate[0]
        b = stats.brier(time, status, risk[:, j], [t], cause=2).estimate[0]
        train = stats.time_auc(time[idx], status[idx], boot_risk[idx, j], [t], cause=2).estimate[0]
        test = stats.time_auc(time, status, boot_risk[:, j], [t], cause=2).estimate[0]
        row = table[f"AUC(t={t})"]
        assert row["original"] == pytest.approx(auc, abs=1e-12)
        assert row["optimism"] == pytest.approx(((auc + train) - (auc + test)) / 2, abs=1e-12)
        assert row["corrected"] == pytest.approx(auc - row["optimism"], abs=1e-12)
        assert table[f"Brier(t={t})"]["original"] == pytest.approx(b, abs=1e-12)
        assert row["n"] == 2
    with pytest.raises(ValueError, match=r"method must be \"bootstrap\" or \"cv\""):
        optimism_competing(time, status, risk, [same], [2, 4], cause=2, method=".632+")  # type: ignore[arg-type]


def test_validation_corrects_auc_and_brier_of_the_cause(validated: StudyConfig) -> None:
    from analytics.models.replicates import load_apparent
    from analytics.validation.internal import read_record

    metrics = json.loads((validated.report_dir / "metrics.json").read_text())
    assert set(metrics["internal"]) == {"csc", "fg"}  # cox_cs: a cause-specific hazard, no cumulative incidence
    assert any("model cox_cs: no internal validation" in n and "cause-specific hazard" in n for n in metrics["notes"])
    table = {r["measure"]: r for r in metrics["internal"]["fg"]["table"]}
    assert set(table) == {"auc_t4", "auc_t8", "brier_t4", "brier_t8"}
    record = read_record(validated.models_dir, "fg")
    assert record is not None
    apparent = load_apparent(validated.models_dir, record)
    time, status = apparent.y[:, 0], apparent.y[:, 1].astype(int)
    assert table["auc_t4"]["original"] == pytest.approx(
        stats.time_auc(time, status, apparent.risk[:, 0], [4], cause=1).estimate[0], abs=1e-9)
    assert table["brier_t8"]["original"] == pytest.approx(
        stats.brier(time, status, apparent.risk[:, 1], [8], cause=1).estimate[0], abs=1e-9)
    for row in table.values():
        assert row["corrected"] == pytest.approx(row["original"] - row["optimism"], abs=1e-9)
    assert any("no bias-corrected calibration curve with competing causes" in n for n in metrics["notes"])
