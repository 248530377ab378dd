"""Nomogram of a fitted logistic pipeline: reading the axes gives back the model's predicted risk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.models.classical import build_pipeline
from analytics.models.data import Columns
from analytics.report.nomogram import NomogramError, nomogram, nomogram_figure


def _data(n: int = 300, seed: int = 4) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(55, 12, n).round(1)
    igg = rng.lognormal(2.6, 0.3, n).round(1)
    sex = rng.choice(["F", "M"], n, p=[0.7, 0.3]).astype(object)
    stage = rng.choice(["I", "II", "III"], n).astype(object)
    lp = -6 + 0.06 * age + 0.15 * igg + 0.8 * (sex == "M") + np.select([stage == "II", stage == "III"], [0.5, 1.2], 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    igg[rng.random(n) < 0.05] = np.nan  # the pipeline imputes these
    return pd.DataFrame({"age": age, "igg": igg, "sex": sex, "stage": stage}), y


def _fitted(table: pd.DataFrame, y: np.ndarray, C: float = 1.0):
    cols = Columns(numeric=("age", "igg"), categorical=("sex", "stage"))
    return build_pipeline("logistic", cols, {"C": C}, seed=0).fit(table, y)


def _read(nom, patient: pd.Series) -> float:
    """A reader with a ruler: each axis's points at the patient's value (straight-line interpolation between the
    numeric ticks, the level's tick for a category), summed, then the risk read off the risk axis (whose ticks
    are evenly spaced in log-odds per point)."""
    total = 0.0
    for axis in nom.axes:
        v = patient[axis.name]
        if axis.kind == "numeric":
            total += float(np.interp(v, axis.values, axis.points, left=np.nan, right=np.nan))
        else:
            total += dict(zip(axis.values, axis.points))[v]
    probs = np.array([p for p, _ in nom.risk])
    at = np.array([t for _, t in nom.risk])
    logit = np.interp(total, at, np.log(probs / (1 - probs)))
    if total < at[0] or total > at[-1]:  # beyond the printed ticks: extend the last interval
        i = (0, 1) if total < at[0] else (-2, -1)
        slope = (np.log(probs[i[1]] / (1 - probs[i[1]])) - np.log(probs[i[0]] / (1 - probs[i[0]]))) / (at[i[1]] - at[i[0]])
        logit = np.log(probs[i[0]] / (1 - probs[i[0]])) + slope * (total - at[i[0]])
    return float(1 / (1 + np.exp(-logit)))


def test_five_patients_read_off_the_nomogram_get_the_models_risk() -> None:
    table, y = _data()
    pipe = _fitted(table, y)
    nom = nomogram("clinical", pipe, table, labels={"age": "Age (years)"})
    complete = table.dropna().iloc[[0, 7, 19, 42, 77]]
    expected = pipe.predict_proba(complete)[:, 1]
    read = [_read(nom, row) for _, row in complete.iterrows()]
    assert np.abs(np.array(read) - expected).max() < 0.01
    # the exact arithmetic behind the figure agrees to rounding, missing values imputed as the pipeline does
    assert nom.probability(nom.total_points(table)) == pytest.approx(pipe.predict_proba(table)[:, 1], abs=1e-10)


def test_axes_are_in_original_units_and_scaled_to_the_widest_predictor() -> None:
    table, y = _data()
    pipe = _fitted(table, y)
    nom = nomogram("clinical", pipe, table)
    by = {a.name: a for a in nom.axes}
    # numeric axes cover the observed range to the next tick, in years and g/L rather than standard deviations
    for name in ("age", "igg"):
        v = by[name].values
        step = v[1] - v[0]
        assert v[0] <= table[name].min() < v[0] + step and v[-1] - step < table[name].max() <= v[-1]
    assert by["age"].values[0] >= 10 and by["igg"].values[-1] > 5
    # back-transformed slope: the standardised coefficient over the training SD
    scaler = pipe.named_steps["prep"].named_transformers_["numeric"].named_steps["scale"]
    w = pipe.named_steps["clf"].coef_[0]
    assert by["age"].coefficient == pytest.approx(w[0] / scaler.scale_[0], rel=1e-12)
    spans = [max(a.points) - min(a.points) for a in nom.axes]
    assert max(spans) == pytest.approx(100.0) and min(spans) < 100.0
    assert by["stage"].values == ("I", "II", "III") and min(by["stage"].points) == pytest.approx(0.0)
    # risk axis increases along the total-points axis
    assert [t for _, t in nom.risk] == sorted(t for _, t in nom.risk)
    png = nomogram_figure(nom, "clinical: nomogram")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png == nomogram_figure(nom, "clinical: nomogram")  # deterministic


def test_pca_and_non_logistic_models_have_no_nomogram() -> None:
    table, y = _data()
    feats = pd.DataFrame(np.random.default_rng(0).normal(size=(len(y), 6)), columns=[f"f{i}" for i in range(6)])
    pca = build_pipeline("logistic", Columns(features=tuple(feats.columns)), {"pca": 2}, seed=0).fit(feats, y)
    with pytest.raises(NomogramError, match="PCA"):
        nomogram("img", pca, feats)
    svm = build_pipeline("svm", Columns(numeric=("age",)), {}, seed=0).fit(table[["age"]], y)
    with pytest.raises(NomogramError, match="logistic"):
        nomogram("svm", svm, table)
