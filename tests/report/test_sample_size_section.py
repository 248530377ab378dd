"""The report's sample-size table: training patients and events against the Riley criteria, with the
parameters a fitted pipeline really has (after one-hot encoding and PCA)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analytics import report, stats
from analytics.models.artifacts import FitRecord
from analytics.models.classical import build_pipeline
from analytics.models.data import Columns
from analytics.models.learners import TabularLearner
from analytics.models.persist import FittedModel
from analytics.validation import Estimate, ModelMetrics, SplitMetrics, Validation
from pipeline.config import Model


def _fitted(name: str, columns: Columns, table: pd.DataFrame, y: np.ndarray, params: dict) -> FittedModel:
    pipe = build_pipeline("logistic", columns, params, seed=0).fit(table, y)
    spec = Model(name=name, kind="logistic", clinical=["x"])
    return FittedModel(spec, TabularLearner.fitted("logistic", params, pipe, {}), {"kind": "logistic"}, Path("."))


def _table(n: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    t = pd.DataFrame({"age": rng.normal(50, 10, n), "igg": rng.normal(14, 3, n),
                      "sex": rng.choice(["F", "M"], n).astype(object), "stage": rng.choice(["I", "II", "III"], n).astype(object)})
    for i in range(6):
        t[f"f{i}"] = rng.normal(size=n)
    return t, (rng.random(n) < 0.3).astype(int)


def _validation(n: int, events: int, auc: float) -> Validation:
    train = SplitMetrics(n, events, {"auc": Estimate(auc, auc - 0.05, auc + 0.05, "delong", 0.95)})
    return Validation("s", None, None, None, None, {}, {"clin": ModelMetrics({"train": train}),
                                                       "img": ModelMetrics({"train": train})})


def test_parameters_after_one_hot_and_pca() -> None:
    table, y = _table()
    clin = _fitted("clin", Columns(numeric=("age", "igg"), categorical=("sex", "stage")), table, y, {})
    img = _fitted("img", Columns(features=tuple(f"f{i}" for i in range(6)), numeric=("age",)), table, y, {"pca": 2})
    assert report.parameter_count(clin)[0] == 2 + 2 + 3  # two numbers, sex F/M, stage I/II/III
    assert report.parameter_count(img)[0] == 2 + 1  # two principal components and age


def test_required_n_and_the_flag() -> None:
    table, y = _table()
    fitted = {"clin": _fitted("clin", Columns(numeric=("age", "igg"), categorical=("sex", "stage")), table, y, {})}
    manifests = {"clin": FitRecord("clin", "logistic"), "img": FitRecord("img", "mil")}
    small = report.sample_size_rows(["clin", "img"], _validation(120, 30, 0.78), fitted, manifests)
    row = small[0]
    assert (row["n"], row["events"], row["parameters"]) == ("120", "30", "7")
    ref = stats.sample_size(30 / 120, 7, auc=0.78)
    assert row["required"] == str(ref.n) and row["c1"] == str(ref.criterion_1)
    # criterion 3 by hand: the overall risk within 0.05
    assert row["c3"] == str(math.ceil((1.96 / 0.05) ** 2 * 0.25 * 0.75))
    assert row["short"] is (120 < ref.n) is True
    # a MIL model: no parameter count, said so, never flagged
    assert small[1]["required"] == "–" and small[1]["short"] is False and small[1]["note"]
    large = report.sample_size_rows(["clin"], _validation(5000, 1250, 0.78), fitted, manifests)[0]
    assert large["short"] is False and int(large["required"]) <= 5000
