"""Published models (``kind = "fixed"``): a model written from a fitted glm's coefficients gives that glm's risks
and validation numbers; a coefficient naming no column, or a horizon its baseline lacks, is a config error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from predict_helpers import write

import cohortlab
from analytics.cli import main
from pipeline.config import ConfigError, load_config

GLM = """[[models]]
name = "glm"
kind = "logistic"
formula = "age + sex + grade"
params = { penalty = "none" }
"""


def _fixed(name: str, coefficients: dict[str, float], extra: str = "") -> str:
    inline = ", ".join(f'"{k}" = {v!r}' for k, v in coefficients.items())
    return f'[[models]]\nname = "{name}"\nkind = "fixed"\nformula = "age + sex + grade"\n' \
           f"coefficients = {{ {inline} }}\n{extra}"


def test_a_fixed_model_from_a_glms_coefficients_gives_its_risks_and_validation(tmp_path: Path) -> None:
    path = write(tmp_path, GLM)
    study = cohortlab.load_study(path)
    study.ingest(progress=False)
    study.fit(progress=False)
    glm = study.model("glm")
    coefs = dict(zip(glm.summary["term"].to_list(), glm.summary["estimate"].to_list()))
    assert set(coefs) == {"(Intercept)", "age", "sexM", "grademid", "gradehigh"}
    threshold = study.validation(progress=False).models["glm"].threshold.value
    with path.open("a", encoding="utf-8") as fh:
        fh.write(_fixed("published", coefs, f"threshold = {threshold!r}\n"))
    study = cohortlab.load_study(path)
    study.fit(progress=False)
    preds = {m: pl.read_parquet(study.root / "models" / m / "predictions.parquet").sort("patient_id")
             for m in ("glm", "published")}
    held = [preds[m].filter(pl.col("split") != "train") for m in ("glm", "published")]
    assert held[0].height > 20
    # the glm's final model scores the held-out patients; the published model gives the same risks
    np.testing.assert_allclose(held[1]["score"].to_numpy(), held[0]["score"].to_numpy(), rtol=0, atol=1e-9)
    v = study.validation(progress=False)
    assert v.models["published"].threshold.value == threshold
    for split in ("internal", "external"):
        rows = {m: v.summary.filter((pl.col("model") == m) & (pl.col("split") == split) & pl.col("center").is_null())
                for m in ("glm", "published")}
        a, b = (dict(zip(r["measure"].to_list(), r["estimate"].to_list())) for r in (rows["glm"], rows["published"]))
        for measure in ("auc", "brier", "sensitivity", "specificity", "calibration_slope"):
            if measure in a:
                assert b[measure] == pytest.approx(a[measure], abs=1e-9), (split, measure)
        assert {"auc", "sensitivity"} <= set(a)


def test_without_a_threshold_only_threshold_free_measures(tmp_path: Path) -> None:
    coefs = {"(Intercept)": -6.0, "age": 0.09, "sexM": 0.7, "grademid": 0.5, "gradehigh": 1.2}
    study = cohortlab.load_study(write(tmp_path, _fixed("published", coefs)))
    study.ingest(progress=False)
    study.fit(progress=False)
    v = study.validation(progress=False)
    measures = set(v.summary.filter(pl.col("model") == "published")["measure"].to_list())
    assert "auc" in measures and "sensitivity" not in measures
    assert v.models["published"].threshold is None


def test_a_coefficient_naming_no_column_is_refused_naming_it(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    coefs = {"(Intercept)": -6.0, "age": 0.09, "sexM": 0.7, "grademid": 0.5, "gradehigh": 1.2, "bmi": 0.1}
    path = write(tmp_path, _fixed("published", coefs))
    assert main(["ingest", str(path)]) == 0
    capsys.readouterr()
    assert main(["fit", str(path)]) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line and line]
    assert len(err) == 1 and "coefficients.bmi" in err[0] and "published" in err[0], err
    assert not (tmp_path / "models" / "published" / "manifest.json").exists()


def test_a_horizon_outside_the_baseline_survival_is_a_config_error(tmp_path: Path) -> None:
    coefs = {"age": 0.05, "sexM": 0.4, "grademid": 0.3, "gradehigh": 0.8}
    extra = "baseline_survival = { 60 = 0.93 }\nlp_centre = 3.5\n"
    path = write(tmp_path, _fixed("published", coefs, extra), validation="horizons = [60, 90]\n")
    with pytest.raises(ConfigError, match=r"horizons 90 not among its baseline_survival times \(60\)"):
        load_config(path)


def test_a_fixed_cox_model_gives_its_published_risks(tmp_path: Path) -> None:
    coefs = {"age": 0.05, "sexM": 0.4, "grademid": 0.3, "gradehigh": 0.8}
    extra = "baseline_survival = { 60 = 0.93 }\nlp_centre = 3.5\n"
    path = write(tmp_path, _fixed("published", coefs, extra), validation="horizons = [60]\n")
    study = cohortlab.load_study(path)
    study.ingest(progress=False)
    study.fit(progress=False)
    risks = pl.read_parquet(study.root / "models" / "published" / "horizon_risks.parquet").sort("patient_id")
    data = pl.read_csv(tmp_path / "patients.csv").sort("patient_id")
    lp = (0.05 * data["age"].to_numpy() + 0.4 * (data["sex"].to_numpy() == "M")
          + np.select([data["grade"].to_numpy() == "mid", data["grade"].to_numpy() == "high"], [0.3, 0.8], 0.0))
    expected = 1 - 0.93 ** np.exp(lp - 3.5)
    got = dict(zip(risks["patient_id"].to_list(), risks["risk"].to_list()))
    np.testing.assert_allclose([got[p] for p in data["patient_id"].to_list()], expected, rtol=0, atol=1e-12)
    v = study.validation(progress=False)
    measures = set(v.summary.filter(pl.col("model") == "published")["measure"].to_list())
    assert any(m.startswith("c_index") or m == "c_index" for m in measures), measures
