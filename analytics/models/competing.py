"""Competing-risk regression models: the cause-specific Cox model and the Fine–Gray model, as learners.

Both are fitted on ``y`` of shape ``(n, 2)``: follow-up time and status code (0 censored, otherwise the
cause, as declared in ``[variables] <event>.codes``), and predict the cumulative incidence of the study's
cause of interest (``[validation] cause``):

* ``cause_specific_cox``: one Cox model per cause with Efron ties (:func:`analytics.stats.cause_specific_cox`,
  equal to ``riskRegression::CSC``; Prentice et al., *Biometrics* 1978); the absolute risk of the cause is
  ``predictRisk(CSC, times, cause)`` (Benichou & Gail, *Biometrics* 1990). Its score, which orders patients
  for the concordance index and risk groups, is that absolute risk at :attr:`CompetingLearner.score_time_`
  (the median time of the cause's events among its training patients): with several cause-specific
  hazards no single linear predictor orders patients at every time.
* ``fine_gray``: the subdistribution-hazard regression of the cause (:func:`analytics.stats.fine_gray`, equal
  to ``cmprsk::crr`` with Kaplan–Meier censoring weights; Fine & Gray, *JASA* 1999); its score is the
  linear predictor, which orders the predicted cumulative incidence alike at every time.

The inputs go through a regression design (:func:`analytics.models.classical.regression_preprocessor`:
a formula's terms, treatment coding, splines), unpenalised, so the coefficient tables read as R's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analytics.models import classical
from analytics.models.data import ModelData, uninformative
from analytics.stats.competing_cox import CauseSpecificCox, cause_specific_cox
from analytics.stats.competing_finegray import FineGray, fine_gray
from pipeline.model_kinds import KINDS


def as_competing(y: np.ndarray, cause: int) -> tuple[np.ndarray, np.ndarray]:
    """Split an ``(n, 2)`` target into float64 times and int64 status codes, checked.

    Raises
    ------
    ValueError
        A missing or negative time, a status that is not a non-negative whole number, or no event of
        ``cause`` among the rows.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"a competing-risk model is fitted on (time, status) pairs, not an array of shape {y.shape}")
    time, status = y[:, 0], y[:, 1]
    if not (np.isfinite(time).all() and np.isfinite(status).all()):
        raise ValueError("a competing-risk model's training patients need a time and a status each")
    if (time < 0).any() or (status < 0).any() or (status != np.round(status)).any():
        raise ValueError("times must be >= 0 and status codes whole numbers >= 0 (0 = censored)")
    codes = status.astype(np.int64)
    if not (codes == cause).any():
        raise ValueError(f"its {len(time)} training patients hold no event of the cause of interest (code {cause})")
    return time, codes


class CompetingLearner:
    """A ``cause_specific_cox`` or ``fine_gray`` model behind the learners' interface (see the module notes).

    Parameters
    ----------
    kind
        ``"cause_specific_cox"`` or ``"fine_gray"``.
    params, grid
        Neither kind has parameters to set or tune; both must be empty.
    seed
        Kept for the interface (the fits are deterministic).
    cause
        The status code of the event of interest.
    labels
        ``code -> label`` of every declared status code (the coefficient tables name causes by label).
    """

    def __init__(self, kind: str, params: Mapping[str, Any], grid: Mapping[str, list[Any]], seed: int,
                 cause: int, labels: Mapping[int, str]) -> None:
        self.hazard = KINDS[kind].competing  # what it models: "cause_specific" or "subdistribution"
        if self.hazard is None:
            raise ValueError(f"kind {kind!r} is not a competing-risk model")
        unknown = sorted(k for k in params if k != "inner_folds")
        if unknown or grid:
            raise ValueError(f"a {kind} model has no parameters to set or tune (got {unknown or sorted(grid)}); "
                             "its inputs are its formula or clinical columns")
        self.kind, self.seed = kind, seed
        self.params: dict[str, Any] = {}
        self.cause = int(cause)
        self.labels = {int(k): str(v) for k, v in labels.items()}

    def fit(self, data: ModelData, y: np.ndarray) -> CompetingLearner:
        """Fit on ``data``'s rows; columns constant or without values on them are left out (``dropped_``)."""
        if data.table is None or data.columns is None:
            raise ValueError(f"a {self.kind} model needs an input table")
        time, status = as_competing(y, self.cause)
        self.dropped_ = uninformative(data.table, data.columns)
        self.columns_ = data.columns.without(list(self.dropped_))
        if not self.columns_.all:
            raise ValueError(f"every input column is constant or missing on its {len(time)} training patients")
        self.prep_ = classical.regression_preprocessor(self.columns_, None, self.seed, False)
        X = np.asarray(self.prep_.fit_transform(data.table), dtype=np.float64)
        self.fit_: CauseSpecificCox | FineGray
        if self.hazard == "cause_specific":
            self.fit_ = cause_specific_cox(X, time, status)
        else:
            self.fit_ = fine_gray(X, time, status, cause=self.cause)
        self.score_time_ = float(np.median(time[status == self.cause]))
        return self

    def _X(self, data: ModelData) -> np.ndarray:
        return np.asarray(self.prep_.transform(data.table), dtype=np.float64)

    def predict_score(self, data: ModelData) -> np.ndarray:
        """Fine–Gray: the linear predictor; cause-specific Cox: the cause's absolute risk at ``score_time_``."""
        X = self._X(data)
        if isinstance(self.fit_, FineGray):
            return X @ self.fit_.coef
        return self.fit_.predict_risk(X, [self.score_time_], cause=self.cause)[:, 0]

    def risk_at(self, data: ModelData, horizons: Sequence[float]) -> np.ndarray:
        """The cumulative incidence of the cause of interest by each horizon (rows: patients)."""
        X = self._X(data)
        if isinstance(self.fit_, FineGray):
            return self.fit_.predict_risk(X, list(horizons))
        return self.fit_.predict_risk(X, list(horizons), cause=self.cause)

    @property
    def chosen(self) -> dict[str, Any]:
        return {}


__all__ = ["CompetingLearner", "as_competing"]
