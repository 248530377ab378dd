"""A survival model's risk on the integrated-Brier grid is out-of-fold like its scores, and agrees with its
risk at the horizons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from analytics.fit import OuterFolds, fit_model
from analytics.models.data import Assembled, Columns, ModelData
from analytics.models.persist import risk_grid_times
from pipeline.config import Model

HORIZONS = [0.5, 1.0]


@pytest.mark.parametrize("kind", ["cox", "rsf"])
def test_grid_risks_of_a_fold_ignore_that_folds_outcomes(kind: str) -> None:
    n = 60
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 3))
    t_event = rng.exponential(1.0 / np.exp(X @ np.array([0.8, -0.5, 0.0])))
    t_cens = rng.exponential(1.5, size=n)
    y = np.column_stack([np.minimum(t_event, t_cens), (t_event <= t_cens)]).astype(np.float64)
    ids = tuple(f"p{i:03d}" for i in range(n))
    data = ModelData(ids, table=pd.DataFrame(X, columns=["a", "b", "c"]), columns=Columns(numeric=("a", "b", "c")))
    spec = Model(name="m", kind=kind, clinical=["a", "b", "c"], params={"n_estimators": 20} if kind == "rsf" else {})
    inputs = Assembled(data, np.ones(n, dtype=bool), {})
    split = np.array(["train"] * 48 + ["internal"] * 12, dtype=object)
    folds = tuple(i % 3 for i in range(48))
    plan = OuterFolds(ids[:48], folds, 3, 0, "survival")
    grid = risk_grid_times(HORIZONS, points=10)
    first = fit_model(spec, inputs, y, split, plan, seed=0, horizons=HORIZONS, grid=grid)
    assert first.risk_grid is not None and first.horizon_risks is not None
    assert sorted(set(first.risk_grid["time"].to_list())) == grid
    # the grid holds the horizons, where its risk is the horizon risk
    on = first.horizon_risks.join(first.risk_grid.rename({"time": "horizon", "risk": "g"}), on=["patient_id", "horizon"])
    assert on.height == first.horizon_risks.height == n * len(HORIZONS)
    np.testing.assert_array_equal(on["risk"].to_numpy(), on["g"].to_numpy())
    y2 = y.copy()
    in_fold0 = np.array([i < 48 and folds[i] == 0 for i in range(n)])
    y2[in_fold0, 0] = rng.exponential(1.0, size=in_fold0.sum())
    y2[in_fold0, 1] = rng.integers(0, 2, size=in_fold0.sum())
    second = fit_model(spec, inputs, y2, split, plan, seed=0, horizons=HORIZONS, grid=grid)
    fold0 = [ids[i] for i in np.flatnonzero(in_fold0)]

    def risks(fit: object, who: list[str]) -> np.ndarray:
        frame = fit.risk_grid  # type: ignore[attr-defined]
        return frame.filter(pl.col("patient_id").is_in(who)).sort("patient_id", "time")["risk"].to_numpy()
    np.testing.assert_array_equal(risks(first, fold0), risks(second, fold0))
    # and the check can fail: the other folds' grid risks change
    other = [p for p in ids[:48] if p not in fold0]
    assert not np.array_equal(risks(first, other), risks(second, other))
