"""No leakage: held-out patients never influence anything fitted; second stages see only out-of-fold scores."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from analytics import stats
from analytics.cohort import load_cohort
from analytics.fit import fit, predict, required_inputs, stored_predictions
from analytics.models import classical, fusion, registry
from pipeline.config import StudyConfig

from model_helpers import ALL_KINDS, COHORT_SQL, add_pooled, build_store, copy_study, make_study, write_cohort_store
from model_leakage import artefacts, differing, leaky_preprocessor, perturb_held_out


@pytest.fixture(scope="module")
def perturbed_study(tmp_path_factory: pytest.TempPathFactory, cohort_data: dict[str, Any]) -> StudyConfig:
    root = tmp_path_factory.mktemp("perturbed")
    write_cohort_store(root, perturb_held_out(cohort_data))
    study = make_study(root, ALL_KINDS)
    fit(study, progress=False)
    return study


def test_held_out_patients_change_no_fitted_artefact(fitted_study: StudyConfig, perturbed_study: StudyConfig) -> None:
    a, b = artefacts(fitted_study), artefacts(perturbed_study)
    kinds = {k.split("/")[1] for k in a}
    # the check covers pickled pipelines (logistic, svm, xgboost, stacking), a MIL state dict,
    # chosen hyper-parameters and training predictions of every model
    assert {"model.skops", "state_dict", "chosen", "train predictions"} <= kinds
    assert len([k for k in a if k.endswith("train predictions")]) == len(ALL_KINDS)
    assert differing(a, b) == []
    # the perturbation did reach the held-out patients: their scores moved
    held = lambda s: stored_predictions(s.store_path).filter(pl.col("split") != "train")  # noqa: E731
    assert not np.array_equal(held(fitted_study)["score"].to_numpy(), held(perturbed_study)["score"].to_numpy())


@pytest.mark.parametrize("what", ["scaler", "pca"])
def test_leakage_check_catches_a_scaler_or_pca_fitted_on_all_patients(
    tmp_path: Path, cohort_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    models = [{**m, "grid": {"C": [1.0]}} for m in ALL_KINDS if m["name"] == "img_svm"]
    runs = []
    for name, data in (("original", cohort_data), ("perturbed", perturb_held_out(cohort_data))):
        write_cohort_store(tmp_path / name, data)
        study = make_study(tmp_path / name, models)
        have = [i for i, p in enumerate(data["ids"]) if p not in data["lacking"]]
        monkeypatch.setattr(classical, "preprocessor", leaky_preprocessor(data["features"][have], what))
        fit(study, progress=False)
        runs.append(artefacts(study))
    assert "img_svm/model.skops" in differing(*runs)
    assert "img_svm/train predictions" in differing(*runs)


@pytest.fixture(scope="module")
def noise_study(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    """80 patients whose 64 image features are pure noise: a linear SVM memorises its training patients."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(5)
    n = 80
    ids = [f"N{i:02d}" for i in range(n)]
    split = ["train"] * 60 + ["internal"] * 10 + ["external"] * 10
    patients = pl.DataFrame({
        "patient_id": ids, "center": ["B" if s == "external" else "A" for s in split],
        "label": np.array([i % 2 for i in range(n)], dtype=np.int64), "split": split,
        "age": rng.normal(50, 10, n), "sex": rng.choice(["F", "M"], n).tolist(), "marker": rng.normal(0, 1, n),
    })
    build_store(root / "store.duckdb", patients, {"label": "binary", "split": "categorical", "age": "numeric",
                                                  "sex": "categorical", "marker": "numeric"})
    add_pooled(root / "store.duckdb", "img", ids, rng.normal(size=(n, 64)).astype(np.float32))
    return make_study(root, [
        {"name": "noise_svm", "kind": "svm", "features": ["img"], "grid": {"C": [1.0]}, "params": {"kernel": "linear"}},
        {"name": "fusion", "kind": "logistic", "scores": ["noise_svm"], "grid": {"C": [1.0]}},
    ], folds=5, feature_sets=("img",))


