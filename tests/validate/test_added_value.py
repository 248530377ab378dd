"""validate: [validation] added_value -- ΔAUC, NRI, IDI, reclassification per split, and the LR test of
nested maximum-likelihood logistic models on the training fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import chi2
from study_builders import build_study, study_toml

from analytics import stats
from analytics.validation import Validation
from analytics.validation.stage import lr_test_reason, validate
from pipeline import store
from pipeline.config import ConfigError, load_config

N = 160


def _study(tmp_path: Path, models: str, validation: str) -> Path:
    rng = np.random.default_rng(5)
    centers = np.where(np.arange(N) < 110, "A", "B")
    age = rng.normal(55, 10, N).round(1)
    marker = rng.normal(0, 1, N).round(3)
    lin = -0.5 + 0.03 * (age - 55) + 1.2 * marker
    label = (rng.random(N) < 1 / (1 + np.exp(-lin))).astype(int)
    patients = pl.DataFrame({"patient_id": [f"P{i:03d}" for i in range(N)], "center": centers, "age": age,
                             "marker": marker, "label": label})
    build_study(tmp_path, patients, "c.label, c.age, c.marker", study_toml("av", 3, f"""{models}
[validation]
n_boot = 100
{validation}
"""))
    return tmp_path


TWO_LOGISTIC = """
[[models]]
name = "old"
kind = "logistic"
clinical = ["age"]
[[models]]
name = "new"
kind = "logistic"
clinical = ["age", "marker"]
"""


def _fake_predictions(tmp_path: Path) -> pl.DataFrame:
    """Scores for 'new' (tracks the label) and 'old' (barely), written to the store as fit would."""
    from analytics.cohort import load_cohort

    cohort = load_cohort(load_config(tmp_path / "study.toml"))
    rng = np.random.default_rng(11)
    y = cohort.y.astype(float)
    new = 1 / (1 + np.exp(-(1.8 * y - 1 + rng.normal(0, 1.0, len(y)))))
    old = 1 / (1 + np.exp(-(0.4 * y - 0.5 + rng.normal(0, 1.0, len(y)))))
    rows = [(m, pid, sp, float(sc), 0 if sp == "train" else None)
            for m, s in (("new", new), ("old", old)) for pid, sp, sc in zip(cohort.patient_ids, cohort.split, s)]
    con = store.connect(tmp_path / "store.duckdb")
    con.execute("DELETE FROM predictions")
    con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", rows)
    con.close()
    return pl.DataFrame(rows, schema=["model", "patient_id", "split", "score", "fold"], orient="row").join(
        cohort.frame.select("patient_id", "label"), on="patient_id")


def test_added_value_per_split_equals_stats_and_files_agree(tmp_path: Path) -> None:
    _study(tmp_path, TWO_LOGISTIC, 'added_value = [["new", "old"]]\nrisk_cutoffs = [0.3, 0.6]')
    preds = _fake_predictions(tmp_path)
    study = load_config(tmp_path / "study.toml")
    res = validate(study, progress=False)
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    entries = {a["split"]: a for a in metrics["added_value"]}
    assert sorted(entries) == ["external", "internal", "train"]
    csv = pl.read_csv(study.report_dir / "metrics.csv")
    # metrics.json keeps 12 significant digits: hence 1e-10 below
    for split, got in entries.items():
        part = preds.filter(pl.col("split") == split).pivot(on="model", index=["patient_id", "label"], values="score")
        y, p_new, p_old = part["label"].to_numpy(), part["new"].to_numpy(), part["old"].to_numpy()
        assert (got["n"], got["n_positive"]) == (len(y), int(y.sum()))
        ref = stats.nri(y, p_old, p_new)
        assert got["nri"]["estimate"] == pytest.approx(ref.estimate, abs=1e-10)
        assert (got["nri"]["low"], got["nri"]["high"]) == pytest.approx((ref.low, ref.high), abs=1e-10)
        assert got["nri"]["events"]["up"] == int(((p_new > p_old) & (y == 1)).sum())
        cat = stats.nri(y, p_old, p_new, cutoffs=[0.3, 0.6])
        assert got["nri_categorical"]["estimate"] == pytest.approx(cat.estimate, abs=1e-10)
        assert got["nri_categorical"]["p"] == pytest.approx(cat.p, rel=1e-9)
        slope_new = p_new[y == 1].mean() - p_new[y == 0].mean()
        slope_old = p_old[y == 1].mean() - p_old[y == 0].mean()
        assert got["idi"]["estimate"] == pytest.approx(slope_new - slope_old, abs=1e-10)
        dauc = stats.compare_auc(y, p_new, p_old)
        assert got["auc_difference"]["difference"] == pytest.approx(dauc.difference, abs=1e-10)
        assert got["auc_difference"]["p"] == pytest.approx(dauc.p, abs=1e-10)
        # reclassification counts against a polars group-by of the risk groups
        grp = lambda c: pl.when(pl.col(c) >= 0.6).then(2).when(pl.col(c) >= 0.3).then(1).otherwise(0)  # noqa: E731
        counts = part.with_columns(grp("old").alias("go"), grp("new").alias("gn")).group_by("label", "go", "gn").len()
        for r in counts.iter_rows(named=True):
            table = got["reclassification"]["events" if r["label"] == 1 else "nonevents"]
            assert table[r["go"]][r["gn"]] == r["len"]
        assert got["cutoffs"] == [0.3, 0.6]
        row = csv.filter((pl.col("model") == "new vs old") & (pl.col("split") == split) & (pl.col("metric") == "nri"))
        assert row["estimate"][0] == pytest.approx(got["nri"]["estimate"], abs=1e-10)
        assert float(row["p"][0]) == pytest.approx(got["nri"]["p"], rel=1e-9)
        assert csv.filter((pl.col("model") == "new vs old") & (pl.col("split") == split)
                          & (pl.col("metric") == "auc_difference")).height == 1
    # penalised (default C grid) logistic models: no LR test, and the reason is given on the training row
    assert entries["train"]["lr_test"] is None
    assert "penalised" in entries["train"]["lr_test_reason"]
    assert entries["external"]["lr_test_reason"] is None
    # the object round-trips through metrics.json
    back = Validation.from_json(study.report_dir / "metrics.json")
    assert res.validation is not None and back.added_value == res.validation.added_value


def test_no_added_value_configured_keeps_metrics_json_shape(tmp_path: Path) -> None:
    _study(tmp_path, TWO_LOGISTIC, "")
    _fake_predictions(tmp_path)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    assert metrics["added_value"] == [] and "models" in metrics and "comparisons" in metrics
    # an older metrics.json without the key still reads
    del metrics["added_value"]
    assert Validation.from_dict(metrics).added_value == ()


def test_no_categorical_nri_without_cutoffs(tmp_path: Path) -> None:
    _study(tmp_path, TWO_LOGISTIC, 'added_value = [["new", "old"]]')
    _fake_predictions(tmp_path)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    got = json.loads((study.report_dir / "metrics.json").read_text())["added_value"][0]
    assert got["nri"] is not None and got["nri_categorical"] is None and got["reclassification"] is None


UNPENALISED = """
[[models]]
name = "old"
kind = "logistic"
clinical = ["age"]
params = { C = inf }
[[models]]
name = "new"
kind = "logistic"
clinical = ["age", "marker"]
params = { C = inf }
"""


def _ml_deviance(x: np.ndarray, y: np.ndarray) -> float:
    """Deviance of a maximum-likelihood logistic fit with intercept (Newton-Raphson)."""
    xx = np.column_stack([np.ones(len(y)), (x - x.mean(0)) / x.std(0)])
    beta = np.zeros(xx.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-xx @ beta))
        beta += np.linalg.solve((xx * (p * (1 - p))[:, None]).T @ xx, xx.T @ (y - p))
    p = 1 / (1 + np.exp(-xx @ beta))
    return float(-2 * np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_lr_test_on_nested_maximum_likelihood_fits(tmp_path: Path) -> None:
    from analytics.cohort import load_cohort
    from analytics.fit import fit

    _study(tmp_path, UNPENALISED, 'added_value = [["new", "old"]]')
    study = load_config(tmp_path / "study.toml")
    assert lr_test_reason(study, "new", "old") is None
    fit(study, progress=False)
    validate(study, progress=False)
    train = [a for a in json.loads((study.report_dir / "metrics.json").read_text())["added_value"]
             if a["split"] == "train"][0]
    lr = train["lr_test"]
    assert train["lr_test_reason"] is None and lr["df"] == 1
    frame = load_cohort(study).frame.filter(pl.col("split") == "train")
    y = frame["label"].to_numpy().astype(float)
    d_old = _ml_deviance(frame.select("age").to_numpy(), y)
    d_new = _ml_deviance(frame.select("age", "marker").to_numpy(), y)
    assert lr["deviance_reduced"] == pytest.approx(d_old, abs=1e-4)
    assert lr["deviance_full"] == pytest.approx(d_new, abs=1e-4)
    assert lr["p"] == pytest.approx(chi2.sf(d_old - d_new, 1), rel=1e-3)
    assert math.isfinite(lr["statistic"]) and lr["statistic"] > 0


@pytest.mark.parametrize("models, new, old, expect", [
    (TWO_LOGISTIC, "new", "old", "penalised"),
    (UNPENALISED, "old", "new", "not nested"),
    (UNPENALISED.replace('kind = "logistic"\nclinical = ["age", "marker"]', 'kind = "svm"\nclinical = ["age", "marker"]'),
     "new", "old", "not a logistic regression"),
    (UNPENALISED.replace('params = { C = inf }', 'params = { C = inf, pca = 1 }', 1), "new", "old", "PCA"),
])
def test_lr_test_reason(tmp_path: Path, models: str, new: str, old: str, expect: str) -> None:
    _study(tmp_path, models, "")
    assert expect in lr_test_reason(load_config(tmp_path / "study.toml"), new, old)


@pytest.mark.parametrize("validation, msg", [
    ('added_value = [["new", "nope"]]', "validation.added_value[0]: no model named 'nope'"),
    ('added_value = [["new", "new"]]', "two different model names"),
    ("risk_cutoffs = [0.5, 0.2]", "strictly increasing"),
    ("risk_cutoffs = [1.5]", "between 0 and 1"),
])
def test_config_errors_name_the_key(tmp_path: Path, validation: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        _study(tmp_path, TWO_LOGISTIC, validation)


def test_lr_test_counts_a_factor_as_its_levels_less_one_as_r_anova_does(tmp_path: Path) -> None:
    """A 4-level factor adds 3 free parameters (R: ``anova(glm_old, glm_new, test = "LRT")``), not 4 columns.

    Fixture: ``lr_factor_fixture.R`` on ``lr_factor_data.csv`` (every patient in training).
    """
    from analytics.fit import fit

    here = Path(__file__).parent
    ref = json.loads((here / "lr_factor_fixture.json").read_text())
    patients = pl.read_csv(here / "lr_factor_data.csv")
    models = UNPENALISED.replace('clinical = ["age", "marker"]', 'clinical = ["age", "grade"]')
    build_study(tmp_path, patients, "c.label, c.age, c.grade", study_toml("lrf", 3, f"""{models}
[validation]
n_boot = 20
added_value = [["new", "old"]]
""", split="internal_fraction = 0\nseed = 1"))
    study = load_config(tmp_path / "study.toml")
    fit(study, progress=False)
    validate(study, progress=False)
    train = [a for a in json.loads((study.report_dir / "metrics.json").read_text())["added_value"]
             if a["split"] == "train"][0]
    lr = train["lr_test"]
    assert lr["df"] == ref["df"] == 3
    # the solver stops short of glm's convergence (coefficients to ~1e-3), so deviances agree to ~1e-4
    assert lr["deviance_reduced"] == pytest.approx(ref["deviance_reduced"], abs=1e-3)
    assert lr["deviance_full"] == pytest.approx(ref["deviance_full"], abs=1e-3)
    assert lr["statistic"] == pytest.approx(ref["statistic"], abs=2e-3)
    assert lr["p"] == pytest.approx(ref["p"], rel=1e-3)
