"""One interface over every model kind: ``fit(data, y)``, ``predict_score(data)``, ``chosen``.

Each learner takes a :class:`~analytics.models.data.ModelData` (table, bags or
member scores) and 0/1 labels, tunes its hyper-parameters by inner
cross-validation on exactly the rows it is given (:mod:`analytics.models.tuning`)
and predicts the probability of the positive class.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sklearn.pipeline import Pipeline

from analytics.models import classical, tuning
from analytics.models.data import Columns, ModelData, uninformative
from analytics.models.ensemble import SoftVoting, Stacking
from analytics.models.harmonize import ComBat, HarmonizeSpec, covariate_column
from pipeline.model_kinds import KINDS

if TYPE_CHECKING:
    from analytics.models.survival import CoxStacking


class Learner(Protocol):
    kind: str

    def fit(self, data: ModelData, y: np.ndarray) -> Learner: ...

    def predict_score(self, data: ModelData) -> np.ndarray: ...

    @property
    def chosen(self) -> dict[str, Any]: ...


def _grid(kind: str, grid: Mapping[str, list[Any]], params: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The study's grid, else the default grid without the parameters fixed in ``params``."""
    return tuning.searched_grid(kind, grid, params)[0]


# scikit-learn's SimpleImputer warns, on every fit, about a column without values and drops it; such
# columns are dropped (and named once per model) before fitting, so only inner-fold cases remain
_EMPTY_COLUMN_WARNING = "Skipping features without any observed values"


def _member_scores(data: ModelData, kind: str) -> np.ndarray:
    """The member scores an ensemble is fitted on and predicts from (its assembled data always has them)."""
    if data.scores is None:
        raise ValueError(f"a {kind} model needs its members' scores")
    return data.scores


class TabularLearner:
    """A classical pipeline (:mod:`analytics.models.classical`) tuned by grouped inner CV."""

    columns_: Columns | None  # the columns fitted on; None in a learner rebuilt from a saved pipeline
    # local processes for the inner tuning fits of one learner fitted alone (results do not depend on it);
    # analytics.fit runs whole outer folds in parallel instead and leaves this at 1
    n_jobs: int = 1

    def __init__(self, kind: str, params: Mapping[str, Any], grid: Mapping[str, list[Any]], seed: int,
                 harmonize: HarmonizeSpec | None = None) -> None:
        self.kind = kind
        self.params = dict(params)
        self.grid = _grid(kind, grid, params)
        self.seed = seed
        self.harmonize = harmonize
        if "pca" in self.grid and "pca" not in self.params:
            self.params["pca"] = self.grid["pca"][0]
        est = classical.classifier(kind, self.params, seed, self.grid)  # fails early on unknown parameters
        known = set(est.get_params()) | KINDS[kind].grid_keys
        unknown = sorted(set(self.grid) - known)
        if unknown:
            raise ValueError(f"unknown grid parameter(s) {unknown} for {kind}; known: {', '.join(sorted(known))}")
        if "penalty" in self.grid and "l1_ratio" in self.grid:
            raise ValueError("tune either penalty or l1_ratio, not both")

    def fit(self, data: ModelData, y: np.ndarray) -> TabularLearner:
        """Fit on ``data``'s rows; columns constant or without values on them are left out (``dropped_``)."""
        if data.table is None or data.columns is None:
            raise ValueError(f"a {self.kind} model needs an input table")
        self.dropped_ = uninformative(data.table, data.columns)
        self.columns_ = data.columns.without(list(self.dropped_))
        if not self.columns_.all:
            raise ValueError(f"every input column is constant or missing on its {len(y)} training patients: "
                             + ", ".join(f"{c} ({why})" for c, why in self.dropped_.items()))
        harmonizer = None
        if self.harmonize is not None:
            harmonizer = ComBat(self.columns_.features,
                                tuple(covariate_column(c) for c in self.harmonize.covariates))
        pipe = classical.build_pipeline(self.kind, self.columns_, self.params, self.seed, self.grid,
                                        classical.one_hot_levels(data.table, self.columns_), harmonizer)
        groups = np.asarray(data.patient_ids, dtype=object)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_EMPTY_COLUMN_WARNING, category=UserWarning)
            self.pipeline_, chosen, self.inner_auc_, self.n_fits_ = tuning.grid_search(
                pipe, classical.pipeline_grid(self.grid, self.params), data.table, y, groups,
                int(self.params.get("inner_folds", tuning.DEFAULT_INNER_FOLDS)), self.seed, self.n_jobs,
            )
        self.chosen_ = {"pca" if k.startswith("prep__") else k.removeprefix("clf__"): v for k, v in chosen.items()}
        if "penalty" in self.grid:
            ratio = self.chosen_.pop("l1_ratio")
            self.chosen_["penalty"] = next(p for p in self.grid["penalty"]
                                           if classical.l1_ratio(p, self.params.get("l1_ratio", 0.5)) == ratio)
        return self

    def predict_score(self, data: ModelData) -> np.ndarray:
        return self.pipeline_.predict_proba(data.table)[:, 1].astype(np.float64)

    @property
    def chosen(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.params.items() if k != "inner_folds"}, **self.chosen_}

    @classmethod
    def fitted(cls, kind: str, params: Mapping[str, Any], pipeline: Pipeline, chosen: Mapping[str, Any]) -> TabularLearner:
        out = cls.__new__(cls)
        out.kind, out.params, out.grid, out.seed = kind, dict(params), {}, 0
        out.pipeline_, out.chosen_, out.inner_auc_, out.n_fits_ = pipeline, dict(chosen), None, 0
        out.dropped_, out.columns_ = {}, None
        out.harmonize = None  # a loaded pipeline holds its fitted ComBat step, if any
        return out


