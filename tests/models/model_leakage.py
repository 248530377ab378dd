"""The leakage check and deliberately leaky variants used to prove that the check can fail.

The check: fit a study, then fit a copy whose internal and external patients
were changed beyond recognition (labels flipped, features, bags and clinical
values redrawn); every fitted artefact (pickled pipelines, MIL state dicts,
chosen hyper-parameters, training-split predictions) must be byte-identical.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.decomposition import PCA
from sklearn.frozen import FrozenEstimator
from sklearn.preprocessing import StandardScaler

from analytics.fit import stored_predictions
from analytics.models import classical
from pipeline.config import StudyConfig


def artefacts(study: StudyConfig) -> dict[str, bytes]:
    """Every fitted artefact of a fitted study, as bytes, by name."""
    out: dict[str, bytes] = {}
    for spec in study.models:
        folder = study.models_dir / spec.name
        if (folder / "model.skops").exists():
            out[f"{spec.name}/model.skops"] = (folder / "model.skops").read_bytes()
        if (folder / "model.pt").exists():
            state = torch.load(folder / "model.pt", weights_only=True)
            out[f"{spec.name}/state_dict"] = b"".join(k.encode() + v.numpy().tobytes() for k, v in sorted(state.items()))
        manifest = json.loads((folder / "manifest.json").read_text())
        out[f"{spec.name}/chosen"] = json.dumps([manifest["chosen"], manifest["fold_chosen"]], sort_keys=True).encode()
    train = stored_predictions(study.store_path).filter(pl.col("split") == "train")
    for name, part in train.group_by("model", maintain_order=True):
        out[f"{name[0]}/train predictions"] = (
            "\0".join(part["patient_id"].to_list()).encode() + part["score"].to_numpy().tobytes()
            + part["fold"].to_numpy().tobytes()
        )
    return out


def differing(a: Mapping[str, bytes], b: Mapping[str, bytes]) -> list[str]:
    """Artefacts present in both runs whose bytes differ, and those present in only one."""
    return sorted([k for k in a.keys() & b.keys() if a[k] != b[k]] + list(a.keys() ^ b.keys()))


def perturb_held_out(data: Mapping[str, Any], seed: int = 99) -> dict[str, Any]:
    """A copy of a cohort where every internal and external patient is changed; training patients are untouched."""
    rng = np.random.default_rng(seed)
    patients: pl.DataFrame = data["patients"]
    held = (patients["split"] != "train").to_numpy()
    n = patients.height
    label = patients["label"].to_numpy().copy()
    label[held] = 1 - label[held]
    age = patients["age"].to_numpy().copy()
    age[held] = np.round(rng.normal(80, 3, held.sum()), 1)
    marker = patients["marker"].to_numpy().copy()
    marker[held] = np.round(rng.normal(-5, 2, held.sum()), 3)
    sex = np.where(held, "X", np.asarray(patients["sex"].to_list(), dtype=object))
    new = patients.with_columns(pl.Series("label", label), pl.Series("age", age).fill_nan(None),
                                pl.Series("marker", marker), pl.Series("sex", sex.tolist()))
    feats = data["features"].copy()
    feats[held] = rng.normal(5, 3, size=(held.sum(), feats.shape[1])).astype(np.float32)
    bags = dict(data["bags"])
    for i, pid in enumerate(data["ids"]):
        if held[i]:
            bags[pid] = rng.normal(4, 2, size=(int(rng.integers(3, 20)), bags[pid].shape[1])).astype(np.float32)
    assert n == len(data["ids"])
    return {**data, "patients": new, "features": feats, "bags": bags}


def leaky_preprocessor(all_features: np.ndarray, what: str) -> Callable[..., Any]:
    """``classical.preprocessor`` with the image-feature scaler (or PCA) fitted on *all* patients' features.

    For tests only: the deliberate mistake the leakage check must catch.
    """
    real = classical.preprocessor
    scaler = StandardScaler().fit(all_features)

    def make(columns: Any, pca: Any = None, seed: int = 0, categories: Any = None) -> Any:
        ct = real(columns, pca, seed, categories)
        name, pipe, cols = ct.transformers[0]
        assert name == "features"
        if what == "scaler":
            pipe.steps[1] = ("scale", FrozenEstimator(scaler))
        elif what == "pca":
            fitted = PCA(n_components=pca, svd_solver="full", random_state=seed).fit(scaler.transform(all_features))
            pipe.steps[2] = ("pca", FrozenEstimator(fitted))
        else:
            raise ValueError(what)
        return ct

    return make
