"""The performance indexes of ``rms::validate`` for one set of scores, and the smoother of ``rms::calibrate``.

Binary indexes are those of ``validate.lrm`` (Harrell, *Regression Modeling Strategies*, 2nd ed. 2015,
sections 5.3 and 10.9), survival indexes those of ``validate.cph``; each is computed in one of rms's two
modes:

- ``recalibrate=False`` (rms ``evalfit = TRUE``): the scores are the model's own fit on these rows, so
  the intercept is 0 and the slope 1 by definition and the likelihood-ratio statistic is that of the
  scores as they are (the "original" and "training" columns);
- ``recalibrate=True`` (rms ``evalfit = FALSE``): a logistic (Cox) regression of the outcome on the
  linear predictor is refitted on these rows, giving the calibration intercept and slope and the
  likelihood-ratio statistic of the recalibrated predictor (the "test" column).

Discrimination: Somers' Dxy = 2 (C - 1/2) (Harrell, Lee & Mark, Stat Med 1996;15:361-387); R2 is
Nagelkerke's (Biometrika 1991;78:691-692); D, U, Q are the discrimination, unreliability and quality
indexes of Harrell et al. 1996; g and gp are Gini's mean differences of the linear predictor and of the
probability (Harrell 2015, section 4.10).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .calibrate import logistic_fit
from .roc import placements
from .survival import harrell_counts

BINARY_INDEXES = ("Dxy", "R2", "Intercept", "Slope", "D", "U", "Q", "B", "g", "gp")
SURVIVAL_INDEXES = ("Dxy", "R2", "Slope", "D", "U", "Q", "g")


def gini_md(x: np.ndarray) -> float:
    """Gini's mean difference ``sum_{i != j} |x_i - x_j| / (n (n - 1))``, as ``Hmisc::GiniMd``."""
    n = x.size
    if n < 2:
        return math.nan
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(4.0 * np.sum((i - (n + 1) / 2.0) * np.sort(x)) / (n * (n - 1)))


