"""Classical learners as scikit-learn Pipelines: preprocessing and classifier fitted together.

Every fitted step (imputers, scalers, one-hot encoders, PCA, the classifier and
its probability calibration) lives inside one :class:`sklearn.pipeline.Pipeline`,
so whatever fits the pipeline (an outer or inner cross-validation fold, the
final refit) fits all of it on its own training rows only. Layout::

    [harmonize  ComBat across centres (harmonize = "combat"; analytics.models.harmonize)]
    prep  ColumnTransformer
            features     median imputation -> standardisation -> PCA (params.pca)
            numeric      median imputation -> standardisation   (clinical numbers, input scores)
            categorical  most-frequent imputation -> one-hot (unknown levels -> all zeros; columns in the
                         declared order of the variable's levels, [variables] x.levels, else sorted)
    clf   LogisticRegression | CalibratedSVC | EarlyStoppedXGB

A regression with a ``formula``, or a maximum-likelihood logistic regression (``penalty = "none"``),
reads its clinical columns through the formula's model matrix instead (:func:`regression_preprocessor`:
imputation, then treatment coding, splines and interactions, analytics.models.formula; standardised
only when penalised), so its coefficients are R's.

Learners:

* ``logistic``: L1 / L2 / elastic-net penalised logistic regression (the
  clinical signature); ``params.penalty`` is ``"l2"`` (default), ``"l1"`` or
  ``"elasticnet"`` (with ``l1_ratio``), or ``"none"``: maximum likelihood, equal to R's
  ``glm`` (:class:`analytics.models.glm.MLLogistic`; no ``C``, nothing tuned).
* ``svm``: :class:`sklearn.svm.SVC` (RBF by default, ``params.kernel``) with
  Platt scaling (Platt 1999) fitted on internal cross-validated decision values
  of the training rows (:class:`sklearn.calibration.CalibratedClassifierCV`,
  ``ensemble=False``), so probabilities are a monotone map of the decision function.
* ``xgboost``: gradient-boosted trees (Chen & Guestrin, KDD 2016) with early
  stopping on a stratified inner split of the training rows; the model is
  then refitted on all training rows with the chosen number of rounds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from analytics.models.data import Columns

log = logging.getLogger("cohortlab.models.classical")

# params read by the pipeline or the tuner, not passed to the classifier
PIPELINE_PARAMS = ("pca", "inner_folds")
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "logistic": {"C": [0.01, 0.1, 1.0, 10.0]},
    "svm": {"C": [0.1, 1.0, 10.0]},
    "xgboost": {"max_depth": [2, 3]},
}


class CalibratedSVC(ClassifierMixin, BaseEstimator):
    """Support vector classifier with Platt-scaled probabilities.

    Platt scaling (Platt, "Probabilistic outputs for support vector machines",
    1999) is fitted on decision values that
    :class:`~sklearn.calibration.CalibratedClassifierCV` computes by an internal
    stratified, seeded cross-validation of the training rows; the SVC itself is
    then refitted on all of them (``ensemble=False``).

    Parameters
    ----------
    C, kernel, gamma, degree, class_weight
        As :class:`sklearn.svm.SVC`.
    calibration_folds
        Internal folds for the Platt fit (fewer when a class has fewer rows).
    random_state
        Seed of the internal folds.
    """

    def __init__(self, C: float = 1.0, kernel: str = "rbf", gamma: str | float = "scale", degree: int = 3,
                 class_weight: str | dict | None = None, calibration_folds: int = 3, random_state: int = 0) -> None:
        self.C = C
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.class_weight = class_weight
        self.calibration_folds = calibration_folds
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> CalibratedSVC:
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        minority = int(np.bincount(y.astype(np.int64)).min()) if len(self.classes_) == 2 else 0
        if minority == 0:
            raise ValueError("an SVM needs training rows of both classes")
        folds = min(self.calibration_folds, minority)
        svc = SVC(C=self.C, kernel=self.kernel, gamma=self.gamma, degree=self.degree, class_weight=self.class_weight,
                  random_state=self.random_state)
        if folds < 2:
            # a class of one row leaves nothing to calibrate on: keep the plain logistic of the decision value
            log.debug("svm: %d training row(s) in a class; probabilities are sigmoid(decision value), not Platt-scaled",
                        minority)
            self.calibrated_ = None
            self.svc_ = svc.fit(X, y)
            return self
        cv = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        self.calibrated_ = CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False).fit(X, y)
        self.svc_ = self.calibrated_.calibrated_classifiers_[0].estimator
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.calibrated_ is None:
            p = 1.0 / (1.0 + np.exp(-self.svc_.decision_function(X)))
            return np.column_stack([1.0 - p, p])
        return self.calibrated_.predict_proba(X)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.svc_.decision_function(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)]


class EarlyStoppedXGB(ClassifierMixin, BaseEstimator):
    """XGBoost classifier whose number of boosting rounds is chosen by early stopping.

    A stratified, seeded split holds out ``validation_fraction`` of the rows it
    is fitted on; boosting stops when the held-out log-loss has not improved
    for ``early_stopping_rounds``; the booster is then refitted on all rows
    with the best number of rounds. The split is taken from the training rows
    only, inside whatever fold fits this estimator.

    Parameters
    ----------
    n_estimators
        Upper bound on boosting rounds.
    early_stopping_rounds, validation_fraction
        The early-stopping rule and the share of rows it holds out.
    learning_rate, max_depth, min_child_weight, subsample, colsample_bytree, reg_lambda, scale_pos_weight
        As :class:`xgboost.XGBClassifier`.
    n_jobs
        Threads (1 keeps results byte-identical across machines).
    random_state
        Seed of the split and of row / column subsampling.
    """

    def __init__(self, n_estimators: int = 300, early_stopping_rounds: int = 20, validation_fraction: float = 0.2,
                 learning_rate: float = 0.05, max_depth: int = 3, min_child_weight: float = 1.0,
                 subsample: float = 0.8, colsample_bytree: float = 0.8, reg_lambda: float = 1.0,
                 scale_pos_weight: float = 1.0, n_jobs: int = 1, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.scale_pos_weight = scale_pos_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _booster(self, n_estimators: int, early_stopping_rounds: int | None) -> Any:
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=n_estimators, learning_rate=self.learning_rate, max_depth=self.max_depth,
            min_child_weight=self.min_child_weight, subsample=self.subsample, colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda, scale_pos_weight=self.scale_pos_weight, n_jobs=self.n_jobs,
            random_state=self.random_state, tree_method="hist", eval_metric="logloss",
            early_stopping_rounds=early_stopping_rounds,
        )

    def fit(self, X: np.ndarray, y: np.ndarray) -> EarlyStoppedXGB:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(np.int64)
        self.classes_ = np.unique(y)
        counts = np.bincount(y, minlength=2)
        n_val = int(round(self.validation_fraction * len(y)))
        rounds = self.n_estimators
        if counts.min() >= 2 and n_val >= 2 and len(y) - n_val >= 2:
            split = StratifiedShuffleSplit(1, test_size=n_val, random_state=self.random_state)
            fit_idx, val_idx = next(split.split(X, y))
            probe = self._booster(self.n_estimators, self.early_stopping_rounds)
            probe.fit(X[fit_idx], y[fit_idx], eval_set=[(X[val_idx], y[val_idx])], verbose=False)
            rounds = int(probe.best_iteration) + 1
        else:
            log.warning("xgboost: too few rows (%d, classes %s) for an early-stopping split; using %d rounds",
                        len(y), counts.tolist(), rounds)
        self.best_rounds_ = rounds
        self.booster_ = self._booster(rounds, None).fit(X, y, verbose=False)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.booster_.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster_.predict(np.asarray(X, dtype=np.float32))

    # saved (analytics.models.persist) with the booster as XGBoost's own JSON, rebuilt on load: the file
    # holds data only, never an XGBoost object for a loader to trust
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        booster = state.pop("booster_", None)
        if booster is not None:
            state["booster_json_"] = xgboost_json(booster)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        raw = state.pop("booster_json_", None)
        super().__setstate__(state)
        if raw is not None:
            self.booster_ = from_xgboost_json(self._booster(int(state["best_rounds_"]), None), raw)


def xgboost_json(model: Any) -> str:
    """A fitted XGBoost scikit-learn model's booster as XGBoost's own JSON (trees, parameters, base score)."""
    return bytes(model.get_booster().save_raw(raw_format="json")).decode("utf-8")


def from_xgboost_json(model: Any, raw: str) -> Any:
    """``model`` (an unfitted XGBoost scikit-learn model) with the booster of :func:`xgboost_json` loaded."""
    if not isinstance(raw, str):
        raise ValueError("an XGBoost booster is saved as JSON text")
    model.load_model(bytearray(raw.encode("utf-8")))
    return model


class RowStablePCA(PCA):
    """PCA whose projection of a row does not depend on the other rows scored with it.

    ``PCA.transform`` is one matrix product, and BLAS may accumulate a row's
    products in a different order depending on how many rows share the call,
    which moves scores by an ulp: a patient scored at fit time and again after
    reloading the model would not get the same bits. Here each row's
    projection is a multiply and a last-axis sum (numpy's pairwise summation
    over the same contiguous features for every row), done in bounded chunks.
    """

    _CHUNK = 1 << 22  # elements of the (rows, components, features) product held at once

    def transform(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.components_.shape[1]:
            return super().transform(X)  # let scikit-learn raise its own shape error
        centred = X - self.mean_
        comps = np.ascontiguousarray(self.components_, dtype=np.float64)
        out = np.empty((X.shape[0], comps.shape[0]))
        step = max(1, self._CHUNK // max(1, comps.size))
        for start in range(0, X.shape[0], step):
            block = centred[start:start + step]
            out[start:start + step] = (block[:, None, :] * comps[None, :, :]).sum(axis=-1)
        if self.whiten:
            out /= np.sqrt(self.explained_variance_)
        return out


# params.penalty of a logistic model: the penalised fits (tunable, by l1_ratio) and "none", maximum likelihood
# (analytics.models.glm.MLLogistic, equal to R's glm; neither tuned nor part of a penalty grid)
PENALTIES = ("l2", "l1", "elasticnet", "none")
MAXIMUM_LIKELIHOOD = "none"


def l1_ratio(penalty: str, elasticnet_ratio: float = 0.5) -> float:
    """The ``l1_ratio`` of a named penalty (``elasticnet`` mixes L1 and L2 by ``elasticnet_ratio``)."""
    if penalty == MAXIMUM_LIKELIHOOD:
        raise ValueError("penalty \"none\" is a maximum-likelihood fit: it has no l1_ratio and is not tuned")
    if penalty not in PENALTIES:
        raise ValueError(f"penalty {penalty!r}: use l2, l1, elasticnet or none")
    return {"l2": 0.0, "l1": 1.0, "elasticnet": float(elasticnet_ratio)}[penalty]


def _logistic(own: dict[str, Any], seed: int, grid: Mapping[str, Any]) -> BaseEstimator:
    if own.get("penalty") == MAXIMUM_LIKELIHOOD:
        from analytics.models.glm import MLLogistic

        own.pop("penalty")
        if "C" in grid or "penalty" in grid or "l1_ratio" in grid:
            raise ValueError("penalty \"none\" (maximum likelihood) has nothing to tune: remove grid.C / "
                             "grid.penalty / grid.l1_ratio")
        return MLLogistic()
    own["l1_ratio"] = l1_ratio(own.pop("penalty", "l2"), own.get("l1_ratio", 0.5))
    # saga handles L1 and elastic net; lbfgs is faster for pure L2
    sparse = own["l1_ratio"] > 0 or bool({"penalty", "l1_ratio"} & set(grid))
    return LogisticRegression(solver="saga" if sparse else "lbfgs", max_iter=5000, random_state=seed)


# the classifier of each classical learner, given its own params (adjusted in place), seed and tuned keys
_CLASSIFIERS: dict[str, Callable[[dict[str, Any], int, Mapping[str, Any]], BaseEstimator]] = {
    "logistic": _logistic,
    "svm": lambda own, seed, grid: CalibratedSVC(random_state=seed),
    "xgboost": lambda own, seed, grid: EarlyStoppedXGB(random_state=seed),
}


def classifier(kind: str, params: Mapping[str, Any], seed: int, grid: Mapping[str, Any] | None = None) -> BaseEstimator:
    """The final step of a ``kind`` pipeline, with ``params`` (minus pipeline params) applied.

    ``grid`` (the keys to be tuned) matters for logistic regression only: a
    tuned ``penalty`` or ``l1_ratio`` needs the saga solver.

    Raises
    ------
    ValueError
        An unknown kind, penalty or parameter name.
    """
    own = {k: v for k, v in params.items() if k not in PIPELINE_PARAMS}
    make = _CLASSIFIERS.get(kind)
    if make is None:
        raise ValueError(f"not a classical learner: {kind!r} (use one of {', '.join(_CLASSIFIERS)})")
    est = make(own, seed, grid or {})
    unknown = sorted(set(own) - set(est.get_params()))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {kind}; known: {', '.join(sorted(est.get_params()))}")
    return est.set_params(**own)


def preprocessor(columns: Columns, pca: int | float | None = None, seed: int = 0,
                 categories: list[list[str]] | None = None) -> ColumnTransformer:
    """Imputation, scaling, one-hot encoding and optional PCA of the image features (see module notes).

    ``categories`` gives the one-hot levels of each categorical column, in
    order (default: the sorted levels seen when fitting).
    """
    parts: list[tuple[str, Any, list[str]]] = []
    if columns.features:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        if pca is not None:
            steps.append(("pca", RowStablePCA(n_components=pca, svd_solver="full", random_state=seed)))
        parts.append(("features", Pipeline(steps), list(columns.features)))
    elif pca is not None:
        raise ValueError("params.pca reduces image features, but the model has none")
    if columns.numeric:
        parts.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                      list(columns.numeric)))
    if columns.categorical:
        parts.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(categories=categories or "auto", handle_unknown="ignore", sparse_output=False)),
        ]), list(columns.categorical)))
    if not parts:
        raise ValueError("the model has no input columns")
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=True)


def regression_preprocessor(columns: Columns, pca: int | float | None = None, seed: int = 0,
                            penalised: bool = False, named: bool = False) -> ColumnTransformer:
    """The inputs of a regression model: its clinical columns through a formula's model matrix.

    Parts, in this order::

        design    median / most-frequent imputation -> RegressionDesign (treatment coding, splines,
                  interactions; analytics.models.formula) [-> standardisation if penalised]
        features  median imputation -> standardisation -> PCA (params.pca), as in :func:`preprocessor`
        scores    median imputation [-> standardisation if penalised]

    The formula is ``columns.formula`` less the terms of columns left out of the fit, else the main
    effects of every clinical column (``a + b + c``). Missing values are imputed before the design, so
    knots and levels are learned on the imputed training rows. An unpenalised fit sees its inputs on
    their own scale (its coefficients are the ones a paper reports); a penalised one standardised
    (the penalty then treats every column alike). ``named``: the output is a pandas frame with R's column
    names (unprefixed), so a maximum-likelihood fit's refusal names the column ("separation: 'histolUH'").
    """
    from analytics.models.formula import RegressionDesign, main_effects, restricted

    parts: list[tuple[str, Any, list[str]]] = []
    clinical = list(columns.clinical)
    if clinical:
        text = main_effects(clinical) if columns.formula is None else restricted(columns.formula, clinical)
        if text is None:
            raise ValueError(f"no term of the formula \"{columns.formula}\" has a usable column on its training "
                             "patients")
        numeric = [c for c in clinical if c in columns.numeric]
        impute = ColumnTransformer(
            [(n, SimpleImputer(strategy=s), cols) for n, s, cols in (("numeric", "median", numeric),
                                                                     ("categorical", "most_frequent",
                                                                      list(columns.categorical))) if cols],
            remainder="drop", verbose_feature_names_out=False).set_output(transform="pandas")
        design = RegressionDesign(text, {c: list(lv) for c, lv in columns.levels}, dict(columns.references))
        steps: list[tuple[str, Any]] = [("impute", impute), ("design", design)]
        parts.append(("design", Pipeline([*steps, *([("scale", StandardScaler())] if penalised else [])]), clinical))
    if columns.features:
        feats: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        if pca is not None:
            feats.append(("pca", RowStablePCA(n_components=pca, svd_solver="full", random_state=seed)))
        parts.append(("features", Pipeline(feats), list(columns.features)))
    elif pca is not None:
        raise ValueError("params.pca reduces image features, but the model has none")
    if columns.scores:
        parts.append(("scores", Pipeline([("impute", SimpleImputer(strategy="median")),
                                          *([("scale", StandardScaler())] if penalised else [])]), list(columns.scores)))
    if not parts:
        raise ValueError("the model has no input columns")
    prep = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=not named)
    # a named frame holds the same float64 values; other estimators keep the plain (C-ordered) matrix they were
    # always given, so their fits and predictions stay bit for bit what they were
    return prep.set_output(transform="pandas") if named else prep


def uses_design(kind: str, columns: Columns, params: Mapping[str, Any]) -> bool:
    """Whether a classical learner's inputs go through a formula's design (:func:`regression_preprocessor`):
    a formula, or a maximum-likelihood logistic regression (treatment coding, full rank with the intercept)."""
    from pipeline.model_kinds import KINDS

    return columns.formula is not None or (
        KINDS[kind].regression == "logit" and params.get("penalty") == MAXIMUM_LIKELIHOOD)


def build_pipeline(kind: str, columns: Columns, params: Mapping[str, Any], seed: int,
                   grid: Mapping[str, Any] | None = None, categories: list[list[str]] | None = None,
                   harmonizer: BaseEstimator | None = None) -> Pipeline:
    """An unfitted ``prep -> clf`` pipeline for a classical learner (see module notes).

    ``harmonizer`` (a :class:`analytics.models.harmonize.ComBat`) becomes the first step, ``harmonize``:
    it reads the table's carried batch and covariate columns and drops them. A regression with a formula
    or fitted by maximum likelihood gets :func:`regression_preprocessor` (``categories`` unused).
    """
    steps: list[tuple[str, Any]] = [] if harmonizer is None else [("harmonize", harmonizer)]
    if uses_design(kind, columns, params):
        ml = params.get("penalty") == MAXIMUM_LIKELIHOOD
        prep = regression_preprocessor(columns, params.get("pca"), seed, penalised=not ml, named=ml)
    else:
        prep = preprocessor(columns, params.get("pca"), seed, categories)
    return Pipeline([*steps, ("prep", prep), ("clf", classifier(kind, params, seed, grid))])


def one_hot_levels(table: Any, columns: Columns) -> list[list[str]] | None:
    """One-hot levels of each categorical column of ``table``, in the declared order where one is known.

    The levels are those seen in ``table`` (the rows a pipeline is fitted on):
    declared levels in their declared order, then any others sorted. None when
    every column's order is the sorted one, i.e. what ``OneHotEncoder``
    finds by itself.
    """
    out, declared = [], False
    for col in columns.categorical:
        seen = {str(v) for v in table[col] if isinstance(v, str) or not (v is None or pd.isna(v))}
        order = [lv for lv in columns.level_order(col) if lv in seen]
        levels = order + sorted(seen - set(order))
        declared |= levels != sorted(seen)
        out.append(levels)
    return out if declared else None


def pipeline_grid(grid: Mapping[str, list[Any]], params: Mapping[str, Any] | None = None) -> dict[str, list[Any]]:
    """A study.toml grid (``C``, ``pca``, ``penalty`` ...) as pipeline parameter names (``clf__C`` ...).

    A ``penalty`` grid becomes an ``l1_ratio`` grid (elastic net mixing by ``params.l1_ratio``, default 0.5).
    """
    out = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key}: give a non-empty list of values")
        if key == "pca":
            out["prep__features__pca__n_components"] = list(values)
        elif key == "penalty":
            out["clf__l1_ratio"] = [l1_ratio(v, (params or {}).get("l1_ratio", 0.5)) for v in values]
        else:
            out[f"clf__{key}"] = list(values)
    return out
