"""SHAP values of fitted models, in a stated output space where additivity can be checked.

Three explainers from the ``shap`` package (Lundberg & Lee, NeurIPS 2017):

* **tree** — :class:`shap.TreeExplainer` (interventional Tree SHAP, exact;
  Lundberg et al., Nat. Mach. Intell. 2020) for XGBoost, on the pipeline's
  encoded columns, explaining the **log-odds** (the booster's raw margin);
* **linear** — :class:`shap.LinearExplainer` with an independent masker for
  logistic regression, explaining the **log-odds** (decision function);
* **kernel** — :class:`shap.KernelExplainer` (Kernel SHAP, model-agnostic)
  for SVMs, ensembles and anything else, explaining the **probability** of
  the positive class, with a k-means summary of the training rows as
  background (:func:`shap.kmeans`, weighted by cluster size).

For every explainer ``base_value + sum(values) == output`` for each patient
(checked by :meth:`ShapExplanation.additivity_error`).

Explaining in the pipeline's *input* space
------------------------------------------
The classical pipelines (:mod:`analytics.models.classical`) impute, scale,
one-hot encode and optionally reduce image features by PCA before the
classifier. Values are always reported per input column of the model's table
(an image-feature column, a clinical variable, an input score), never per
one-hot column or PCA component:

* linear: the pipeline is affine in the design matrix (imputed inputs and
  one-hot indicators), so the classifier's coefficients are **mapped back**
  through the PCA (``components_.T @ w``) and the scalers; the indicators of a
  categorical variable are then summed to the variable. This is exact: the
  result is the Shapley value of the input column.
* tree: per-column steps (imputation, scaling) keep each encoded column tied to
  one input column and one-hot columns are summed back to their variable; a
  pipeline with PCA mixes columns, so it is explained by the model-agnostic
  explainer on the **whole pipeline** instead.
* kernel: the whole pipeline is wrapped (table in, probability out), with
  categorical variables as level codes so that a masked variable takes a
  whole background level. When the inputs are more than ``max_units``, each
  image-feature block is one player (its columns are masked together) and
  its value is the block's Shapley value; clinical variables and scores
  always stay single players.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from analytics.explain.grouping import Grouping, group_of, group_values, make_grouping
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.explain.shap")

SPACES = {"tree": "log-odds", "linear": "log-odds", "kernel": "probability"}
DEFAULT_BACKGROUND = 20  # k-means centres for the model-agnostic explainer
DEFAULT_MAX_BACKGROUND = 100  # training rows for the tree and linear explainers
DEFAULT_NSAMPLES = 512  # coalitions per explained row (all of them when fewer exist)
DEFAULT_MAX_UNITS = 24  # above this many input columns, image blocks are single players
ADDITIVITY_TOLERANCE = 1e-4


class ExplainError(CohortlabError, ValueError):
    """Inputs that cannot be explained; the message names the model and the cause."""


@dataclass(frozen=True, eq=False)
class ShapExplanation:
    """SHAP values of one model for some patients.

    Attributes
    ----------
    explainer
        ``"tree"``, ``"linear"`` or ``"kernel"``.
    space
        Output explained: ``"log-odds"`` or ``"probability"``.
    patient_ids, splits
        The explained patients and their splits.
    values
        ``(n, p)`` SHAP values, one column per explained feature.
    base_values
        ``(n,)`` expected output over the background.
    output
        ``(n,)`` the model's output in ``space``.
    data
        ``(n, p)`` object array of the features' values as the model saw them
        (numbers, category levels, None for a block explained as a whole).
    grouping
        Feature names, their groups and labels.
    method
        How the pipeline was explained (one line for captions and the manifest).
    """

    explainer: str
    space: str
    patient_ids: tuple[str, ...]
    splits: tuple[str, ...]
    values: np.ndarray
    base_values: np.ndarray
    output: np.ndarray
    data: np.ndarray
    grouping: Grouping
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patient_ids)

    @property
    def features(self) -> tuple[str, ...]:
        return self.grouping.features

    def additivity_error(self) -> float:
        """max |base + sum(values) - output| over patients (0 for no patients)."""
        if len(self) == 0:
            return 0.0
        return float(np.max(np.abs(self.base_values + self.values.sum(axis=1) - self.output)))

    def grouped(self) -> ShapExplanation:
        """The same explanation with values summed within groups (a group of one keeps its value)."""
        g = self.grouping
        names = g.group_names
        idx = g.index()
        data = np.empty((len(self), len(names)), dtype=object)
        for k in range(len(names)):
            members = np.flatnonzero(idx == k)
            data[:, k] = self.data[:, members[0]] if len(members) == 1 else None
        grouping = Grouping(names, names, g.labels)
        return ShapExplanation(self.explainer, self.space, self.patient_ids, self.splits,
                               group_values(self.values, g), self.base_values, self.output, data, grouping,
                               self.method, self.extra)

    def frame(self, level: str = "feature") -> pl.DataFrame:
        """Long table: ``patient_id, split, feature, group, value, base_value, output, feature_value``.

        ``level="group"`` gives one row per patient and group (``feature`` is the group).
        """
        e = self.grouped() if level == "group" else self
        n, p = e.values.shape
        groups = e.grouping.groups
        return pl.DataFrame(
            {
                "patient_id": np.repeat(np.array(e.patient_ids, dtype=object), p).tolist(),
                "split": np.repeat(np.array(e.splits, dtype=object), p).tolist(),
                "feature": list(e.features) * n,
                "group": list(groups) * n,
                "value": e.values.reshape(-1),
                "base_value": np.repeat(e.base_values, p),
                "output": np.repeat(e.output, p),
                "feature_value": [_text(v) for v in e.data.reshape(-1)],
                "space": [e.space] * (n * p),
                "explainer": [e.explainer] * (n * p),
            },
            schema={"patient_id": pl.String, "split": pl.String, "feature": pl.String, "group": pl.String,
                    "value": pl.Float64, "base_value": pl.Float64, "output": pl.Float64,
                    "feature_value": pl.String, "space": pl.String, "explainer": pl.String},
        )


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (float, np.floating)):
        return "missing" if not np.isfinite(v) else f"{float(v):.6g}"
    return str(v)


# --- the three explainers on arrays ------------------------------------------------------------


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (Kernel SHAP samples coalitions from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def tree_shap(model: Any, background: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interventional Tree SHAP of a tree ensemble's raw output (log-odds for XGBoost).

    Returns
    -------
    values (n, p), base_values (n,), output (n,)
    """
    import shap

    bg = np.asarray(background, dtype=np.float32)
    x = np.asarray(rows, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, bg.shape[1])), np.zeros(0), np.zeros(0)
    explainer = shap.TreeExplainer(model, data=bg, feature_perturbation="interventional", model_output="raw")
    values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype=np.float64)
    if values.ndim == 3:  # some versions return one matrix per class
        values = values[..., -1]
    base = np.full(len(x), float(np.ravel(explainer.expected_value)[-1]))
    output = np.asarray(model.predict(x, output_margin=True), dtype=np.float64).reshape(len(x))
    return values.reshape(len(x), -1), base, output


