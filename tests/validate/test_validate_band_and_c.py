"""validate computes the ROC bands (from the AUC bootstrap's resamples) and stores them in curves.json, where the
report reads them; the C-index carries R survival::concordance's infinitesimal-jackknife interval."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics import stats
from analytics.report import plots
from analytics.splits import SPLITS
from analytics.stats.roc_band import BAND_SPECIFICITIES, roc_band
from analytics.validation.stage import load_validation, validate
from analytics.validation.values import clean
from pipeline import store
from pipeline.config import load_config

N = 120
N_BOOT = 150


def _study(tmp_path: Path) -> tuple[Any, pl.DataFrame]:
    """A two-model study with follow-up, and its predictions as validate reads them (store order)."""
    from analytics.cohort import load_cohort

    rng = np.random.default_rng(7)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 80, "A", "B"),
        "age": rng.normal(55, 10, N).round(1), "label": (rng.random(N) < 0.4).astype(int),
        "time": rng.exponential(30, N).round(0), "event": (rng.random(N) < 0.6).astype(int)})
    build_study(tmp_path, patients, "c.label, c.time, c.event, c.age", study_toml("band", 3, f"""[[models]]
name = "good"
kind = "logistic"
clinical = ["age"]
[[models]]
name = "weak"
kind = "logistic"
clinical = ["age"]
[validation]
n_boot = {N_BOOT}
level = 0.9
"""))
    study = load_config(tmp_path / "study.toml")
    cohort = load_cohort(study)
    y = cohort.y.astype(float)
    rows = []
    for model, slope in (("good", 2.0), ("weak", 0.3)):
        score = np.round(1 / (1 + np.exp(-(slope * y + rng.normal(0, 1.0, len(y))))), 2)  # tied scores
        rows += [(model, pid, sp, float(sc), 0 if sp == "train" else None)
                 for pid, sp, sc in zip(cohort.patient_ids, cohort.split, score)]
    con = store.connect(study.store_path)
    con.execute("DELETE FROM predictions")
    con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", rows)
    con.close()
    preds = pl.DataFrame(rows, schema=["model", "patient_id", "split", "score", "fold"], orient="row")
    return study, preds.join(cohort.frame.select("patient_id", "label", "time", "event"), on="patient_id",
                             maintain_order="left")


def test_bands_are_stored_by_validate_and_equal_roc_band(tmp_path: Path) -> None:
    study, preds = _study(tmp_path)
    validate(study, progress=False)
    curves = json.loads((study.report_dir / "curves.json").read_text())
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    checked = 0
    for model in ("good", "weak"):
        for i, split in enumerate(SPLITS):
            part = preds.filter((pl.col("model") == model) & (pl.col("split") == split))
            if part.height == 0:
                continue
            y, s = part["label"].to_numpy(), part["score"].to_numpy()
            seed = study.study.seed + i  # the split's seed, as the report used for its bands
            band = curves[model][split]["roc_band"]
            low, high = roc_band(y, s, BAND_SPECIFICITIES, n_boot=N_BOOT, level=0.9, seed=seed)
            assert band["specificity"] == [clean(x) for x in BAND_SPECIFICITIES]
            # as every number of curves.json: 12 significant digits
            assert band["low"] == [clean(x) for x in low] and band["high"] == [clean(x) for x in high]
            # the AUC bootstrap interval is the one of the same resamples, unchanged
            boot = stats.auc_ci(y, s, method="bootstrap", n_boot=N_BOOT, level=0.9, seed=seed)
            got = metrics["models"][model]["splits"][split]["auc_bootstrap"]
            assert (got["estimate"], got["low"], got["high"]) == (clean(boot.estimate), clean(boot.low), clean(boot.high))
            checked += 1
    assert checked == 6
    # the notebook reads the band as a frame
    frame = load_validation(study).curve("good", "external", "roc_band")
    assert sorted(frame.columns) == ["high", "low", "specificity"] and frame.height == BAND_SPECIFICITIES.size


def test_c_index_has_the_infinitesimal_jackknife_interval(tmp_path: Path) -> None:
    study, preds = _study(tmp_path)
    validate(study, progress=False)
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    for split in SPLITS:
        part = preds.filter((pl.col("model") == "good") & (pl.col("split") == split))
        want = stats.concordance(part["time"].to_numpy(), part["event"].to_numpy(), part["score"].to_numpy(),
                                 level=0.9, interval="ij")
        got = metrics["models"]["good"]["splits"][split]["c_index"]
        assert got["method"] == "ij-normal"
        assert (got["estimate"], got["low"], got["high"]) == pytest.approx((want.estimate, want.low, want.high),
                                                                          abs=1e-12)


def test_report_draws_the_stored_bands_without_resampling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study, preds = _study(tmp_path)
    validate(study, progress=False)
    validation = load_validation(study)

    def no_resampling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the report resampled a band")

    band_module = importlib.import_module("analytics.stats.roc_band")  # the package exports a function of that name
    monkeypatch.setattr(band_module, "roc_band", no_resampling)
    monkeypatch.setattr(band_module, "auc_bootstrap_band", no_resampling)
    drawn: dict[str, Any] = {}

    def capture(title: str, panels: Any, level: float) -> bytes:
        drawn[title] = panels
        return b"png"

    monkeypatch.setattr(plots.figures, "roc_figure", capture)
    monkeypatch.setattr(plots.figures, "roc_split_figure", lambda *a, **k: b"png")
    scored = preds.filter(pl.col("label").is_not_null())
    plots.roc_figures(["good", "weak"], scored, validation, study.study.seed, progress=False)
    assert len(drawn) == 2
    for title, panels in drawn.items():
        model = title.split(":")[0]
        for panel in panels:
            band = validation.curves[model][panel.split]["roc_band"]
            assert np.array_equal(panel.band_low, band["low"]) and np.array_equal(panel.band_high, band["high"])
            assert np.array_equal(panel.band_specificity, band["specificity"])
