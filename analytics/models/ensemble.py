"""Ensembles over other models' scores: soft voting and stacking.

Both see only member *scores*. In ``cohortlab fit`` a training patient's member
score is its out-of-fold prediction and a held-out patient's is the member's
final-model prediction (see :mod:`analytics.models.fusion`), so nothing here is
ever fitted on in-sample scores.

* Soft voting averages the members' predicted probabilities (optionally
  weighted); it has nothing to fit.
* Stacking (Wolpert, "Stacked generalization", Neural Networks 1992) fits a
  logistic meta-learner on the logits of the members' out-of-fold
  probabilities; :attr:`Stacking.training_matrix_` keeps exactly what it saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from analytics.stats.calibrate import logit

EPS = 1e-6  # member probabilities are clipped to [EPS, 1 - EPS] before their logits are taken


def _check(scores: np.ndarray, n_members: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != n_members:
        raise ValueError(f"member scores of shape {s.shape}; expected (n, {n_members})")
    if not np.isfinite(s).all():
        raise ValueError("member scores hold missing or non-finite values")
    return s


class SoftVoting:
    """Weighted mean of member probabilities.

    Parameters
    ----------
    members
        Member model names, in score-column order.
    weights
        Non-negative weights (default equal); normalised to sum to one.
    """

    def __init__(self, members: Sequence[str], weights: Sequence[float] | None = None) -> None:
        w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights {list(w)}: give one non-negative weight per member ({len(members)}), not all 0")
        self.members = list(members)
        self.weights = w / w.sum()

    def fit(self, scores: np.ndarray, y: np.ndarray) -> SoftVoting:
        _check(scores, len(self.members))
        return self

    def predict_score(self, scores: np.ndarray) -> np.ndarray:
        return _check(scores, len(self.members)) @ self.weights


class Stacking:
    """Logistic meta-learner on member logits.

    Parameters
    ----------
    members
        Member model names, in score-column order.
    C
        Inverse L2 penalty of the meta-learner.
    seed
        Its random state.
    """

    def __init__(self, members: Sequence[str], C: float = 1.0, seed: int = 0) -> None:
        self.members = list(members)
        self.C = C
        self.seed = seed

    def fit(self, scores: np.ndarray, y: np.ndarray) -> Stacking:
        """Fit the meta-learner; ``scores`` must be the members' out-of-fold probabilities."""
        s = _check(scores, len(self.members))
        self.training_matrix_ = s.copy()
        self.meta_ = LogisticRegression(C=self.C, random_state=self.seed, max_iter=1000).fit(logit(s, EPS), y)
        return self

    def predict_score(self, scores: np.ndarray) -> np.ndarray:
        return self.meta_.predict_proba(logit(_check(scores, len(self.members)), EPS))[:, 1]

    @property
    def coefficients(self) -> dict[str, float]:
        """Meta-learner weight per member (and the intercept)."""
        out = dict(zip(self.members, map(float, self.meta_.coef_[0])))
        out["intercept"] = float(self.meta_.intercept_[0])
        return out
