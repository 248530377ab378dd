"""``cohortlab predict`` and ``study.model(name).predict``: new patients scored by a saved model.

Predicting the internal and external patients reproduces their stored predictions exactly for every clinical
kind; an unpenalised logistic regression's CI is R's ``predict(glm, se.fit = TRUE)`` (ci_fixture.R); a bad row
is reported with its reason while the others are scored; the output is written whole, only where asked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from predict_helpers import KINDS, new_patients

import cohortlab
from analytics.cli import main
from analytics.predict import EXCLUDED, predict_frame
from pipeline.errors import CohortlabError

HERE = Path(__file__).parent
def _new() -> pl.DataFrame:
    return new_patients()


@pytest.mark.parametrize("name", KINDS)
def test_predicting_held_out_patients_gives_their_stored_predictions(study: cohortlab.Study, name: str) -> None:
    out = study.model(name).predict(_new())
    stored = pl.read_parquet(study.root / "models" / name / "predictions.parquet").filter(pl.col("split") != "train")
    joined = stored.join(out, on="patient_id")
    assert joined.height == stored.height > 50
    assert joined["reason"].null_count() == joined.height
    column = "lp" if name == "cox" else "risk"
    assert (joined["score"] - joined[column]).abs().max() == 0.0
    if name == "cox":  # the absolute risk at each horizon is the one fit stored
        risks = pl.read_parquet(study.root / "models" / name / "horizon_risks.parquet")
        for t in (50, 80):
            at = risks.filter(pl.col("horizon") == t)
            both = at.join(stored.select("patient_id"), on="patient_id").join(out, on="patient_id")
            assert both.height == stored.height and (both["risk"] - both[f"risk_{t}"]).abs().max() == 0.0


def test_the_risk_ci_of_an_unpenalised_logistic_model_is_rs(study: cohortlab.Study) -> None:
    fx = json.loads((HERE / "ci_fixture.json").read_text(encoding="utf-8"))
    # the fixture's training patients are the study's (the guard of the comparison)
    stored = pl.read_parquet(study.root / "models" / "glm" / "predictions.parquet")
    train = sorted(stored.filter(pl.col("split") == "train")["patient_id"].to_list())
    data = pl.read_csv(HERE / "ci_data.csv")
    assert train == sorted(data.filter(pl.col("split") == "train")["patient_id"].to_list())
    out = study.model("glm").predict(_new())
    order = {p: i for i, p in enumerate(fx["patient_id"])}
    idx = [order[p] for p in out["patient_id"].to_list()]
    for col, key in (("lp", "lp"), ("risk", "risk"), ("risk_lower", "lower"), ("risk_upper", "upper")):
        np.testing.assert_allclose(out[col].to_numpy(), np.asarray(fx[key])[idx], rtol=0, atol=1e-6, err_msg=col)
    assert out["group"].drop_nulls().len() == out.height  # validation chose a threshold


def test_the_risk_ci_of_an_unpenalised_cox_model_is_survfits(study: cohortlab.Study) -> None:
    fx = json.loads((HERE / "ci_fixture.json").read_text(encoding="utf-8"))
    coefs = study.model("cox").summary
    np.testing.assert_allclose(coefs["estimate"].to_numpy(), list(fx["cox"]["coefficients"].values()), atol=1e-6)
    out = study.model("cox").predict(_new())
    order = {p: i for i, p in enumerate(fx["patient_id"])}
    idx = [order[p] for p in out["patient_id"].to_list()]
    for col, key in (("lp", "lp"), ("risk", "risk"), ("risk_lower", "lower"), ("risk_upper", "upper")):
        np.testing.assert_allclose(out[col].to_numpy(), np.asarray(fx["cox"][key])[idx], rtol=0, atol=1e-6,
                                   err_msg=col)
    # and at every horizon (the study's are the fixture's), named as the risk columns are
    horizons = fx["cox"]["horizons"]
    assert len(horizons) >= 2
    at = [f"risk{part}_{t:g}" for t in horizons for part in ("", "_lower", "_upper")]
    assert out.columns[out.columns.index("risk_upper") + 1:][:len(at)] == at
    for t in horizons:
        want = fx["cox"]["by_horizon"][f"{t:g}"]
        for part, key in (("", "risk"), ("_lower", "lower"), ("_upper", "upper")):
            got = out[f"risk{part}_{t:g}"].to_numpy()
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got, np.asarray(want[key])[idx], rtol=0, atol=1e-6, err_msg=f"{part} at {t}")


def test_bad_rows_are_reported_per_patient_while_the_rest_are_scored(study: cohortlab.Study) -> None:
    new = pl.DataFrame({
        "patient_id": ["N1", "N2", "N3", "N4", "N5", "N6"],
        "age": ["61", "abc", "55", "25", "120", "60"],
        "sex": ["F", "M", "X", "M", "F", "M"],
        "grade": ["low", "high", "mid", "mid", "high", ""],
    })
    out = study.model("glm").predict(new)
    why = dict(zip(out["patient_id"].to_list(), out["reason"].to_list()))
    assert why["N1"] is None and why["N5"] is None and why["N6"] is None
    assert why["N2"] == "wrong type: age = 'abc' is not a number (line 3)"
    assert why["N3"] == "unknown level sex = 'X' (development levels: F, M)"
    assert why["N4"] == EXCLUDED  # the cohort keeps age >= 30
    risk = dict(zip(out["patient_id"].to_list(), out["risk"].to_list()))
    assert all(risk[p] is None for p in ("N2", "N3", "N4")) and all(0 < risk[p] < 1 for p in ("N1", "N5", "N6"))
    flags = dict(zip(out["patient_id"].to_list(), out["flags"].to_list()))
    assert flags["N1"] is None
    assert flags["N5"].startswith("extrapolation: age = 120 outside development range")
    assert flags["N6"] == "grade missing (imputed)"
    # a published model imputes nothing: the patient without age is not scored
    fixed = study.model("published").predict(new)
    assert dict(zip(fixed["patient_id"].to_list(), fixed["reason"].to_list()))["N6"] == \
        "the model could not score it (an input is missing)"


def test_a_missing_column_stops_every_patient_with_its_name(study: cohortlab.Study) -> None:
    out = study.model("glm").predict(pl.DataFrame({"patient_id": ["N1"], "age": ["60"], "sex": ["F"]}))
    assert out["reason"].to_list() == ["missing column 'grade' in patients"]


def test_the_study_store_is_never_written(study: cohortlab.Study) -> None:
    store = study.root / "store.duckdb"
    before = (store.stat().st_mtime_ns, store.read_bytes())
    study.model("glm").predict(pl.DataFrame({"patient_id": ["NEW1"], "age": ["60"], "sex": ["F"], "grade": ["low"]}))
    assert (store.stat().st_mtime_ns, store.read_bytes()) == before


def test_the_cli_writes_the_risks_whole_and_only_where_asked(study: cohortlab.Study, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "new.csv"
    _new().write_csv(src)
    toml = str(study.root / "study.toml")
    out = tmp_path / "risks.csv"
    assert main(["predict", toml, "--model", "glm", "--patients", str(src), "--out", str(out)]) == 0
    written = pl.read_csv(out)
    assert written.columns == ["patient_id", "lp", "risk", "risk_lower", "risk_upper", "group", "flags", "reason"]
    assert written.height == _new().height
    capsys.readouterr()
    # the patients file itself, a link and a folder are refused, and nothing is written
    target = tmp_path / "elsewhere.csv"
    link = tmp_path / "link.csv"
    os.symlink(target, link)
    before = src.read_bytes()
    for bad in (src, link, tmp_path, study.root / "models" / "glm" / "x.csv"):
        assert main(["predict", toml, "--model", "glm", "--patients", str(src), "--out", str(bad)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out") and "nothing was written" in err[0]
    assert src.read_bytes() == before and not target.exists()
    assert not (study.root / "models" / "glm" / "x.csv").exists()


def test_an_unknown_model_is_refused_naming_it(study: cohortlab.Study) -> None:
    with pytest.raises(CohortlabError, match="no model named 'nope'"):
        predict_frame(study.config, "nope", _new())


def test_a_file_that_cannot_be_read_strictly_is_refused_naming_the_line(study: cohortlab.Study, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(study.root / "study.toml")
    cases = {
        "dup.csv": (b"patient_id,age,sex,grade\nA,60,F,low\nA,61,M,mid\n",
                    "line 3, column patient_id: duplicate id 'A' (first at line 2)"),
        "latin.csv": (b"patient_id,age,sex,grade\nA,60,F,low\nB\xe9,61,M,mid\n", "line 3: not valid utf-8"),
    }
    for name, (data, message) in cases.items():
        src = tmp_path / name
        src.write_bytes(data)
        out = tmp_path / f"risks-{name}"
        assert main(["predict", toml, "--model", "glm", "--patients", str(src), "--out", str(out)]) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line]
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()


def test_explain_adds_each_patients_largest_shap_contributions(study: cohortlab.Study) -> None:
    new = _new().head(8)
    out = study.model("glm").predict(new, explain=2)
    assert out.columns[-2:] == ["explain", "reason"]
    for text in out["explain"].to_list():
        parts = [p.rsplit(" ", 1) for p in text.split("; ")]
        assert len(parts) == 2 and {n for n, _ in parts} <= {"age", "sex", "grade"}
        assert abs(float(parts[0][1])) >= abs(float(parts[1][1]))
    # risks unchanged by it
    assert out.drop("explain").equals(study.model("glm").predict(new))
    with pytest.raises(CohortlabError, match="--explain: model 'cox'"):
        study.model("cox").predict(new, explain=2)
