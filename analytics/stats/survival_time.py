"""Validation of survival predictions at fixed horizons.

Time-dependent AUC and Brier score with inverse probability of censoring
weights (IPCW, Kaplan-Meier censoring model), the integrated Brier score,
calibration at a horizon, and decision curves at a horizon.  Estimates and
standard errors agree with R ``riskRegression::Score`` (``cens.model = "km"``,
``conservative = FALSE``): the influence function includes the term from
estimating the censoring distribution (Blanche, Dartigues & Jacqmin-Gadda,
Stat Med 2013;32:5381-5397; Gerds & Kattan, *Medical Risk Prediction Models*,
2021, ch. 7).  With ``cause``, AUC(t) and Brier(t) evaluate the cumulative
incidence of one cause with competing risks, as ``Score(..., cause)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .competing_status import cause_ok, competing_inputs
from .survival import _survival_inputs, censoring_km
from .types import Interval


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class TimeMetric:
    """A metric evaluated at several horizons, with standard errors and intervals.

    Attributes
    ----------
    times : ndarray
        Horizons, in the time unit of the data.
    estimate, se, low, high : ndarray
        Estimate, standard error and interval bounds at each horizon.
    level : float
    method : str
    """

    times: np.ndarray
    estimate: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float = 0.95
    method: str = ""

    def at(self, t: float) -> Interval:
        """The :class:`Interval` at horizon ``t`` (one of :attr:`times`)."""
        hit = np.flatnonzero(self.times == float(t))
        if hit.size == 0:
            raise KeyError(f"horizon {t!r} not evaluated; times are {self.times.tolist()}")
        k = int(hit[0])
        return Interval(float(self.estimate[k]), float(self.low[k]), float(self.high[k]),
                        self.level, self.method)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict of lists (NaN becomes ``None``)."""
        def clean(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(x) else float(x) for x in a]

        return {"times": clean(self.times), "estimate": clean(self.estimate), "se": clean(self.se),
                "low": clean(self.low), "high": clean(self.high), "level": self.level,
                "method": self.method}

    def to_frame(self) -> pl.DataFrame:
        """``time``, ``estimate``, ``se``, ``low``, ``high``."""
        return pl.DataFrame({"time": self.times, "estimate": self.estimate, "se": self.se,
                             "low": self.low, "high": self.high})


# ------------------------------------------------------- censoring weights
@dataclass(frozen=True)
class _Censoring:
    """Kaplan-Meier of the censoring times and the pieces of its influence function.

    ``times`` are the distinct observed times; ``surv`` is ``G`` just after
    each; ``cum`` is ``sum_{u <= time} n c(u) / Y(u)^2`` (the compensator part
    of ``int dM_C / y``); ``jump`` is ``n / Y(T_k)`` for a censored subject.
    """

    times: np.ndarray
    surv: np.ndarray
    cum: np.ndarray
    at_risk: np.ndarray
    n: int

    def before(self, at: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.times, at, side="left")
        return np.concatenate(([1.0], self.surv))[k]

    def upto(self, at: np.ndarray | float) -> np.ndarray:
        k = np.searchsorted(self.times, at, side="right")
        return np.concatenate(([1.0], self.surv))[k]

    def cum_upto(self, at: np.ndarray | float) -> np.ndarray:
        k = np.searchsorted(self.times, at, side="right")
        return np.concatenate(([0.0], self.cum))[k]

    def cum_before(self, at: np.ndarray | float) -> np.ndarray:
        k = np.searchsorted(self.times, at, side="left")
        return np.concatenate(([0.0], self.cum))[k]


def _censoring(time: np.ndarray, event: np.ndarray) -> _Censoring:
    """Reverse Kaplan-Meier (censoring as the event) and its influence-function pieces.

    ``G`` takes censorings after events at a tied time, as R
    ``prodlim(..., reverse = TRUE)``, which ``riskRegression::Score`` uses for
    ``cens.model = "km"`` (and as :func:`censoring_km`); the influence
    function, as riskRegression's, uses all subjects with ``T >= u`` as the
    risk set.
    """
    times, surv = censoring_km(time, event)
    inv = np.searchsorted(times, time)
    cens = np.bincount(inv, weights=1.0 - event, minlength=times.size)
    at_risk = np.cumsum(np.bincount(inv, minlength=times.size)[::-1])[::-1].astype(np.float64)
    n = time.size
    cum = np.cumsum(n * cens / at_risk ** 2)
    return _Censoring(times, surv, cum, at_risk, n)


