"""Classical learners against scikit-learn's own cross-validation on real data (breast cancer, Wisconsin).

Data: ``sklearn.datasets.load_breast_cancer`` (569 patients, 30 image-derived
features; BSD-3, shipped with scikit-learn). Centres by a stable rule on the
published row order: row i is centre B (external) when i % 4 == 0; of centre A,
rows with i % 4 == 2 are the internal split and the rest train (285 patients).
Feature values pass through the store as float32, so the references use the
same float32-rounded values.

Reference: ``cross_val_score`` with the same estimator on the same training
patients and the same ``StratifiedKFold(5, shuffle=True, random_state=seed)``
folds (checked), scored by ROC AUC per fold. Hyper-parameter grids are pinned
to one point so both sides fit the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from xgboost import XGBClassifier

from analytics.fit import fit, stored_predictions
from pipeline.config import StudyConfig

from model_helpers import add_pooled, build_store, make_study

SEED = 3
SQL = "SELECT p.patient_id, p.center, c.label, c.split FROM patients p JOIN clinical c USING (patient_id)"
XGB = {"n_estimators": 200, "learning_rate": 0.1, "max_depth": 3, "subsample": 0.8, "colsample_bytree": 0.8}
MODELS = [
    {"name": "svm", "kind": "svm", "features": ["bc"], "grid": {"C": [1.0]}, "params": {"kernel": "rbf"}},
    {"name": "logistic", "kind": "logistic", "features": ["bc"], "grid": {"C": [1.0]}},
    {"name": "xgboost", "kind": "xgboost", "features": ["bc"], "grid": {"max_depth": [3]},
     "params": {k: v for k, v in XGB.items() if k != "max_depth"}},
]


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    n = len(y)
    idx = np.arange(n)
    split = np.where(idx % 4 == 0, "external", np.where(idx % 4 == 2, "internal", "train"))
    ids = [f"BC{i:03d}" for i in range(n)]
    root: Path = tmp_path_factory.mktemp("breast_cancer")
    patients = pl.DataFrame({"patient_id": ids, "center": np.where(split == "external", "B", "A").tolist(),
                             "label": y.astype(np.int64), "split": split.tolist()})
    build_store(root / "store.duckdb", patients, {"label": "binary", "split": "categorical"})
    add_pooled(root / "store.duckdb", "bc", ids, X)
    study = make_study(root, MODELS, folds=5, seed=SEED, feature_sets=("bc",), cohort_sql=SQL)
    fit(study, progress=False)
    return study, X.astype(np.float64), y, split


def _folds_and_auc(study: StudyConfig, model: str, y_by_id: dict[str, int]) -> tuple[np.ndarray, list[float]]:
    rows = stored_predictions(study.store_path, model).filter(pl.col("split") == "train")
    folds = rows["fold"].to_numpy()
    y = np.array([y_by_id[p] for p in rows["patient_id"]])
    aucs = [roc_auc_score(y[folds == k], rows["score"].to_numpy()[folds == k]) for k in range(5)]
    return folds, aucs


REFERENCES = {
    "svm": lambda: make_pipeline(StandardScaler(), SVC(C=1.0, kernel="rbf")),
    "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)),
    "xgboost": lambda: XGBClassifier(**XGB, n_jobs=1, random_state=SEED, tree_method="hist"),
}
# SVM and logistic fit the very same model as the reference (the SVM's Platt map is monotone, so a
# fold's AUC cannot move): a tolerance of 0.002 allows only for ties where Platt probabilities
# saturate. XGBoost differs by design (early stopping on an inner split, then a refit), so the
# tolerance is the noise of the reference itself: two standard errors of its mean fold AUC.
TIGHT = {"svm": 0.002, "logistic": 0.002}


@pytest.mark.parametrize("model", ["svm", "logistic", "xgboost"])
def test_out_of_fold_auc_matches_cross_val_score(breast_cancer: tuple, model: str) -> None:
    study, X, y, split = breast_cancer
    train = split == "train"
    ids = [f"BC{i:03d}" for i in range(len(y))]
    folds, ours = _folds_and_auc(study, model, dict(zip(ids, y.tolist())))

    cv = StratifiedKFold(5, shuffle=True, random_state=SEED)
    expected = np.empty(train.sum(), dtype=np.int64)
    for k, (_, te) in enumerate(cv.split(X[train], y[train])):
        expected[te] = k
    assert folds.tolist() == expected.tolist()  # the same folds on both sides

    ref = cross_val_score(REFERENCES[model](), X[train], y[train], cv=cv, scoring="roc_auc")
    tol = TIGHT.get(model, 2 * ref.std(ddof=1) / np.sqrt(len(ref)))
    assert abs(np.mean(ours) - ref.mean()) <= tol, (ours, ref.tolist(), tol)
    assert np.mean(ours) > 0.95


@pytest.mark.parametrize("model", ["svm", "logistic"])
def test_external_auc_matches_the_reference_refit(breast_cancer: tuple, model: str) -> None:
    study, X, y, split = breast_cancer
    train, external = split == "train", split == "external"
    rows = stored_predictions(study.store_path, model).filter(pl.col("split") == "external")
    ours = roc_auc_score(y[external], rows["score"].to_numpy())
    ref_model = REFERENCES[model]().fit(X[train], y[train])
    ref = roc_auc_score(y[external], ref_model.decision_function(X[external]))
    assert ours == pytest.approx(ref, abs=TIGHT[model])
