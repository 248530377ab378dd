"""Competing risks end to end on a tiny study: declared status codes from study.toml through ingest and the
cohort checks, the cause-specific Cox and Fine–Gray kinds (their coefficient tables), single-event kinds refused
unless cause-specific, and validation of the cause of interest at horizons (metrics with a ``cause`` column)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml, write_study

from analytics import stats
from analytics.cohort import CohortError, load_cohort
from analytics.stats.competing_score import brier_ipa
from pipeline.config import StudyConfig, load_config
from pipeline.errors import CohortlabError
from pipeline.ingest import IngestError, ingest

CODES = '[variables]\nstatus = { role = "event", codes = { "0" = "censored", "1" = "progression", "2" = "death" } }'
MODELS = """[[models]]
name = "csc"
kind = "cause_specific_cox"
formula = "x + age"

[[models]]
name = "fg"
kind = "fine_gray"
clinical = ["x", "age"]

[[models]]
name = "cox_cs"
kind = "cox"
clinical = ["x", "age"]
competing = "cause_specific"

[[models]]
name = "fusion"
kind = "fine_gray"
scores = ["csc"]
clinical = ["age"]
"""
VALIDATION = ('[validation]\ncause = "progression"\nn_boot = 0\nhorizons = [4, 8]\n'
              'subgroups = { x = { cuts = [0] } }\n')


def _patients(n: int = 120, seed: int = 3) -> pl.DataFrame:
    """Two independent exponential causes (progression depends on x), uniform censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t1, t2, c = rng.exponential(10 / np.exp(0.8 * x)), rng.exponential(15, n), rng.uniform(2, 25, n)
    time = np.minimum.reduce([t1, t2, c])
    status = np.select([time == t1, time == t2], [1, 2], 0)
    return pl.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)],
                         "center": np.where(np.arange(n) < 80, "A", "B"), "x": x.round(4),
                         "age": rng.normal(60, 8, n).round(1), "time": time.round(3), "status": status})


def _toml(body: str = MODELS + VALIDATION, sections: str = CODES) -> str:
    return study_toml("cr", 1, body, study='endpoint = "survival"', sections=sections)


def _write(root: Path, body: str = MODELS + VALIDATION, sections: str = CODES,
           columns: str = "c.time, c.status AS event, c.x, c.age", patients: pl.DataFrame | None = None) -> Path:
    return write_study(root, _patients() if patients is None else patients, columns, _toml(body, sections))


# --- declaring causes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "sections", "message"), [
    (MODELS + '[validation]\nhorizons = [4]\n', CODES, "validation.cause is required"),
    (MODELS + '[validation]\ncause = "relapse"\n', CODES, "'relapse' is not a declared cause"),
    ('[[models]]\nname = "c"\nkind = "cox"\nclinical = ["x"]\n[validation]\ncause = "progression"\n', "",
     "no event variable declares codes"),
    ("", '[variables]\nstatus = { role = "event", codes = { "1" = "progression", "2" = "death" } }',
     'codes must declare "0"'),
    ("", '[variables]\ntime = { role = "time", codes = { "0" = "censored", "1" = "death" } }',
     "codes apply to event variables"),
    ("", '[variables]\nstatus = { role = "event", codes = { "0" = "censored", "one" = "death" } }',
     "'one' is not a status code"),
])
def test_config_refuses_bad_codes_and_causes(tmp_path: Path, body: str, sections: str, message: str) -> None:
    path = _write(tmp_path, body, sections)
    with pytest.raises(CohortlabError, match=message) as err:
        load_config(path)
    assert "study.toml" in str(err.value)


def test_single_event_kind_refused_on_competing_causes(tmp_path: Path) -> None:
    body = '[[models]]\nname = "plain"\nkind = "cox"\nclinical = ["x"]\n' + VALIDATION
    with pytest.raises(CohortlabError) as err:
        load_config(_write(tmp_path, body))
    text = str(err.value)
    assert "'plain'" in text and "cause: progression, competing: death" in text
    assert "cause_specific_cox" in text and 'competing = "cause_specific"' in text