def _oof_auc(study: StudyConfig, model: str) -> float:
    rows = stored_predictions(study.store_path, model).filter(pl.col("split") == "train")
    cohort = load_cohort(study)
    labels = dict(zip(cohort.patient_ids, cohort.frame["label"].to_list()))
    return stats.auc(np.array([labels[p] for p in rows["patient_id"]]), rows["score"].to_numpy())


def test_fusion_trains_on_out_of_fold_scores_and_in_sample_scores_would_show(
    noise_study: StudyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[pl.DataFrame] = []
    real_build = registry.build_learner

    class Spy:
        def __init__(self, learner: Any) -> None:
            self.learner = learner

        def fit(self, data: Any, y: np.ndarray) -> Any:
            seen.append(pl.DataFrame({"patient_id": list(data.patient_ids),
                                      "score": data.table["score:noise_svm"].to_numpy()}))
            self.learner.fit(data, y)
            return self

        def __getattr__(self, name: str) -> Any:
            return getattr(self.learner, name)

    monkeypatch.setattr(registry, "build_learner",
                        lambda spec, seed: Spy(real_build(spec, seed)) if spec.name == "fusion" else real_build(spec, seed))
    fit(noise_study, progress=False)
    monkeypatch.undo()

    # by construction: the final fusion fit saw the input model's out-of-fold scores ...
    oof = stored_predictions(noise_study.store_path, "noise_svm").filter(pl.col("split") == "train")
    oof_scores = dict(zip(oof["patient_id"].to_list(), oof["score"].to_list()))
    assert len(seen) == 6
    assert seen[-1]["score"].to_list() == [oof_scores[p] for p in seen[-1]["patient_id"]]
    assert sorted(seen[-1]["patient_id"].to_list()) == sorted(oof_scores)
    # ... and outer fold k's fit saw out-of-fold scores of the training patients outside fold k made by the input
    # model cross-fitted on those patients alone: the scores that fitting it on a cohort of just them stores
    fold_of = dict(zip(oof["patient_id"].to_list(), oof["fold"].to_list()))
    for k, frame in enumerate(seen[:-1]):
        outside = sorted(p for p, f in fold_of.items() if f != k)
        assert sorted(frame["patient_id"].to_list()) == outside
        alone = tmp_path / f"outside{k}"
        shutil.copytree(noise_study.root, alone, ignore=shutil.ignore_patterns("models"))
        only = make_study(alone, [noise_study.models[0].model_dump()], folds=5, feature_sets=("img",),
                          cohort_sql=COHORT_SQL + " WHERE p.patient_id IN (" + ", ".join(f"'{p}'" for p in outside) + ")")
        fit(only, progress=False)
        inner = stored_predictions(only.store_path, "noise_svm")
        assert inner["split"].unique().to_list() == ["train"]
        inner_scores = dict(zip(inner["patient_id"].to_list(), inner["score"].to_list()))
        assert frame["score"].to_list() == [inner_scores[p] for p in frame["patient_id"]]
        assert frame["score"].to_list() != [oof_scores[p] for p in frame["patient_id"]]

    # with noise inputs an honest fusion cannot beat chance by much ...
    honest = _oof_auc(noise_study, "fusion")
    assert honest < 0.8

    # ... while one fed in-sample scores (the final input model on its own training patients) looks excellent
    leaky = copy_study(noise_study, tmp_path / "leaky", models=False)
    leaky = make_study(leaky.root, [m.model_dump() | {"nested": m.name != "fusion"} for m in leaky.models], folds=5,
                       feature_sets=("img",))
    fit(leaky, models=["noise_svm"], progress=False)
    features, bags = required_inputs(leaky.models)
    cohort = load_cohort(leaky, features=features, bags=bags)
    in_sample = predict(leaky, "noise_svm", cohort)

    def in_sample_scores(names: list[str], predictions: dict[str, pl.DataFrame]) -> dict[str, dict[str, float]]:
        return {n: fusion.score_lookup(in_sample) for n in names}

    monkeypatch.setattr(fusion, "training_scores", in_sample_scores)
    fit(leaky, progress=False)
    assert _oof_auc(leaky, "fusion") > 0.95 > honest + 0.15
