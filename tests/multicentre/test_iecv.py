"""Internal-external cross-validation: each development centre left out in turn, its patients never in any fit
(nor any external patient); small centres pooled; fits resumable; per-centre rows (split ``iecv``) and their
meta-analysis (split ``meta_iecv``)."""

from __future__ import annotations

import csv
from typing import Any

import numpy as np
import polars as pl
import pytest
from multicentre.iecv_helpers import GLM, centre_patients, iecv_settings
from study_builders import build_study, study_toml

from analytics.cohort import load_cohort
from analytics.fit import fit
from analytics.iecv import SMALL, iecv_model, plan_groups
from analytics.iecv_files import IECV_FOLDER, read_iecv
from analytics.models import registry
from analytics.models.persist import read_record
from analytics.validation.stage import load_validation, validate
from pipeline.config import ConfigError, StudyConfig

SPLIT = 'external_centers = ["X"]\ninternal_fraction = 0.2\nseed = 1'
MODELS = GLM + iecv_settings(n_boot=20)


def _patients() -> pl.DataFrame:
    return centre_patients({"A": 160, "B": 160, "C": 160, "S": 12, "X": 120}, seed=8)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    root = tmp_path_factory.mktemp("iecv")
    s = build_study(root, _patients(), "c.label, c.age, c.marker", study_toml("iecv", 2, MODELS, split=SPLIT))
    fit(s, progress=False)
    validate(s, progress=False)
    return s


def _spy(seen: list[tuple[str, ...]]) -> Any:
    def make(spec: Any, seed: int) -> Any:
        learner = registry.build_learner(spec, seed)
        inner = learner.fit

        def fit_recorded(data: Any, y: Any) -> Any:
            seen.append(tuple(data.patient_ids))
            return inner(data, y)

        learner.fit = fit_recorded
        return learner
    return make


def test_a_left_out_centre_never_enters_any_fit(study: StudyConfig) -> None:
    spec = study.model("glm")
    cohort = load_cohort(study)
    seen: list[tuple[str, ...]] = []
    import shutil

    shutil.rmtree(study.models_dir / IECV_FOLDER)  # fit every fold again, watched
    assert iecv_model(study, spec, cohort, make=_spy(seen)) is None
    split = dict(zip(cohort.patient_ids, cohort.split))
    centre = dict(zip(_patients()["patient_id"], _patients()["center"]))
    assert len(seen) == 4  # A, B, C, and the small centre S on its own group
    left_out = []
    for ids in seen:
        fitted = {centre[p] for p in ids}
        assert "X" not in fitted and all(split[p] in ("train", "internal") for p in ids)  # external untouched
        missing = {"A", "B", "C", "S"} - fitted
        assert len(missing) == 1  # exactly one left out, every other development centre in
        left_out.append(missing.pop())
        # internal hold-out patients of the other centres are fitted on too
        assert any(split[p] == "internal" for p in ids)
    assert sorted(left_out) == ["A", "B", "C", "S"]


def test_small_centres_are_grouped_and_named(study: StudyConfig) -> None:
    got = read_iecv(study.models_dir, "glm", read_record(study.models_dir / "glm", study.store_path).fit_key)
    assert got is not None and got.groups[SMALL] == ["S"]
    assert set(got.frame["group"]) == {"A", "B", "C", SMALL}
    assert not got.frame["patient_id"].str.starts_with("X").any()


def test_an_interrupted_iecv_refits_only_the_missing_centre(study: StudyConfig) -> None:
    spec = study.model("glm")
    cohort = load_cohort(study)
    key = next(p for p in (study.models_dir / IECV_FOLDER / "glm").iterdir() if p.is_dir())
    files = sorted(key.glob("*.parquet"))
    before = {f.name: f.read_bytes() for f in files}
    files[0].unlink()  # as if killed before the last centre was written
    seen: list[tuple[str, ...]] = []
    iecv_model(study, spec, cohort, make=_spy(seen))
    assert len(seen) == 1
    assert {f.name: f.read_bytes() for f in sorted(key.glob("*.parquet"))} == before  # the same bytes again


