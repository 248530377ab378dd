"""Cox nomogram against rms::nomogram on a cph fit (survival::lung), and against the fitted cox learner.

Fixture: zph_fixture.R writes nomogram_lung.json (rms 6.5: the cph coefficients, each axis's points, the
linear-predictor axis and the survival axes at 365 and 730 days, and the baseline survival Survival(f) uses).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.models.data import Columns, ModelData
from analytics.models.survival import SurvivalLearner
from analytics.report.nomogram import NomogramError, cox_nomogram, cox_nomogram_figure, cox_nomogram_from_coefficients

HERE = Path(__file__).parent
R = json.loads((HERE / "nomogram_lung.json").read_text())


def _from_r() -> object:
    c = R["coefficients"]
    predictors = [("age", "numeric", (c["age"], 60.0)),
                  ("sexf", "categorical", (("male", "female"), (0.0, c["sexf=female"]), "male")),
                  ("ecog", "categorical", (("0", "1", "2"), (0.0, c["ecog=1"], c["ecog=2"]), "0"))]
    # rms: S(t | lp) = S_c(t)^exp(lp - center) with lp the raw linear predictor, so H0(t) = -log S_c(t) e^-center
    h0 = [-np.log(s) * np.exp(-R["center"]) for s in R["baseline_survival"]]
    return cox_nomogram_from_coefficients("lung", predictors, 0.0, R["horizons"], h0,
                                          ranges={"age": tuple(R["age_range"])})


def test_points_equal_rms_nomogram() -> None:
    nom = _from_r()
    assert 1.0 / nom.per_point == pytest.approx(R["sc"], rel=1e-12)  # rms's points per unit of lp
    names = [a.name for a in nom.axes]
    for col in ("age", "sexf", "ecog"):
        values = R[col]["values"]
        table = pd.DataFrame({"age": 60.0, "sexf": "male", "ecog": "0"}, index=range(len(values)))
        table[col] = values
        np.testing.assert_allclose(nom.points(table)[:, names.index(col)], R[col]["points"], rtol=0, atol=1e-9)


def test_total_points_map_to_rms_linear_predictor_and_survival() -> None:
    nom = _from_r()
    # rms's lp axis is centred at the mean linear predictor
    lp = nom.linear_predictor(np.array(R["lp_axis"]["points"])) - R["center"]
    np.testing.assert_allclose(lp, R["lp_axis"]["lp"], rtol=0, atol=1e-9)
    for horizon, axis in zip(R["horizons"], R["survival_axes"]):
        # rms places the survival ticks by interpolating on a grid of lp: agreement to about 1e-7
        np.testing.assert_allclose(nom.survival_at(np.array(axis["points"]), horizon), axis["survival"], atol=1e-6)
        for s, x in zip(axis["survival"], axis["points"]):
            assert nom.total_at(s, horizon) == pytest.approx(x, abs=1e-3)  # points: same interpolation


def _lung_table() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    z = json.loads((HERE / "zph_lung.json").read_text())
    X = np.array(z["X"])
    cols = z["columns"]
    ecog = np.where(X[:, cols.index("ecog2")] == 1, "2", np.where(X[:, cols.index("ecog1")] == 1, "1", "0"))
    sexf = np.where(X[:, cols.index("sex")] == 2, "female", "male")
    table = pd.DataFrame({"age": X[:, cols.index("rcs(age, 4)age")], "sexf": sexf.astype(object),
                          "ecog": ecog.astype(object)})
    return table, np.array(z["time"], dtype=float), np.array(z["status"], dtype=float)


def _learner(params: dict, formula: str | None = None) -> tuple[SurvivalLearner, ModelData, pd.DataFrame]:
    table, time, event = _lung_table()
    columns = Columns(numeric=("age",), categorical=("sexf", "ecog"),
                      levels=(("sexf", ("male", "female")), ("ecog", ("0", "1", "2"))), formula=formula)
    data = ModelData(tuple(f"p{i}" for i in range(len(time))), table=table, columns=columns)
    return SurvivalLearner("cox", params, {}, seed=0).fit(data, np.column_stack([time, event])), data, table


@pytest.mark.parametrize("params", [{}, {"penalizer": 0.05}], ids=["unpenalised", "penalised"])
def test_cox_learner_nomogram_reads_back_its_predicted_survival(params: dict) -> None:
    learner, data, table = _learner(params)
    horizons = [365.0, 730.0]
    nom = cox_nomogram("cox", learner, table, horizons)
    assert [a.name for a in nom.axes] == ["age", "sexf", "ecog"]
    sexf = next(a for a in nom.axes if a.name == "sexf")
    assert sexf.level_coefficients[0] == 0.0  # the reference level adds nothing
    total = nom.total_points(table)
    np.testing.assert_allclose(nom.linear_predictor(total), learner.predict_score(data), atol=1e-10)
    expected = 1.0 - learner.risk_at(data, horizons)
    for k, h in enumerate(horizons):
        np.testing.assert_allclose(nom.survival_at(total, h), expected[:, k], atol=1e-12)
    if not params:
        # the unpenalised learner's coefficients are coxph's (lifelines' default tolerance: within 1e-4)
        np.testing.assert_allclose([sexf.level_coefficients[1], nom.axes[0].coefficient],
                                   [R["coefficients"]["sexf=female"], R["coefficients"]["age"]], atol=1e-4)
    png = cox_nomogram_figure(nom, "cox: nomogram", unit="days")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_spline_term_has_no_linear_axis() -> None:
    learner, _, table = _learner({}, formula="rcs(age, 4) + sexf + ecog")
    with pytest.raises(NomogramError, match=r"rcs\(age, 4\)"):
        cox_nomogram("cox", learner, table, [365.0])


def test_not_a_cox_regression_and_early_horizon_are_named() -> None:
    with pytest.raises(NomogramError, match="rsf"):
        cox_nomogram("rsf", object(), pd.DataFrame(), [1.0])
    with pytest.raises(NomogramError, match="before the first event"):
        cox_nomogram_from_coefficients("m", [("age", "numeric", (0.1, 1.0))], 0.0, [1.0], [0.0],
                                       ranges={"age": (0.0, 1.0)})
