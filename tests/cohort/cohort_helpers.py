"""Helpers for the cohort tests: small stores built directly through pipeline.store, and studies around them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import store
from pipeline.config import StudyConfig, parse_study

from store_builders import write_patients


def build_store(path: Path, patients: pl.DataFrame, variables: list[dict[str, Any]] | None = None) -> Path:
    """A store holding ``patients`` (patient_id, center, clinical columns...) and its variables."""
    con = store.connect(path)
    try:
        write_patients(con, patients, variables or [])
    finally:
        con.close()
    return path


def add_features(path: Path, feature_set: str, pooling: str, ids: list[str], matrix: np.ndarray,
                 n_instances: list[int] | None = None) -> None:
    """Register a feature set (random weights) and write its pooled patient features."""
    con = store.connect(path)
    try:
        store.register_feature_set(con, store.FeatureSetRecord(feature_set, "wsi", "resnet18", "random", {},
                                                               matrix.shape[1]))
        store.write_patient_features(con, feature_set, pooling, ids, matrix, n_instances or [1] * len(ids))
    finally:
        con.close()


def add_instances(path: Path, feature_set: str, source_id: str, patient_id: str, emb: np.ndarray,
                  xy: list[tuple[int, int]]) -> None:
    """Write one source's instance Parquet and its done embed_items row."""
    frame = pl.DataFrame({
        "source_id": [source_id] * len(xy), "instance": list(range(len(xy))),
        "x": [p[0] for p in xy], "y": [p[1] for p in xy], "z": [0] * len(xy), "level": [0] * len(xy),
        "tissue_fraction": [1.0] * len(xy), "embedding": [list(map(float, r)) for r in emb],
    })
    con = store.connect(path)
    try:
        store.register_feature_set(con, store.FeatureSetRecord(feature_set, "wsi", "resnet18", "random", {},
                                                               emb.shape[1]))
        out = store.write_instances(store.instance_path(path, feature_set, source_id), frame)
        store.record_item(con, feature_set, source_id, patient_id, "done", n_instances=len(xy),
                          path=str(out.relative_to(path.resolve().parent)))
    finally:
        con.close()


def make_study(root: Path, cohorts: dict[str, str] | None = None, split: dict[str, Any] | None = None,
               cohort: dict[str, Any] | None = None, feature_sets: list[dict[str, Any]] | None = None) -> StudyConfig:
    """A study rooted at ``root`` whose store is ``root/store.duckdb``; cohort files go to ``root/cohorts``."""
    (root / "cohorts").mkdir(parents=True, exist_ok=True)
    for name, text in (cohorts or {}).items():
        (root / "cohorts" / f"{name}.sql").write_text(text)
    data: dict[str, Any] = {"study": {"name": "t"}, "manifests": {"patients": "patients.csv"},
                            "split": split or {}, "feature_sets": feature_sets or []}
    if cohort is not None:
        data["cohort"] = cohort
    return parse_study(data, root)


def demo_patients(n: int = 60, seed: int = 7) -> pl.DataFrame:
    """Demo-study-like patients: centre A (development, 2/3) and B (external), both labels in each."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    center = ["B" if i % 3 == 0 else "A" for i in range(n)]
    label = [int(i % 4 in (1, 2)) for i in range(n)]  # half positive, spread over both centres
    age = rng.integers(20, 80, n).astype(np.int64)
    age[[5, 11]] = [16, 17]  # two minors for the $min_age filter
    return pl.DataFrame({
        "patient_id": ids, "center": center, "age": age,
        "sex": rng.choice(["F", "M"], n, p=[0.8, 0.2]).tolist(),
        "esr": rng.gamma(2.0, 10.0, n).round(1),
        "anti_ssa": rng.choice(["negative", "positive"], n).tolist(),
        "igg": rng.normal(15, 3, n).round(2),
        "focus_score": rng.gamma(1.5, 1.0, n).round(2),
        "high_risk": np.array(label, dtype=np.int64),
        "followup_months": rng.uniform(1, 60, n).round(1),
        "event": rng.integers(0, 2, n).astype(np.int64),
    })


DEMO_VARIABLES = [
    {"name": "age", "type": "integer", "unit": "years", "label": "Age"},
    {"name": "sex", "type": "categorical", "label": "Sex", "levels": ["F", "M"]},
    {"name": "esr", "type": "numeric", "unit": "mm/h", "label": "ESR"},
    {"name": "anti_ssa", "type": "categorical", "label": "Anti-SSA", "levels": ["negative", "positive"]},
    {"name": "igg", "type": "numeric", "unit": "g/L", "label": "IgG"},
    {"name": "focus_score", "type": "numeric", "label": "Focus score"},
    {"name": "high_risk", "type": "binary", "role": "outcome", "label": "High risk"},
    {"name": "followup_months", "type": "numeric", "unit": "months", "role": "time"},
    {"name": "event", "type": "binary", "role": "event"},
]


def table_contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a store, rows sorted, for before/after comparisons."""
    con = store.connect(path, read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE' AND table_catalog = current_database() ORDER BY 1").fetchall()]
        return {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        con.close()