def test_iecv_rows_and_their_meta_analysis_are_written(study: StudyConfig) -> None:
    with (study.report_dir / "metrics.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == "glm"]
    per = {(r["center"], r["metric"]) for r in rows if r["split"] == "iecv"}
    assert {("A", "auc"), ("B", "auc"), ("C", "auc"), ("A", "calibration_recalibration_slope")} <= per
    meta = {r["metric"] for r in rows if r["split"] == "meta_iecv"}
    assert {"auc", "auc_prediction_interval", "auc_tau2", "oe_ratio"} <= meta
    frame = load_validation(study).meta()
    assert set(frame["source"]) == {"iecv"} and frame.filter(pl.col("measure") == "auc")["k"].item() >= 3


def test_fewer_than_two_development_centres_is_a_config_error_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"study.toml: \[validation\] internal_external needs at least two "
                                           r"development centres.*A \(40 events of 100\)$"):
        plan_groups(["A"], [40], [100], 10, "study.toml")
    with pytest.raises(ConfigError, match=r"A \(3 events of 100\), B \(2 events of 30\)"):
        plan_groups(["A", "B"], [3, 2], [100, 30], 10, "study.toml")  # both small: one group
    plan = plan_groups(["A", "B", "C"], [40, 30, 2], [100, 90, 30], 10, "study.toml")
    assert plan.groups == {"A": ("A",), "B": ("B",), SMALL: ("C",)}


def test_report_shows_the_iecv_forest_plots(study: StudyConfig) -> None:
    from analytics.report import write_report

    html = write_report(study, progress=False).path.read_text(encoding="utf-8")
    assert '<section id="sec-multicentre">' in html and "internal-external cross-validation" in html
    assert '<figure id="fig-meta-iecv-glm-auc">' in html and "small centres" in html


def test_validate_recomputes_when_the_iecv_files_change(study: StudyConfig) -> None:
    """An IECV finished after a validation (same predictions, new left-out scores) is not 'up to date'."""
    from analytics.iecv_files import CURRENT

    current = study.models_dir / IECV_FOLDER / "glm" / CURRENT
    saved = current.read_bytes()
    current.unlink()  # as before the IECV had finished
    try:
        assert not validate(study, progress=False).skipped
        assert not any(r for r in load_validation(study).meta().iter_rows())  # no IECV to pool
    finally:
        current.write_bytes(saved)
    assert not validate(study, progress=False).skipped  # the files are back: recomputed, not skipped
    assert load_validation(study).meta().height > 0


def test_each_left_out_group_has_a_membership_c_statistic_against_its_folds_development(study: StudyConfig) -> None:
    """Debray et al. 2015 for IECV: a membership model (the model's linear predictor, its clinical variables and
    the outcome) of each left-out group against the other groups' development patients, hand-fitted here with
    statsmodels and scored with scikit-learn."""
    import statsmodels.api as sm
    from sklearn.metrics import roc_auc_score

    from analytics.fit import stored_predictions

    with (study.report_dir / "metrics.csv").open(encoding="utf-8") as fh:
        got = {r["center"]: float(r["estimate"]) for r in csv.DictReader(fh)
               if r["model"] == "glm" and r["split"] == "iecv" and r["metric"] == "membership_c"}
    assert set(got) == {"A", "B", "C", SMALL}
    group = {"A": "A", "B": "B", "C": "C", "S": SMALL}
    preds = (stored_predictions(study.store_path, "glm").filter(pl.col("split").is_in(["train", "internal"]))
             .join(_patients(), on="patient_id")
             .with_columns(pl.col("center").replace_strict(group).alias("group")))
    for g in ("A", SMALL):
        p = preds["score"].to_numpy()
        x = np.column_stack([np.ones(preds.height), np.log(p / (1 - p)), preds["age"].to_numpy(),
                             preds["marker"].to_numpy(), preds["label"].to_numpy()])
        member = (preds["group"] == g).to_numpy().astype(float)
        fitted = sm.GLM(member, x, family=sm.families.Binomial()).fit().fittedvalues
        assert got[g] == pytest.approx(roc_auc_score(member, fitted), abs=1e-6), g
