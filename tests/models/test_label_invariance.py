"""The definition of an honest out-of-fold prediction, checked for every model kind.

With the outer fold assignment held fixed, the labels of one fold's patients
are flipped. Every model's out-of-fold predictions of that fold must stay
byte-identical: nothing that predicted those patients may have seen their
labels. A second-stage model (stacking, a fusion model on ``scores``, a model on
a second-stage model's scores) passes only when its input models are refitted
inside each outer fold (nested cross-fitting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from analytics.fit import OuterFolds, fit, outer_folds, stored_predictions

from model_helpers import make_study, write_cohort_store

FOLD = 0

# every kind, on small grids; "deep" reads a stacking model's scores (three levels)
MODELS = [
    {"name": "clin", "kind": "logistic", "clinical": ["age", "sex", "marker"], "grid": {"C": [1.0]}},
    {"name": "img_svm", "kind": "svm", "features": ["img:mean"], "grid": {"C": [1.0]},
     "params": {"kernel": "linear", "pca": 4}},
    {"name": "img_xgb", "kind": "xgboost", "features": ["img"], "grid": {"max_depth": [2]},
     "params": {"n_estimators": 20}},
    {"name": "img_mil", "kind": "mil", "features": ["tiles"],
     "params": {"hidden": 8, "attention_dim": 4, "max_epochs": 6, "lr": 0.01}},
    {"name": "vote", "kind": "voting", "members": ["img_svm", "img_mil"]},
    {"name": "stack", "kind": "stacking", "members": ["clin", "img_svm", "img_xgb"], "grid": {"C": [0.1, 1.0]}},
    {"name": "fusion", "kind": "svm", "scores": ["img_svm", "img_mil"], "clinical": ["marker", "sex"],
     "grid": {"C": [1.0]}, "params": {"kernel": "linear"}},
    {"name": "deep", "kind": "logistic", "scores": ["stack"], "clinical": ["age"], "grid": {"C": [1.0]}},
]
SECOND_STAGE = ["stack", "fusion", "deep"]


def _train_rows(root: Path, data: dict[str, Any], models: list[dict[str, Any]], plan: OuterFolds,
                ) -> dict[str, pl.DataFrame]:
    """Fit ``models`` on ``data`` with the outer folds ``plan``; training rows per model."""
    write_cohort_store(root, data)
    study = make_study(root, models)
    fit(study, progress=False, plan=plan)
    rows = stored_predictions(study.store_path).filter(pl.col("split") == "train").sort("model", "patient_id")
    return {name[0]: part for name, part in rows.group_by("model", maintain_order=True)}


def _flip_fold(data: dict[str, Any], plan_ids: list[str]) -> dict[str, Any]:
    patients: pl.DataFrame = data["patients"]
    flip = patients["patient_id"].is_in(plan_ids)
    return {**data, "patients": patients.with_columns(
        pl.when(flip).then(1 - pl.col("label")).otherwise(pl.col("label")).alias("label"))}


def fit_flipped(tmp: Path, data: dict[str, Any], models: list[dict[str, Any]]) -> tuple[dict, dict, list[str]]:
    """Training rows of the original and of the fold-flipped cohort, and the flipped patients."""
    patients = data["patients"].filter(pl.col("split") == "train")
    plan = outer_folds(patients["patient_id"].to_list(), patients["label"].to_numpy(), 3, 0)
    in_fold = [p for p, f in zip(plan.patient_ids, plan.folds) if f == FOLD]
    original = _train_rows(tmp / "original", data, models, plan)
    flipped = _train_rows(tmp / "flipped", _flip_fold(data, in_fold), models, plan)
    return original, flipped, in_fold


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cohort_data: dict[str, Any]) -> tuple[dict, dict, list[str]]:
    return fit_flipped(tmp_path_factory.mktemp("invariance"), cohort_data, MODELS)


def _fold_bytes(rows: pl.DataFrame, fold: int, same: bool) -> tuple[list[str], bytes]:
    part = rows.filter((pl.col("fold") == fold) if same else (pl.col("fold") != fold))
    return part["patient_id"].to_list(), part["score"].to_numpy().astype(np.float64).tobytes()


@pytest.mark.parametrize("model", [m["name"] for m in MODELS])
def test_a_folds_predictions_do_not_depend_on_its_own_labels(runs: tuple[dict, dict, list[str]], model: str) -> None:
    original, flipped, in_fold = runs
    ids, before = _fold_bytes(original[model], FOLD, True)
    ids_after, after = _fold_bytes(flipped[model], FOLD, True)
    assert ids and set(ids) <= set(in_fold)
    assert ids == ids_after
    assert before == after, f"{model}: fold {FOLD}'s out-of-fold predictions moved when its own labels changed"


def test_the_flip_reaches_the_other_folds(runs: tuple[dict, dict, list[str]]) -> None:
    # the check can fail: the flipped patients train every other fold's models, whose predictions move
    original, flipped, _ = runs
    for model in [m["name"] for m in MODELS]:
        assert _fold_bytes(original[model], FOLD, False) != _fold_bytes(flipped[model], FOLD, False), model