def _log1pexp(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _deviance(y: np.ndarray, lp: np.ndarray) -> float:
    """-2 log-likelihood of a logistic model with linear predictor ``lp``."""
    return float(-2.0 * np.sum(y * lp - _log1pexp(lp)))


def _null_deviance(y: np.ndarray) -> float:
    n, k = y.size, float(y.sum())
    if k in (0.0, n):
        return 0.0
    return float(-2.0 * (k * math.log(k / n) + (n - k) * math.log1p(-k / n)))


def binary_measures(y: np.ndarray, lp: np.ndarray, *, recalibrate: bool) -> np.ndarray:
    """``validate.lrm``'s indexes (``BINARY_INDEXES`` order) of linear predictor ``lp`` for 0/1 ``y``.

    Parameters
    ----------
    y : ndarray of 0/1
    lp : ndarray
        Linear predictor (``logit`` of the predicted probability).
    recalibrate : bool
        False: rms ``evalfit = TRUE`` (intercept 0, slope 1, LR of ``lp`` as it is); True: rms's test
        mode, refitting ``y ~ lp`` by maximum likelihood.

    Returns
    -------
    ndarray, shape (10,)
        NaN for Dxy when ``y`` has one class only.
    """
    n = y.size
    yf = y.astype(np.float64)
    dxy = 2.0 * placements(y, lp)[0] - 1.0 if 0 < yf.sum() < n else math.nan
    dev0 = _null_deviance(yf)
    brier = float(np.sum((yf - 1.0 / (1.0 + np.exp(-lp))) ** 2) / n)
    l01 = _deviance(yf, lp)
    if not recalibrate:
        lr = dev0 - l01
        intercept, slope = 0.0, 1.0
        u = -2.0 / n
        g = gini_md(lp)
        gp = gini_md(1.0 / (1.0 + np.exp(-lp)))
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                coef = logistic_fit(np.column_stack([np.ones(n), lp]), yf, tol=1e-13)
        except ValueError:  # singular: the scores separate the classes, no recalibration exists
            coef = np.array([math.nan, math.nan])
        if not np.all(np.isfinite(coef)):
            nan = math.nan
            return np.array([dxy, nan, nan, nan, nan, nan, nan, brier, nan, nan])
        intercept, slope = float(coef[0]), float(coef[1])
        dev1 = _deviance(yf, intercept + slope * lp)
        lr = dev0 - dev1
        u = (l01 - dev1 - 2.0) / n
        g = gini_md(slope * lp)
        gp = gini_md(1.0 / (1.0 + np.exp(-(intercept + slope * lp))))
    r2 = (1.0 - math.exp(-lr / n)) / (1.0 - math.exp(-dev0 / n)) if dev0 > 0 else math.nan
    d = (lr - 1.0) / n
    return np.array([dxy, r2, intercept, slope, d, u, d - u, brier, g, gp])


def emax(intercept: float, slope: float) -> float:
    """``validate.lrm``'s Emax: the largest |p - plogis(a + b logit p)| over p in 0, 0.0005, ..., 1."""
    p = np.arange(2001) * 5e-4
    with np.errstate(divide="ignore", invalid="ignore"):
        big = 1.0 / (1.0 + np.exp(-(intercept + slope * (np.log(p) - np.log1p(-p)))))
        return float(np.nanmax(np.abs(p - big)))


# ----------------------------------------------------------------------------- Cox, one covariate
def _efron(time: np.ndarray, event: np.ndarray, x: np.ndarray, beta: float) -> tuple[float, float, float]:
    """Efron partial log-likelihood of ``beta * x``, its score and information (Efron, JASA 1977)."""
    order = np.lexsort((-event, -time))  # time descending; at a tie, events before censorings
    t, e, xx = time[order], event[order], x[order] - x.mean()  # centring changes nothing but rounding
    r = np.exp(beta * xx)
    s0, s1, s2 = np.cumsum(r), np.cumsum(r * xx), np.cumsum(r * xx * xx)
    # last row of each tied time block (in descending order) holds the whole risk set at that time
    last = np.r_[t[1:] != t[:-1], True]
    block = np.cumsum(np.r_[True, t[1:] != t[:-1]]) - 1
    dead = e == 1
    d = np.bincount(block[dead], minlength=block[-1] + 1).astype(np.float64)
    d0 = np.bincount(block[dead], weights=r[dead], minlength=d.size)
    d1 = np.bincount(block[dead], weights=(r * xx)[dead], minlength=d.size)
    d2 = np.bincount(block[dead], weights=(r * xx * xx)[dead], minlength=d.size)
    xs = np.bincount(block[dead], weights=xx[dead], minlength=d.size)
    S0, S1, S2 = s0[last], s1[last], s2[last]
    ll = float(beta * xs.sum())
    score = float(xs.sum())
    info = 0.0
    has = d > 0
    for k in range(int(d.max()) if d.size else 0):
        m = has & (d > k)
        f = k / d[m]
        a0 = S0[m] - f * d0[m]
        a1 = S1[m] - f * d1[m]
        a2 = S2[m] - f * d2[m]
        ll -= float(np.sum(np.log(a0)))
        score -= float(np.sum(a1 / a0))
        info += float(np.sum(a2 / a0 - (a1 / a0) ** 2))
    return ll, score, info


def cox_slope(time: np.ndarray, event: np.ndarray, x: np.ndarray,
              iter_max: int = 10, eps: float = 1e-4) -> tuple[float, float, float]:
    """Cox regression of the outcome on one covariate, Efron ties, as ``survival::coxph.fit``.

    Newton-Raphson from 0 with step halving, stopping when ``|1 - loglik_old / loglik_new| <= eps``
    (``coxph.control``; rms's ``validate.cph`` uses ``iter.max = 10, eps = 1e-4``), so that the slope
    equals R's to the last digits rather than the exact maximiser.

    Returns
    -------
    slope, loglik at 0, loglik at slope
    """
    beta = 0.0
    ll, u, imat = _efron(time, event, x, beta)
    ll0 = ll
    if imat <= 0:
        return math.nan, ll0, ll0
    newbeta = beta + u / imat
    halving = 0
    for it in range(1, iter_max + 1):
        newlk, u_new, i_new = _efron(time, event, x, newbeta)
        if abs(1.0 - ll / newlk) <= eps and halving == 0:
            return newbeta, ll0, newlk
        if it == iter_max:
            break
        if newlk < ll:
            halving += 1
            newbeta = (newbeta + beta) / 2.0
        else:
            halving = 0
            ll, beta = newlk, newbeta
            newbeta = newbeta + u_new / i_new
    return beta, ll0, ll


def survival_measures(time: np.ndarray, event: np.ndarray, lp: np.ndarray, *,
                      recalibrate: bool) -> np.ndarray:
    """``validate.cph``'s indexes (``SURVIVAL_INDEXES`` order) of a Cox linear predictor ``lp``.

    Dxy follows rms's ``dxy.cens(lp, Surv, type = "hazard")``: positive when a higher ``lp`` goes
    with an earlier event (Harrell's C = (Dxy + 1) / 2).  R2 = (1 - exp(-LR/n)) / (1 - exp(-L0/n))
    with L0 = -2 log partial likelihood at 0; D = (LR - 1) / L0; U = -2 (log PL(1) - log PL(slope)) / L0
    in test mode and -2 / L0 otherwise.
    """
    n = time.size
    if np.unique(lp).size == 1:
        return np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, math.nan])
    conc, comp = harrell_counts(time, event, lp, np.ones((n, 1)))
    dxy = 2.0 * (float(conc[0]) / float(comp[0]) - 0.5) if comp[0] > 0 else math.nan
    ll_null = _efron(time, event, lp, 0.0)[0]
    l0 = -2.0 * ll_null
    if not recalibrate:
        lr = -2.0 * (ll_null - _efron(time, event, lp, 1.0)[0])
        slope, u = 1.0, -2.0 / l0
        g = gini_md(lp)
    else:
        slope, _, ll_fit = cox_slope(time, event, lp)
        lr = -2.0 * (ll_null - ll_fit)
        u = -2.0 * (_efron(time, event, lp, 1.0)[0] - ll_fit) / l0
        g = gini_md(slope * lp)
    d = (lr - 1.0) / l0
    r2 = (1.0 - math.exp(-lr / n)) / (1.0 - math.exp(-l0 / n))
    return np.array([dxy, r2, slope, d, u, d - u, g])


