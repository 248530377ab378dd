"""Validation of a study with several external centres: per-centre rows, their meta-analysis (split
``meta``), a centre without events, model updating (split ``updating``), ``Validation.meta()`` and a misspelt
centre. The numbers themselves are checked against R in test_meta_stats.py; here they must be those of
analytics.stats on each centre's stored predictions."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.fit import fit
from analytics.stats import meta_analysis
from analytics.stats.calibrate import logit
from analytics.stats.updating import centre_measures, update_logistic
from analytics.validation.stage import load_validation, validate
from analytics.validation.values import ValidateError
from pipeline.config import StudyConfig, load_config

SPLIT = 'external_centers = ["C", "D", "E", "F"]\ninternal_fraction = 0.2\nseed = 1'
MODELS = """[[models]]
name = "glm"
kind = "logistic"
clinical = ["age", "marker"]
params = { penalty = "none" }
[validation]
n_boot = 20
folds = 2
updating = true
"""


def _patients(seed: int = 4) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    # centre: patients, shift of the intercept (miscalibration), effect of the marker
    for center, n, shift, b in (("A", 200, 0.0, 1.0), ("B", 200, 0.0, 1.0), ("C", 150, 0.0, 1.0),
                                ("D", 150, 0.8, 1.0), ("E", 150, -0.3, 0.4), ("F", 25, None, 1.0)):
        age = rng.normal(72 if center == "E" else 60, 10, n)  # centre E: older patients (case-mix)
        marker = rng.normal(0, 1, n)
        eta = -1.0 + 0.03 * (age - 60) + b * marker + (shift or 0.0)
        label = np.zeros(n, dtype=int) if shift is None else rng.binomial(1, 1 / (1 + np.exp(-eta)))
        frames.append(pl.DataFrame({"patient_id": [f"{center}{i:03d}" for i in range(n)], "center": center,
                                    "label": label, "age": age.round(2), "marker": marker.round(4)}))
    return pl.concat(frames)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    root = tmp_path_factory.mktemp("multicentre")
    s = build_study(root, _patients(), "c.label, c.age, c.marker", study_toml("mc", 3, MODELS, split=SPLIT))
    fit(s, progress=False)
    validate(s, progress=False)
    return s


def _external(study: StudyConfig) -> pl.DataFrame:
    from analytics.fit import stored_predictions

    preds = stored_predictions(study.store_path, "glm").filter(pl.col("split") == "external")
    return preds.join(_patients().select("patient_id", "center", "label"), on="patient_id")


def _rows(study: StudyConfig) -> list[dict[str, str]]:
    with (study.report_dir / "metrics.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_per_centre_rows_equal_the_statistics_of_each_centres_predictions(study: StudyConfig) -> None:
    ext = _external(study)
    rows = _rows(study)
    for center in ("C", "D", "E"):
        part = ext.filter(pl.col("center") == center)
        want = centre_measures(part["label"].to_numpy(), logit(part["score"].to_numpy()))
        got = {r["metric"]: r for r in rows if r["model"] == "glm" and r["split"] == "external" and r["center"] == center}
        for name in ("auc", "calibration_in_the_large", "calibration_recalibration_slope", "oe_ratio", "lp_mean", "lp_sd"):
            assert float(got[name]["estimate"]) == pytest.approx(want[name], rel=1e-9), (center, name)
        z = 1.959963984540054
        low = want["calibration_in_the_large"] - z * want["citl_se"]
        assert float(got["calibration_in_the_large"]["low"]) == pytest.approx(low, rel=1e-9)


def test_a_centre_without_events_reads_no_events_and_is_left_out_of_pooling(study: StudyConfig) -> None:
    rows = _rows(study)
    f = [r for r in rows if r["center"] == "F" and r["split"] == "external" and r["model"] == "glm"]
    assert any(r["metric"] == "note" and r["method"] == "no events" for r in f)
    assert not any(r["metric"] == "auc" for r in f)
    data = json.loads((study.report_dir / "metrics.json").read_text())
    pooled = data["multicentre"]["glm"]["pooled"]
    assert all(p["centers"] == ["C", "D", "E"] for p in pooled)
    assert any("centre F: no events; left out of pooling" in n for n in data["notes"])


def test_meta_rows_equal_the_pooling_of_the_per_centre_estimates(study: StudyConfig) -> None:
    ext = _external(study)
    per = [centre_measures(p["label"].to_numpy(), logit(p["score"].to_numpy()))
           for c in ("C", "D", "E") for p in [ext.filter(pl.col("center") == c)]]
    want = meta_analysis.pool("auc", [m["auc"] for m in per], [m["auc_var"] for m in per])
    rows = {r["metric"]: r for r in _rows(study) if r["model"] == "glm" and r["split"] == "meta"}
    assert float(rows["auc"]["estimate"]) == pytest.approx(want.estimate, rel=1e-9)
    assert (float(rows["auc"]["low"]), float(rows["auc"]["high"])) == pytest.approx((want.low, want.high), rel=1e-9)
    pi = rows["auc_prediction_interval"]
    assert (float(pi["low"]), float(pi["high"])) == pytest.approx((want.pi_low, want.pi_high), rel=1e-9)
    assert float(rows["auc_tau2"]["estimate"]) == pytest.approx(want.tau2, rel=1e-9, abs=1e-12)
    assert float(rows["auc_k"]["estimate"]) == 3
    assert {"calibration_in_the_large", "calibration_recalibration_slope", "oe_ratio",
            "auc_prediction_interval_riley", "auc_i2"} <= set(rows)
    assert "Hartung-Knapp" in rows["auc"]["method"]


def test_notebook_meta_frame_holds_the_pooled_measures(study: StudyConfig) -> None:
    meta = load_validation(study).meta()
    assert meta.filter(pl.col("model") == "glm")["measure"].to_list() == [
        "auc", "calibration_in_the_large", "calibration_recalibration_slope", "oe_ratio"]
    row = meta.filter(pl.col("measure") == "oe_ratio").row(0, named=True)
    assert row["k"] == 3 and row["scale"] == "log" and row["pi_low"] < row["low"] < row["estimate"] < row["high"]
    assert row["centers"] == "C, D, E"


def test_updated_models_are_reported_as_apparent_with_a_warning(study: StudyConfig) -> None:
    rows = _rows(study)
    ext = _external(study)
    for center in ("C", "D", "E"):
        part = ext.filter(pl.col("center") == center)
        u = update_logistic(part["label"].to_numpy(), logit(part["score"].to_numpy()))
        mine = [r for r in rows if r["model"] == f"glm-updated-{center}"]
        assert {r["split"] for r in mine} == {"updating"}
        choice = next(r for r in mine if r["metric"] == "updating_choice")
        assert choice["method"] == f"closed test: {u.choice}"
        auc = next(r for r in mine if r["metric"] == "auc")
        assert auc["method"].startswith("apparent")
    assert not any(r["model"].startswith("glm-updated") and r["split"] in ("external", "meta") for r in rows)
    data = json.loads((study.report_dir / "metrics.json").read_text())
    assert any(n.startswith("glm-updated-D: apparent performance") and "validate the updated model" in n
               for n in data["notes"])
    # centre D was shifted by +0.8 on the logit scale: its intercept must be recalibrated
    upd = {u["center"]: u for u in data["multicentre"]["glm"]["updated"]}
    assert upd["D"]["choice"] in ("recalibration_in_the_large", "logistic_recalibration")
    assert not math.isnan(upd["D"]["deviance"]["original"])


def test_metrics_json_reads_back_to_the_same_rows(study: StudyConfig) -> None:
    v = load_validation(study)
    assert v.to_csv() == (study.report_dir / "metrics.csv").read_text(encoding="utf-8")


def test_a_misspelt_updating_centre_is_a_config_error_naming_it(tmp_path: Path) -> None:
    from pipeline.config import ConfigError

    toml = study_toml("mc", 3, MODELS + 'updating_centers = ["Dd"]\n', split=SPLIT)
    (tmp_path / "study.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"updating_centers: no external centre named 'Dd'.*C, D, E, F"):
        load_config(tmp_path / "study.toml")


def test_a_misspelt_updating_centre_under_the_column_rule_stops_validate_before_writing(
        study: StudyConfig, tmp_path: Path) -> None:
    from analytics.validation.multicentre import check_settings

    outcomes = _patients().with_columns(pl.when(pl.col("center").is_in(["C", "D", "E", "F"])).then(pl.lit("external"))
                                        .otherwise(pl.lit("train")).alias("cohort_split"))
    bad = study.model_copy(update={"validation": study.validation.model_copy(update={"updating_centers": ["Q"]})})
    with pytest.raises(ValidateError, match=r"updating_centers: no external centre named 'Q'"):
        check_settings(bad, outcomes)


def test_report_has_the_multicentre_section_with_a_forest_plot_per_pooled_measure(study: StudyConfig) -> None:
    from analytics.report import write_report

    html = write_report(study, progress=False).path.read_text(encoding="utf-8")
    assert '<section id="sec-multicentre">' in html and 'href="#sec-multicentre"' in html
    for measure in ("auc", "calibration_in_the_large", "calibration_recalibration_slope", "oe_ratio"):
        assert f'<figure id="fig-meta-glm-{measure}">' in html
    assert "<td>F</td>" in html and "no events" in html
    assert "glm-updated-D" in html and "are not a validation" in html
    assert "prediction interval" in html and "Riley" in html


def test_membership_c_and_linear_predictor_spread_sit_beside_each_centre(study: StudyConfig) -> None:
    """Debray et al. 2015: a centre of older patients is told apart from the development patients better than
    one like them."""
    rows = _rows(study)
    mc = {r["center"]: float(r["estimate"]) for r in rows
          if r["model"] == "glm" and r["split"] == "external" and r["metric"] == "membership_c"}
    assert set(mc) == {"C", "D", "E"}
    assert mc["E"] > 0.7 and mc["C"] < 0.62 and mc["E"] > mc["C"]
    from analytics.fit import stored_predictions

    preds = stored_predictions(study.store_path, "glm").join(
        _patients().select("patient_id", "center", "label", "age", "marker"), on="patient_id")
    dev = preds.filter(pl.col("split").is_in(["train", "internal"]))
    cen = preds.filter(pl.col("center") == "E")

    def design(f: pl.DataFrame) -> np.ndarray:
        return np.column_stack([logit(f["score"].to_numpy()), f["age"].to_numpy(), f["marker"].to_numpy()])

    from analytics.stats.updating import membership_c

    want = membership_c(design(dev), dev["label"].to_numpy(), design(cen), cen["label"].to_numpy())
    assert mc["E"] == pytest.approx(want, rel=1e-9)


def test_the_notebook_study_gives_the_same_meta_frame(study: StudyConfig) -> None:
    import cohortlab

    nb = cohortlab.load_study(study.root / "study.toml").validation(progress=False).meta()
    assert nb.equals(load_validation(study).meta()) and nb.height == 4
