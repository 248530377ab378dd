"""Small studies for model tests, built directly through pipeline.store (no images, no embedding)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import store
from pipeline.config import StudyConfig, parse_study

from store_builders import write_patients

# The cohort of every test study: the split comes from a clinical column, so
# changing held-out patients' labels cannot move anyone between splits.
COHORT_SQL = """
SELECT p.patient_id, p.center, c.label, c.split, c.age, c.sex, c.marker
FROM patients p JOIN clinical c USING (patient_id)
"""


def build_store(path: Path, patients: pl.DataFrame, types: Mapping[str, str]) -> Path:
    """A store holding ``patients`` (patient_id, center, clinical columns ...) and their variable types."""
    con = store.connect(path)
    try:
        write_patients(con, patients, [
            {"name": col, "type": kind, "role": "outcome" if col == "label" else "other" if col == "split" else "predictor"}
            for col, kind in types.items()
        ])
    finally:
        con.close()
    return path


def add_pooled(path: Path, feature_set: str, ids: list[str], matrix: np.ndarray, pooling: str = "mean") -> None:
    """Register a feature set (random weights) and write one pooling of it."""
    con = store.connect(path)
    try:
        store.register_feature_set(con, store.FeatureSetRecord(feature_set, "wsi", "resnet18", "random", {},
                                                               matrix.shape[1]))
        store.write_patient_features(con, feature_set, pooling, ids, matrix, [1] * len(ids))
    finally:
        con.close()


def add_bags(path: Path, feature_set: str, bags: Mapping[str, np.ndarray]) -> None:
    """One source per patient (``<patient>-S1``) with its instances on a grid of x, y."""
    con = store.connect(path)
    try:
        dim = next(iter(bags.values())).shape[1]
        store.register_feature_set(con, store.FeatureSetRecord(feature_set, "wsi", "resnet18", "random", {}, dim))
        for pid, emb in bags.items():
            n = len(emb)
            source = f"{pid}-S1"
            frame = pl.DataFrame({
                "source_id": [source] * n, "instance": list(range(n)), "x": [224 * (i % 8) for i in range(n)],
                "y": [224 * (i // 8) for i in range(n)], "z": [0] * n, "level": [0] * n,
                "tissue_fraction": [1.0] * n, "embedding": [list(map(float, r)) for r in emb],
            })
            out = store.write_instances(store.instance_path(path, feature_set, source), frame)
            store.record_item(con, feature_set, source, pid, "done", n_instances=n,
                              path=str(out.relative_to(path.resolve().parent)))
    finally:
        con.close()


def make_study(root: Path, models: list[dict[str, Any]], folds: int = 3, seed: int = 0,
               feature_sets: tuple[str, ...] = ("img", "tiles"), cohort_sql: str = COHORT_SQL) -> StudyConfig:
    """A study at ``root`` (store ``root/store.duckdb``) with the cohort ``cohort_sql`` and ``models``."""
    (root / "cohorts").mkdir(parents=True, exist_ok=True)
    (root / "cohorts" / "test.sql").write_text(cohort_sql)
    data = {
        "study": {"name": "t", "seed": seed}, "manifests": {"patients": "patients.csv"},
        "feature_sets": [{"name": fs, "modality": "wsi", "encoder": "resnet18", "weights": "random"}
                         for fs in feature_sets],
        "cohort": {"name": "test"}, "split": {"column": "split"}, "models": models,
        "validation": {"folds": folds},
    }
    return parse_study(data, root)


TYPES = {"label": "binary", "split": "categorical", "age": "numeric", "sex": "categorical", "marker": "numeric"}


def write_cohort_store(root: Path, data: Mapping[str, Any]) -> Path:
    """The store of :func:`cohort_data` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    path = build_store(root / "store.duckdb", data["patients"], TYPES)
    keep = [i for i, p in enumerate(data["ids"]) if p not in data["lacking"]]
    add_pooled(path, "img", [data["ids"][i] for i in keep], data["features"][keep])
    add_bags(path, "tiles", {p: b for p, b in data["bags"].items() if p not in data["lacking"]})
    return path


ALL_KINDS = [
    {"name": "clin", "kind": "logistic", "clinical": ["age", "sex", "marker"], "grid": {"C": [0.1, 1.0]}},
    {"name": "img_svm", "kind": "svm", "features": ["img:mean"], "grid": {"C": [0.1, 1.0]}, "params": {"pca": 4}},
    {"name": "img_xgb", "kind": "xgboost", "features": ["img"], "params": {"n_estimators": 40}},
    {"name": "img_mil", "kind": "mil", "features": ["tiles"],
     "params": {"hidden": 16, "attention_dim": 8, "max_epochs": 15, "lr": 0.005}},
    {"name": "fusion", "kind": "svm", "scores": ["img_svm", "img_mil"], "clinical": ["marker", "sex"],
     "grid": {"C": [1.0]}, "params": {"kernel": "linear"}},
    {"name": "vote", "kind": "voting", "members": ["img_svm", "img_mil"]},
    {"name": "stack", "kind": "stacking", "members": ["clin", "img_svm", "img_xgb"]},
]


def copy_study(study: StudyConfig, dest: Path, models: bool = True) -> StudyConfig:
    """A copy of a study folder (store, cohorts and, if ``models``, the fitted models) rooted at ``dest``."""
    shutil.copytree(study.root, dest, ignore=None if models else shutil.ignore_patterns("models"))
    return make_study(dest, [m.model_dump() for m in study.models], folds=study.validation.folds,
                      seed=study.study.seed, feature_sets=tuple(f.name for f in study.feature_sets),
                      cohort_sql=(study.root / "cohorts" / "test.sql").read_text())
