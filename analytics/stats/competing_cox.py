"""Cox models for competing risks: Efron-tie Cox and the cause-specific Cox model.

* :func:`cox_efron`: a Cox model with Efron's tie correction, equal to R
  ``survival::coxph(ties = "efron")``, with the Efron-type baseline hazard.
* :func:`cause_specific_cox`: one such model per cause, equal to
  ``riskRegression::CSC``; absolute risk of a cause as
  ``riskRegression::predictRisk(CSC(...), cause = k)`` (Benichou & Gail,
  Biometrics 1990;46:813-826; Ozenne, Sorensen, Scheike, Torp-Pedersen &
  Gerds, R Journal 2017;9:440-460).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from .competing_status import competing_inputs


# ------------------------------------------------------------------ inputs
def _design(x: Any, n: int | None = None, names: Sequence[str] | None = None
            ) -> tuple[np.ndarray, list[str]]:
    """A numeric (n, p) design and its column names (from a DataFrame, or ``x1..xp``)."""
    if isinstance(x, pl.DataFrame):
        cols = list(x.columns)
        arr = x.to_numpy().astype(np.float64)
    elif hasattr(x, "columns") and hasattr(x, "to_numpy"):
        cols = [str(c) for c in x.columns]
        arr = np.asarray(x.to_numpy(), dtype=np.float64)
    else:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        cols = [f"x{j + 1}" for j in range(arr.shape[1])]
    if arr.ndim != 2:
        raise ValueError(f"covariates must be 2-D (n, p), got shape {arr.shape}")
    if names is not None:
        cols = [str(c) for c in names]
        if len(cols) != arr.shape[1]:
            raise ValueError(f"{len(cols)} names for {arr.shape[1]} covariate columns")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"lengths differ: time has {n}, covariates have {arr.shape[0]} rows")
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"covariate {cols[j]!r} is missing or not finite (first at row {i})")
    return arr, cols


def _coef_table(names: list[str], coef: np.ndarray, se: np.ndarray, level: float) -> pl.DataFrame:
    from scipy.stats import norm

    z = coef / se
    q = float(norm.ppf(0.5 + level / 2.0))
    return pl.DataFrame({"term": names, "coef": coef, "se": se, "z": z,
                         "p": 2.0 * norm.sf(np.abs(z)), "hr": np.exp(coef),
                         "hr_low": np.exp(coef - q * se), "hr_high": np.exp(coef + q * se)})


# ----------------------------------------------------------- Cox, Efron ties
@dataclass(frozen=True)
class CoxFit:
    """A Cox proportional-hazards fit with Efron ties.

    Attributes
    ----------
    names : list of str
    coef, se : ndarray
    var : ndarray
        Inverse of the observed information at ``coef``.
    loglik : tuple of float
        Partial log-likelihood at 0 and at ``coef`` (as coxph's ``loglik``).
    iterations : int
    event_times, hazard : ndarray
        Distinct event times and the Efron-type baseline-hazard jumps there
        (for covariates 0, not centred).
    n, events : int
    """

    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    var: np.ndarray
    loglik: tuple[float, float]
    iterations: int
    event_times: np.ndarray
    hazard: np.ndarray
    n: int
    events: int

    def summary(self, level: float = 0.95) -> pl.DataFrame:
        """``term``, ``coef``, ``se``, ``z``, ``p``, ``hr`` and its Wald interval."""
        return _coef_table(self.names, self.coef, self.se, level)


@dataclass(frozen=True)
class _Sums:
    """Per distinct event time: risk-set and tied-death sums of exp(lp), exp(lp) x, exp(lp) x x'."""

    times: np.ndarray
    d: np.ndarray
    s0: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    d0: np.ndarray
    d1: np.ndarray
    d2: np.ndarray


def _efron_sums(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray) -> _Sums:
    order = np.argsort(time, kind="stable")
    ts, xs, es = time[order], x[order], event[order]
    r = np.exp(xs @ beta)
    u = np.unique(ts[es == 1])
    first = np.searchsorted(ts, u, side="left")
    xr = xs * r[:, None]
    xxr = xs[:, :, None] * xr[:, None, :]

    def tail(a: np.ndarray) -> np.ndarray:
        return np.cumsum(a[::-1], axis=0)[::-1]

    s0, s1, s2 = tail(r)[first], tail(xr)[first], tail(xxr)[first]
    dead = es == 1
    j = np.searchsorted(u, ts[dead])
    p = x.shape[1]
    d = np.bincount(j, minlength=u.size).astype(np.float64)
    d0 = np.bincount(j, weights=r[dead], minlength=u.size)
    d1 = np.zeros((u.size, p))
    np.add.at(d1, j, xr[dead])
    d2 = np.zeros((u.size, p, p))
    np.add.at(d2, j, xxr[dead])
    return _Sums(u, d, s0, s1, s2, d0, d1, d2)


def _efron_terms(sm: _Sums) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Efron rows: one per death, ``l / d`` of the tied deaths removed from the risk set."""
    jj = np.repeat(np.arange(sm.times.size), sm.d.astype(np.int64))
    ll = np.arange(jj.size) - np.repeat(np.cumsum(sm.d) - sm.d, sm.d.astype(np.int64))
    f = ll / sm.d[jj]
    return jj, f, sm.s0[jj] - f * sm.d0[jj], (sm.s1[jj] - f[:, None] * sm.d1[jj])


def _cox_loglik(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """Efron partial log-likelihood, score and information (Efron, JASA 1977;72:557-565)."""
    sm = _efron_sums(x, time, event, beta)
    jj, f, den0, den1 = _efron_terms(sm)
    den2 = sm.s2[jj] - f[:, None, None] * sm.d2[jj]
    dead = event == 1
    ll = float(np.sum(x[dead] @ beta) - np.sum(np.log(den0)))
    mean = den1 / den0[:, None]
    score = x[dead].sum(axis=0) - mean.sum(axis=0)
    info = np.sum(den2 / den0[:, None, None] - mean[:, :, None] * mean[:, None, :], axis=0)
    return ll, score, info


def cox_efron(
    x: Any,
    time: ArrayLike,
    event: ArrayLike,
    names: Sequence[str] | None = None,
    max_iter: int = 50,
    tol: float = 1e-12,
) -> CoxFit:
    """Cox model with Efron's tie correction by Newton-Raphson, as R ``coxph(ties = "efron")``.

    Parameters
    ----------
    x : array-like (n, p) or DataFrame
        Design matrix (no intercept).
    time : array-like
    event : array-like of 0/1
    names : sequence of str, optional
    max_iter : int
    tol : float
        Convergence: largest Newton step below ``tol`` (full convergence, so
        that coefficients match coxph's to well below 1e-6).

    Returns
    -------
    CoxFit

    Notes
    -----
    Efron, JASA 1977;72:557-565.  Covariates are centred for the iterations
    (as coxph), which leaves the partial likelihood unchanged.  The
    baseline-hazard jump at an event time with ``d`` tied deaths is
    ``sum_{l=0}^{d-1} 1 / (S0 - (l/d) D0)`` (``S0`` the risk-set sum of
    ``exp(lp)``, ``D0`` that of the tied deaths): the Efron-type estimator of
    survival's ``survfit.coxph`` and of riskRegression's ``predictCox``.
    """
    t_ = np.asarray(time, dtype=np.float64).reshape(-1)
    e = np.asarray(event, dtype=np.float64).reshape(-1)
    xx, cols = _design(x, t_.size, names)
    if e.sum() < 1:
        raise ValueError("Cox model needs at least one event")
    centre = xx.mean(axis=0)
    xc = xx - centre
    beta = np.zeros(xx.shape[1])
    ll0, score, info = _cox_loglik(xc, t_, e, beta)
    ll = ll0
    it = 0
    while it < max_iter:
        it += 1
        step = np.linalg.solve(info, score)
        new = beta + step
        ll_new, sc_new, info_new = _cox_loglik(xc, t_, e, new)
        halvings = 0
        while (not np.isfinite(ll_new) or ll_new < ll - 1e-12) and halvings < 30:
            step /= 2.0
            new = beta + step
            ll_new, sc_new, info_new = _cox_loglik(xc, t_, e, new)
            halvings += 1
        beta, ll, score, info = new, ll_new, sc_new, info_new
        if np.max(np.abs(step)) < tol:
            break
    var = np.linalg.inv(info)
    sm = _efron_sums(xx, t_, e, beta)
    jj, _, den0, _ = _efron_terms(sm)
    hazard = np.bincount(jj, weights=1.0 / den0, minlength=sm.times.size)
    return CoxFit(cols, beta, np.sqrt(np.diag(var)), var, (ll0, ll), it, sm.times, hazard,
                  int(t_.size), int(e.sum()))


# ------------------------------------------------------ cause-specific Cox
@dataclass(frozen=True)
class CauseSpecificCox:
    """One Efron Cox model per cause (``riskRegression::CSC``, ``surv.type = "hazard"``).

    Attributes
    ----------
    causes : list of int
    models : dict
        ``cause -> CoxFit`` of the cause-specific hazard (other causes censored).
    names : list of str
    """

    causes: list[int]
    models: dict[int, CoxFit]
    names: list[str]

    def summary(self, level: float = 0.95) -> pl.DataFrame:
        """Cause-specific hazard ratios: ``cause`` plus the columns of :meth:`CoxFit.summary`."""
        tables = [m.summary(level) for m in self.models.values()]
        return pl.concat([tab.select(pl.lit(c).alias("cause"), *tab.columns)
                          for c, tab in zip(self.models, tables, strict=True)])

    def predict_risk(self, x: Any, times: ArrayLike, cause: int = 1,
                     product_limit: bool = True) -> np.ndarray:
        """Absolute risk of ``cause`` by each time: shape (n, len(times)).

        ``F_k(t | x) = sum_{s <= t} S(s- | x) dLambda_k(s | x)`` with the
        Efron-type baseline hazards; the all-cause event-free survival ``S``
        is the product limit ``prod_{u < s} (1 - sum_j dLambda_j(u | x))``
        over the event times of all causes (riskRegression's default,
        ``product.limit = TRUE``) or ``exp(-sum_j Lambda_j(s- | x))``.
        Equal to ``predictRisk(CSC(...), times, cause)``.
        """
        c = int(cause)
        if c not in self.models:
            raise KeyError(f"cause {cause!r} not modelled; causes are {self.causes}")
        xx, _ = _design(x, names=self.names)
        tt = np.atleast_1d(np.asarray(times, dtype=np.float64))
        union = np.unique(np.concatenate([m.event_times for m in self.models.values()]))
        dlam = {}
        for k, mod in self.models.items():
            jump = np.zeros(union.size)
            jump[np.searchsorted(union, mod.event_times)] = mod.hazard
            dlam[k] = np.exp(xx @ mod.coef)[:, None] * jump[None, :]
        total = sum(dlam.values())
        if product_limit:
            surv = np.cumprod(1.0 - total, axis=1)
        else:
            surv = np.exp(-np.cumsum(total, axis=1))
        before = np.hstack((np.ones((xx.shape[0], 1)), surv[:, :-1]))
        cif = np.hstack((np.zeros((xx.shape[0], 1)), np.cumsum(before * dlam[c], axis=1)))
        return cif[:, np.searchsorted(union, tt, side="right")]


def cause_specific_cox(
    x: Any,
    time: ArrayLike,
    status: ArrayLike,
    names: Sequence[str] | None = None,
) -> CauseSpecificCox:
    """Fit a cause-specific Cox model (Efron ties) for every cause in ``status``.

    Parameters
    ----------
    x : array-like (n, p) or DataFrame
        Design matrix (no intercept): the same covariates for every cause.
    time : array-like
    status : array-like of int
        0 censored, otherwise the cause.
    names : sequence of str, optional

    Returns
    -------
    CauseSpecificCox
        Coefficients and SEs of each cause equal R ``coxph(Surv(time, status
        == k) ~ x, ties = "efron")``; :meth:`CauseSpecificCox.predict_risk`
        equals ``predictRisk(CSC(...), times, cause)``.

    Notes
    -----
    Prentice et al., Biometrics 1978;34:541-554 (cause-specific hazards);
    Benichou & Gail, Biometrics 1990;46:813-826 (absolute risk).
    """
    t_, s_ = competing_inputs(time, status)
    xx, cols = _design(x, t_.size, names)
    causes = [int(c) for c in np.unique(s_[s_ > 0])]
    if not causes:
        raise ValueError("status has no events (all 0 = censored)")
    models = {c: cox_efron(xx, t_, (s_ == c).astype(np.float64), cols) for c in causes}
    return CauseSpecificCox(causes, models, cols)
