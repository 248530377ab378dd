"""The nomogram of a maximum-likelihood logistic model (analytics.models.glm.MLLogistic behind a formula's
treatment-coded design): its points give back the model's predicted risks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.models.data import Columns, ModelData
from analytics.models.learners import TabularLearner
from analytics.report.nomogram import NomogramError, nomogram


def _fit(formula: str) -> tuple[TabularLearner, pd.DataFrame]:
    rng = np.random.default_rng(8)
    n = 250
    table = pd.DataFrame({"age": rng.normal(60, 10, n).round(1), "marker": rng.normal(5, 2, n),
                          "grade": pd.Series(rng.choice(["low", "mid", "high"], n), dtype=object)})
    lp = -0.3 + 0.05 * (table["age"] - 60) + 0.5 * (table["marker"] - 5) + 0.9 * (table["grade"] == "high")
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(np.int64)
    cols = Columns(numeric=("age", "marker"), categorical=("grade",), levels=(("grade", ("low", "mid", "high")),),
                   formula=formula)
    rows = ModelData(tuple(f"P{i}" for i in range(n)), table, cols)
    return TabularLearner("logistic", {"penalty": "none"}, {}, 0).fit(rows, y), table


def test_maximum_likelihood_nomogram_reproduces_the_predicted_risk() -> None:
    learner, table = _fit("grade + age + marker")
    nom = nomogram("glm", learner.pipeline_, table)
    assert [a.name for a in nom.axes] == ["grade", "age", "marker"]
    risk = nom.probability(nom.total_points(table))
    np.testing.assert_allclose(risk, learner.pipeline_.predict_proba(table)[:, 1], rtol=0, atol=1e-10)


def test_a_spline_has_no_single_axis() -> None:
    learner, table = _fit("grade + rcs(age, 3) + marker")
    with pytest.raises(NomogramError, match=r"rcs\(age, 3\)"):
        nomogram("glm", learner.pipeline_, table)
