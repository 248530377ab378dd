"""Internal-external cross-validation of a ComBat-harmonised model: in each fold the harmonisation is estimated,
and the learner fitted, on the other development centres' patients only; the left-out centre (and the external
one) never reaches a fit. Its patients are harmonised at scoring from their own features, as a new centre is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from models.model_helpers import make_study, write_cohort_store
from multicentre.iecv_helpers import recording

from analytics.cohort import load_cohort
from analytics.fit import fit
from analytics.iecv import iecv_model
from analytics.iecv_files import IECV_FOLDER, read_iecv
from analytics.models.harmonize import BATCH_COLUMN, ComBat
from analytics.models.persist import read_record

CENTRES = {"A": (0.0, 1.0), "C": (1.5, 2.0), "D": (-1.0, 0.6), "B": (0.5, 1.3)}  # shift, scale; B external
MODEL = {"name": "harm", "kind": "logistic", "features": ["img"], "clinical": ["marker"], "harmonize": "combat",
         "harmonize_covariates": ["age"], "params": {"C": 1.0}}


def _data() -> dict[str, Any]:
    rng = np.random.default_rng(29)
    ids, centre, split = [], [], []
    for c in CENTRES:
        for i in range(30):
            ids.append(f"{c}{i:02d}")
            centre.append(c)
            split.append("external" if c == "B" else ("internal" if i % 5 == 0 else "train"))
    n = len(ids)
    label = np.array([i % 2 for i in range(n)], dtype=np.int64)
    feats = rng.normal(size=(n, 6)) + 1.2 * label[:, None] * (np.arange(6) < 2)
    feats = feats * np.array([CENTRES[c][1] for c in centre])[:, None] + np.array([CENTRES[c][0] for c in centre])[:, None]
    patients = pl.DataFrame({"patient_id": ids, "center": centre, "label": label, "split": split,
                             "age": np.round(rng.normal(50, 10, n), 1), "sex": rng.choice(["F", "M"], n).tolist(),
                             "marker": np.round(rng.normal(0, 1, n), 3)})
    return {"patients": patients, "features": feats.astype(np.float32), "lacking": [], "ids": ids,
            "bags": {p: rng.normal(size=(2, 3)).astype(np.float32) for p in ids}}


def test_a_left_out_centre_never_reaches_combat_or_the_learner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data()
    write_cohort_store(tmp_path, data)
    fitted = make_study(tmp_path, [MODEL], folds=2)
    fit(fitted, progress=False)  # the model as fitted; its IECV runs below, watched
    study = fitted.model_copy(update={"validation": fitted.validation.model_copy(
        update={"internal_external": True, "iecv_min_events": 5})})
    centre = dict(zip(data["ids"], data["patients"]["center"].to_list()))
    combat: list[set[str]] = []
    calls: list[tuple[str, tuple[str, ...]]] = []
    real = ComBat.fit

    def watched(self: ComBat, X: Any, y: Any = None) -> ComBat:
        combat.append({str(b) for b in X[BATCH_COLUMN]})
        return real(self, X, y)

    monkeypatch.setattr(ComBat, "fit", watched)
    assert iecv_model(study, study.model("harm"), load_cohort(study, features=["img:mean"]),
                      make=recording(calls)) is None
    learners = [{centre[p] for p in ids} for _, ids in calls]
    assert sorted(tuple(sorted(s)) for s in learners) == [("A", "C"), ("A", "D"), ("C", "D")]
    assert combat, "ComBat was never fitted"
    left_out = [{"A", "C", "D"} - s for s in learners]
    for seen in combat:  # every ComBat fit (tuning folds included) is inside one fold's development centres
        assert "B" not in seen and any(seen <= {"A", "C", "D"} - out for out in left_out)
    assert {frozenset(s) for s in combat} >= {frozenset({"A", "C"}), frozenset({"A", "D"}), frozenset({"C", "D"})}
    got = read_iecv(study.models_dir, "harm", read_record(study.models_dir / "harm", study.store_path).fit_key)
    assert got is not None and sorted(set(got.frame["group"])) == ["A", "C", "D"]
    assert not (study.models_dir / IECV_FOLDER / "harm" / "current.json").read_text().count('"B"')
