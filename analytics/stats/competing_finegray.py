"""Fine-Gray subdistribution-hazard regression, equal to R ``cmprsk::crr``.

The model of Fine & Gray (JASA 1999;94:496-509) with Kaplan-Meier censoring
weights: crr's Newton iterations and stopping rule, Breslow ties, the
sandwich variance with the censoring term, and the predicted cumulative
incidence of ``predict.crr`` / ``riskRegression::predictRisk(FGR(...))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from .competing_cox import _coef_table, _design
from .competing_status import cause_ok, competing_inputs


# ---------------------------------------------------------------- Fine-Gray
@dataclass(frozen=True)
class FineGray:
    """A Fine-Gray subdistribution-hazard fit (``cmprsk::crr``).

    Attributes
    ----------
    cause : int
    names : list of str
    coef, se : ndarray
    var : ndarray
        Sandwich variance ``H^-1 V H^-1`` (crr's ``var``).
    loglik : float
        Log pseudo-likelihood at ``coef``.
    loglik_null : float
    converged : bool
    iterations : int
    failure_times, hazard : ndarray
        Distinct times of ``cause`` and the baseline subdistribution-hazard
        jumps there (crr's ``uftime``, ``bfitj``).
    """

    cause: int
    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    var: np.ndarray
    loglik: float
    loglik_null: float
    converged: bool
    iterations: int
    failure_times: np.ndarray
    hazard: np.ndarray
    n: int

    def summary(self, level: float = 0.95) -> pl.DataFrame:
        """Subdistribution hazard ratios (column ``hr``) with Wald intervals."""
        return _coef_table(self.names, self.coef, self.se, level)

    def predict_risk(self, x: Any, times: ArrayLike) -> np.ndarray:
        """Cumulative incidence of the cause by each time: shape (n, len(times)).

        ``1 - exp(-exp(x b) sum_{u <= t} dLambda_0(u))``, a step function of
        ``t``: ``predict.crr`` read at ``times`` as ``predictRisk(FGR(...))``.
        """
        xx, _ = _design(x, names=self.names)
        tt = np.atleast_1d(np.asarray(times, dtype=np.float64))
        cum = np.concatenate(([0.0], np.cumsum(self.hazard)))[
            np.searchsorted(self.failure_times, tt, side="right")]
        return 1.0 - np.exp(-np.exp(xx @ self.coef)[:, None] * cum[None, :])


@dataclass(frozen=True)
class _CrrData:
    x: np.ndarray           # sorted by time
    time: np.ndarray
    code: np.ndarray        # 1 cause, 2 other cause, 0 censored
    g_before: np.ndarray    # G(T_i-), Kaplan-Meier of censoring just before T_i
    uft: np.ndarray         # distinct failure times of the cause
    d: np.ndarray           # failures at each
    g_u: np.ndarray         # G(u-) at each


def _crr_data(x: np.ndarray, time: np.ndarray, status: np.ndarray, cause: int) -> _CrrData:
    order = np.argsort(time, kind="stable")
    t, s, xs = time[order], status[order], x[order]
    code = np.where(s == 0, 0, np.where(s == cause, 1, 2))
    # Kaplan-Meier of the censoring times, failures at a tied time still at risk
    # (survfit(Surv(ftime, cenind) ~ 1) in crr), read just before each time.
    ut = np.unique(t)
    y = (t.size - np.searchsorted(t, ut, side="left")).astype(np.float64)
    nc = np.bincount(np.searchsorted(ut, t[code == 0]), minlength=ut.size).astype(np.float64)
    g = np.cumprod(1.0 - nc / y)
    g_prev = np.concatenate(([1.0], g))
    g_before = g_prev[np.searchsorted(ut, t, side="left")]
    uft = np.unique(t[code == 1])
    d = np.bincount(np.searchsorted(uft, t[code == 1]), minlength=uft.size).astype(np.float64)
    g_u = g_prev[np.searchsorted(ut, uft, side="left")]
    return _CrrData(xs, t, code, g_before, uft, d, g_u)


def _prefix(a: np.ndarray) -> np.ndarray:
    """Exclusive prefix sums along axis 0: row k is the sum of rows < k."""
    return np.concatenate((np.zeros((1,) + a.shape[1:]), np.cumsum(a, axis=0)))


def _crr_sums(cd: _CrrData, b: np.ndarray, order: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Risk-set sums at each failure time ``u_m`` of ``w r``, ``w r x`` (order >= 1), ``w r x x'`` (2).

    The weight is 1 while ``T >= u_m`` and ``G(u_m-) / G(T-)`` after another
    cause's event, which factorises, so each sum is a tail sum plus ``G(u_m-)``
    times a head sum (no n-by-M matrix).  Also returns ``exp(x b)``.
    """
    x = cd.x
    n, p = x.shape
    r = np.exp(x @ b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ro = np.where(cd.code == 2, r / cd.g_before, 0.0)
    first = np.searchsorted(cd.time, cd.uft, side="left")

    def risk_sum(a_at: np.ndarray, a_other: np.ndarray) -> np.ndarray:
        tail = np.cumsum(a_at[::-1], axis=0)[::-1]
        tail = np.concatenate((tail, np.zeros((1,) + a_at.shape[1:])))
        g = cd.g_u.reshape((-1,) + (1,) * (a_at.ndim - 1))
        return tail[first] + g * _prefix(a_other)[first]

    s0 = risk_sum(r, ro)
    s1 = risk_sum(r[:, None] * x, ro[:, None] * x) if order >= 1 else np.empty((0, p))
    if order >= 2:
        xx = (x[:, :, None] * x[:, None, :]).reshape(n, p * p)
        s2 = risk_sum(r[:, None] * xx, ro[:, None] * xx).reshape(-1, p, p)
    else:
        s2 = np.empty((0, p, p))
    return s0, s1, s2, r


def _crr_objective(cd: _CrrData, b: np.ndarray, derivs: bool = True
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """Minus the log pseudo-likelihood, its gradient and Hessian (crr's ``crrfsv``; Breslow ties)."""
    s0, s1, s2, _ = _crr_sums(cd, b, 2 if derivs else 0)
    fail = cd.code == 1
    f = float(-np.sum(cd.x[fail] @ b) + np.sum(cd.d * np.log(s0)))
    if not derivs:
        return f, np.empty(0), np.empty((0, 0))
    mean = s1 / s0[:, None]
    grad = -cd.x[fail].sum(axis=0) + (cd.d[:, None] * mean).sum(axis=0)
    hess = np.sum(cd.d[:, None, None] * (s2 / s0[:, None, None]
                                         - mean[:, :, None] * mean[:, None, :]), axis=0)
    return f, grad, hess


def _crr_sandwich(cd: _CrrData, b: np.ndarray) -> np.ndarray:
    """The middle of crr's sandwich (``crrvv``): sum of (eta_i + psi_i)(eta_i + psi_i)'.

    ``eta_i`` is the score-process term of subject ``i`` and ``psi_i`` the
    term from estimating the censoring distribution (Fine & Gray 1999, sec. 3).
    """
    x, n = cd.x, cd.x.shape[0]
    s0, s1, _, r = _crr_sums(cd, b, 1)
    mean = s1 / s0[:, None]
    fail = cd.code == 1
    other = cd.code == 2
    eta = np.zeros_like(x)
    eta[fail] = x[fail] - mean[np.searchsorted(cd.uft, cd.time[fail])]
    # Compensator: r_i sum_m d_m w_im (x_i - xbar_m) / S0_m, with w_im = 1 for
    # u_m <= T_i and G(u_m-)/G(T_i-) for u_m > T_i after another cause's event.
    a = cd.d / s0
    am = a[:, None] * mean
    k = np.searchsorted(cd.uft, cd.time, side="right")
    a_sum = _prefix(a)[k]
    am_sum = _prefix(am)[k]
    ag = a * cd.g_u
    tail_ag = np.concatenate((np.cumsum(ag[::-1])[::-1], [0.0]))[k]
    tail_agm = np.vstack((np.cumsum((ag[:, None] * mean)[::-1], axis=0)[::-1],
                          np.zeros((1, x.shape[1]))))[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_g = np.where(other, 1.0 / cd.g_before, 0.0)
    a_sum = a_sum + inv_g * tail_ag
    am_sum = am_sum + inv_g[:, None] * tail_agm
    eta -= r[:, None] * (x * a_sum[:, None] - am_sum)
    # Censoring term.  q(u) = sum_{failures at u_m >= u} (1/S0_m) sum_{other-cause
    # events before u} exp(lp_j) G(u_m-)/G(T_j-) (x_j - xbar_m).
    ut = np.unique(cd.time)
    y = (n - np.searchsorted(cd.time, ut, side="left")).astype(np.float64)
    cens = cd.code == 0
    nc = np.bincount(np.searchsorted(ut, cd.time[cens]), minlength=ut.size).astype(np.float64)
    cu = ut[nc > 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ro = np.where(other, r / cd.g_before, 0.0)
    kc = np.searchsorted(cd.time, cu, side="left")  # other-cause events strictly before u
    a0 = _prefix(ro)[kc]
    a1 = _prefix(ro[:, None] * x)[kc]
    tail0 = np.concatenate((np.cumsum(ag[::-1])[::-1], [0.0]))
    tail1 = np.vstack((np.cumsum((ag[:, None] * mean)[::-1], axis=0)[::-1],
                       np.zeros((1, x.shape[1]))))
    m0 = np.searchsorted(cd.uft, cu, side="left")  # failures at u_m >= u
    q = a1 * tail0[m0][:, None] - a0[:, None] * tail1[m0]
    yc = y[nc > 0]
    ncc = nc[nc > 0]
    cum_q = _prefix(-q * (ncc / yc ** 2)[:, None])
    psi = cum_q[np.searchsorted(cu, cd.time, side="right")]
    ci = np.searchsorted(cu, cd.time[cens])
    psi[cens] += q[ci] / yc[ci][:, None]
    tot = eta + psi
    return tot.T @ tot


def fine_gray(
    x: Any,
    time: ArrayLike,
    status: ArrayLike,
    cause: int = 1,
    names: Sequence[str] | None = None,
    gtol: float = 1e-6,
    maxiter: int = 10,
) -> FineGray:
    """Fine-Gray subdistribution-hazard regression, as R ``cmprsk::crr``.

    Parameters
    ----------
    x : array-like (n, p) or DataFrame
        Design matrix (no intercept).
    time : array-like
    status : array-like of int
        0 censored, otherwise the cause.
    cause : int
        Cause of interest (crr's ``failcode``).
    names : sequence of str, optional
    gtol, maxiter : float, int
        crr's stopping rule: stop when ``max |score| max(|b|, 1) <
        max(|loglik|, 1) gtol``, at most ``maxiter`` Newton steps (with crr's
        step halving), so the coefficients equal crr's default fit.

    Returns
    -------
    FineGray

    Notes
    -----
    Fine & Gray, JASA 1999;94:496-509.  Subjects who failed from another
    cause stay in the risk set with weight ``G(u-)/G(T-)``, ``G`` the
    Kaplan-Meier of the censoring times (one censoring group); tied failures
    use Breslow's likelihood.  The variance is crr's sandwich, with the term
    for the estimated censoring distribution.  This is the model
    ``riskRegression::FGR`` fits.
    """
    t_, s_ = competing_inputs(time, status)
    c = cause_ok(s_, cause)
    xx, cols = _design(x, t_.size, names)
    if not np.any(s_ == c):
        raise ValueError(f"no events of cause {c} in status")
    cd = _crr_data(xx, t_, s_, c)
    b = np.zeros(xx.shape[1])
    converged = False
    it = 0
    f, grad, hess = _crr_objective(cd, b)
    for it in range(maxiter + 1):
        if np.max(np.abs(grad) * np.maximum(np.abs(b), 1.0)) < max(abs(f), 1.0) * gtol:
            converged = True
            break
        if it == maxiter:
            break
        sc = -np.linalg.solve(hess, grad)
        bn = b + sc
        fbn = _crr_objective(cd, bn, derivs=False)[0]
        halvings = 0
        while not np.isfinite(fbn) or fbn > f + 1e-4 * float(sc @ grad):
            halvings += 1
            sc = sc * 0.5
            bn = b + sc
            fbn = _crr_objective(cd, bn, derivs=False)[0]
            if halvings > 20:
                break
        if halvings > 20:
            break
        b = bn
        f, grad, hess = _crr_objective(cd, b)
    h_inv = np.linalg.inv(hess)
    var = h_inv @ _crr_sandwich(cd, b) @ h_inv
    hazard = cd.d / _crr_sums(cd, b, 0)[0]
    f0 = _crr_objective(cd, np.zeros_like(b), derivs=False)[0]
    return FineGray(c, cols, b, np.sqrt(np.diag(var)), var, -f, -f0, converged, it,
                    cd.uft, hazard, int(t_.size))
