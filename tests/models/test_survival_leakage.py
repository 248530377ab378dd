"""No leakage for survival models: held-out patients (their follow-up included) change nothing fitted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from analytics.fit import fit, stored_predictions
from analytics.models.persist import read_horizon_risks

from model_helpers import add_bags, add_pooled, build_store, make_study
from model_leakage import artefacts, differing, perturb_held_out

SQL = """
SELECT p.patient_id, p.center, c.label, c.time, c.event, c.split, c.age, c.sex, c.marker
FROM patients p JOIN clinical c USING (patient_id)
"""
TYPES = {"label": "binary", "time": "numeric", "event": "binary", "split": "categorical", "age": "numeric",
         "sex": "categorical", "marker": "numeric"}
SURVIVAL_KINDS = [
    {"name": "cox", "kind": "cox", "clinical": ["age", "sex", "marker"]},
    {"name": "coxnet", "kind": "coxnet", "features": ["img:mean"], "clinical": ["marker"],
     "grid": {"alpha": [0.05, 0.2]}},
    {"name": "rsf", "kind": "rsf", "clinical": ["age", "marker"], "params": {"n_estimators": 20}},
    {"name": "xgb_cox", "kind": "xgboost_cox", "features": ["img"], "params": {"n_estimators": 20}},
    {"name": "mil_cox", "kind": "mil_cox", "features": ["tiles"],
     "params": {"hidden": 8, "attention_dim": 4, "max_epochs": 5, "batch_size": 8}},
    {"name": "surv_fusion", "kind": "cox", "scores": ["cox", "mil_cox"], "clinical": ["marker"],
     "params": {"penalizer": 0.1}},
    {"name": "surv_stack", "kind": "stacking", "members": ["cox", "rsf"]},
]


def _with_follow_up(data: dict[str, Any], seed: int, held_out_only: bool = False) -> dict[str, Any]:
    """Times and events rising with the label; redrawn for held-out patients only when ``held_out_only``."""
    p = data["patients"]
    rng = np.random.default_rng(seed)
    n = p.height
    label = p["label"].to_numpy()
    time = np.round(rng.exponential(np.where(label == 1, 10.0, 30.0)) + 0.5, 2)
    event = (rng.random(n) < 0.7).astype(np.int64)
    if held_out_only:
        held = (p["split"] != "train").to_numpy()
        time = np.where(held, time, data["patients"]["time"].to_numpy())
        event = np.where(held, event, data["patients"]["event"].to_numpy())
    return {**data, "patients": p.with_columns(pl.Series("time", time), pl.Series("event", event))}


def _store(root: Path, data: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = build_store(root / "store.duckdb", data["patients"], TYPES)
    keep = [i for i, p in enumerate(data["ids"]) if p not in data["lacking"]]
    add_pooled(path, "img", [data["ids"][i] for i in keep], data["features"][keep])
    add_bags(path, "tiles", {p: b for p, b in data["bags"].items() if p not in data["lacking"]})


@pytest.fixture(scope="module")
def two_fits(tmp_path_factory: pytest.TempPathFactory, cohort_data: dict[str, Any]) -> tuple[Any, Any]:
    base = _with_follow_up(cohort_data, seed=1)
    changed = _with_follow_up(perturb_held_out(base), seed=2, held_out_only=True)
    studies = []
    for name, data in (("base", base), ("changed", changed)):
        root = tmp_path_factory.mktemp(name)
        _store(root, data)
        study = make_study(root, SURVIVAL_KINDS, cohort_sql=SQL)
        fit(study, progress=False)
        studies.append(study)
    return studies[0], studies[1]


def test_held_out_follow_up_changes_no_survival_artefact(two_fits: tuple[Any, Any]) -> None:
    a, b = artefacts(two_fits[0]), artefacts(two_fits[1])
    assert len([k for k in a if k.endswith("train predictions")]) == len(SURVIVAL_KINDS)
    assert differing(a, b) == []
    # and the training patients' risks at the horizons are unchanged too
    for spec in SURVIVAL_KINDS:
        ra, rb = (read_horizon_risks(s.models_dir / spec["name"], s.store_path) for s in two_fits)
        assert ra is not None and rb is not None, spec["name"]
        ta = ra.join(stored_predictions(two_fits[0].store_path, spec["name"]).select("patient_id", "split"),
                     on="patient_id").filter(pl.col("split") == "train").sort("patient_id", "horizon")
        tb = rb.join(stored_predictions(two_fits[1].store_path, spec["name"]).select("patient_id", "split"),
                     on="patient_id").filter(pl.col("split") == "train").sort("patient_id", "horizon")
        assert ta["risk"].to_list() == tb["risk"].to_list(), spec["name"]
    # the perturbation reached the held-out patients: their scores moved
    pa = stored_predictions(two_fits[0].store_path, "cox").filter(pl.col("split") != "train")
    pb = stored_predictions(two_fits[1].store_path, "cox").filter(pl.col("split") != "train")
    assert not np.allclose(pa["score"].to_numpy(), pb["score"].to_numpy())
