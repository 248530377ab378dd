"""Adding a model kind touches only the kind table, its learner and the registry.

A nearest-centroid classifier on clinical columns is registered the documented way
(:func:`analytics.models.registry.register_kind`: one traits record, one learner factory) and
goes through ``fit``, ``validate`` and ``report`` of a small clinical study like a shipped kind.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.models import classical
from analytics.models.data import ModelData
from analytics.models.registry import register_kind, unregister_kind
from pipeline.config import Model, StudyConfig, load_config
from pipeline.model_kinds import KINDS, KindTraits

N = 80
KIND = "nearest_centroid"


class NearestCentroid:
    """Scores a patient by where it lies between the two classes' centroids (a logistic link of the
    projection on the line joining them): higher = nearer the positive class."""

    kind = KIND

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, data: ModelData, y: np.ndarray) -> NearestCentroid:
        assert data.table is not None and data.columns is not None
        self.columns_ = data.columns
        self.prep_ = classical.preprocessor(data.columns, None, self.seed)
        X = np.asarray(self.prep_.fit_transform(data.table), dtype=np.float64)
        lo, hi = X[y == 0].mean(axis=0), X[y == 1].mean(axis=0)
        self.direction_, self.middle_ = hi - lo, (hi + lo) / 2
        return self

    def predict_score(self, data: ModelData) -> np.ndarray:
        X = np.asarray(self.prep_.transform(data.table), dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-(X - self.middle_) @ self.direction_))

    @property
    def chosen(self) -> dict[str, Any]:
        return {}


TRAITS = KindTraits(endpoint="binary", reads="table", saved="learner")


@pytest.fixture()
def toy_kind() -> Iterator[str]:
    register_kind(KIND, TRAITS, lambda spec, seed: NearestCentroid(seed))
    try:
        yield KIND
    finally:
        unregister_kind(KIND)


def _study(root: Path) -> StudyConfig:
    rng = np.random.default_rng(3)
    label = (np.arange(N) % 2).astype(int)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": ["A"] * 56 + ["B"] * 24,
        "age": rng.normal(55, 8, N).round(1), "marker": (label * 1.5 + rng.normal(0, 1, N)).round(3),
        "label": label,
    })
    return build_study(root, patients, "c.label, c.age, c.marker", study_toml("toy", 2, f"""[[models]]
name = "centroid"
kind = "{KIND}"
clinical = ["age", "marker"]
[validation]
n_boot = 0
""", sections='[variables]\nlabel = { type = "binary", role = "outcome" }'))


def test_a_registered_kind_is_fitted_validated_and_reported(toy_kind: str, tmp_path: Path) -> None:
    from analytics.fit import fit
    from analytics.report import write_report
    from analytics.validation.stage import validate

    study = _study(tmp_path)
    assert study.model("centroid").traits is TRAITS
    fitted = fit(study, progress=False)
    assert {m.name: m.status for m in fitted.models} == {"centroid": "fitted"}

    manifest = json.loads((study.models_dir / "centroid" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == KIND and manifest["artifact"] == "model.skops"
    assert (study.models_dir / "centroid" / "model.skops").is_file()

    result = validate(study, progress=False)
    assert result.validation is not None
    splits = result.validation.models["centroid"].splits
    aucs = {s: splits[s].get("auc") for s in ("train", "internal", "external")}
    assert all(a is not None and 0.5 < a.estimate <= 1.0 for a in aucs.values()), aucs
    metrics = pl.read_csv(study.report_dir / "metrics.csv")
    rows = metrics.filter((pl.col("model") == "centroid") & (pl.col("metric") == "auc"))
    assert set(rows.get_column("split")) == {"train", "internal", "external"}

    page = write_report(study, progress=False).path.read_text(encoding="utf-8")
    row = re.search(r'<tr id="model-centroid"[^>]*>(.*?)</tr>', page, re.DOTALL)
    assert row is not None and KIND in html.unescape(row.group(1))
    external = f"{aucs['external'].estimate:.3f}"
    assert external in page


def test_a_study_naming_a_removed_kind_is_refused(tmp_path: Path) -> None:
    from pipeline.config import ConfigError

    register_kind(KIND, TRAITS, lambda spec, seed: NearestCentroid(seed))
    try:
        _study(tmp_path)
    finally:
        unregister_kind(KIND)
    assert KIND not in KINDS
    with pytest.raises(ConfigError, match=r"models\[0\]\.kind"):
        load_config(tmp_path / "study.toml")


def test_an_unregistered_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="Input should be one of"):
        Model(name="centroid", kind=KIND, clinical=["age"])