def _ipcw_censoring_term(
    cz: _Censoring,
    time: np.ndarray,
    event: np.ndarray,
    case_resid: np.ndarray,
    control_total: float,
    t: float,
) -> np.ndarray:
    """Influence of estimating ``G`` on ``(1/n) sum_i case_resid_i + control_total``.

    ``case_resid_i`` carries the weight ``1 / G(T_i-)`` (zero for non-cases);
    ``control_total`` is the mean of the residuals that carry ``1 / G(t)``.
    The influence of ``1 / G(s)`` for subject k is ``f_k(s) / G(s)`` with
    ``f_k(s) = int_0^s dM^C_k(u) / y(u)`` (Kaplan-Meier influence function,
    Nelson-Aalen form, as riskRegression).  Returns the term for every subject.
    """
    n = time.size
    k_idx = np.searchsorted(cz.times, time, side="left")
    own = (1.0 - event) * n / cz.at_risk[k_idx] - cz.cum[k_idx]  # f_k at and after T_k
    # Cases: f_k(T_i-) = own_k if T_k < T_i, else -cum(T_i-).
    order = np.argsort(time, kind="stable")
    ts = time[order]
    cr = case_resid[order]
    tail = np.concatenate((np.cumsum(cr[::-1])[::-1], [0.0]))
    after = tail[np.searchsorted(ts, time, side="right")]  # sum over cases with T_i > T_k
    comp = cr * cz.cum_before(ts)
    head = np.concatenate(([0.0], np.cumsum(comp)))
    upto = head[np.searchsorted(ts, time, side="right")]  # cases with T_i <= T_k
    case_term = (own * after - upto) / n
    # Controls: f_k(t) = own_k if T_k <= t, else -cum(t).
    f_t = np.where(time <= t, own, -cz.cum_upto(t))
    return case_term + control_total * f_t


def _risk_matrix(risk: ArrayLike, n: int, k: int, name: str, *, broadcast: bool) -> np.ndarray:
    """``risk`` as an (n, k) array; a 1-D marker is repeated only when ``broadcast``."""
    r = np.asarray(risk, dtype=np.float64)
    if r.ndim == 1 and not broadcast and k != 1:
        raise ValueError(f"{name} is 1-D but {k} times were given: pass an (n, {k}) array "
                         "of risks by each time")
    if r.ndim == 1 or (r.ndim == 2 and r.shape[1] == 1 and k != 1 and r.shape[0] == n):
        r = r.reshape(-1)
        if r.size != n:
            raise ValueError(f"lengths differ: time has {n}, {name} has {r.size}")
        r = np.repeat(r[:, None], k, axis=1)
    if r.ndim != 2 or r.shape != (n, k):
        raise ValueError(
            f"{name} must have shape (n, len(times)) = ({n}, {k}) or (n,), got {r.shape}")
    bad = np.isnan(r)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name} contains NaN (first at row {i}, column {j})")
    return r


def _times(times: ArrayLike) -> np.ndarray:
    tt = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if tt.ndim != 1 or tt.size == 0:
        raise ValueError("times must be a non-empty 1-D sequence")
    v.no_nan(tt, "times", finite=True)
    if (tt <= 0).any():
        raise ValueError("times must be positive")
    return tt


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))


