"""The R reference fits of regression_fixture.R (survival::nwtco) and R's model matrix rebuilt from them."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from analytics.stats.terms import Term

HERE = Path(__file__).parent

# the columns of R's model.matrix(rel ~ histol + stage + rcs(age, 4) + histol:stage), intercept left out
TERMS = (
    Term("histol", ("histol",), (0,)),
    Term("stage", ("stage",), (1, 2, 3)),
    Term("rcs(age, 4)", ("age",), (4, 5, 6), (5, 6)),
    Term("histol:stage", ("histol", "stage"), (7, 8, 9)),
)
# lrm(rel ~ histol * rcs(age, 4) + stage): coefficients histol=2, age, age', age'', stage=2..4, histol=2 * age ..
TERMS_NONLINEAR_INTERACTION = (
    Term("histol", ("histol",), (0,)),
    Term("rcs(age, 4)", ("age",), (1, 2, 3), (2, 3)),
    Term("stage", ("stage",), (4, 5, 6)),
    Term("histol:rcs(age, 4)", ("histol", "age"), (7, 8, 9), (8, 9)),
)


@lru_cache(maxsize=1)
def fixture() -> dict[str, Any]:
    return json.loads((HERE / "regression_fixture.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def data() -> pl.DataFrame:
    return pl.read_csv(HERE / "nwtco.csv")


def rcs_basis(k: int) -> np.ndarray:
    """rms::rcs(age, k) of every patient, from R's basis at each distinct age."""
    fx = fixture()["rcs"]
    ages = np.asarray(fx["x"], dtype=np.float64)
    at = np.searchsorted(ages, data()["age"].to_numpy())
    return np.asarray(fx[f"k{k}"]["basis"], dtype=np.float64)[at]


def design(histol: bool = True, stage: bool = True, age: str = "rcs", interaction: bool = True) -> np.ndarray:
    """R's treatment-coded model matrix without the intercept (levels 1 are the references)."""
    d = data()
    h = (d["histol"].to_numpy() == 2).astype(np.float64)[:, None]
    st = np.column_stack([(d["stage"].to_numpy() == k).astype(np.float64) for k in (2, 3, 4)])
    parts = [h] if histol else []
    if age == "linear":
        parts.append(d["age"].to_numpy().astype(np.float64)[:, None])
    if stage:
        parts.append(st)
    if age == "rcs":
        parts.append(rcs_basis(4))
    if interaction:
        parts.append(h * st)
    return np.column_stack(parts)


def outcome() -> np.ndarray:
    return data()["rel"].to_numpy().astype(np.int64)
# lrm(rel ~ histol * stage + histol * rcs(age, 4) + study): histol=2, stage=2..4, age, age', age'', study,
# histol=2 * stage=2..4, histol=2 * age ..
TERMS_TWO_INTERACTIONS = (
    Term("histol", ("histol",), (0,)),
    Term("stage", ("stage",), (1, 2, 3)),
    Term("rcs(age, 4)", ("age",), (4, 5, 6), (5, 6)),
    Term("study", ("study",), (7,)),
    Term("histol:stage", ("histol", "stage"), (8, 9, 10)),
    Term("histol:rcs(age, 4)", ("histol", "age"), (11, 12, 13), (12, 13)),
)
