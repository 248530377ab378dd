"""The demo study's own model entries (as pipeline.synth writes them) fit on a demo-shaped store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import tomllib

from analytics.fit import fit, stored_predictions
from pipeline import synth

from model_helpers import add_bags, add_pooled, build_store, make_study

SQL = """
SELECT p.patient_id, p.center, c.high_risk AS label, c.time, c.event, c.split, c.age, c.sex, c.esr, c.anti_ssa,
       c.igg
FROM patients p JOIN clinical c USING (patient_id)
"""
TYPES = {"high_risk": "binary", "time": "numeric", "event": "binary", "split": "categorical", "age": "numeric", "sex": "categorical", "esr": "numeric",
         "anti_ssa": "categorical", "igg": "numeric"}


def test_every_demo_model_fits(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 60
    ids = [f"P{i:03d}" for i in range(1, n + 1)]
    y = (np.arange(n) % 8 < 3).astype(np.int64)  # 38% positive, as in the demo
    split = np.where(np.arange(n) % 3 == 0, "external", np.where(np.arange(n) % 5 == 1, "internal", "train"))
    esr = rng.gamma(2.0, 12.0, n).round(0)
    esr[[4, 9]] = np.nan
    patients = pl.DataFrame({
        "patient_id": ids, "center": np.where(split == "external", "B", "A").tolist(), "high_risk": y,
        "split": split.tolist(), "age": rng.normal(50, 12, n).round(1), "sex": rng.choice(["F", "M"], n).tolist(),
        "esr": pl.Series(esr).fill_nan(None), "anti_ssa": np.where(rng.random(n) < 0.3 + 0.4 * y, "positive",
                                                                   "negative").tolist(),
        "igg": (14 + 3 * y + rng.normal(0, 3, n)).round(1),
        # follow-up for the survival models: shorter times to event for label 1
        "time": rng.exponential(np.where(y == 1, 20.0, 60.0)).round(1) + 0.1,
        "event": (rng.random(n) < 0.6).astype(np.int64),
    })
    path = build_store(tmp_path / "store.duckdb", patients, TYPES)
    bags = {}
    for i, pid in enumerate(ids):
        b = rng.normal(size=(int(rng.integers(5, 15)), 32)).astype(np.float32)
        b[: 2 * y[i], :4] += 1.5
        bags[pid] = b
    add_bags(path, "wsi_resnet18", bags)
    add_pooled(path, "wsi_resnet18", ids, np.stack([b.mean(axis=0) for b in bags.values()]))
    with_ct = [p for p in ids if p != "P007"]
    ct = rng.normal(size=(n, 10)).astype(np.float32) + 0.8 * y[:, None]
    add_pooled(path, "ct_radiomics", with_ct, ct[[ids.index(p) for p in with_ct]])

    models = tomllib.loads(synth.study_toml(0))["models"]
    study = make_study(tmp_path, models, folds=3, feature_sets=("wsi_resnet18", "ct_radiomics"), cohort_sql=SQL)
    result = fit(study, progress=False)

    assert [m.name for m in result.models] == ["clinical", "wsi_svm", "wsi_mil", "ct_svm", "ct_xgb", "fusion", "ensemble",
                                               "clinical_cox", "wsi_mil_cox", "survival_fusion", "wsi_svm_combat",
                                               "clinical_glm"]
    assert {m.status for m in result.models} == {"fitted"}
    rows = stored_predictions(study.store_path)
    for name, part in rows.group_by("model"):
        assert set(part["split"]) == {"train", "internal", "external"}, name
        assert ("P007" in part["patient_id"].to_list()) == (name[0] not in ("ct_svm", "ct_xgb", "fusion")), name
    assert result.model("fusion").missing == {"score:ct_svm": ["P007"]}
    survival = {"clinical_cox", "wsi_mil_cox", "survival_fusion"}
    assert all(m.oof_auc is not None for m in result.models if m.name not in survival)
    for name in survival:  # a survival model's OOF estimate is Harrell's C (in its manifest), not an AUC
        assert result.model(name).oof_auc is None
