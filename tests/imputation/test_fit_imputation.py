"""``cohortlab fit`` with ``[imputation] method = "mice"``: the imputation inside the model's procedure.

One small binary study (120 patients, m = 3, maxit = 2) is fitted once for the module: a maximum-likelihood
logistic regression with a spline (pooled by Rubin's rules) and an SVM (the mean of the m fits' risks), with an
auxiliary column and a bootstrap internal validation (B = 2, m_boot = 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics import fit as fit_stage
from analytics.cohort import load_cohort
from analytics.models import imputed, registry
from analytics.models.coefficients import RegressionTables
from analytics.models.data import assemble
from analytics.models.persist import (
    IMPUTATION_ROWS,
    ArtifactError,
    load_model,
    read_files,
    read_imputed_predictions,
    read_manifest,
)
from pipeline.config import StudyConfig, load_config

N = 120
IMPUTATION = """[imputation]
method = "mice"
m = 3
maxit = 2
m_boot = 2
seed = 4
auxiliary = ["helper"]
"""
MODELS = """[[models]]
name = "glm"
kind = "logistic"
formula = "rcs(age, 3) + marker + grade"
params = { penalty = "none" }
[[models]]
name = "svm"
kind = "svm"
clinical = ["age", "marker", "grade"]
params = { C = 1.0 }
[validation]
folds = 3
internal = "bootstrap"
B = 2
[compute]
n_jobs = 1
"""


def patients() -> pl.DataFrame:
    """A quarter of ``marker`` and a seventh of ``grade`` missing; ``helper`` (auxiliary) tracks ``marker``."""
    rng = np.random.default_rng(5)
    label = (rng.random(N) < 0.4).astype(int)
    marker = (label * 0.8 + rng.normal(0, 1, N)).round(3)
    return pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 90, "A", "B"),
        "age": rng.normal(55, 9, N).round(1), "marker": [None if i % 4 == 0 else v for i, v in enumerate(marker)],
        "grade": [None if i % 7 == 3 else v for i, v in enumerate(rng.choice(["low", "mid", "high"], N))],
        "helper": (marker + rng.normal(0, 0.5, N)).round(3), "label": label,
    })


def make_study(root: Path, imputation: str = IMPUTATION) -> StudyConfig:
    root.mkdir(parents=True, exist_ok=True)
    return build_study(root, patients(), "c.label, c.age, c.marker, c.grade, c.helper",
                       study_toml("mi", 2, MODELS + imputation))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyConfig, list[int]]]:
    """The study fitted once, with the m of every chained-equations run counted."""
    study = make_study(tmp_path_factory.mktemp("mi"))
    runs: list[int] = []
    original = imputed.impute

    def counting(frame: pl.DataFrame, settings: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(settings.m)
        return original(frame, settings, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(imputed, "impute", counting)
        fit_stage.fit(study, progress=False)
    yield study, runs


def test_learners_wrap_only_models_reading_clinical_columns_under_mice(fitted: tuple[StudyConfig, list[int]]) -> None:
    study, _ = fitted
    assert isinstance(registry.build_learner(study.model("svm"), 0), imputed.ImputedLearner)
    assert registry.build_learner(study.model("svm"), 0, replicate=True).m == 2  # m_boot
    plain = load_config(study.root / "study.toml")
    plain.models[1]._imputation = None
    assert not isinstance(registry.build_learner(plain.models[1], 0), imputed.ImputedLearner)


def test_record_and_per_imputation_predictions(fitted: tuple[StudyConfig, list[int]]) -> None:
    study, _ = fitted
    for name, pooled in (("glm", "rubin"), ("svm", "mean_risk")):
        folder = study.models_dir / name
        record = read_manifest(folder, study.store_path)
        assert record is not None
        imp = record["imputation"]
        assert (imp["method"], imp["m"], imp["maxit"], imp["seed"], imp["m_boot"], imp["source"], imp["pooled"]) == (
            "mice", 3, 2, 4, 2, "chains", pooled)
        assert imp["validation_imputation"] == "without_outcome"
        assert imp["not_in_imputation_model"] == (["rcs(age, 3)"] if name == "glm" else [])
        per = read_imputed_predictions(folder, study.store_path)
        preds = pl.read_parquet(folder / "predictions.parquet")
        assert per is not None and per.columns == ["model", "patient_id", "split", "fold", "imp", "score"]
        assert per.height == 3 * preds.height and sorted(per["imp"].unique().to_list()) == [1, 2, 3]
        # the predictions table keeps the mean over imputations of each patient's score
        mean = per.group_by("patient_id").agg(pl.col("score").mean().alias("mean"), pl.col("split").first(),
                                              pl.col("fold").first())
        both = preds.join(mean, on="patient_id", suffix="_imp")
        assert both.height == preds.height
        np.testing.assert_allclose(both["score"].to_numpy(), both["mean"].to_numpy(), rtol=0, atol=1e-12)
        assert (both["split"] == both["split_imp"]).all()
        assert (both["fold"].fill_null(-1) == both["fold_imp"].fill_null(-1)).all()
        # a patient with a missing value gets different scores across imputations
        missing = per.filter(pl.col("patient_id") == "P000")  # marker missing (i % 4 == 0)
        assert missing["score"].n_unique() == 3


def test_internal_validation_imputes_m_boot_times_per_replicate(fitted: tuple[StudyConfig, list[int]]) -> None:
    study, runs = fitted
    # per model: 3 outer folds + the final fit at m = 3, then B = 2 replicates at m_boot = 2
    assert sorted(runs) == sorted([3] * 4 * 2 + [2] * 2 * 2)
    for name in ("glm", "svm"):
        internal = read_manifest(study.models_dir / name, study.store_path)["internal"]
        assert internal["done"] == 2
        assert internal["imputation"]["m_boot"] == 2 and internal["imputation"]["imputations"] == 4
        assert internal["imputation"]["seconds"] >= 0


def test_pooled_coefficients_are_the_model_and_the_table_has_rubins_columns(
        fitted: tuple[StudyConfig, list[int]]) -> None:
    study, _ = fitted
    folder = study.models_dir / "glm"
    table = pl.read_csv(folder / "coefficients.csv")
    for col in ("estimate", "se", "ubar", "b", "t", "df", "riv", "lambda", "fmi", "ci_low", "ci_high", "p", "dfcom"):
        assert col in table.columns, col
    np.testing.assert_allclose(table["se"].to_numpy(), np.sqrt(table["t"].to_numpy()), rtol=1e-12)
    # dfcom as mice takes it for a glm: n - p (intercept, 2 spline columns, marker, 2 grade levels)
    record = read_manifest(folder, study.store_path)
    assert table["dfcom"].unique().to_list() == [record["counts"]["train"] - 6]
    model = load_model(folder, study.store_path)
    clf = model.learner.model_fit_.pipeline_.steps[-1][1]
    np.testing.assert_array_equal(np.r_[clf.intercept_, clf.coef_[0]], table["estimate"].to_numpy())
    anova = pl.read_csv(folder / "anova.csv")
    assert set(anova["method"].to_list()) <= {"D1", "D1 (large-sample df)"} and "rcs(age, 3)" in anova["row"].to_list()
    tables = RegressionTables.from_files(record["regression"], read_files(folder, study.store_path) or {})
    assert tables is not None and "pooled over m = 3 imputations by Rubin's rules" in tables.model_line()
    # the notebook's summary shows the pooled table
    import cohortlab

    notebook = cohortlab.load_study(study.root / "study.toml").model("glm")
    assert notebook.summary.equals(table.cast(notebook.summary.schema))
    assert "imputations = 3 (pooled: rubin)" in notebook.summary_text()
    assert "D1 tests per term" in notebook.summary_text()


def test_saved_model_predicts_new_patients_as_the_fit_stage_did(fitted: tuple[StudyConfig, list[int]]) -> None:
    study, _ = fitted
    cohort = load_cohort(study)
    for name in ("glm", "svm"):
        spec = study.model(name)
        assembled = imputed.with_auxiliary(spec, cohort.frame, assemble(spec, cohort, {}), "cohort")
        held = np.flatnonzero(np.asarray(cohort.split) != "train")
        model = load_model(study.models_dir / name, study.store_path)
        assert isinstance(model.learner, imputed.ImputedLearner)
        score = model.predict_score(assembled.data.take(held))
        saved = pl.read_parquet(study.models_dir / name / "predictions.parquet").filter(pl.col("split") != "train")
        by_id = dict(zip(saved["patient_id"].to_list(), saved["score"].to_list()))
        got = dict(zip([cohort.patient_ids[i] for i in held], score.tolist()))
        assert got == by_id  # the same numbers, bit for bit


def test_a_tampered_imputation_file_is_refused(fitted: tuple[StudyConfig, list[int]], tmp_path: Path) -> None:
    study, _ = fitted
    import shutil

    folder = tmp_path / "glm"
    shutil.copytree(study.models_dir / "glm", folder)
    rows = pl.read_parquet(folder / IMPUTATION_ROWS)
    rows.with_columns(pl.col("age") + 1).write_parquet(folder / IMPUTATION_ROWS)
    # the folder's name is the store's record of the model: its digests no longer match
    with pytest.raises(ArtifactError, match=IMPUTATION_ROWS):
        read_files(folder, study.store_path)
    with pytest.raises(ArtifactError, match=IMPUTATION_ROWS):
        load_model(folder, study.store_path)


def test_changed_imputation_settings_change_the_fit_key(fitted: tuple[StudyConfig, list[int]], tmp_path: Path) -> None:
    study, _ = fitted
    keys = set()
    for text in (IMPUTATION, IMPUTATION.replace("m = 3", "m = 4"), IMPUTATION.replace("maxit = 2", "maxit = 3"),
                 IMPUTATION.replace("seed = 4", "seed = 5"), IMPUTATION.replace("m_boot = 2", "m_boot = 3"),
                 IMPUTATION.replace('auxiliary = ["helper"]', "auxiliary = []"),
                 IMPUTATION + 'methods = { marker = "norm" }\n'):
        path = tmp_path / "study.toml"
        path.write_text(study_toml("mi", 2, MODELS + text), encoding="utf-8")
        keys.add(imputed.key(load_config(path).model("svm")))
    assert len(keys) == 7
    record = json.loads((study.models_dir / "svm" / "manifest.json").read_text(encoding="utf-8"))
    assert record["fit_key"]  # refit when any of them changes: the key is part of the fit key
    assert imputed.key(load_config(study.root / "study.toml").model("svm")) is not None


def test_a_second_fit_finds_the_imputed_models_up_to_date(fitted: tuple[StudyConfig, list[int]]) -> None:
    study, _ = fitted
    before = {m: (study.models_dir / m / "model.skops").read_bytes() for m in ("glm", "svm")}
    result = fit_stage.fit(study, progress=False)
    assert {r.name: r.status for r in result.models} == {"glm": "up to date", "svm": "up to date"}
    assert {m: (study.models_dir / m / "model.skops").read_bytes() for m in ("glm", "svm")} == before