class VotingLearner:
    """Soft voting over member scores (nothing to tune)."""

    kind = "voting"

    def __init__(self, members: list[str], params: Mapping[str, Any]) -> None:
        unknown = sorted(set(params) - {"weights"})
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for voting; known: weights")
        self.model_ = SoftVoting(members, params.get("weights"))
        self.inner_auc_ = None

    def fit(self, data: ModelData, y: np.ndarray) -> VotingLearner:
        self.model_.fit(_member_scores(data, self.kind), y)
        return self

    def predict_score(self, data: ModelData) -> np.ndarray:
        return self.model_.predict_score(_member_scores(data, self.kind))

    @property
    def chosen(self) -> dict[str, Any]:
        return {"weights": dict(zip(self.model_.members, map(float, self.model_.weights)))}


class StackingLearner:
    """Logistic meta-learner on member out-of-fold scores; ``C`` tuned by inner CV."""

    kind = "stacking"
    model_: Stacking | CoxStacking  # a Cox meta-learner when the members predict a survival endpoint

    def __init__(self, members: list[str], params: Mapping[str, Any], grid: Mapping[str, list[Any]], seed: int) -> None:
        unknown = sorted((set(params) | set(grid)) - {"C", "inner_folds"})
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for stacking; known: C, inner_folds")
        self.members = members
        self.params = dict(params)
        self.grid = dict(grid)
        self.seed = seed

    def fit(self, data: ModelData, y: np.ndarray) -> StackingLearner:
        scores = _member_scores(data, self.kind)
        if np.ndim(y) == 2:  # members of a survival endpoint: a Cox meta-learner on their risks
            from analytics.models.survival import CoxStacking, as_survival, select_survival

            time, event = as_survival(y)

            def fit_risk(point: dict[str, Any], tr: np.ndarray, te: np.ndarray) -> np.ndarray:
                return CoxStacking(self.members, C=point.get("C", 1.0), seed=self.seed).fit(
                    scores[tr], y[tr]).predict_score(scores[te])

            folds = int(self.params.get("inner_folds", tuning.DEFAULT_INNER_FOLDS))
            self.chosen_, self.inner_auc_ = select_survival(fit_risk, self.grid, time, event, folds, self.seed)
            c = self.chosen_.get("C", self.params.get("C", 1.0))
            self.model_ = CoxStacking(self.members, C=c, seed=self.seed).fit(scores, y)
            return self

        def fit_score(point: dict[str, Any], tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            return Stacking(self.members, C=point.get("C", 1.0), seed=self.seed).fit(scores[tr], y[tr]).predict_score(scores[te])

        groups = np.asarray(data.patient_ids, dtype=object)
        folds = int(self.params.get("inner_folds", tuning.DEFAULT_INNER_FOLDS))
        self.chosen_, self.inner_auc_ = tuning.select(fit_score, self.grid, y, groups, folds, self.seed)
        searched = tuning.inner_splits(y, groups, folds, self.seed) if self.inner_auc_ is not None else None
        self.n_fits_ = 1 + (0 if searched is None else len(tuning.grid_points(self.grid)) * len(searched))
        c = self.chosen_.get("C", self.params.get("C", 1.0))
        self.model_ = Stacking(self.members, C=c, seed=self.seed).fit(scores, y)
        return self

    def predict_score(self, data: ModelData) -> np.ndarray:
        return self.model_.predict_score(_member_scores(data, self.kind))

    def risk_at(self, data: ModelData, horizons: Any) -> np.ndarray:
        """Absolute risk at the horizons (a stacking of survival models only)."""
        from analytics.models.survival import CoxStacking

        if not isinstance(self.model_, CoxStacking):
            raise TypeError("risk_at: a stacking of binary models predicts no risk over time")
        return self.model_.risk_at(_member_scores(data, self.kind), horizons)

    @property
    def chosen(self) -> dict[str, Any]:
        return {"C": self.model_.C, "coefficients": self.model_.coefficients}

    @classmethod
    def fitted(cls, model: Stacking) -> StackingLearner:
        out = cls(list(model.members), {}, {}, model.seed)
        out.model_, out.chosen_, out.inner_auc_ = model, {"C": model.C}, None
        return out
