"""validate on a model fitted on multiple imputations: the headline measures of each split are pooled by Rubin's
rules (with m and fmi in metrics.json, metrics.csv, the store and Validation.summary), the other measures as means
over the imputations; identical imputations give the single-data values; the cache follows the imputed scores."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.special import expit, logit
from study_builders import build_study, study_toml

from analytics.fit import fit
from analytics.models import persist
from analytics.stats.pooled_performance import pooled_auc, pooled_c_index, pooled_calibration
from analytics.validation import CSV_COLUMNS, stage
from pipeline import store
from pipeline.config import StudyConfig, load_config

N = 160
M = 3
MODELS = """[[models]]
name = "lr"
kind = "logistic"
clinical = ["x", "z"]
params = { penalty = "none" }
[[models]]
name = "cox"
kind = "cox"
clinical = ["x", "z"]
[validation]
n_boot = 20
folds = 2
horizons = [8]
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("pooled")
    rng = np.random.default_rng(11)
    x, z = rng.normal(size=N), rng.normal(size=N)
    lp = 1.1 * x - 0.6 * z
    t_event = rng.exponential(12.0 / np.exp(lp))
    t_cens = rng.uniform(3, 25, N)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 110, "A", "B"),
        "x": x.round(4), "z": z.round(4), "label": (rng.random(N) < expit(lp)).astype(int),
        "time": np.minimum(t_event, t_cens).round(3), "event": (t_event <= t_cens).astype(int)})
    build_study(tmp_path, patients, "c.label, c.time, c.event, c.x, c.z", study_toml("pooled", 2, MODELS))
    config = load_config(tmp_path / "study.toml")
    fit(config, progress=False)
    stage.validate(config, progress=False)  # without imputed scores; its cache serves the copies' unchanged models
    return tmp_path


@pytest.fixture()
def study(fitted: Path, tmp_path: Path) -> StudyConfig:
    """A fresh copy of the fitted (and validated) study, to which :func:`_impute` adds imputed scores."""
    root = tmp_path / "study"
    shutil.copytree(fitted, root)
    return load_config(root / "study.toml")


def _predictions(study: StudyConfig, model: str) -> pl.DataFrame:
    con = store.connect(study.store_path, read_only=True)
    try:
        return store.read_predictions(con, model)
    finally:
        con.close()


def _impute(study: StudyConfig, model: str, spread: float, seed: int = 0) -> pl.DataFrame:
    """Write M imputed versions of ``model``'s scores as ``fit`` does under ``[imputation]``
    (imputed_predictions.parquet, recorded in the store): its store scores moved by ``spread`` noise (on the logit
    scale for probabilities), 0 for identical imputations; survival models also their risks at the horizon
    (imputed_horizon_risks.parquet)."""
    preds = _predictions(study, model)
    rng = np.random.default_rng(seed)
    base = preds.get_column("score").to_numpy()
    frames = []
    for k in range(1, M + 1):
        noise = spread * rng.normal(size=base.size)
        score = expit(logit(base) + noise) if model == "lr" else base + noise
        frames.append(preds.select("model", "patient_id", "split", "fold").with_columns(
            imp=pl.lit(k, pl.Int32), score=pl.Series(score)))
    imputed = pl.concat(frames)
    folder = study.models_dir / model
    saved = persist.read_horizon_risks(folder, study.store_path) if model == "cox" else None
    imputed.write_parquet(folder / "imputed_predictions.parquet")
    if saved is not None:
        risks = imputed.join(saved.select("patient_id", "horizon", "risk"), on="patient_id").with_columns(
            risk=(pl.col("risk") * (1 + 0.1 * spread * pl.col("imp"))).clip(0.001, 0.999))
        risks.select("model", "patient_id", "imp", "horizon", "risk").write_parquet(folder / "imputed_horizon_risks.parquet")
    _record(study, model)
    return imputed


def _record(study: StudyConfig, model: str) -> None:
    """Record the sha256 of every file of the model's folder in the store, as ``fit`` does for the files it writes."""
    folder = study.models_dir / model
    con = store.connect(study.store_path)
    try:
        store.record_model_artifacts(con, model, {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                                  for p in folder.iterdir()})
    finally:
        con.close()


