"""Validation of predicted cumulative incidence at a horizon, with competing risks.

AUC(t) and Brier(t) for a cause are :func:`~analytics.stats.survival_time.time_auc`
and :func:`~analytics.stats.survival_time.brier` with ``cause`` (equal to R
``riskRegression::Score(..., cause, cens.model = "km")``).  This module adds
what is specific to a cause of interest: the index of prediction accuracy
against the null (Aalen-Johansen) model, calibration at a horizon by
Aalen-Johansen risk groups and by pseudo-observations (Austin, Putter,
Giardiello & van Klaveren, Diagn Progn Res 2022;6:2), and the decision curve
with the Aalen-Johansen risk among those treated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .competing_cif import _aalen_johansen, _aj_influence, pseudo_values
from .competing_status import cause_ok, competing_inputs
from .survival_time import (
    SurvivalCalibration,
    TimeMetric,
    _cloglog,
    _risk_matrix,
    _smoothed_calibration,
    _times,
    _z,
    brier,
)


def _risk_vector(risk_at_t: ArrayLike, n: int) -> np.ndarray:
    p = v.as_1d(risk_at_t, "risk_at_t")
    v.same_length(time=np.empty(n), risk_at_t=p)
    v.no_nan(p, "risk_at_t")
    if ((p < 0) | (p > 1)).any():
        bad = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise ValueError(f"risk_at_t must lie in [0, 1]; found {p[bad]!r} at index {bad}")
    return p


def _horizon(t: float) -> float:
    t = float(t)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"t must be a positive number, got {t!r}")
    return t


# --------------------------------------------------------------------- IPA
@dataclass(frozen=True)
class BrierIPA:
    """Brier score of a model and of the null model, and the index of prediction accuracy.

    Attributes
    ----------
    brier, null : TimeMetric
        IPCW Brier score of the model and of the null model at each horizon.
    ipa : ndarray
        ``1 - brier / null`` at each horizon.
    """

    brier: TimeMetric
    null: TimeMetric
    ipa: np.ndarray

    def to_frame(self) -> pl.DataFrame:
        """``time``, ``brier``, ``se``, ``low``, ``high``, ``null_brier``, ``null_se``, ``ipa``."""
        return pl.DataFrame({"time": self.brier.times, "brier": self.brier.estimate,
                             "se": self.brier.se, "low": self.brier.low, "high": self.brier.high,
                             "null_brier": self.null.estimate, "null_se": self.null.se,
                             "ipa": self.ipa})


def brier_ipa(
    time: ArrayLike,
    status: ArrayLike,
    risk_at_t: ArrayLike,
    times: ArrayLike,
    cause: int = 1,
    level: float = 0.95,
) -> BrierIPA:
    """Brier(t) of predicted cumulative incidence, of the null model, and IPA.

    Parameters
    ----------
    time, status : array-like
        Follow-up time; status 0 censored, otherwise the cause.
    risk_at_t : array-like, shape (n, len(times)) or (n,) for one horizon
        Predicted cumulative incidence of ``cause`` by each horizon.
    times : array-like
    cause : int
    level : float

    Returns
    -------
    BrierIPA

    Notes
    -----
    The null model predicts for everyone the Aalen-Johansen cumulative
    incidence of ``cause`` estimated on the same data; IPA ``= 1 -
    BS_model / BS_null`` (Kattan & Gerds, Diagn Progn Res 2018;2:7).  Both
    Brier scores, with their influence-function SEs, equal R
    ``riskRegression::Score(..., cause, cens.model = "km", null.model =
    TRUE, summary = "ipa")``.
    """
    t_, s_ = competing_inputs(time, status)
    c = cause_ok(s_, cause)
    tt = _times(times)
    p = _risk_matrix(risk_at_t, t_.size, tt.size, "risk_at_t", broadcast=False)
    aj = _aalen_johansen(t_, s_, np.array([c]))
    null = np.repeat(np.array([aj.cif_at(float(h))[0] for h in tt])[None, :], t_.size, axis=0)
    model = brier(t_, s_, p, tt, level=level, cause=c)
    base = brier(t_, s_, null, tt, level=level, cause=c)
    with np.errstate(divide="ignore", invalid="ignore"):
        ipa = 1.0 - model.estimate / base.estimate
    return BrierIPA(model, base, ipa)


# ------------------------------------------------------------- calibration
def observed_by_group(
    time: ArrayLike,
    status: ArrayLike,
    risk_at_t: ArrayLike,
    t: float,
    cause: int = 1,
    groups: int = 10,
    level: float = 0.95,
) -> pl.DataFrame:
    """Observed (Aalen-Johansen) versus mean predicted cumulative incidence by risk group.

    Parameters
    ----------
    time, status : array-like
    risk_at_t : array-like, shape (n,)
        Predicted cumulative incidence of ``cause`` by ``t``.
    t : float
    cause : int
    groups : int
        Groups of about equal size by the predicted risk (ties kept together).
    level : float

    Returns
    -------
    polars.DataFrame
        ``group``, ``n``, ``predicted`` (mean), ``observed`` (Aalen-Johansen
        at ``t``), ``se`` (infinitesimal jackknife, as survfit), ``low``,
        ``high`` (survfit's log interval).
    """
    t_, s_ = competing_inputs(time, status)
    c = cause_ok(s_, cause)
    t = _horizon(t)
    p = _risk_vector(risk_at_t, t_.size)
    k = int(groups)
    if k < 1:
        raise ValueError(f"groups must be >= 1, got {groups!r}")
    cuts = np.quantile(p, np.linspace(0, 1, k + 1)[1:-1])
    g = np.searchsorted(cuts, p, side="left")
    z = _z(v.level_ok(level))
    rows = []
    for j in np.unique(g):
        sel = g == j
        aj = _aalen_johansen(t_[sel], s_[sel], np.array([c]))
        est = float(aj.cif_at(t)[0])
        se = float(np.sqrt(np.sum(_aj_influence(aj, t_[sel], s_[sel], t)[:, 0] ** 2)))
        lo = est * np.exp(-z * se / est) if est > 0 else np.nan
        hi = min(est * np.exp(z * se / est), 1.0) if est > 0 else np.nan
        rows.append({"group": int(j) + 1, "n": int(sel.sum()), "predicted": float(p[sel].mean()),
                     "observed": est, "se": se, "low": lo, "high": hi})
    return pl.DataFrame(rows)


def calibration_competing(
    time: ArrayLike,
    status: ArrayLike,
    risk_at_t: ArrayLike,
    t: float,
    cause: int = 1,
    span: float = 0.75,
    grid: int = 100,
) -> SurvivalCalibration:
    """Smooth calibration of predicted cumulative incidence at ``t`` by pseudo-observations.

    Parameters
    ----------
    time, status : array-like
        Follow-up time; status 0 censored, otherwise the cause.
    risk_at_t : array-like, shape (n,)
        Predicted cumulative incidence of ``cause`` by ``t``.
    t : float
    cause : int
    span : float
        Loess span (R's default 0.75; local quadratic).
    grid : int
        Points of the returned curve (1st to 99th percentile of the risk).

    Returns
    -------
    SurvivalCalibration
        ``observed`` the smoothed pseudo-observation at each subject's
        predicted risk; ``ici``, ``e50``, ``e90``, ``emax`` of
        ``|observed - predicted|``; ``events`` are the events of ``cause``
        by ``t``.

    Notes
    -----
    Austin, Putter, Giardiello & van Klaveren, Diagn Progn Res 2022;6:2
    (pseudo-value method): jackknife pseudo-values of the Aalen-Johansen
    cumulative incidence at ``t`` (:func:`pseudo_values`, as
    ``prodlim::jackknife``) are smoothed by loess on the complementary
    log-log of the predicted risk (exact local fit, as R ``loess(...,
    surface = "direct")``).  ICI is the mean absolute difference between the
    smoothed observed and the predicted risk; E50 and E90 its median and
    90th percentile.
    """
    from .calibrate import loess

    t_, s_ = competing_inputs(time, status)
    c = cause_ok(s_, cause)
    t = _horizon(t)
    p = _risk_vector(risk_at_t, t_.size)
    if np.sum((s_ == c) & (t_ <= t)) < 2:
        raise ValueError(f"calibration at t = {t:g} needs at least two events of cause {c} by t")
    cll = _cloglog(p)
    pv = pseudo_values(t_, s_, t, c)
    return _smoothed_calibration(t, p, loess(cll, pv, span=span, degree=2),
                                 lambda g: loess(cll, pv, at=g, span=span, degree=2), grid,
                                 int(((t_ <= t) & (s_ == c)).sum()))


# -------------------------------------------------------------- net benefit
def net_benefit_competing(
    time: ArrayLike,
    status: ArrayLike,
    risk_at_t: ArrayLike,
    t: float,
    cause: int = 1,
    thresholds: ArrayLike | None = None,
) -> pl.DataFrame:
    """Decision curve at horizon ``t`` with competing risks.

    Parameters
    ----------
    time, status : array-like
    risk_at_t : array-like, shape (n,)
        Predicted cumulative incidence of ``cause`` by ``t``; a patient is
        treated when ``risk_at_t >= threshold``.
    t : float
    cause : int
    thresholds : array-like, optional
        Threshold probabilities in (0, 1); default 0.01, ..., 0.99.

    Returns
    -------
    polars.DataFrame
        ``threshold``, ``net_benefit``, ``treat_all``, ``treat_none``,
        ``treated`` (fraction treated) and ``aj_risk`` (Aalen-Johansen
        cumulative incidence of ``cause`` by ``t`` among the treated; NaN
        when nobody is).

    Notes
    -----
    Vickers, Cronin, Elkin & Gonen, BMC Med Inform Decis Mak 2008;8:53,
    with the Kaplan-Meier risk replaced by the Aalen-Johansen cumulative
    incidence, so that competing events count as non-events and are not
    censored: ``NB = F q - (1 - F) q pt / (1 - pt)`` with ``q`` the fraction
    treated and ``F`` their cumulative incidence by ``t``.
    """
    from .decision import DEFAULT_THRESHOLDS

    t_, s_ = competing_inputs(time, status)
    c = cause_ok(s_, cause)
    t = _horizon(t)
    p = _risk_vector(risk_at_t, t_.size)
    pt = DEFAULT_THRESHOLDS if thresholds is None else v.as_1d(thresholds, "thresholds")
    v.no_nan(pt, "thresholds")
    if np.any((pt <= 0) | (pt >= 1)):
        raise ValueError("thresholds must lie strictly between 0 and 1")
    n = t_.size
    odds = pt / (1.0 - pt)
    nb, treated = np.zeros(pt.size), np.zeros(pt.size)
    risk = np.full(pt.size, np.nan)
    cause_arr = np.array([c])
    for k, th in enumerate(pt):
        sel = p >= th
        q = sel.sum() / n
        treated[k] = q
        if q > 0:
            f = float(_aalen_johansen(t_[sel], s_[sel], cause_arr).cif_at(t)[0])
            risk[k] = f
            nb[k] = f * q - (1.0 - f) * q * odds[k]
    f_all = float(_aalen_johansen(t_, s_, cause_arr).cif_at(t)[0])
    return pl.DataFrame({"threshold": pt, "net_benefit": nb, "treat_all": f_all - (1.0 - f_all) * odds,
                         "treat_none": np.zeros(pt.size), "treated": treated, "aj_risk": risk})
