"""Acceptance of issue 23: a clinical-only study (a patients manifest only) on survival::nwtco with an
unpenalised logistic model using a spline, a factor and an interaction, and a Cox model, runs with
``cohortlab run``; its model folders hold the coefficient tables of R's ``glm`` / ``coxph`` / ``rms::anova``
(fixture: regression_fixture.R, every child a training patient), its report shows them, and bad input
stops the run with one clear line."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import study_toml, write_study

from analytics.cli import main

HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def fixture() -> dict[str, Any]:
    """The R fits of regression_fixture.R (every nwtco child)."""
    return json.loads((HERE / "regression_fixture.json").read_text(encoding="utf-8"))


def data() -> pl.DataFrame:
    return pl.read_csv(HERE / "nwtco.csv")


FORMULA = "histol + stage + rcs(age, 4) + histol:stage"
VARIABLES = """[variables]
histol = { levels = ["FH", "UH"] }
stage = { levels = ["I", "II", "III", "IV"] }
age = { type = "numeric", unit = "months" }
"""
MODELS = f"""[[models]]
name = "glm"
kind = "logistic"
formula = "{FORMULA}"
params = {{ penalty = "none" }}
[[models]]
name = "cox"
kind = "cox"
formula = "{FORMULA}"
[validation]
folds = 2
n_boot = 20
horizons = [1095]
[explain]
enabled = false
"""
# nested maximum-likelihood models for the likelihood-ratio test of added value, and a penalised one-hot model
NESTED = """[[models]]
name = "histol_only"
kind = "logistic"
formula = "histol"
params = { penalty = "none" }
[[models]]
name = "staged"
kind = "logistic"
formula = "histol + stage"
params = { penalty = "none" }
[[models]]
name = "spline"
kind = "logistic"
formula = "histol + stage + rcs(age, 4)"
params = { penalty = "none" }
[[models]]
name = "linear"
kind = "logistic"
clinical = ["histol", "stage", "age"]
params = { penalty = "none" }
[[models]]
name = "ridge"
kind = "logistic"
clinical = ["histol", "stage", "age"]
grid = { C = [1.0] }
[validation]
folds = 2
n_boot = 10
added_value = [["staged", "histol_only"], ["spline", "staged"], ["spline", "linear"]]
"""


def _patients(n: int | None = None) -> pl.DataFrame:
    d = data() if n is None else data().head(n)
    return pl.DataFrame({
        "patient_id": [f"N{s:04d}" for s in d["seqno"]], "center": ["A"] * d.height,
        "label": d["rel"], "time": d["edrel"], "event": d["rel"], "age": d["age"].cast(pl.Float64),
        "histol": ["FH" if h == 1 else "UH" for h in d["histol"]],
        "stage": [["I", "II", "III", "IV"][s - 1] for s in d["stage"]],
    })


def _write(root: Path, models: str, patients: pl.DataFrame) -> Path:
    # every child a training patient: the final fits are R's fits on all of nwtco
    toml = study_toml("nwtco", 1, models, sections=VARIABLES, split="internal_fraction = 0\nseed = 1")
    return write_study(root, patients, "c.label, c.time, c.event, c.age, c.histol, c.stage", toml)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clinical_only")
    toml = _write(root, MODELS, _patients())
    assert main(["run", str(toml)]) == 0
    return root


@pytest.fixture(scope="module")
def nested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from analytics.fit import fit
    from analytics.validation.stage import validate
    from pipeline.config import load_config
    from pipeline.ingest import ingest

    root = tmp_path_factory.mktemp("nested")
    study = load_config(_write(root, NESTED, _patients()))
    ingest(study, progress=False)
    fit(study, progress=False)
    validate(study, progress=False)
    return root


def _csv(root: Path, model: str, name: str) -> pl.DataFrame:
    return pl.read_csv(root / "models" / model / name, schema_overrides={"note": pl.String})


def test_logistic_coefficients_csv_equals_glm(run: Path) -> None:
    g = fixture()["glm_tight"]
    table = _csv(run, "glm", "coefficients.csv")
    assert table.height == len(g["names"]) and table["term"][0] == "(Intercept)"
    # R's names with our level labels (histol 2 = UH, stage 2..4 = II..IV)
    assert table["term"].to_list()[5:8] == ["rcs(age, 4)age", "rcs(age, 4)age'", "rcs(age, 4)age''"]
    np.testing.assert_allclose(table["estimate"], g["estimate"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["se"], g["se"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["z"], g["z"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["p"], g["p"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.log(table["ci_low"]), g["ci_low"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.log(table["ci_high"]), g["ci_high"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["odds_ratio"], np.exp(g["estimate"]), rtol=1e-6)
    record = json.loads((run / "models" / "glm" / "manifest.json").read_text())["regression"]
    assert record["n"] == g["n"] == 4028 and record["events"] == g["events"]
    assert record["aic"] == pytest.approx(g["aic"], abs=1e-6)
    assert record["residual_deviance"] == pytest.approx(g["deviance"], abs=1e-6)
    assert record["lr_chisq"] == pytest.approx(g["null_deviance"] - g["deviance"], abs=1e-6)
    assert record["df"] == 10 and not record["penalised"]


def test_logistic_anova_csv_equals_rms(run: Path) -> None:
    ref = fixture()["lrm"]["anova"]
    table = _csv(run, "glm", "anova.csv")
    assert [r.strip() for r in table["row"]] == [r.strip() for r in ref["rows"]]
    assert table["df"].to_list() == ref["df"]
    np.testing.assert_allclose(table["chisq"], ref["chisq"], rtol=0, atol=1e-6)
    # anova.rms computes P as 1 - pchisq(...): exact only to ~1e-16 absolute
    np.testing.assert_allclose(table["p"], ref["p"], rtol=1e-6, atol=1e-15)


def test_cox_coefficients_csv_equals_coxph(run: Path) -> None:
    c = fixture()["coxph"]
    table = _csv(run, "cox", "coefficients.csv")
    assert table.height == len(c["names"]) and "hazard_ratio" in table.columns
    for col, key in (("estimate", "estimate"), ("se", "se"), ("z", "z")):
        np.testing.assert_allclose(table[col], c[key], rtol=0, atol=1e-6)
    for col, key in (("hazard_ratio", "hr"), ("ci_low", "hr_low"), ("ci_high", "hr_high"), ("p", "p")):
        np.testing.assert_allclose(table[col], c[key], rtol=1e-6)
    record = json.loads((run / "models" / "cox" / "manifest.json").read_text())["regression"]
    assert record["lr_chisq"] == pytest.approx(c["lr_statistic"], abs=1e-6)
    assert record["df"] == c["lr_df"] and record["aic"] == pytest.approx(c["aic"], abs=1e-6)
    assert record["n"] == c["n"] and record["events"] == c["events"]


def test_penalised_one_hot_table_is_flagged(nested: Path) -> None:
    table = _csv(nested, "ridge", "coefficients.csv")
    assert table["penalised"].all() and table["se"].is_null().all() and table["p"].is_null().all()
    # one column per level (no reference): every level has its row, noted
    assert {"histol_FH", "histol_UH", "stage_I", "stage_IV", "age"} <= set(table["term"].to_list())
    assert table.filter(pl.col("term") == "stage_I")["note"][0].startswith("one column per level")
    assert not (nested / "models" / "ridge" / "anova.csv").exists()


def test_penalised_table_is_flagged_in_the_report_section(nested: Path) -> None:
    from analytics.models.persist import read_record
    from analytics.report.fitted import coefficient_blocks
    from analytics.report.writer import environment
    from pipeline.config import load_config

    study = load_config(nested / "study.toml")
    manifests = {m: read_record(study.models_dir / m, study.store_path) for m in ("ridge", "spline")}
    blocks = {b["model"]: b for b in coefficient_blocks(study, ["ridge", "spline"], manifests)}
    assert blocks["ridge"]["penalised"] and not blocks["ridge"]["anova"]
    assert {r["p"] for r in blocks["ridge"]["rows"]} == {"–"}
    html = environment().get_template("sections/coefficients.html.j2").render(coefficients=list(blocks.values()))
    assert 'id="coefficients-penalised-ridge"' in html and "penalised: no standard errors" in html
    assert 'id="coefficients-penalised-spline"' not in html and 'data-anova="spline"' in html


def test_tampered_coefficients_csv_is_detected(run: Path) -> None:
    from analytics.models.persist import ArtifactError, read_files

    path = run / "models" / "glm" / "coefficients.csv"
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b"(Intercept),", b"(Intercept),1", 1))
        with pytest.raises(ArtifactError, match="coefficients.csv: its sha256 differs"):
            read_files(path.parent, run / "store.duckdb")
    finally:
        path.write_bytes(original)
    assert read_files(path.parent, run / "store.duckdb") is not None


@pytest.mark.parametrize("new, old, key", [("staged", "histol_only", "factor"), ("spline", "staged", "spline"),
                                           ("spline", "linear", "linear_to_spline")])
def test_lr_test_of_added_value_counts_free_parameters_as_r_anova(nested: Path, new: str, old: str, key: str) -> None:
    """A 4-level factor adds 3 free parameters, rcs(age, 4) adds 3 (k - 1), and 2 where it replaces age entered
    linearly (a clinical list: the model matrices nest): R's ``anova(glm_old, glm_new, test = "LRT")``
    (fixture: lr_added_fixture.R), from the study's saved training fits."""
    ref = json.loads((HERE / "lr_added_fixture.json").read_text())[key]
    metrics = json.loads((nested / "reports" / "nwtco" / "metrics.json").read_text())
    lr = next(a for a in metrics["added_value"] if a["split"] == "train" and (a["new"], a["old"]) == (new, old))["lr_test"]
    assert lr["df"] == ref["df"] == (2 if key == "linear_to_spline" else 3)
    for field in ("deviance_reduced", "deviance_full", "statistic"):
        assert lr[field] == pytest.approx(ref[field], abs=1e-6)
    assert lr["p"] == pytest.approx(ref["p"], rel=1e-6)


