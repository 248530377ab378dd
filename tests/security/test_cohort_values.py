"""Values that are no outcome, no time or no plain text (issue 21, item 7 of Why): a cohort's ``NULL AS label``,
a time of +inf / -inf / NaN in a cohort or a manifest, and a label with mathtext (``$x^{$``) in a figure.

Each is one line naming the cohort file (or manifest line) and column, exit 1, through the CLI and the notebook
API; a figure draws the user's text literally instead of crashing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.text import Text
from study_builders import build_study, study_toml, write_study

import cohortlab
from analytics.cli import main
from pipeline.config import load_config
from pipeline.errors import CohortlabError

PATIENTS = pl.DataFrame({
    "patient_id": [f"P{i:02d}" for i in range(12)],
    "center": ["A"] * 8 + ["B"] * 4,
    "label": [0, 1] * 6,
    "age": [40.0 + i for i in range(12)],
    "months": [3.0 + i for i in range(12)],
    "event": [1, 0, 0, 1] * 3,
})
MATH = "$x^{$ (mmol/L)"  # two dollars start mathtext, and its group is never closed: the parser raises


def _cohort_study(root: Path, columns: str) -> Path:
    build_study(root, PATIENTS, columns, study_toml("values", 1, ""))
    return root / "study.toml"


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# --- NULL AS label ---------------------------------------------------------------------------------------


def test_a_cohort_without_any_label_says_it_has_no_outcome(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    toml = _cohort_study(tmp_path, "NULL AS label, c.age")
    capsys.readouterr()
    assert main(["cohort", str(toml)]) == 1
    line = _one_error_line(capsys)
    cohort_file = str(tmp_path / "cohorts" / "all.sql")
    assert cohort_file in line and "column label is NULL for every patient (12 rows)" in line
    assert "no outcome" in line and "Null values" not in line
    with pytest.raises(CohortlabError, match=r"all\.sql: column label is NULL for every patient \(12 rows\)"):
        cohortlab.load_study(toml).cohort()


def test_a_typed_null_label_is_the_same(tmp_path: Path) -> None:
    toml = _cohort_study(tmp_path, "CAST(NULL AS INTEGER) AS label")
    with pytest.raises(CohortlabError, match="label is NULL for every patient .* no outcome"):
        cohortlab.load_study(toml).cohort()


def test_a_survival_cohort_may_say_null_as_label(tmp_path: Path) -> None:
    """With time and event the outcome is there: ``NULL AS label`` is the same as no label column."""
    toml = _cohort_study(tmp_path, "NULL AS label, c.months AS time, c.event AS event")
    cohort = cohortlab.load_study(toml).cohort()
    assert cohort.frame["label"].null_count() == 12
    assert cohort.time is not None and cohort.time.tolist() == [3.0 + i for i in range(12)]


def test_an_all_null_event_is_no_outcome_either(tmp_path: Path) -> None:
    toml = _cohort_study(tmp_path, "c.months AS time, NULL AS event")
    with pytest.raises(CohortlabError, match="column event is NULL for every patient"):
        cohortlab.load_study(toml).cohort()


# --- time of inf / -inf / NaN ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["'inf'", "'-inf'", "'nan'"])
def test_a_non_finite_time_in_a_cohort_is_refused_naming_the_patients(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _cohort_study(
        tmp_path, f"CASE WHEN p.patient_id IN ('P03', 'P07') THEN {bad}::DOUBLE ELSE c.months END AS time, "
                  "c.event AS event")
    capsys.readouterr()
    assert main(["cohort", str(toml)]) == 1
    line = _one_error_line(capsys)
    assert str(tmp_path / "cohorts" / "all.sql") in line and "column time must be a finite number" in line
    assert "(P03)" in line and "(P07)" in line
    with pytest.raises(CohortlabError, match=r"all\.sql: column time must be a finite number.*P03"):
        cohortlab.load_study(toml).cohort()


def test_a_time_that_overflows_to_inf_in_the_manifest_is_refused_at_ingest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patients = PATIENTS.rename({"months": "time"}).with_columns(pl.col("time").cast(pl.String))
    patients = patients.with_columns(
        pl.when(pl.col("patient_id") == "P02").then(pl.lit("1e400")).otherwise(pl.col("time")).alias("time"))
    toml = write_study(tmp_path, patients, "c.label", study_toml("values", 1, ""))
    assert main(["ingest", str(toml)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "line 4, column 'time': time must be a finite number, not '1e400'" in err
    assert not load_config(toml).store_path.exists()  # nothing written
    with pytest.raises(CohortlabError, match="time must be a finite number"):
        cohortlab.load_study(toml).ingest(progress=False)


# --- mathtext in figures ---------------------------------------------------------------------------------


def test_literal_text_is_drawn_as_written() -> None:
    from analytics.figures import literal

    for text in (MATH, "$a$ and $b$", r"50\$ fee", "plain", "a $ b"):
        assert Text(0, 0, literal(text))._preprocess_math(literal(text)) == (text, False)


def _nomogram(labels: dict[str, str]):  # noqa: ANN202 - a Nomogram
    from analytics.models.classical import build_pipeline
    from analytics.models.data import Columns
    from analytics.report.nomogram import nomogram

    rng = np.random.default_rng(0)
    table = __import__("pandas").DataFrame({
        "age": rng.normal(55, 10, 120).round(1),
        "stage": rng.choice(["I", "$II^{$", "III"], 120).astype(object),
    })
    y = (rng.random(120) < 1 / (1 + np.exp(-(table["age"] - 55) / 10))).astype(int)
    pipe = build_pipeline("logistic", Columns(numeric=("age",), categorical=("stage",)), {"C": 1.0}, seed=0)
    return nomogram("m$x^{$", pipe.fit(table, y), table, labels=labels)


def test_the_nomogram_draws_a_label_with_mathtext_literally() -> None:
    from analytics.report.nomogram import nomogram_figure

    png = nomogram_figure(_nomogram({"age": MATH, "stage": "Stage $\\frac{$"}), title=f"{MATH}: nomogram")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_figures_draw_model_variable_and_centre_names_literally(tmp_path: Path) -> None:
    from analytics import figures
    from analytics.explain import plots

    fpr = np.array([0.0, 0.2, 1.0])
    tpr = np.array([0.0, 0.7, 1.0])
    pngs = [
        figures.roc_figure(MATH, [figures.RocPanel("internal", fpr, tpr, f"model {MATH} AUC 0.80")]),
        figures.roc_split_figure("external", [(MATH, fpr, tpr, MATH)]),
        figures.forest_figure([figures.ForestRow(f"{MATH} vs b", "internal", 0.1, -0.1, 0.3, "0.2")]),
        figures.subgroup_forest_figure(MATH, [figures.SubgroupRow(f"sex = {MATH}", 0.7, 0.6, 0.8, MATH)]),
        figures.decision_split_figure("internal", np.linspace(0.05, 0.5, 5), [(MATH, np.linspace(0.3, 0, 5))],
                                      np.linspace(0.2, -0.3, 5), np.zeros(5), note=MATH),
        figures.harmonization_figure(MATH, [MATH, "B", MATH, "B"], ["train", "train", "external", "external"],
                                     [figures.HarmonizationPanel(MATH, np.arange(8.0).reshape(4, 2), [0.6, 0.3], 0.1)]),
        figures.calibration_figure(f"{MATH}: calibration", [figures.CalibrationPanel(
            "internal", fpr, tpr, fpr, tpr, tpr - 0.1, tpr + 0.1, fpr, f"{MATH} slope 1.0")]),
        figures.decision_figure(f"{MATH}: decision curves", [figures.DecisionPanel(
            "internal", np.linspace(0.05, 0.5, 3), np.array([0.2, 0.1, 0.0]), np.array([0.1, 0.0, -0.2]), np.zeros(3))]),
        figures.km_figure(f"{MATH} · internal", [figures.KMGroup(MATH, np.array([0.0, 5.0]), np.array([1.0, 0.5]),
                                                                  np.array([1.0, 0.3]), np.array([1.0, 0.7]))],
                          np.array([0.0, 5.0]), {MATH: [10, 5]}, subtitle=MATH, time_label=MATH),
        figures.horizon_figure(MATH, [(MATH, fpr, tpr)], [(MATH, fpr, tpr)], [],
                               (MATH, [0.1, 0.2], [0.1, 0.0], [0.05, -0.1])),
    ]
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    out = plots.bar([MATH, "igg"], np.array([0.3, 0.1]), tmp_path / "bar.png", title=MATH, xlabel="mean |SHAP|")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