# ----------------------------------------------------------------------------- lowess (R's clowess)
def lowess(x: np.ndarray, y: np.ndarray, f: float = 2.0 / 3.0) -> tuple[np.ndarray, np.ndarray]:
    """R's ``lowess(x, y, f, iter = 0)``: sorted x and the locally linear fit (Cleveland, JASA 1979).

    A port of R's C ``clowess`` without robustness iterations (as ``rms::calibrate`` calls it),
    ``delta = 0.01 * diff(range(x))``: points within ``delta`` of the last fitted one are linearly
    interpolated, tied x values share one fit.
    """
    order = np.argsort(x, kind="stable")
    xs, ys = x[order].astype(np.float64), y[order].astype(np.float64)
    n = xs.size
    out = np.empty(n)
    if n < 2:
        return xs, ys.copy()
    delta = 0.01 * (xs[-1] - xs[0])
    ns = max(2, min(n, int(f * n + 1e-7)))
    rng = xs[-1] - xs[0]
    nleft, nright = 0, ns - 1
    last = -1
    i = 0
    while True:
        if nright < n - 1:
            d1 = xs[i] - xs[nleft]
            d2 = xs[nright + 1] - xs[i]
            if d1 > d2:
                nleft += 1
                nright += 1
                continue
        out[i] = _lowest(xs, ys, xs[i], nleft, nright, rng, ys[i])
        if last < i - 1:
            denom = xs[i] - xs[last]
            j = np.arange(last + 1, i)
            alpha = (xs[j] - xs[last]) / denom
            out[j] = alpha * out[i] + (1.0 - alpha) * out[last]
        last = i
        cut = xs[last] + delta
        i = last + 1
        while i < n:
            if xs[i] > cut:
                break
            if xs[i] == xs[last]:
                out[i] = out[last]
                last = i
            i += 1
        i = max(last + 1, i - 1)
        if last >= n - 1:
            break
    return xs, out


def _lowest(x: np.ndarray, y: np.ndarray, xs: float, nleft: int, nright: int, rng: float,
            fallback: float) -> float:
    h = max(xs - x[nleft], x[nright] - xs)
    h9, h1 = 0.999 * h, 0.001 * h
    r = np.abs(x[nleft:] - xs)
    stop = np.flatnonzero((r > h9) & (x[nleft:] > xs))
    nrt = nleft + (int(stop[0]) if stop.size else r.size)  # one past the rightmost point used
    r = r[: nrt - nleft]
    w = np.where(r <= h9, np.where(r <= h1, 1.0, (1.0 - (r / h) ** 3) ** 3), 0.0) if h > 0 else np.ones(r.size)
    a = float(np.sum(w))
    if a <= 0.0:
        return fallback
    w = w / a
    xw = x[nleft:nrt]
    if h > 0.0:
        a = float(np.sum(w * xw))
        b = xs - a
        c = float(np.sum(w * (xw - a) ** 2))
        if math.sqrt(c) > 0.001 * rng:
            w = w * (b / c * (xw - a) + 1.0)
    return float(np.sum(w * y[nleft:nrt]))


def approx_first(x: np.ndarray, y: np.ndarray, xout: np.ndarray) -> np.ndarray:
    """R ``approx(x, y, xout, ties = function(v) v[1])$y`` for sorted ``x``: NaN outside its range."""
    keep = np.r_[True, x[1:] != x[:-1]]
    ux, uy = x[keep], y[keep]
    res = np.interp(xout, ux, uy)
    res[(xout < ux[0]) | (xout > ux[-1])] = np.nan
    return res