def test_report_models_section_shows_the_tables(run: Path) -> None:
    html = (run / "reports" / "nwtco" / "index.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="sec-models">'):]
    section = section[:section.index("</section>")]
    for model in ("glm", "cox"):
        assert f'data-coefficients="{model}"' in section and f'data-anova="{model}"' in section
    glm = section[section.index('data-coefficients="glm"'):section.index('data-anova="glm"')]
    assert "rcs(age, 4)age&#39;&#39;" in glm and "Odds ratio" in glm
    g = fixture()["glm_tight"]
    assert f"{g['estimate'][1]:.4f}" in glm  # histol UH, as glm prints it
    assert f"{np.exp(g['ci_low'][1]):.3f}–{np.exp(g['ci_high'][1]):.3f}" in glm
    assert "TOTAL NONLINEAR + INTERACTION" in section
    assert f"LR χ² = {g['null_deviance'] - g['deviance']:.2f} on 10 df" in section


def test_notebook_summary_and_print_summary(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cohortlab

    study = cohortlab.load_study(run / "study.toml")
    summary = study.model("glm").summary
    assert isinstance(summary, pl.DataFrame)
    np.testing.assert_allclose(summary["estimate"], fixture()["glm_tight"]["estimate"], rtol=0, atol=1e-6)
    assert study.model("cox").anova["row"].to_list()[-1] == "TOTAL"
    study.model("cox").print_summary()
    out = capsys.readouterr().out
    c = fixture()["coxph"]
    assert "number of events = " + str(c["events"]) in out and "exp(coef)" in out
    assert f"{c['lr_statistic']:.2f} on {c['lr_df']} df" in out and f"AIC = {c['aic']:.2f}" in out
    assert f"{c['estimate'][0]:.4f}" in out and "Wald tests per term (rms::anova)" in out
    from pipeline.errors import CohortlabError

    with pytest.raises(CohortlabError, match="no model named 'nope'"):
        study.model("nope")


@pytest.mark.parametrize("models, message", [
    ('[[models]]\nname = "m"\nkind = "logistic"\nformula = "histol + rsc(age, 4)"\nparams = { penalty = "none" }\n',
     "did you mean rcs"),
    ('[[models]]\nname = "m"\nkind = "logistic"\nformula = "rcs(histol, 4)"\nparams = { penalty = "none" }\n',
     "rcs(histol, 4): histol is categorical"),
    ('[[models]]\nname = "m"\nkind = "logistic"\nformula = "histol + rcs(few, 5)"\nparams = { penalty = "none" }\n',
     "too few for 5 knots"),
    ('[[models]]\nname = "m"\nkind = "logistic"\nformula = "histol + sep"\nparams = { penalty = "none" }\n',
     "separation: 'sep'"),
])
def test_bad_input_is_one_clear_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str], models: str,
                                                 message: str) -> None:
    patients = _patients(400)
    few = np.tile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 100)[:400]
    patients = patients.with_columns(pl.Series("few", few), pl.Series("sep", patients["label"].cast(pl.Float64) * 3))
    toml = study_toml("bad", 1, models + "[validation]\nfolds = 2\n[explain]\nenabled = false\n",
                      sections=VARIABLES, split="internal_fraction = 0\nseed = 1")
    path = write_study(tmp_path, patients, "c.label, c.age, c.histol, c.stage, c.few, c.sep", toml)
    assert main(["run", str(path)]) == 1
    # a config error is one line on stderr; a stage that fails is one FAIL line on stdout (its traceback goes
    # to the study's log file only)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if message in line]
    # the run's summary table and its closing words repeat the same one line
    assert len({line.split("Error: ", 1)[-1] for line in lines}) == 1, text
    assert "'m'" in lines[0] or "models[0]" in lines[0]  # names the model
