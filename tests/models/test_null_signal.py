"""Training estimates under the null: with pure-noise inputs every honest out-of-fold AUC is 0.5.

Several seeds of a small study whose label is Bernoulli(0.35) and independent
of 50 noise image features and two noise clinical variables (5% missing). Per
model, the mean training out-of-fold AUC over the seeds is compared with 0.5
by a z-test whose standard error comes from the per-seed DeLong variances. The
positive control screens the 5 features most correlated with the label on all
training patients before cross-validation (a selection outside the folds, the
classic leak); the same test must catch it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics import stats
from analytics.fit import fit, stored_predictions

from model_helpers import TYPES, add_pooled, build_store, make_study

SEEDS = (1, 2, 3, 4)
N_TRAIN, N_HELD, N_FEATURES, N_SCREENED = 160, 20, 50, 5
Z_LIMIT = 3.0

NULL_MODELS = [
    {"name": "lr", "kind": "logistic", "features": ["img"], "grid": {"C": [1.0]}},
    {"name": "svm", "kind": "svm", "features": ["img"], "grid": {"C": [0.1]}, "params": {"kernel": "linear"}},
    {"name": "stack", "kind": "stacking", "members": ["lr", "svm"]},
    {"name": "fusion", "kind": "logistic", "scores": ["lr", "svm"], "clinical": ["age", "marker"],
     "grid": {"C": [1.0]}},
]


def _noise_study(root: Path, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A store of pure noise; returns the label and feature matrix of every patient."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_HELD
    ids = [f"Z{i:03d}" for i in range(n)]
    label = (rng.random(n) < 0.35).astype(np.int64)
    split = ["train"] * N_TRAIN + ["external"] * N_HELD
    age, marker = rng.normal(50, 10, n), rng.normal(0, 1, n)
    age[rng.random(n) < 0.05] = np.nan
    marker[rng.random(n) < 0.05] = np.nan
    patients = pl.DataFrame({
        "patient_id": ids, "center": ["B" if s == "external" else "A" for s in split], "label": label,
        "split": split, "age": pl.Series(age).fill_nan(None), "sex": rng.choice(["F", "M"], n).tolist(),
        "marker": pl.Series(marker).fill_nan(None),
    })
    root.mkdir(parents=True, exist_ok=True)
    build_store(root / "store.duckdb", patients, TYPES)
    features = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    add_pooled(root / "store.duckdb", "img", ids, features)
    return {"ids": np.array(ids)}, label, features


def _oof(root: Path, model: str, labels: dict[str, int]) -> tuple[float, float]:
    """Training out-of-fold AUC of a fitted model and its DeLong variance."""
    rows = stored_predictions(root / "store.duckdb", model).filter(pl.col("split") == "train")
    y = np.array([labels[p] for p in rows["patient_id"]])
    aucs, cov = stats.delong_covariance(y, rows["score"].to_numpy())
    return float(aucs[0]), float(cov[0, 0])


def z_mean_auc(results: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean AUC over independent seeds and its z statistic against 0.5."""
    aucs = np.array([a for a, _ in results])
    se = np.sqrt(sum(v for _, v in results)) / len(results)
    return float(aucs.mean()), float((aucs.mean() - 0.5) / se)


@pytest.fixture(scope="module")
def null_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for seed in SEEDS:
        root = tmp_path_factory.mktemp(f"null{seed}")
        info, label, features = _noise_study(root, seed)
        labels = dict(zip(info["ids"].tolist(), label.tolist()))
        fit(make_study(root, NULL_MODELS, folds=5, seed=seed, feature_sets=("img", "top")), progress=False)
        for m in NULL_MODELS:
            out.setdefault(m["name"], []).append(_oof(root, m["name"], labels))
        # positive control: the features most correlated with the label on all training patients, chosen
        # before cross-validation, then fitted like any model
        train = np.arange(N_TRAIN)
        yc = label[train] - label[train].mean()
        xc = features[train] - features[train].mean(axis=0)
        corr = np.abs(yc @ xc) / (np.linalg.norm(xc, axis=0) * np.linalg.norm(yc))
        top = np.argsort(-corr, kind="stable")[:N_SCREENED]
        add_pooled(root / "store.duckdb", "top", info["ids"].tolist(), features[:, top])
        leaky = {"name": "screened", "kind": "logistic", "features": ["top"], "grid": {"C": [1.0]}}
        fit(make_study(root, [leaky], folds=5, seed=seed, feature_sets=("img", "top")), progress=False)
        out.setdefault("screened", []).append(_oof(root, "screened", labels))
    return out


@pytest.mark.parametrize("model", [m["name"] for m in NULL_MODELS])
def test_training_auc_under_the_null_is_within_sampling_error_of_a_half(
    null_runs: dict[str, list[tuple[float, float]]], model: str
) -> None:
    mean, z = z_mean_auc(null_runs[model])
    assert abs(z) < Z_LIMIT, f"{model}: mean training AUC {mean:.3f} over {len(SEEDS)} seeds, z = {z:.2f}"


def test_screening_on_all_patients_before_cross_validation_is_caught(
    null_runs: dict[str, list[tuple[float, float]]],
) -> None:
    mean, z = z_mean_auc(null_runs["screened"])
    assert mean > 0.55 and z > Z_LIMIT, f"the leak was not caught: mean AUC {mean:.3f}, z = {z:.2f}"


def test_the_z_statistic_matches_a_hand_computation() -> None:
    # two seeds with AUC 0.6 and 0.5 and DeLong variances 0.002 and 0.003: SE = sqrt(0.005) / 2
    mean, z = z_mean_auc([(0.6, 0.002), (0.5, 0.003)])
    assert mean == pytest.approx(0.55)
    assert z == pytest.approx(0.05 / (np.sqrt(0.005) / 2))
