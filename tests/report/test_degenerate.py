"""Degenerate data never crashes validate or the report: a model no better than chance, constant predictions,
separated classes, one class in a split: the number is replaced by "–" with the reason."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from degenerate_studies import Design, report_problems, write_design

import cohortlab
from analytics import report, stats
from analytics.models.artifacts import FitRecord
from analytics.models.classical import build_pipeline
from analytics.models.data import Columns
from analytics.models.learners import TabularLearner
from analytics.models.persist import FittedModel
from analytics.run import run
from analytics.validation import Estimate, ModelMetrics, SplitInputs, SplitMetrics, Validation, measure_split
from pipeline.config import Model

NO_VARIATION = "no explained variation"


# --- sample size ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(auc=0.474), dict(auc=0.5), dict(auc=float("nan")), dict(r2_cs=0.0),
                                dict(r2_cs=-0.02), dict(r2_cs=float("nan"))])
def test_sample_size_refuses_a_model_that_explains_nothing(kw: dict) -> None:
    with pytest.raises(ValueError, match=NO_VARIATION):
        stats.sample_size(0.3, 5, **kw)


@pytest.mark.parametrize("kw", [dict(auc=0.5001), dict(auc=0.502), dict(r2_cs=1e-6)])
def test_sample_size_just_above_chance_says_why_instead_of_dividing_by_zero(kw: dict) -> None:
    # criterion 2's shrinkage, rounded to 3 decimals as pmsampsize does, is 0 here: formula 1 divides by it
    with pytest.raises(ValueError, match="almost no explained variation.*rounds to 0"):
        stats.sample_size(0.3, 5, **kw)


def test_sample_size_of_a_useful_model_is_unchanged() -> None:
    res = stats.sample_size(0.3, 5, auc=0.505)  # the smallest AUC whose criterion 2 is defined, about
    assert res.n == res.criterion_1 and res.criterion_1 > 100_000 and res.shrinkage_2 > 0


def _fitted(name: str) -> FittedModel:
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"age": rng.normal(50, 10, 120), "igg": rng.normal(14, 3, 120)})
    y = (rng.random(120) < 0.3).astype(int)
    pipe = build_pipeline("logistic", Columns(numeric=("age", "igg")), {}, seed=0).fit(table, y)
    return FittedModel(Model(name=name, kind="logistic", clinical=["age", "igg"]),
                       TabularLearner.fitted("logistic", {}, pipe, {}), {"kind": "logistic"}, Path("."))


@pytest.mark.parametrize("auc", [0.474, 0.5, 0.501])
def test_sample_size_row_states_the_reason(auc: float) -> None:
    train = SplitMetrics(200, 60, {"auc": Estimate(auc, auc - 0.05, auc + 0.05, "delong", 0.95)})
    val = Validation("s", None, None, None, None, {}, {"m": ModelMetrics({"train": train})})
    row = report.sample_size_rows(["m"], val, {"m": _fitted("m")}, {"m": FitRecord("m", "logistic")})[0]
    assert row["required"] == "–" and row["short"] is False
    assert NO_VARIATION in row["note"] and f"{auc:.4g}" in row["note"]
    assert (row["n"], row["events"], row["parameters"]) == ("200", "60", "2")  # what is known is still shown


# --- calibration that cannot be fitted ---------------------------------------------------------------------------


def _calibration(y: np.ndarray, p: np.ndarray) -> tuple[dict[str, float], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = stats.calibration(y, p)
    return out, [str(w.message) for w in caught]


def test_constant_predictions_have_no_recalibration_slope_but_keep_the_rest() -> None:
    y = np.array([0, 1, 0, 1, 0, 0, 1, 0])
    out, said = _calibration(y, np.full(8, 0.4))
    assert math.isnan(out["recalibration_slope"]) and math.isnan(out["recalibration_intercept"])
    assert out["brier"] == pytest.approx(np.mean((0.4 - y) ** 2))
    assert out["in_the_large"] == pytest.approx(math.log(3 / 5) - math.log(0.4 / 0.6))  # logit(3/8) - logit(0.4)
    assert any("recalibration intercept and slope not defined" in s and "singular" in s for s in said)


def test_separated_classes_leave_no_recalibration_slope() -> None:
    # every event above every non-event: the slope's maximum-likelihood estimate is infinite
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out, said = _calibration(y, np.array([0.10, 0.20, 0.25, 0.30, 0.35, 0.40, 0.5, 0.6]))
    assert math.isnan(out["recalibration_slope"]) and math.isfinite(out["brier"]) and math.isfinite(out["ici"])
    assert any("recalibration intercept and slope not defined" in s for s in said)


def test_calibration_of_an_ordinary_model_is_a_number() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 200)
    out, _ = _calibration((rng.random(200) < p).astype(int), p)
    assert 0.5 < out["recalibration_slope"] < 1.6 and math.isfinite(out["recalibration_intercept"])


def test_validation_notes_why_the_slope_is_missing_and_keeps_the_brier_score() -> None:
    y = np.array([0, 1, 0, 1, 0, 0, 1, 0, 1, 0])
    d = SplitInputs.of(y, np.full(10, 0.4), level=0.95, n_boot=0, seed=0,
                       dca_thresholds=np.array([0.1, 0.5]), threshold=0.3)
    metrics, _ = measure_split(d)
    assert metrics.calibration is not None and metrics.calibration["brier"] == pytest.approx(0.24)  # (4 * 0.6² + 6 * 0.4²) / 10
    assert metrics.calibration["recalibration_slope"] is None
    assert any("recalibration intercept and slope not defined" in n for n in d.notes)


# --- report cells ------------------------------------------------------------------------------------------------


def test_a_missing_number_carries_its_reason() -> None:
    one_class = SplitMetrics(12, 0, {})
    cell = report.metric_cell("m", "external", "auc", one_class)
    assert cell.text == "–" and "one class only (0 events among 12 patients)" in cell.note
    html = report.environment().from_string('{% from "_macros.html.j2" import cell %}{{ cell(c) }}').render(c=cell)
    assert 'class="num na"' in html and 'title="not defined: one class only (0 events among 12 patients)"' in html
    shown = report.metric_cell("m", "external", "auc", SplitMetrics(12, 4, {"auc": Estimate(0.61, 0.4, 0.8)}))
    assert shown.text == "0.610 (0.400–0.800)" and shown.note == ""


# --- the study: one model's out-of-fold AUC below 0.5 ---------------------------------------------------


@pytest.fixture(scope="module")
def chance_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[cohortlab.Study, str]:
    """A study where ``noise``'s training out-of-fold AUC is 0.474 and ``single``'s 0.559, run to its report."""
    root = tmp_path_factory.mktemp("chance")
    write_design(root, Design(signal="weak", seed=1, subgroup_one_class=True, single_patient_centre=True, centres=3))
    study = cohortlab.load_study(root)
    result = run(study.config, device="cpu", progress=False)
    assert result.ok, str(result)
    assert result.report is not None
    return study, result.report.read_text(encoding="utf-8")


def test_a_model_below_chance_gets_its_report_and_the_sample_size_reason(
    chance_study: tuple[cohortlab.Study, str],
) -> None:
    study, html = chance_study
    metrics = json.loads((study.report_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["models"]["noise"]["splits"]["train"]["auc"]["estimate"] < 0.5 < \
        metrics["models"]["single"]["splits"]["train"]["auc"]["estimate"]
    row = html[html.index('<tr id="sample-size-noise"'):]
    row = row[:row.index("</tr>")]
    assert NO_VARIATION in row and 'class="num na" title="not computable: auc must lie in (0.5, 1), got 0.474' in row
    # the model above chance keeps its numbers
    useful = html[html.index('<tr id="sample-size-single"'):]
    useful = useful[:useful.index("</tr>")]
    assert " na" not in useful and NO_VARIATION not in useful


def test_every_missing_number_of_that_report_has_a_reason(chance_study: tuple[cohortlab.Study, str]) -> None:
    study, html = chance_study
    assert report_problems(html, Design(signal="weak").models()) == []
    # the ordinary numbers are there: every model's AUC on every split, and the centres'
    metrics = json.loads((study.report_dir / "metrics.json").read_text(encoding="utf-8"))
    for model, m in metrics["models"].items():
        for split, sm in m["splits"].items():
            assert f'data-metric="{model}|{split}|auc">{sm["auc"]["estimate"]:.3f}' in html
    # the one-patient centre has no AUC, and says why
    assert 'data-metric="single|center:SOLO/train|auc" title="not defined: one class only (' in html
