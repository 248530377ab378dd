"""Attention-MIL behind the learners' interface (:mod:`analytics.models.learners`).

:class:`MILLearner` tunes a :class:`~analytics.models.mil.MILClassifier` on instance bags by grouped
inner cross-validation; the Cox-loss variant (:class:`analytics.models.survival.MILCoxLearner`)
subclasses it with its own network, tuning criterion and score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from analytics.models import tuning
from analytics.models.data import ModelData
from analytics.models.mil import MILClassifier


class MILLearner:
    """:class:`~analytics.models.mil.MILClassifier` on instance bags, grid tuned by grouped inner CV."""

    kind = "mil"
    estimator: type[MILClassifier] = MILClassifier  # the network trained on the bags (a subclass for other losses)

    def __init__(self, params: Mapping[str, Any], grid: Mapping[str, list[Any]], seed: int) -> None:
        self.params = {k: v for k, v in params.items() if k != "inner_folds"}
        self.inner_folds = int(params.get("inner_folds", tuning.DEFAULT_INNER_FOLDS))
        self.grid = dict(grid)
        self.seed = seed
        unknown = sorted((set(self.params) | set(self.grid)) - set(MILClassifier.PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {self.kind}; known: {', '.join(MILClassifier.PARAMS)}")
        self.estimator(**{**self.params, "seed": seed})  # validate values early

    def _make(self, point: Mapping[str, Any]) -> MILClassifier:
        return self.estimator(**{"seed": self.seed, **self.params, **point})

    def fit(self, data: ModelData, y: np.ndarray) -> MILLearner:
        if data.bags is None:
            raise ValueError(f"a {self.kind} model needs instance bags")
        bags = data.bags

        def fit_score(point: dict[str, Any], tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            clf = self._make(point).fit([bags[i] for i in tr], y[tr])
            return clf.predict_proba([bags[i] for i in te])[:, 1]

        groups = np.asarray(data.patient_ids, dtype=object)
        self.chosen_, self.inner_auc_ = tuning.select(fit_score, self.grid, y, groups, self.inner_folds, self.seed)
        self.classifier_ = self._make(self.chosen_).fit(list(bags), y)
        return self

    def predict_score(self, data: ModelData) -> np.ndarray:
        return self.classifier_.predict_proba(list(data.bags or ()))[:, 1]

    def attention(self, data: ModelData) -> list[np.ndarray]:
        return self.classifier_.attention(list(data.bags or ()))

    @property
    def chosen(self) -> dict[str, Any]:
        return {**self.params, **self.chosen_}

    @classmethod
    def fitted(cls, classifier: MILClassifier, chosen: Mapping[str, Any]) -> MILLearner:
        out = cls.__new__(cls)
        out.params, out.inner_folds, out.grid, out.seed = classifier.get_params(), 0, {}, classifier.seed
        out.classifier_, out.chosen_, out.inner_auc_ = classifier, dict(chosen), None
        return out