def linear_shap(coef: np.ndarray, intercept: float, background: np.ndarray,
                rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SHAP values of ``x @ coef + intercept`` with independent features (the background's means).

    Returns
    -------
    values (n, p), base_values (n,), output (n,)
    """
    import shap

    coef = np.asarray(coef, dtype=np.float64).reshape(-1)
    bg = np.asarray(background, dtype=np.float64)
    x = np.asarray(rows, dtype=np.float64).reshape(-1, len(coef))
    if len(x) == 0:
        return np.zeros((0, len(coef))), np.zeros(0), np.zeros(0)
    masker = shap.maskers.Independent(bg, max_samples=len(bg))
    explainer = shap.LinearExplainer((coef, float(intercept)), masker)
    values = np.asarray(explainer.shap_values(x), dtype=np.float64).reshape(len(x), -1)
    base = np.full(len(x), float(np.ravel(explainer.expected_value)[0]))
    output = x @ coef + float(intercept)
    return values, base, output


def kernel_shap(
    predict: Callable[[np.ndarray], np.ndarray],
    background: np.ndarray,
    rows: np.ndarray,
    units: Sequence[Sequence[int]],
    unit_names: Sequence[str],
    k: int = DEFAULT_BACKGROUND,
    nsamples: int = DEFAULT_NSAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel SHAP of ``predict`` (rows -> probability) with players ``units`` (lists of column indices).

    The background is :func:`shap.kmeans` of ``background`` with ``k`` centres
    (values rounded to ones present in the data, so category codes stay valid),
    each weighted by its cluster's size. With ``M`` players, all ``2**M - 2``
    coalitions are evaluated when that is at most ``nsamples`` (exact Shapley
    values for this background), else ``nsamples`` are sampled (seeded).

    Returns
    -------
    values (n, M), base_values (n,), output (n,)
    """
    import shap
    from shap.utils._legacy import DenseData

    bg = np.asarray(background, dtype=np.float64)
    x = np.asarray(rows, dtype=np.float64)
    if len(bg) == 0:
        raise ExplainError("no training rows for the background")
    if len(x) == 0:
        return np.zeros((0, len(units))), np.zeros(0), np.zeros(0)
    k = max(1, min(k, len(np.unique(bg, axis=0))))
    with seeded(seed):
        summary = shap.kmeans(bg, k) if k < len(bg) else None
        centres = summary.data if summary is not None else bg
        weights = summary.weights if summary is not None else np.ones(len(bg))
        data = DenseData(centres, list(unit_names), [np.asarray(u, dtype=np.int64) for u in units], weights.copy())
        explainer = shap.KernelExplainer(lambda z: np.asarray(predict(z), dtype=np.float64), data)
        m = len(units)
        n_eval = min(nsamples, 2**m - 2) if m < 30 else nsamples
        values = explainer.shap_values(x, nsamples=max(n_eval, 1), l1_reg=False, silent=True)
    values = np.asarray(values, dtype=np.float64).reshape(len(x), m)
    base = np.full(len(x), float(np.ravel(explainer.expected_value)[0]))
    output = np.asarray(predict(x), dtype=np.float64).reshape(len(x))
    return values, base, output


# --- classical pipelines ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Branch:
    """One ColumnTransformer branch: its input columns and how its output maps back."""

    name: str
    columns: tuple[str, ...]
    pre: Any  # the steps before a trailing PCA (a transformer or "passthrough")
    pca: Any | None  # the trailing PCA, if any
    out: slice  # its columns in the encoded output
    owners: tuple[str, ...]  # the input column of each design column


_PER_COLUMN = ("SimpleImputer", "StandardScaler", "RobustScaler", "MinMaxScaler", "MaxAbsScaler", "OneHotEncoder",
               "FunctionTransformer")


def _branches(prep: Any) -> list[_Branch] | None:
    """Branches of a fitted ColumnTransformer whose steps are per-column (plus an optional trailing PCA).

    None when the structure is anything else (then only the model-agnostic explainer applies).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if not isinstance(prep, ColumnTransformer):
        return None
    out = []
    for name, trans, cols in prep.transformers_:
        if name == "remainder" or trans == "drop":
            continue
        cols = tuple(cols) if not isinstance(cols, str) else (cols,)
        steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
        pca = steps[-1] if steps and isinstance(steps[-1], PCA) else None
        pre_steps = steps[:-1] if pca is not None else steps
        if any(type(s).__name__ not in _PER_COLUMN and s != "passthrough" for s in pre_steps):
            return None
        if any(type(s).__name__ == "FunctionTransformer" for s in pre_steps):
            return None  # an arbitrary function may mix columns
        owners: list[str] = list(cols)
        for s in pre_steps:
            if isinstance(s, OneHotEncoder):
                infrequent = getattr(s, "infrequent_categories_", None) or []
                if getattr(s, "drop_idx_", None) is not None or any(c is not None for c in infrequent):
                    return None  # columns no longer one per level
                owners = [c for c, cats in zip(owners, s.categories_) for _ in range(len(cats))]
            elif type(s).__name__ == "SimpleImputer" and len(getattr(s, "statistics_", owners)) != len(owners):
                return None
        if isinstance(trans, Pipeline):
            pre = trans[:-1] if pca is not None else trans
        else:
            pre = trans
        out.append(_Branch(name, cols, pre, pca, prep.output_indices_[name], tuple(owners)))
    return out


def _design(branches: Sequence[_Branch], table: pd.DataFrame) -> np.ndarray:
    """The design matrix: each branch's output before its PCA, branches side by side."""
    parts = []
    for b in branches:
        sub = table[list(b.columns)]
        z = sub.to_numpy() if b.pre == "passthrough" else b.pre.transform(sub)
        parts.append(np.asarray(z, dtype=np.float64))
    return np.hstack(parts) if parts else np.zeros((len(table), 0))


def _design_coef(branches: Sequence[_Branch], w: np.ndarray) -> np.ndarray:
    """Map encoded-space coefficients back to the design (through each branch's PCA)."""
    parts = []
    for b in branches:
        wb = w[b.out]
        if b.pca is not None:
            if getattr(b.pca, "whiten", False):
                wb = wb / np.sqrt(b.pca.explained_variance_)
            wb = b.pca.components_.T @ wb
        parts.append(wb)
    return np.concatenate(parts) if parts else np.zeros(0)


def _sum_to_owners(values: np.ndarray, owners: Sequence[str], features: Sequence[str]) -> np.ndarray:
    pos = {f: i for i, f in enumerate(features)}
    out = np.zeros((values.shape[0], len(features)))
    for j, o in enumerate(owners):
        out[:, pos[o]] += values[:, j]
    return out


def _display(table: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The input values as the model saw them (before imputation): numbers, levels, None for a missing level."""
    data = np.empty((len(table), len(features)), dtype=object)
    for j, f in enumerate(features):
        col = table[f]
        if col.dtype == object:
            data[:, j] = [None if isinstance(v, float) and np.isnan(v) else v for v in col.tolist()]
        else:
            data[:, j] = col.to_numpy(dtype=np.float64).tolist()
    return data


def _linear(pipeline: Any, table_bg: pd.DataFrame, table: pd.DataFrame, features: Sequence[str]) -> tuple | None:
    from sklearn.linear_model import LogisticRegression

    from analytics.models.glm import MLLogistic

    clf = pipeline.steps[-1][1]
    if not isinstance(clf, (LogisticRegression, MLLogistic)) or np.asarray(clf.coef_).shape[0] != 1:
        return None  # only a logistic model's decision function is the log-odds
    branches = _branches(pipeline.steps[0][1]) if len(pipeline.steps) == 2 else None
    if branches is None:
        return None
    a = _design_coef(branches, np.asarray(clf.coef_, dtype=np.float64)[0])
    d_bg, d_x = _design(branches, table_bg), _design(branches, table)
    logit_bg = pipeline.decision_function(table_bg)
    # the intercept in design space; equal for every row exactly when the pipeline is affine in the design
    c_all = logit_bg - d_bg @ a
    c = float(np.mean(c_all))
    if np.max(np.abs(c_all - c)) > 1e-6 * max(1.0, float(np.max(np.abs(logit_bg)))):
        return None
    values, base, output = linear_shap(a, c, d_bg, d_x)
    owners = [o for b in branches for o in b.owners]
    out = np.asarray(pipeline.decision_function(table), dtype=np.float64)
    if np.max(np.abs(output - out), initial=0.0) > 1e-6 * max(1.0, float(np.max(np.abs(out), initial=0.0))):
        return None
    pca = any(b.pca is not None for b in branches)
    how = "LinearExplainer on the logistic model, coefficients mapped back " + (
        "through the PCA and scalers" if pca else "through the scalers") + " to the input columns"
    return _sum_to_owners(values, owners, features), base, out, how


def _tree(pipeline: Any, table_bg: pd.DataFrame, table: pd.DataFrame, features: Sequence[str]) -> tuple | None:
    clf = pipeline.steps[-1][1]
    booster = getattr(clf, "booster_", None)
    if booster is None and type(clf).__name__ == "XGBClassifier":
        booster = clf
    branches = _branches(pipeline.steps[0][1]) if len(pipeline.steps) == 2 else None
    if booster is None or branches is None or any(b.pca is not None for b in branches):
        return None
    prep = pipeline.steps[0][1]
    enc_bg = np.asarray(prep.transform(table_bg), dtype=np.float32)
    enc_x = np.asarray(prep.transform(table), dtype=np.float32)
    values, base, output = tree_shap(booster, enc_bg, enc_x)
    owners = [None] * enc_x.shape[1]
    for b in branches:
        owners[b.out] = list(b.owners)
    return (_sum_to_owners(values, owners, features), base, output,
            "TreeExplainer (interventional) on the encoded columns; one-hot columns summed to their variable")


@dataclass(frozen=True)
class _Codes:
    """Categorical columns as float codes (NaN for missing), so Kernel SHAP can mask them."""

    levels: dict[str, list[Any]]

    @classmethod
    def fit(cls, tables: Sequence[pd.DataFrame], columns: Sequence[str]) -> _Codes:
        levels = {}
        for c in columns:
            seen = set()
            for t in tables:
                seen.update(v for v in t[c].tolist() if v is not None and not (isinstance(v, float) and np.isnan(v)))
            levels[c] = sorted(seen, key=str)
        return cls(levels)

    def encode(self, table: pd.DataFrame, order: Sequence[str]) -> np.ndarray:
        out = np.empty((len(table), len(order)), dtype=np.float64)
        for j, c in enumerate(order):
            if c in self.levels:
                pos = {v: i for i, v in enumerate(self.levels[c])}
                out[:, j] = [pos.get(v, np.nan) for v in table[c].tolist()]
            else:
                out[:, j] = pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=np.float64)
        return out

    def decode(self, z: np.ndarray, order: Sequence[str]) -> pd.DataFrame:
        cols = {}
        for j, c in enumerate(order):
            if c in self.levels:
                lv = np.array([*self.levels[c], np.nan], dtype=object)  # the last entry stands for missing
                code = z[:, j]
                cols[c] = lv[np.where(np.isfinite(code), np.rint(np.nan_to_num(code)), len(lv) - 1).astype(np.int64)]
            else:
                cols[c] = z[:, j]
        return pd.DataFrame(cols, columns=list(order))


def _impute_for_background(z: np.ndarray, categorical: Sequence[int]) -> np.ndarray:
    """Background rows without NaN (medians; most frequent code for categories) so k-means can run."""
    z = z.copy()
    for j in range(z.shape[1]):
        col = z[:, j]
        bad = ~np.isfinite(col)
        if not bad.any():
            continue
        ok = col[~bad]
        if ok.size == 0:
            fill = 0.0
        elif j in categorical:
            vals, counts = np.unique(ok, return_counts=True)
            fill = float(vals[np.argmax(counts)])
        else:
            fill = float(np.median(ok))
        col[bad] = fill
    return z


def units_for(features: Sequence[str], feature_columns: Sequence[str],
              max_units: int) -> tuple[list[list[int]], list[str]]:
    """Players for Kernel SHAP: one per column, or, above ``max_units`` columns, one per image block."""
    if len(features) <= max_units:
        return [[j] for j in range(len(features))], list(features)
    units: dict[str, list[int]] = {}
    fc = set(feature_columns)
    for j, f in enumerate(features):
        key = group_of(f, feature_columns) if f in fc else f
        units.setdefault(key, []).append(j)
    return list(units.values()), list(units)


def explain_pipeline(
    pipeline: Any,
    table_train: pd.DataFrame,
    table: pd.DataFrame,
    feature_columns: Sequence[str] = (),
    categorical: Sequence[str] = (),
    patient_ids: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    labels: dict[str, str] | None = None,
    explainer: str = "auto",
    background: int = DEFAULT_BACKGROUND,
    max_background: int = DEFAULT_MAX_BACKGROUND,
    nsamples: int = DEFAULT_NSAMPLES,
    max_units: int = DEFAULT_MAX_UNITS,
    seed: int = 0,
) -> ShapExplanation:
    """SHAP values of a fitted classical pipeline for the rows of ``table``, training rows as background.

    Parameters
    ----------
    pipeline
        A fitted ``prep -> clf`` :class:`sklearn.pipeline.Pipeline` taking a pandas table.
    table_train, table
        Training rows (background) and rows to explain, with the pipeline's input columns.
    feature_columns, categorical
        The image-feature columns (grouped into blocks) and the categorical ones.
    explainer
        ``"auto"`` (tree for XGBoost without PCA, linear for logistic models,
        kernel otherwise), or ``"tree"``, ``"linear"``, ``"kernel"`` to insist
        (tree and linear raise :class:`ExplainError` when they do not apply).
    background
        k-means centres for Kernel SHAP.
    max_background
        Training rows (a seeded sample when more) for tree and linear explainers.
    nsamples
        Coalitions per row for Kernel SHAP.
    max_units
        Above this many input columns, Kernel SHAP treats each image block as one player.
    seed
        Seeds the background sample and Kernel SHAP's coalition sampling.
    """
    features = list(table.columns)
    if list(table_train.columns) != features:
        raise ExplainError("training and explained tables have different columns")
    n = len(table)
    if n == 0 and len(table_train):
        # pipelines refuse empty tables: explain one training row, keep the method, drop the row
        one = explain_pipeline(pipeline, table_train, table_train.iloc[:1], feature_columns, categorical, None, None,
                               labels, explainer, background, max_background, min(nsamples, 8), max_units, seed)
        return ShapExplanation(one.explainer, one.space, (), (), one.values[:0], one.base_values[:0],
                               one.output[:0], one.data[:0], one.grouping, one.method)
    ids = tuple(patient_ids) if patient_ids is not None else tuple(str(i) for i in range(n))
    spl = tuple(splits) if splits is not None else ("",) * n
    if len(ids) != n or len(spl) != n:
        raise ExplainError(f"{n} rows but {len(ids)} patient ids and {len(spl)} splits")
    grouping = make_grouping(features, labels, feature_columns)
    rng = np.random.default_rng(seed)
    bg = table_train
    if len(bg) > max_background:
        bg = bg.iloc[np.sort(rng.choice(len(bg), max_background, replace=False))].reset_index(drop=True)

    result = None
    if explainer in ("auto", "linear"):
        result = _linear(pipeline, bg, table, features)
        kind = "linear"
        if result is None and explainer == "linear":
            raise ExplainError("the linear explainer needs a logistic model on a per-column (+PCA) ColumnTransformer")
    if result is None and explainer in ("auto", "tree"):
        result = _tree(pipeline, bg, table, features)
        kind = "tree"
        if result is None and explainer == "tree":
            raise ExplainError("the tree explainer needs an XGBoost model on per-column preprocessing (no PCA)")
    if result is not None:
        values, base, output, how = result
        return ShapExplanation(kind, SPACES[kind], ids, spl, values, base, output, _display(table, features),
                               grouping, how)

    codes = _Codes.fit([table_train, table], categorical)
    cat_idx = [features.index(c) for c in categorical]
    z_bg = _impute_for_background(codes.encode(table_train, features), cat_idx)
    z_x = codes.encode(table, features)

    def predict(z: np.ndarray) -> np.ndarray:
        return pipeline.predict_proba(codes.decode(np.atleast_2d(z), features))[:, 1]

    units, names = units_for(features, feature_columns, max_units)
    values, base, output = kernel_shap(predict, z_bg, z_x, units, names, background, nsamples, seed)
    if len(names) == len(features):
        unit_grouping, data = grouping, _display(table, features)
        how = "KernelExplainer on the whole pipeline (input columns as players; categories as whole levels)"
    else:
        unit_grouping = make_grouping(names, labels, [])
        disp = _display(table, features)
        data = np.empty((n, len(names)), dtype=object)
        for k, u in enumerate(units):
            data[:, k] = disp[:, u[0]] if len(u) == 1 else None
        how = ("KernelExplainer on the whole pipeline (each image-feature block one player, "
               "clinical variables and scores one player each)")
    return ShapExplanation("kernel", SPACES["kernel"], ids, spl, values, base, output, data, unit_grouping, how)


def explain_function(
    predict: Callable[[np.ndarray], np.ndarray],
    train: np.ndarray,
    rows: np.ndarray,
    names: Sequence[str],
    patient_ids: Sequence[str],
    splits: Sequence[str],
    labels: dict[str, str] | None = None,
    background: int = DEFAULT_BACKGROUND,
    nsamples: int = DEFAULT_NSAMPLES,
    seed: int = 0,
    method: str = "KernelExplainer on the model's inputs",
) -> ShapExplanation:
    """Kernel SHAP (probability) of any ``predict`` on numeric inputs ``rows``, ``train`` as background.

    Used for ensembles, whose direct inputs are their members' scores.
    """
    rows = np.asarray(rows, dtype=np.float64)
    train = np.asarray(train, dtype=np.float64)
    units = [[j] for j in range(len(names))]
    values, base, output = kernel_shap(predict, _impute_for_background(train, []), rows, units, names,
                                       background, nsamples, seed)
    data = np.asarray(rows, dtype=object)
    return ShapExplanation("kernel", SPACES["kernel"], tuple(patient_ids), tuple(splits), values, base, output,
                           data, make_grouping(list(names), labels), method)
