"""[validation] subgroups: n, events, AUC and calibration-in-the-large per split and subgroup."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from study_builders import build_study, study_toml

from analytics import stats
from analytics.validation.stage import ValidateError, load_validation, validate
from pipeline import store
from pipeline.config import load_config

N = 120


def _study(tmp_path: Path, validation: str) -> Path:
    """Two centres, age and a label; two logistic models; ``validation`` lines added to [validation]."""
    rng = np.random.default_rng(7)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 80, "A", "B"),
        "age": rng.normal(55, 10, N).round(1), "label": (rng.random(N) < 0.4).astype(int),
    })
    build_study(tmp_path, patients, "c.label, c.age", study_toml("sub", 3, f"""[[models]]
name = "good"
kind = "logistic"
clinical = ["age"]
[[models]]
name = "weak"
kind = "logistic"
clinical = ["age"]
[validation]
n_boot = 0
{validation}
"""))
    return tmp_path


def _predict(tmp_path: Path) -> pl.DataFrame:
    """Scores of two models written straight into the store: 'good' tracks the label, 'weak' barely."""
    from analytics.cohort import load_cohort

    cohort = load_cohort(load_config(tmp_path / "study.toml"))
    rng = np.random.default_rng(11)
    y = cohort.y.astype(float)
    scores = {"good": 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.2, len(y))))),
              "weak": 1 / (1 + np.exp(-(0.3 * y + rng.normal(0, 1.0, len(y)))))}
    rows = [(model, pid, sp, float(sc), 0 if sp == "train" else None)
            for model, s in scores.items() for pid, sp, sc in zip(cohort.patient_ids, cohort.split, s)]
    con = store.connect(tmp_path / "store.duckdb")
    con.execute("DELETE FROM predictions")
    con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", rows)
    con.close()
    return pl.DataFrame(rows, schema=["model", "patient_id", "split", "score", "fold"], orient="row").join(
        cohort.frame.select("patient_id", "label"), on="patient_id")

SUBGROUPS = 'subgroups = { center = {}, age = { cuts = [50, 60] } }'


def _age_band(age: pl.Expr) -> pl.Expr:
    """The age bands of cuts [50, 60], written independently of the code under test."""
    return (pl.when(age.is_null()).then(pl.lit("missing"))
            .when(age < 50).then(pl.lit("< 50"))
            .when(age < 60).then(pl.lit("50 to < 60"))
            .otherwise(pl.lit(">= 60")))


def test_subgroup_counts_auc_and_calibration_match_a_group_by(tmp_path: Path) -> None:
    _study(tmp_path, SUBGROUPS)
    preds = _predict(tmp_path)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    written = json.loads((study.report_dir / "metrics.json").read_text())["subgroups"]
    got = {(r["model"], r["split"], r["variable"], r["group"]): r for r in written}

    from analytics.cohort import load_cohort

    frame = preds.join(load_cohort(study).frame.select("patient_id", "center", "age"), on="patient_id")
    expected = []
    for variable, key in (("center", pl.col("center").cast(pl.String)), ("age", _age_band(pl.col("age")))):
        counts = (frame.with_columns(key.alias("group"))
                  .group_by("model", "split", "group")
                  .agg(pl.len().alias("n"), pl.col("label").sum().alias("events"),
                       pl.col("label").alias("y"), pl.col("score").alias("s")))
        for r in counts.iter_rows(named=True):
            expected.append((r["model"], r["split"], variable, r["group"], r["n"], r["events"], r["y"], r["s"]))
    assert {e[:4] for e in expected} == set(got)
    assert {"< 50", "50 to < 60", ">= 60"} <= {k[3] for k in got if k[2] == "age"}
    for model, split, variable, group, n, events, y, s in expected:
        row = got[(model, split, variable, group)]
        assert (row["n"], row["n_positive"]) == (n, events)
        y, s = np.asarray(y), np.asarray(s)
        if 0 < events < n:
            assert row["auc"]["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            try:
                ci = stats.auc_ci(y, s, method="delong", level=0.95)
            except ValueError:  # too few cases or controls for the DeLong variance: the estimate alone
                assert (row["auc"]["low"], row["auc"]["high"], row["auc"]["method"]) == (None, None, "no CI")
            else:
                assert (row["auc"]["low"], row["auc"]["high"]) == pytest.approx((ci.low, ci.high), abs=1e-11)
            try:
                citl = stats.calibration(y, s)["in_the_large"]
            except ValueError:  # a subgroup too small or separated for the logistic fit
                citl = None
            assert row["in_the_large"] == (None if citl is None else pytest.approx(citl, abs=1e-9))
        else:
            assert row["auc"] is None and row["in_the_large"] is None
    # age bands read low to high within a model and split
    bands = [k[3] for k in got if k[:3] == ("good", "external", "age")]
    assert bands == sorted(bands, key=["< 50", "50 to < 60", ">= 60", "missing"].index)
    # read back: the typed object holds what the file holds
    back = load_validation(study)
    assert [g.to_dict() for g in back.subgroups] == written


def test_unknown_subgroup_column_is_named(tmp_path: Path) -> None:
    _study(tmp_path, 'subgroups = { smoker = {} }')
    _predict(tmp_path)
    study = load_config(tmp_path / "study.toml")
    with pytest.raises(ValidateError, match="subgroups: no column 'smoker'"):
        validate(study, progress=False)
    assert not (study.report_dir / "metrics.json").exists()


def test_cuts_must_increase(tmp_path: Path) -> None:
    from pipeline.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="strictly increasing"):
        _study(tmp_path, 'subgroups = { age = { cuts = [60, 50] } }')


def test_cuts_on_a_text_column_are_refused(tmp_path: Path) -> None:
    _study(tmp_path, 'subgroups = { center = { cuts = [1] } }')
    _predict(tmp_path)
    study = load_config(tmp_path / "study.toml")
    with pytest.raises(ValidateError, match="subgroups.center: cuts need a numeric column"):
        validate(study, progress=False)