def test_cause_specific_setting_needs_competing_causes(tmp_path: Path) -> None:
    body = '[[models]]\nname = "c"\nkind = "cox"\nclinical = ["x"]\ncompeting = "cause_specific"\n'
    with pytest.raises(CohortlabError, match="applies to an outcome with competing causes"):
        load_config(_write(tmp_path, body, sections=""))


def test_one_declared_cause_is_the_cause_of_interest(tmp_path: Path) -> None:
    codes = '[variables]\nstatus = { role = "event", codes = { "0" = "alive", "1" = "death" } }'
    body = '[[models]]\nname = "c"\nkind = "cox"\nclinical = ["x"]\n'
    study = load_config(_write(tmp_path, body, codes))
    assert study.causes is not None and study.causes.label == "death" and not study.causes.is_competing


def test_ingest_lists_undeclared_codes_and_writes_nothing(tmp_path: Path) -> None:
    patients = _patients().with_columns(
        pl.when(pl.col("patient_id").is_in(["P004", "P010"])).then(3)
        .when(pl.col("patient_id") == "P020").then(9).otherwise(pl.col("status")).alias("status"))
    study = load_config(_write(tmp_path, patients=patients))
    with pytest.raises(IngestError) as err:
        ingest(study, progress=False)
    text = str(err.value)
    assert "patients.csv" in text and "status" in text
    assert "'3', '9'" in text and "0 (censored), 1 (progression), 2 (death)" in text
    assert "6, 12, 22" in text  # the CSV lines of P004, P010, P020
    assert not study.store_path.exists()


def test_cohort_accepts_declared_codes_aliased_and_names_others(tmp_path: Path) -> None:
    study = build_study(tmp_path, _patients(), "c.time, c.status AS event, c.x, c.age", _toml())
    cohort = load_cohort(study)
    assert sorted(cohort.frame["event"].unique().to_list()) == [0, 1, 2]
    # a cohort that recodes death as 7 returns a code the variable does not declare
    sql = ("SELECT p.patient_id, p.center, c.time, CASE WHEN c.status = 2 THEN 7 ELSE c.status END AS event, c.x "
           "FROM patients p JOIN clinical c USING (patient_id)")
    (tmp_path / "cohorts" / "all.sql").write_text(sql, encoding="utf-8")
    with pytest.raises(CohortError) as err:
        load_cohort(study)
    text = str(err.value)
    assert "all.sql" in text and "column event" in text and "[7]" in text and "2 (death)" in text


def test_binary_event_study_keeps_zero_one_checks(tmp_path: Path) -> None:
    patients = _patients().with_columns(pl.col("status").clip(0, 1))
    body = '[[models]]\nname = "c"\nkind = "cox"\nclinical = ["x"]\n'
    study = build_study(tmp_path, patients, "c.time, c.status + 1 AS event, c.x", _toml(body, ""))
    with pytest.raises(CohortError, match="column event must be 0, 1 or NULL"):
        load_cohort(study)


# --- models and validation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    from analytics.fit import fit
    from analytics.validation.stage import validate

    root = tmp_path_factory.mktemp("competing")
    study = build_study(root, _patients(), "c.time, c.status AS event, c.x, c.age", _toml())
    fit(study, progress=False)
    validate(study, progress=False, force=True)
    return study


