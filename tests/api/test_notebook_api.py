"""The notebook entry point: ``cohortlab.load_study`` -> Study -> Cohort, fit, Validation, report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from study_builders import study_toml, write_study

import cohortlab
from analytics import stats
from pipeline import store

N = 100


def _write(root: Path) -> pl.DataFrame:
    """A two-centre clinical study: a cohort with a ``$min_age`` parameter, two logistic models."""
    rng = np.random.default_rng(4)
    age = rng.normal(55, 12, N).round(1)
    marker = rng.normal(0, 1, N).round(3)
    label = (rng.random(N) < 1 / (1 + np.exp(-(1.5 * marker - 0.3)))).astype(int)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 70, "A", "B"),
        "age": age, "marker": marker, "label": label,
    })
    toml = study_toml("nb", 2, """[[models]]
name = "marker"
kind = "logistic"
clinical = ["age", "marker"]
[[models]]
name = "age_only"
kind = "logistic"
clinical = ["age"]
[validation]
n_boot = 50
""", cohort="adults", params="{ min_age = 30 }")
    write_study(root, patients, "c.label, c.age, c.marker", toml, cohort="adults", where="c.age >= $min_age")
    return patients


def test_import_is_light_and_names_load_on_use() -> None:
    """``import cohortlab`` (from outside the source tree) loads neither torch nor scikit-learn, nor do its names."""
    code = (
        "import sys, cohortlab\n"
        "heavy = lambda: sorted(m for m in ('torch', 'sklearn', 'timm', 'shap') if m in sys.modules)\n"
        "assert heavy() == [], heavy()\n"
        "cohortlab.load_study, cohortlab.Study, cohortlab.Validation\n"
        "assert heavy() == [], heavy()\n"
        "from pipeline.errors import CohortlabError\n"
        "assert cohortlab.CohortlabError is CohortlabError\n"
        "assert {'CohortlabError', 'Study', 'Validation', 'load_study'} <= set(dir(cohortlab))\n"
        "print(cohortlab.__file__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", cwd="/", timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).parent.name == "cohortlab"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cohortlab.nope  # noqa: B018


def test_a_notebook_session(tmp_path: Path) -> None:
    patients = _write(tmp_path)
    with pytest.raises(cohortlab.CohortlabError, match="no such study file"):
        cohortlab.load_study(tmp_path / "elsewhere")
    study = cohortlab.load_study(tmp_path)
    assert isinstance(study, cohortlab.Study) and study.name == "nb" and study.root == tmp_path.resolve()
    study.ingest(progress=False)
    assert study.embed(device="cpu", progress=False).feature_sets == []  # a clinical study has nothing to embed

    # cohorts: the study's parameters, or others given by name
    cohort = study.cohort()
    assert len(cohort) == (patients["age"] >= 30).sum()
    older = study.cohort(min_age=60)
    assert sorted(older.patient_ids) == sorted(patients.filter(pl.col("age") >= 60)["patient_id"].to_list())
    with pytest.raises(cohortlab.CohortlabError, match="no predictions yet"):
        study.validation(progress=False)

    study.fit(progress=False)
    v = study.validation(progress=False)
    assert isinstance(v, cohortlab.Validation) and list(v.models) == ["marker", "age_only"]
    con = store.connect(study.config.store_path, read_only=True)
    try:
        preds = store.read_predictions(con)
    finally:
        con.close()
    scored = preds.join(cohort.frame.select("patient_id", "label"), on="patient_id").filter(pl.col("label").is_not_null())

    def part(model: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        p = scored.filter((pl.col("model") == model) & (pl.col("split") == split)).sort("patient_id")
        return p["label"].to_numpy(), p["score"].to_numpy()

    for model in v.models:
        for split in ("train", "internal", "external"):
            y, s = part(model, split)
            row = v.summary.filter((pl.col("model") == model) & (pl.col("split") == split)
                                   & (pl.col("measure") == "auc") & pl.col("center").is_null())
            assert row["estimate"].item() == pytest.approx(roc_auc_score(y, s), abs=1e-12)

    # a second call reads the metrics back (nothing changed) to the same object, with what compare needs
    again = study.validation(progress=False)
    assert again == v and again is not v and list(again.models) == list(v.models)
    y, a = part("marker", "external")
    _, b = part("age_only", "external")
    ref = stats.compare_auc(y, a, b)
    got = again.compare("marker", "age_only")["external"]
    assert (got.difference, got.p) == pytest.approx((ref.difference, ref.p), abs=1e-11)

    path = study.report(progress=False)
    assert path == study.report_dir / "index.html" and "<html" in path.read_text(encoding="utf-8")