def _matrix(imputed: pl.DataFrame, ids: list[str]) -> np.ndarray:
    wide = imputed.pivot(on="imp", index="patient_id", values="score")
    got = pl.DataFrame({"patient_id": ids}).join(wide, on="patient_id", how="left", maintain_order="left")
    return got.select([str(k) for k in range(1, M + 1)]).to_numpy().T


def _outcomes(study: StudyConfig, split: str) -> pl.DataFrame:
    from analytics.cohort import load_cohort

    preds = _predictions(study, "lr").filter(pl.col("split") == split)
    return preds.join(load_cohort(study).frame.select("patient_id", "label", "time", "event"), on="patient_id")


def test_headline_measures_are_pooled_by_rubins_rules(study: StudyConfig) -> None:
    lr, cox = _impute(study, "lr", 0.4), _impute(study, "cox", 0.3, seed=1)
    v = stage.validate(study, progress=False).validation
    assert v is not None
    part = _outcomes(study, "external")
    ids = part.get_column("patient_id").to_list()
    y = part.get_column("label").to_numpy()
    want = pooled_auc(y, _matrix(lr, ids))
    auc = v.get("lr", "external", "auc")
    assert auc is not None and auc.m == M and auc.fmi == pytest.approx(want.fmi, abs=1e-10)
    assert (auc.estimate, auc.low, auc.high) == pytest.approx((want.estimate, want.low, want.high), abs=1e-10)
    assert 0 < auc.fmi < 1 and auc.method.startswith(f"Rubin's rules over m={M} imputations on the logit scale")
    slope = v.get("lr", "external", "calibration_recalibration_slope")
    cal = pooled_calibration(y, _matrix(lr, ids))["recalibration_slope"]
    assert slope is not None and slope.m == M and slope.low is not None
    assert (slope.estimate, slope.low, slope.high, slope.fmi) == pytest.approx((cal.estimate, cal.low, cal.high, cal.fmi))
    # the C of the survival model: every patient with follow-up of the split
    c = v.get("cox", "external", "c_index")
    t, e = part.get_column("time").to_numpy(), part.get_column("event").to_numpy()
    assert c is not None and c.estimate == pytest.approx(pooled_c_index(t, e, _matrix(cox, ids)).estimate, abs=1e-10)
    # the others: means over the imputations, no interval, said so
    sens = v.get("lr", "external", "sensitivity")
    assert sens is not None and sens.m == M and sens.fmi is None and sens.low is None
    assert sens.method.startswith(f"mean over m={M} imputations")
    auc_t = v.get("cox", "external", "auc_t8")
    assert auc_t is not None and auc_t.m == M and auc_t.method.startswith("mean over")
    boot = v.get("lr", "external", "auc_bootstrap")
    assert boot is not None and boot.m is None and boot.method.endswith(f"on the mean score over m={M} imputations (not pooled)")
    # where the report and the user read them: metrics.json, metrics.csv, the store, the summary
    data = json.loads((study.report_dir / "metrics.json").read_text())
    assert data["models"]["lr"]["splits"]["external"]["auc"]["fmi"] == auc.fmi
    assert data["models"]["lr"]["splits"]["external"]["calibration_in_the_large"]["m"] == M
    header, *rows = (study.report_dir / "metrics.csv").read_text().splitlines()
    assert header.split(",") == [*CSV_COLUMNS, "m", "fmi"]
    con = store.connect(study.store_path, read_only=True)
    try:
        method = con.execute("SELECT method FROM metrics WHERE model = 'lr' AND split = 'external' AND metric = 'auc'"
                             ).fetchone()
    finally:
        con.close()
    assert method is not None and method[0].endswith(f" fmi={auc.fmi!r}")
    s = v.summary.filter((pl.col("model") == "lr") & (pl.col("split") == "external") & (pl.col("measure") == "auc")
                         & pl.col("center").is_null())
    assert s.get_column("m").to_list() == [M] and s.get_column("fmi").to_list() == [auc.fmi]
    assert " fmi" in v.summary_text(["auc"])
    # read back as written
    again = stage.load_validation(study).get("lr", "external", "calibration_in_the_large")
    assert again == v.get("lr", "external", "calibration_in_the_large")


