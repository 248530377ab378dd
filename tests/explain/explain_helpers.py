"""Helpers of the explanation tests: synthetic tables with a known signal, and a small fitted study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from analytics.models.data import Columns
from pipeline import store, wsi
from pipeline.config import StudyConfig, load_config, to_toml

from store_builders import write_patients

DATA = Path(__file__).resolve().parent.parent / "data"
CMU = DATA / "wsi" / "CMU-1-Small-Region.svs"


def signal_table(n: int = 240, noise_dims: int = 30, seed: int = 0, missing: bool = True
                 ) -> tuple[pd.DataFrame, np.ndarray, Columns]:
    """A model input table whose label depends only on ``marker`` and the ``sig`` block.

    Columns: a 4-d signal block ``sig:mean:j`` and a ``noise_dims``-d noise
    block ``noise:mean:j`` (image features), the clinical numbers ``marker``
    (signal), ``age`` and ``esr`` (noise) and the categories ``sex`` and
    ``stage`` (noise). With ``missing`` a few values are NaN, as in real data.
    """
    rng = np.random.default_rng(seed)
    sig = rng.normal(size=(n, 4))
    noise = rng.normal(size=(n, noise_dims))
    marker = rng.normal(50, 10, n)
    logit = 1.6 * sig.sum(axis=1) / 2 + 1.6 * (marker - 50) / 10
    y = (logit + rng.logistic(size=n) * 0.5 > 0).astype(np.int64)
    cols: dict[str, Any] = {f"sig:mean:{j}": sig[:, j] for j in range(4)}
    cols.update({f"noise:mean:{j}": noise[:, j] for j in range(noise_dims)})
    age = rng.normal(60, 12, n)
    esr = rng.gamma(2.0, 10.0, n)
    if missing:
        age[[3, 17]] = np.nan
        esr[5] = np.nan
    cols.update(marker=marker, age=age, esr=esr,
                sex=rng.choice(["F", "M"], n).astype(object), stage=rng.choice(["I", "II", "III"], n).astype(object))
    if missing:
        cols["stage"][[7, 11]] = np.nan
    features = tuple(c for c in cols if c.count(":") == 2)
    columns = Columns(features, ("marker", "age", "esr"), ("sex", "stage"))
    return pd.DataFrame({c: cols[c] for c in columns.all}), y, columns


# --- a small fitted study ------------------------------------------------------------------------

COHORT_SQL = ("SELECT p.patient_id, p.center, c.label, c.marker, c.age, c.sex "
              "FROM patients p JOIN clinical c USING (patient_id)")
TILE = {"mpp": 1.0, "tile_size": 224}


def _patients(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    center = ["B" if i % 4 == 0 else "A" for i in range(n)]
    latent = rng.normal(size=n)
    marker = 50 + 10 * (0.8 * latent + 0.6 * rng.normal(size=n))
    label = (latent + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return pl.DataFrame({
        "patient_id": ids, "center": center, "label": label, "marker": marker.round(2),
        "age": rng.integers(30, 80, n).astype(np.int64), "sex": rng.choice(["F", "M"], n).tolist(),
    }), latent


def build_study(root: Path, n: int = 40, seed: int = 3, models: list[dict[str, Any]] | None = None) -> StudyConfig:
    """A store with clinical data, pooled features ``img:mean`` and tile bags on the real CMU-1 slide.

    Every patient has one "slide" (the CMU-1 file under its own slide id) with
    the slide's real tile grid at 1 um/px; positive patients' bags hold a few
    tiles carrying the signal. Models: logistic (clinical), xgboost (image
    block + clinical), svm (image block), a fusion svm (scores + marker), soft
    voting and an attention MIL.
    """
    frame, latent = _patients(n, seed)
    rng = np.random.default_rng(seed + 1)
    con = store.connect(root / "store.duckdb")
    try:
        ids = frame["patient_id"].to_list()
        write_patients(con, frame, [
            {"name": name, "type": kind, "unit": unit, "role": "outcome" if name == "label" else "predictor", "label": label}
            for name, kind, unit, label in [("label", "binary", None, "Outcome"), ("marker", "numeric", "U/mL", "Marker"),
                                            ("age", "integer", "years", "Age"), ("sex", "categorical", None, "Sex")]
        ])
        with wsi.open_slide(CMU) as slide:
            grid = wsi.tile_grid(slide, TILE["mpp"], TILE["tile_size"], 0.25)
        probe = wsi.probe_slide(CMU)
        dim = 8
        params = {**TILE, "overlap": 0, "preprocessing": {"interpolation": "bilinear"}}
        store.register_feature_set(con, store.FeatureSetRecord("img", "wsi", "resnet18", "random", params, dim))
        pooled = np.zeros((n, dim), dtype=np.float32)
        for i, pid in enumerate(ids):
            k = grid.height
            emb = rng.normal(size=(k, dim)).astype(np.float32)
            hot = rng.choice(k, 3, replace=False)
            emb[hot, 0] += 2.5 * latent[i]  # the signal lives in a few tiles
            sid = f"{pid}-S1"
            out = store.write_instances(store.instance_path(root / "store.duckdb", "img", sid), pl.DataFrame({
                "source_id": [sid] * k, "instance": list(range(k)), "x": grid["x"], "y": grid["y"],
                "z": [None] * k, "level": grid["level"], "tissue_fraction": grid["tissue_fraction"],
                "embedding": [list(map(float, r)) for r in emb],
            }))
            store.record_item(con, "img", sid, pid, "done", n_instances=k,
                              path=str(out.relative_to((root / "store.duckdb").resolve().parent)))
            con.execute("INSERT INTO slides VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [sid, pid, str(CMU), probe["vendor"], probe["width"], probe["height"], probe["mpp"],
                         probe["mpp_source"], probe["objective"], probe["levels"], probe["downsamples"], "x"])
            pooled[i] = emb.mean(axis=0)
        store.write_patient_features(con, "img", "mean", ids, pooled, [grid.height] * n)
    finally:
        con.close()
    (root / "cohorts").mkdir(parents=True, exist_ok=True)
    (root / "cohorts" / "t.sql").write_text(COHORT_SQL)
    if models is None:
        models = [
            {"name": "clin", "kind": "logistic", "clinical": ["marker", "age", "sex"], "grid": {"C": [1.0]}},
            {"name": "xgb", "kind": "xgboost", "features": ["img:mean"], "clinical": ["marker"],
             "grid": {"max_depth": [2]}, "params": {"n_estimators": 40}},
            {"name": "img_svm", "kind": "svm", "features": ["img:mean"], "grid": {"C": [1.0]},
             "params": {"kernel": "linear"}},
            {"name": "fusion", "kind": "svm", "scores": ["img_svm", "clin"], "clinical": ["marker", "sex"],
             "grid": {"C": [1.0]}},
            {"name": "vote", "kind": "voting", "members": ["img_svm", "clin"]},
            {"name": "mil", "kind": "mil", "features": ["img"],
             "params": {"max_epochs": 15, "hidden": 16, "attention_dim": 8, "patience": 5, "device": "cpu"}},
        ]
    data = {
        "study": {"name": "t", "seed": 0}, "manifests": {"patients": "patients.csv"},
        "feature_sets": [{"name": "img", "modality": "wsi", "encoder": "resnet18", "weights": "random",
                          "mpp": 1.0, "tile_size": 224, "pooling": ["mean"]}],
        "cohort": {"name": "t"}, "split": {"external_centers": ["B"], "internal_fraction": 0.25, "seed": 0},
        "models": models, "validation": {"folds": 3}, "report": {"dir": "reports"},
    }
    (root / "study.toml").write_text(to_toml(data), encoding="utf-8")
    return load_config(root / "study.toml")