# ---------------------------------------------------------------- AUC(t)
def _mw_kernel_sums(case_r: np.ndarray, case_w: np.ndarray, ctrl_r: np.ndarray,
                    ctrl_w: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each value in ``r``: weighted controls below, weighted cases above (ties count half)."""
    oc = np.argsort(ctrl_r, kind="stable")
    cs, cwc = ctrl_r[oc], np.concatenate(([0.0], np.cumsum(ctrl_w[oc])))
    lo_c = np.searchsorted(cs, r, side="left")
    hi_c = np.searchsorted(cs, r, side="right")
    below = cwc[lo_c] + 0.5 * (cwc[hi_c] - cwc[lo_c])
    o = np.argsort(case_r, kind="stable")
    cr, cw = case_r[o], case_w[o]
    cum = np.concatenate(([0.0], np.cumsum(cw)))
    lo = np.searchsorted(cr, r, side="left")
    hi = np.searchsorted(cr, r, side="right")
    above = (cum[-1] - cum[hi]) + 0.5 * (cum[hi] - cum[lo])
    return below.astype(np.float64), above


def _outcome(time: ArrayLike, event: ArrayLike, cause: int | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Time, any-event indicator (float), event-of-interest and competing-event masks.

    Without ``cause`` the event is 0/1 and nobody has a competing event; with
    ``cause`` it holds status codes (0 censored, otherwise the cause).
    """
    if cause is None:
        t_, e = _survival_inputs(time, event)
        hit = e == 1
        return t_, e.astype(np.float64), hit, np.zeros(t_.size, dtype=bool)
    t_, s_ = competing_inputs(time, event)
    c = cause_ok(s_, cause)
    return t_, (s_ > 0).astype(np.float64), s_ == c, (s_ > 0) & (s_ != c)


def _ipcw_metric(times: np.ndarray, est: np.ndarray, se: np.ndarray, level: float) -> TimeMetric:
    """An IPCW (Kaplan-Meier censoring model) estimate per horizon with its Wald interval cut to [0, 1]."""
    z = _z(level)
    return TimeMetric(times, est, se, np.maximum(0.0, est - z * se), np.minimum(1.0, est + z * se), level, "ipcw-km")


def _auc_at(t_: np.ndarray, e: np.ndarray, hit: np.ndarray, other: np.ndarray, cz: _Censoring,
            g_before: np.ndarray, rk: np.ndarray, t: float) -> tuple[float, np.ndarray]:
    """AUC(t) of the risks ``rk`` and its influence function (one value per subject; the SE is
    ``sd / sqrt(n)``), as :func:`time_auc` describes; a paired contrast subtracts two of them."""
    n = t_.size
    case = (t_ <= t) & hit
    alive = t_ > t
    comp = (t_ <= t) & other  # competing event by t: a control weighted 1 / G(T-)
    ctrl = alive | comp
    if not case.any() or not ctrl.any():
        raise ValueError(f"AUC at time {t:g} needs cases (events by t) and controls "
                         f"(event-free after t): found {int(case.sum())} and {int(ctrl.sum())}")
    g_t = float(cz.upto(t))
    w_case = np.where(case, 1.0 / g_before, 0.0)
    w_ctrl = np.where(alive, 1.0 / g_t, np.where(comp, 1.0 / g_before, 0.0))
    below, above = _mw_kernel_sums(rk[case], w_case[case], rk[ctrl], w_ctrl[ctrl], rk)
    # Row sums of h(i, j) = w_i w_j K(r_i, r_j) over the other member, / n.
    row_case = np.where(case, w_case * below, 0.0) / n
    row_ctrl = np.where(ctrl, w_ctrl * above, 0.0) / n
    nu = row_case.sum() / n
    mu_case = w_case.sum() / n
    mu_ctrl = w_ctrl.sum() / n
    mu = mu_case * mu_ctrl
    auc = nu / mu
    # Influence functions of nu and mu (V-statistics plus censoring terms): the
    # terms weighted 1 / G(T-) (cases, competing events) and those weighted 1 / G(t).
    if_nu = row_case + row_ctrl + _ipcw_censoring_term(
        cz, t_, e, row_case + np.where(comp, row_ctrl, 0.0),
        np.where(alive, row_ctrl, 0.0).sum() / n, t)
    row_mu = w_case * mu_ctrl + w_ctrl * mu_case
    if_mu = row_mu + _ipcw_censoring_term(
        cz, t_, e, w_case * mu_ctrl + np.where(comp, w_ctrl * mu_case, 0.0),
        mu_case * np.where(alive, w_ctrl, 0.0).sum() / n, t)
    infl = (if_nu - auc * if_mu) / mu
    return float(auc), infl


def time_auc(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    times: ArrayLike,
    level: float = 0.95,
    cause: int | None = None,
) -> TimeMetric:
    """Cumulative/dynamic time-dependent AUC(t) with IPCW and its standard error.

    Parameters
    ----------
    time, event : array-like
        Follow-up time and event indicator (1 = event); with ``cause``,
        competing-risk status codes (0 censored, otherwise the cause).
    risk : array-like, shape (n,) or (n, len(times))
        Higher means earlier event: a marker, or the predicted risk of an
        event by each horizon.
    times : array-like
        Horizons ``t``.
    level : float
    cause : int, optional
        Competing risks: the cause of interest.  Cases have it by ``t``;
        controls are everyone else with a known status at ``t``, including
        subjects with a competing event by ``t`` (weighted ``1 / G(T_j-)``),
        the definition of Blanche, Dartigues & Jacqmin-Gadda (Stat Med
        2013;32:5381-5397) that ``riskRegression::Score(..., cause)`` uses.

    Returns
    -------
    TimeMetric
        ``method`` ``"ipcw-km"``; interval ``estimate +- z * se`` cut to [0, 1].

    Notes
    -----
    Cases have ``T_i <= t`` with an event, weighted ``1 / G(T_i-)``; controls
    have ``T_j > t``, weighted ``1 / G(t)``; ``G`` is the Kaplan-Meier of the
    censoring times.  AUC(t) is the weighted proportion of case-control pairs
    in which the case has the higher risk, ties counting one half (Uno, Cai,
    Tian & Wei, JASA 2007;102:527-537; Hung & Chiang, Can J Stat 2010;38:8-26; Blanche et al., Stat Med
    2013;32:5381-5397).  The standard error is ``sd(IF) / sqrt(n)`` from the
    influence function including the censoring-model term, as R
    ``riskRegression::Score(metrics = "auc", cens.model = "km")``.
    Subjects censored before ``t`` are neither cases nor controls.
    """
    level = v.level_ok(level)
    t_, e, hit, other = _outcome(time, event, cause)
    tt = _times(times)
    r = _risk_matrix(risk, t_.size, tt.size, "risk", broadcast=True)
    n = t_.size
    cz = _censoring(t_, e)
    g_before = cz.before(t_)
    est, se = np.empty(tt.size), np.empty(tt.size)
    for k, t in enumerate(tt):
        est[k], infl = _auc_at(t_, e, hit, other, cz, g_before, r[:, k], float(t))
        se[k] = np.std(infl, ddof=1) / np.sqrt(n)
    return _ipcw_metric(tt, est, se, level)


# ------------------------------------------------------------- Brier score
def _brier_at(t_: np.ndarray, e: np.ndarray, hit: np.ndarray, other: np.ndarray, cz: _Censoring,
              g_before: np.ndarray, pk: np.ndarray, t: float) -> tuple[float, np.ndarray]:
    """Brier(t) of the risks ``pk`` and its influence function, as :func:`brier` describes."""
    n = t_.size
    case = (t_ <= t) & hit
    comp = (t_ <= t) & other
    ctrl = t_ > t
    g_t = float(cz.upto(t))
    # Residuals weighted 1 / G(T-): events of interest and competing events by t.
    case_res = np.where(case, (1.0 - pk) ** 2 / g_before,
                        np.where(comp, pk ** 2 / g_before, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):  # G(t) = 0 leaves no controls
        ctrl_res = np.where(ctrl, pk ** 2 / g_t, 0.0)
    resid = case_res + ctrl_res
    b = resid.mean()
    infl = resid - b + _ipcw_censoring_term(cz, t_, e, case_res, ctrl_res.sum() / n, t)
    return float(b), infl


def brier(
    time: ArrayLike,
    event: ArrayLike,
    risk_at_t: ArrayLike,
    times: ArrayLike,
    level: float = 0.95,
    cause: int | None = None,
) -> TimeMetric:
    """IPCW Brier score at each horizon, with its standard error.

    Parameters
    ----------
    time, event : array-like
        Follow-up time and event indicator (1 = event); with ``cause``,
        competing-risk status codes (0 censored, otherwise the cause).
    risk_at_t : array-like, shape (n, len(times)) or (n,) for one horizon
        Predicted probability of an event by each horizon.
    times : array-like or float
        Horizons ``t``.
    level : float
    cause : int, optional
        Competing risks: ``risk_at_t`` is the cumulative incidence of this
        cause; a competing event by ``t`` is a non-event, its residual
        ``p^2`` weighted ``1 / G(T_i-)`` (riskRegression ``Score(..., cause)``).

    Returns
    -------
    TimeMetric
        ``method`` ``"ipcw-km"``; interval ``estimate +- z * se`` cut to [0, 1].

    Notes
    -----
    ``BS(t) = (1/n) sum_i [ 1(T_i <= t, event) (1 - p_i)^2 / G(T_i-)
    + 1(T_i > t) p_i^2 / G(t) ]`` with ``G`` the Kaplan-Meier of the
    censoring times (Graf, Schmoor, Sauerbrei & Schumacher, Stat Med
    1999;18:2529-2545; Gerds & Schumacher, Biom J 2006;48:1029-1040).  Standard
    error ``sd(IF) / sqrt(n)`` with the censoring-model term of the influence
    function, as R ``riskRegression::Score(metrics = "brier", cens.model = "km")``.
    """
    level = v.level_ok(level)
    t_, e, hit, other = _outcome(time, event, cause)
    tt = _times(times)
    p = _risk_matrix(risk_at_t, t_.size, tt.size, "risk_at_t", broadcast=False)
    if ((p < 0) | (p > 1)).any():
        i, j = np.argwhere((p < 0) | (p > 1))[0]
        raise ValueError(f"risk_at_t must lie in [0, 1]; found {p[i, j]!r} at row {i}, column {j}")
    n = t_.size
    cz = _censoring(t_, e)
    g_before = cz.before(t_)
    est, se = np.empty(tt.size), np.empty(tt.size)
    for k, t in enumerate(tt):
        est[k], infl = _brier_at(t_, e, hit, other, cz, g_before, p[:, k], float(t))
        se[k] = np.std(infl, ddof=1) / np.sqrt(n)
    return _ipcw_metric(tt, est, se, level)


def integrated_brier(
    time: ArrayLike,
    event: ArrayLike,
    risk_at_times: ArrayLike,
    times: ArrayLike,
) -> float:
    """Integrated Brier score over ``[0, max(times)]``, as riskRegression's ``summary = "ibs"``.

    Parameters
    ----------
    time, event : array-like
    risk_at_times : array-like, shape (n, len(times))
        Predicted probability of an event by each time of the grid.
    times : array-like
        Increasing grid of times; a fine grid (e.g. every event time) makes
        the step integral close to the continuous one.

    Returns
    -------
    float
        ``(1 / t_K) sum_{k < K} BS(t_k) (t_{k+1} - t_k)``: the IPCW Brier
        score (:func:`brier`) integrated as a step function that is 0 before
        ``t_1`` and ``BS(t_k)`` on ``[t_k, t_{k+1})``, divided by ``t_K``.

    Notes
    -----
    Graf et al., Stat Med 1999;18:2529-2545.  This is the value R
    ``riskRegression::Score(..., summary = "ibs")`` reports at the last time
    (its ``IBS`` column), not ``pec::crps``, which integrates from the first
    grid time with ``pec``'s own grid.
    """
    tt = _times(times)
    if np.any(np.diff(tt) <= 0):
        raise ValueError("times must be strictly increasing")
    bs = brier(time, event, risk_at_times, tt).estimate
    x = np.concatenate(([0.0], tt))
    y = np.concatenate(([0.0], bs))
    stop = tt[-1]
    keep = x < stop
    return float(np.sum(y[keep] * np.diff(np.concatenate((x[keep], [stop])))) / stop)


# ------------------------------------------------------ calibration at t
@dataclass(frozen=True)
class SurvivalCalibration:
    """Calibration of predicted risks at a horizon.

    Attributes
    ----------
    t : float
        Horizon.
    curve : polars.DataFrame
        ``predicted``, ``observed``: the smooth calibration curve on a grid of
        predicted risks (1st to 99th percentile).
    observed : ndarray
        Smoothed observed risk at ``t`` for each subject.
    ici, e50, e90, emax : float
        Mean, median, 90th percentile and maximum of
        ``|observed - predicted|`` over the subjects.
    n, events : int
        Subjects, and events by ``t``.
    """

    t: float
    curve: pl.DataFrame
    observed: np.ndarray
    ici: float
    e50: float
    e90: float
    emax: float
    n: int
    events: int

    def as_dict(self) -> dict[str, float]:
        """``t``, ``ici``, ``e50``, ``e90``, ``emax``, ``n``, ``events``."""
        return {"t": self.t, "ici": self.ici, "e50": self.e50, "e90": self.e90,
                "emax": self.emax, "n": self.n, "events": self.events}


def _rcs_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Restricted cubic spline basis, R ``rms::rcs`` (Harrell's normalisation)."""
    k = knots
    cols = [x]
    if k.size >= 3 and np.all(np.diff(k) > 0):
        last, prev = k[-1], k[-2]
        norm = (last - k[0]) ** 2
        for kj in k[:-2]:
            term = (np.maximum(x - kj, 0) ** 3
                    - np.maximum(x - prev, 0) ** 3 * (last - kj) / (last - prev)
                    + np.maximum(x - last, 0) ** 3 * (prev - kj) / (last - prev))
            cols.append(term / norm)
    return np.column_stack(cols)


def _cloglog(p: np.ndarray) -> np.ndarray:
    """``log(-log(1 - p))``, the scale calibration smoothers work on (p clipped to [1e-10, 1 - 1e-10])."""
    eps = 1e-10
    return np.log(-np.log1p(-np.clip(p, eps, 1 - eps)))


def _smoothed_calibration(t: float, p: np.ndarray, observed: np.ndarray,
                          smooth_at: Callable[[np.ndarray], np.ndarray], grid: int, events: int) -> SurvivalCalibration:
    """ICI, E50, E90 and Emax of ``|observed - p|`` (quantile type 7), and the smoothed curve ``smooth_at`` (a
    function of the complementary log-log of the risk) over ``grid`` points from the 1st to the 99th
    percentile of ``p``: what every smoothed calibration at a horizon reports (Austin et al. 2020, 2022)."""
    err = np.abs(observed - p)
    lo, hi = np.quantile(p, [0.01, 0.99])
    gp = np.linspace(float(lo), float(hi), int(grid))
    curve = pl.DataFrame({"predicted": gp, "observed": smooth_at(_cloglog(gp))})
    return SurvivalCalibration(
        t=t, curve=curve, observed=observed, ici=float(err.mean()), e50=float(np.median(err)),
        e90=float(np.quantile(err, 0.9)), emax=float(err.max()), n=int(p.size), events=events)


def calibration_at(
    time: ArrayLike,
    event: ArrayLike,
    risk_at_t: ArrayLike,
    t: float,
    knots: int = 3,
    grid: int = 100,
) -> SurvivalCalibration:
    """Smooth calibration of predicted risks at horizon ``t``, with ICI, E50, E90.

    Parameters
    ----------
    time, event : array-like
        Follow-up time and event indicator (1 = event).
    risk_at_t : array-like, shape (n,)
        Predicted probability of an event by ``t``.
    t : float
        Horizon.
    knots : int
        Knots of the restricted cubic spline (at the 10th, 50th and 90th
        percentiles for 3, as R ``rms::rcs``); fewer distinct values fall
        back to a linear term.
    grid : int
        Points of the returned curve.

    Returns
    -------
    SurvivalCalibration

    Notes
    -----
    Austin, Harrell & van Klaveren, Stat Med 2020;39:2714-2742 ("Graphical
    calibration curves and the integrated calibration index (ICI) for survival
    models"): a Cox model of the outcome on a restricted cubic spline of
    ``log(-log(1 - predicted risk))`` is fitted (lifelines ``CoxPHFitter``,
    Efron ties, as the paper's ``rms::cph`` code); its predicted risk at ``t``
    is the smoothed observed risk.  ICI is the mean absolute difference between
    observed and predicted risk over the subjects, E50 and E90 its median and
    90th percentile (quantile type 7).
    """
    import pandas as pd
    from lifelines import CoxPHFitter

    t_, e = _survival_inputs(time, event)
    p = v.as_1d(risk_at_t, "risk_at_t")
    v.same_length(time=t_, risk_at_t=p)
    v.no_nan(p, "risk_at_t")
    if ((p < 0) | (p > 1)).any():
        bad = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise ValueError(f"risk_at_t must lie in [0, 1]; found {p[bad]!r} at index {bad}")
    t = float(t)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"t must be a positive number, got {t!r}")
    if e.sum() < 2:
        raise ValueError("calibration needs at least two events")
    if int(knots) < 3:
        raise ValueError(f"knots must be >= 3, got {knots!r}")
    cll = _cloglog(p)
    probs = {3: [0.1, 0.5, 0.9], 4: [0.05, 0.35, 0.65, 0.95],
             5: [0.05, 0.275, 0.5, 0.725, 0.95]}.get(int(knots))
    if probs is None:
        probs = list(np.linspace(0.05, 0.95, int(knots)))
    kn = np.quantile(cll, probs)
    basis = _rcs_basis(cll, kn)
    names = [f"s{j}" for j in range(basis.shape[1])]
    df = pd.DataFrame(basis, columns=names)
    df["_time"] = t_
    df["_event"] = e.astype(np.int64)
    cph = CoxPHFitter()
    cph.fit(df, duration_col="_time", event_col="_event")

    def observed_at(b: np.ndarray) -> np.ndarray:
        sf = cph.predict_survival_function(pd.DataFrame(b, columns=names), times=[t])
        return 1.0 - sf.to_numpy(dtype=np.float64).reshape(-1)

    return _smoothed_calibration(t, p, observed_at(basis), lambda g: observed_at(_rcs_basis(g, kn)), grid,
                                 int(((t_ <= t) & (e == 1)).sum()))


# ------------------------------------------------------ net benefit at t
def _km_risk_at(time: np.ndarray, event: np.ndarray, t: float) -> float:
    """Kaplan-Meier probability of an event by ``t`` (censored subjects at risk at their time)."""
    ev_times = np.unique(time[(event == 1) & (time <= t)])
    if ev_times.size == 0:
        return 0.0
    d = np.array([np.sum((time == u) & (event == 1)) for u in ev_times], dtype=np.float64)
    y = np.array([np.sum(time >= u) for u in ev_times], dtype=np.float64)
    return float(1.0 - np.prod(1.0 - d / y))


def net_benefit_survival(
    time: ArrayLike,
    event: ArrayLike,
    risk_at_t: ArrayLike,
    t: float,
    thresholds: ArrayLike | None = None,
) -> pl.DataFrame:
    """Decision curve at horizon ``t`` for censored data.

    Parameters
    ----------
    time, event : array-like
        Follow-up time and event indicator (1 = event).
    risk_at_t : array-like, shape (n,)
        Predicted probability of an event by ``t``; a patient is treated when
        ``risk_at_t >= threshold``.
    t : float
        Horizon.
    thresholds : array-like, optional
        Threshold probabilities in (0, 1); default 0.01, 0.02, ..., 0.99.

    Returns
    -------
    polars.DataFrame
        ``threshold``, ``net_benefit``, ``treat_all``, ``treat_none``,
        ``treated`` (fraction with ``risk_at_t >= threshold``) and ``km_risk``
        (Kaplan-Meier risk by ``t`` among them; NaN when nobody is treated).

    Notes
    -----
    Vickers, Cronin, Elkin & Gonen, BMC Med Inform Decis Mak 2008;8:53:
    with ``q`` the fraction treated and ``r`` the Kaplan-Meier risk of an event
    by ``t`` among them, true positives are ``r q`` and false positives
    ``(1 - r) q`` per patient, and ``NB = r q - (1 - r) q pt / (1 - pt)``.
    Treat-all uses the Kaplan-Meier risk of everyone; treat-none is 0.
    """
    from .decision import DEFAULT_THRESHOLDS

    t_, e = _survival_inputs(time, event)
    p = v.as_1d(risk_at_t, "risk_at_t")
    v.same_length(time=t_, risk_at_t=p)
    v.no_nan(p, "risk_at_t")
    t = float(t)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"t must be a positive number, got {t!r}")
    pt = DEFAULT_THRESHOLDS if thresholds is None else v.as_1d(thresholds, "thresholds")
    v.no_nan(pt, "thresholds")
    if np.any((pt <= 0) | (pt >= 1)):
        raise ValueError("thresholds must lie strictly between 0 and 1")
    n = t_.size
    odds = pt / (1.0 - pt)
    nb = np.zeros(pt.size)
    treated = np.zeros(pt.size)
    km = np.full(pt.size, np.nan)
    for k, th in enumerate(pt):
        sel = p >= th
        q = sel.sum() / n
        treated[k] = q
        if q > 0:
            r = _km_risk_at(t_[sel], e[sel], t)
            km[k] = r
            nb[k] = r * q - (1.0 - r) * q * odds[k]
    r_all = _km_risk_at(t_, e, t)
    return pl.DataFrame({
        "threshold": pt,
        "net_benefit": nb,
        "treat_all": r_all - (1.0 - r_all) * odds,
        "treat_none": np.zeros(pt.size),
        "treated": treated,
        "km_risk": km,
    })