def test_identical_imputations_give_the_single_data_values(study: StudyConfig) -> None:
    single = stage.load_validation(study)
    _impute(study, "lr", 0.0)
    pooled = stage.validate(study, progress=False).validation
    assert pooled is not None
    for measure in ("auc", "calibration_in_the_large", "calibration_recalibration_slope", "calibration_brier",
                    "sensitivity", "calibration_ici"):
        a, b = single.get("lr", "internal", measure), pooled.get("lr", "internal", measure)
        assert a is not None and b is not None and b.m == M, measure
        assert b.estimate == pytest.approx(a.estimate, abs=1e-9), measure
        assert b.fmi is None or b.fmi == pytest.approx(0.0, abs=1e-6), measure
    cox = pooled.get("cox", "internal", "c_index")
    assert cox is not None and cox.m is None  # no imputed scores: as before


def test_the_cache_follows_the_imputed_scores(study: StudyConfig) -> None:
    _impute(study, "lr", 0.2, seed=3)
    first = stage.validate(study, progress=False)
    _impute(study, "lr", 0.6, seed=4)  # the store's (mean) predictions unchanged
    second = stage.validate(study, progress=False)
    assert not second.skipped
    assert first.validation is not None and second.validation is not None
    a, b = first.validation.get("lr", "train", "auc"), second.validation.get("lr", "train", "auc")
    assert a is not None and b is not None and a.fmi != b.fmi
    assert first.validation.inputs_digest != second.validation.inputs_digest


def test_bad_imputed_scores_are_refused(study: StudyConfig) -> None:
    imputed = _impute(study, "lr", 0.2)
    folder = study.models_dir / "lr"
    pl.concat([imputed, imputed.head(1)]).write_parquet(folder / "imputed_predictions.parquet")
    _record(study, "lr")
    before = sorted(p.name for p in study.report_dir.glob("*")) if study.report_dir.exists() else []
    with pytest.raises(stage.ValidateError, match=r"imputed_predictions\.parquet: patient P\d+ has two scores in "
                                                  r"imputation 1"):
        stage.validate(study, progress=False)
    assert (sorted(p.name for p in study.report_dir.glob("*")) if study.report_dir.exists() else []) == before
    imputed.filter(pl.col("imp") == 1).write_parquet(folder / "imputed_predictions.parquet")
    _record(study, "lr")
    with pytest.raises(stage.ValidateError, match="scores of 1 imputation"):
        stage.validate(study, progress=False)
    # a patient without a score in one imputation: that split stays on the mean score, with a note saying why
    lacking = _outcomes(study, "external").get_column("patient_id")[0]
    imputed.filter((pl.col("patient_id") != lacking) | (pl.col("imp") != 2)).write_parquet(
        folder / "imputed_predictions.parquet")
    _record(study, "lr")
    v = stage.validate(study, progress=False).validation
    assert v is not None
    external, internal = v.get("lr", "external", "auc"), v.get("lr", "internal", "auc")
    assert external is not None and external.m is None and internal is not None and internal.m == M
    assert any(n.startswith("lr / external: no score in every imputation") for n in v.notes)


def test_without_imputed_scores_the_files_keep_their_columns(study: StudyConfig) -> None:
    """The fixture's validation (no imputed scores): metrics.csv has its columns, metrics.json no m or fmi."""
    header = (study.report_dir / "metrics.csv").read_text().splitlines()[0]
    assert header.split(",") == list(CSV_COLUMNS)
    text = (study.report_dir / "metrics.json").read_text()
    assert '"fmi"' not in text and '"m":' not in text
    v = stage.load_validation(study)
    assert v.summary.get_column("m").null_count() == v.summary.height
    assert " fmi " not in v.summary_text()