def _train(study: StudyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = load_cohort(study).frame.filter(pl.col("split") == "train")
    return (frame.select("x", "age").to_numpy(), frame["time"].to_numpy(), frame["event"].to_numpy())


def test_cause_specific_cox_summary_equals_the_statistic(validated: StudyConfig) -> None:
    import cohortlab

    x, time, status = _train(validated)
    ref = stats.cause_specific_cox(x, time, status)
    summary = cohortlab.load_study(validated.root / "study.toml").model("csc").summary
    assert summary["cause"].to_list() == ["progression", "progression", "death", "death"]
    assert summary["term"].to_list() == ["x", "age"] * 2
    np.testing.assert_allclose(summary["estimate"].to_numpy(), np.r_[ref.models[1].coef, ref.models[2].coef],
                               rtol=0, atol=1e-8)
    np.testing.assert_allclose(summary["se"].to_numpy(), np.r_[ref.models[1].se, ref.models[2].se], rtol=0, atol=1e-8)


def test_fine_gray_summary_and_risks_equal_the_statistic(validated: StudyConfig) -> None:
    import cohortlab
    from analytics.models.persist import load_model

    x, time, status = _train(validated)
    ref = stats.fine_gray(x, time, status, cause=1)
    summary = cohortlab.load_study(validated.root / "study.toml").model("fg").summary
    assert summary["cause"].to_list() == ["progression"] * 2
    np.testing.assert_allclose(summary["estimate"].to_numpy(), ref.coef, rtol=0, atol=1e-8)
    np.testing.assert_allclose(summary["se"].to_numpy(), ref.se, rtol=0, atol=1e-8)
    # the saved learner (skops, checked types) predicts the cumulative incidence of the cause
    fitted = load_model(validated.models_dir / "fg", validated.store_path)
    np.testing.assert_allclose(fitted.learner.fit_.predict_risk(x[:5], [4, 8]), ref.predict_risk(x[:5], [4, 8]),
                               rtol=0, atol=1e-10)


def _split_inputs(study: StudyConfig, model: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from analytics.models.persist import read_horizon_risks

    frame = load_cohort(study).frame.filter(pl.col("split") == split).select("patient_id", "time", "event")
    risks = read_horizon_risks(study.models_dir / model, study.store_path)
    assert risks is not None
    wide = risks.pivot(on="horizon", index="patient_id", values="risk").join(frame, on="patient_id")
    return wide["time"].to_numpy(), wide["event"].to_numpy(), wide.select("4.0", "8.0").to_numpy()


def test_metrics_are_of_the_cause_as_score(validated: StudyConfig) -> None:
    metrics = json.loads((validated.report_dir / "metrics.json").read_text())
    assert metrics["cause"] == "progression"
    time, status, risk = _split_inputs(validated, "fg", "external")
    est = metrics["models"]["fg"]["splits"]["external"]
    auc = stats.time_auc(time, status, risk, [4, 8], cause=1)
    bi = brier_ipa(time, status, risk, [4, 8], cause=1)
    for j, t in enumerate((4, 8)):
        assert est[f"auc_t{t}"]["estimate"] == pytest.approx(auc.at(t).estimate, abs=1e-9)
        assert est[f"auc_t{t}"]["low"] == pytest.approx(auc.at(t).low, abs=1e-9)
        assert est[f"brier_t{t}"]["estimate"] == pytest.approx(bi.brier.at(t).estimate, abs=1e-9)
        assert est[f"ipa_t{t}"]["estimate"] == pytest.approx(bi.ipa[j], abs=1e-9)
        cal = stats.calibration_competing(time, status, risk[:, j], t, cause=1)
        assert est[f"ici_t{t}"]["estimate"] == pytest.approx(cal.ici, abs=1e-9)
    # n_events: the cause of interest's events only
    assert metrics["models"]["fg"]["splits"]["external"]["n_events"] == int((status == 1).sum())


def test_cause_specific_single_event_model_is_discrimination_only(validated: StudyConfig) -> None:
    metrics = json.loads((validated.report_dir / "metrics.json").read_text())
    est = {k: v for k, v in metrics["models"]["cox_cs"]["splits"]["external"].items() if isinstance(v, dict)}
    assert {"c_index", "auc_t4", "auc_t8"} <= set(est)
    assert not [k for k in est if k.startswith(("brier", "ipa", "ici", "e50", "e90", "calibration", "ibs"))]
    assert any("cox_cs" in n and "discrimination only" in n for n in metrics["notes"])
    curves = json.loads((validated.report_dir / "curves.json").read_text())
    assert "decision_at" not in curves["cox_cs"]["external"]
    assert "km" not in curves["fg"]["external"]  # no 1 - KM risk groups with competing causes


def test_metrics_files_carry_the_cause(validated: StudyConfig) -> None:
    from analytics.validation.stage import load_validation

    table = pl.read_csv(validated.report_dir / "metrics.csv")
    assert table["cause"].unique().to_list() == ["progression"]
    v = load_validation(validated)
    assert v.cause == "progression"
    assert v.of_cause("progression").summary.height == v.summary.height > 0
    assert v.of_cause("death").summary.height == 0


# --- describing: the report and the notebook --------------------------------------------------------------


def _one_minus_km(time: np.ndarray, hit: np.ndarray, t: float) -> float:
    """1 - Kaplan-Meier of one cause with the other causes censored: what must never be shown as its risk."""
    s = 1.0
    for u in np.unique(time[(hit == 1) & (time <= t)]):
        s *= 1.0 - ((time == u) & (hit == 1)).sum() / (time >= u).sum()
    return 1.0 - s


@pytest.fixture(scope="module")
def reported(validated: StudyConfig) -> str:
    from analytics.report.writer import write_report

    return write_report(validated, force=True, progress=False).path.read_text(encoding="utf-8")


def test_report_shows_aalen_johansen_never_one_minus_km(validated: StudyConfig, reported: str) -> None:
    import re

    frame = load_cohort(validated).frame
    time, status = frame["time"].to_numpy(), frame["event"].to_numpy()
    ref = stats.cumulative_incidence(time, status, [4, 8]).table
    shown = {}
    for cause, code in (("progression", 1), ("death", 2)):
        for t in (4, 8):
            cell = re.search(rf'data-cif="all\|all\|{cause}\|{t}">(.*?)</tr>', reported)
            assert cell is not None, (cause, t)
            value = float(re.findall(r'<td class="num">([0-9.]+)</td>', cell.group(1))[1])
            aj = ref.filter((pl.col("cause") == code) & (pl.col("time") == t))["estimate"].item()
            km = _one_minus_km(time, (status == code).astype(int), t)
            assert value == pytest.approx(aj, abs=5e-4)
            assert abs(km - aj) > 0.005  # the two differ here, so the table cannot be showing 1 - KM
            shown[(cause, t)] = value
    assert "cause: progression, competing: death" in reported
    assert 'id="fig-cif-all"' in reported and 'id="fig-cif-x"' in reported
    assert "Kaplan-Meier curves of" not in reported  # no KM risk-group figure of any model
    assert 'data-metric="fg|external|ipa_t4"' in reported  # IPA against the Aalen-Johansen null
    # the horizon calibration of a competing-risk model: Aalen-Johansen observed risk per group
    curves = json.loads((validated.report_dir / "curves.json").read_text())
    at = curves["fg"]["external"]["horizons"]["t4"]["calibration_at"]
    assert at["observed_by"] == "Aalen-Johansen"
    t_ext, s_ext, risk = _split_inputs(validated, "fg", "external")
    from analytics.stats.competing_score import observed_by_group

    groups = observed_by_group(t_ext, s_ext, risk[:, 0], 4, cause=1)
    np.testing.assert_allclose(at["observed"], groups["observed"].to_numpy(), rtol=0, atol=1e-12)
    # where a single event type gets Kaplan-Meier curves by risk group: Aalen-Johansen curves of the cause
    from analytics.fit import stored_predictions

    cut = json.loads((validated.report_dir / "metrics.json").read_text())["models"]["fg"]["risk_cutpoints"]["values"]
    ext = (stored_predictions(validated.store_path, "fg").filter(pl.col("split") == "external")
           .join(frame.select("patient_id", "time", "event"), on="patient_id"))
    group = np.searchsorted(np.asarray(cut), ext["score"].to_numpy(), side="right")
    shown_groups = curves["fg"]["external"]["cif_groups"]
    assert [g["group"] for g in shown_groups] == ["low", "high"]
    for j, g in enumerate(shown_groups):
        sel = group == j
        ref_curve = stats.cif_curve(ext["time"].to_numpy()[sel], ext["event"].to_numpy()[sel], cause=1)
        np.testing.assert_allclose(g["estimate"][1:], ref_curve["estimate"].to_numpy(), rtol=0, atol=1e-12)
    assert 'id="fig-cif-groups-fg-external"' in reported


def test_report_gray_test_and_tripod_outcome(validated: StudyConfig, reported: str) -> None:
    import re

    from analytics.validation.subgroups import subgroup_labels

    frame = load_cohort(validated).frame
    groups = subgroup_labels(frame["x"], [0]).to_numpy().astype(str)
    ref = stats.gray_test(frame["time"].to_numpy(), frame["event"].to_numpy(), groups, cause=1)
    row = re.search(r'data-gray="x\|progression">(.*?)</tr>', reported)
    assert row is not None
    assert f">{ref.statistic:.2f}<" in row.group(1) and f">{ref.p:.4f}<" in row.group(1)
    assert "the event of interest is progression; death compete with it" in reported


def test_notebook_cumulative_incidence_by_subgroup(validated: StudyConfig, tmp_path: Path) -> None:
    import cohortlab

    study = cohortlab.load_study(validated.root / "study.toml")
    table = study.cumulative_incidence(by="x", times=[4, 8])
    frame = load_cohort(validated).frame
    from analytics.validation.subgroups import subgroup_labels

    groups = subgroup_labels(frame["x"], [0]).to_numpy()
    ref = stats.cumulative_incidence(frame["time"].to_numpy(), frame["event"].to_numpy(), [4, 8], by=groups).table
    assert set(table["group"].unique().to_list()) == {"< 0", ">= 0"}
    assert set(table["cause"].unique().to_list()) == {"progression", "death"}
    joined = table.join(ref.rename({"cause": "code"}), on=["group", "code", "time"], suffix="_ref")
    assert joined.height == table.height == 8
    np.testing.assert_allclose(joined["estimate"], joined["estimate_ref"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(joined["se"], joined["se_ref"], rtol=0, atol=1e-12)
    with pytest.raises(CohortError, match="no column.*nope"):
        study.cumulative_incidence(by="nope")
    body = '[[models]]\nname = "c"\nkind = "cox"\nclinical = ["x"]\n'
    plain = cohortlab.load_study(_write(tmp_path, body, sections=""))
    with pytest.raises(CohortlabError, match="no event variable declares status codes"):
        plain.cumulative_incidence()


def test_readme_example_is_a_valid_study(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if 'kind = "fine_gray"' in b)
    (tmp_path / "study.toml").write_text('[study]\nname = "readme"\n[manifests]\npatients = "p.csv"\n' + block,
                                         encoding="utf-8")
    study = load_config(tmp_path / "study.toml")
    assert study.causes is not None and study.causes.heading == "cause: progression, competing: death"
    assert [m.traits.competing for m in study.models] == ["cause_specific", "subdistribution", None]
    assert study.model("cox_cs").competing == "cause_specific"


def test_fusion_feeds_a_score_into_fine_gray(validated: StudyConfig) -> None:
    import cohortlab

    summary = cohortlab.load_study(validated.root / "study.toml").model("fusion").summary
    assert summary["cause"].to_list() == ["progression"] * 2 and summary.height == 2
    metrics = json.loads((validated.report_dir / "metrics.json").read_text())
    ext = metrics["models"]["fusion"]["splits"]["external"]
    assert {"auc_t4", "brier_t4", "ipa_t4", "ici_t4"} <= set(ext)


def test_single_event_metrics_have_an_empty_cause() -> None:
    from analytics.validation import Validation

    v = Validation.from_dict({"models": {}}, "metrics.json")
    assert v.cause is None and v.to_dict()["cause"] is None
    assert v.to_csv().splitlines()[0].split(",")[-1] == "cause"
    assert v.of_cause(None) is v
