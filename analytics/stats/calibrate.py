"""Calibration of predicted probabilities: intercept, slope, Brier, ICI/E50/E90, curves.

Calibration-in-the-large (intercept with the slope fixed at 1) and the
intercept and slope of logistic recalibration (R ``rms::val.prob``'s
"Intercept" and "Slope") follow Cox (Biometrika 1958;45:562-565) and
Steyerberg, *Clinical Prediction Models* (2nd ed., 2019, ch. 15); the smoothed-calibration summaries ICI, E50, E90 and
Emax follow Austin & Steyerberg (Stat Med 2019;38:4051-4065), with the loess
smoother of Cleveland & Devlin (JASA 1988;83:596-610) as R ``loess()``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .thresholds import wilson_interval

_EPS = 1e-12


def logit(p: ArrayLike, eps: float = 0.0) -> np.ndarray:
    """``log(p / (1 - p))`` in float64; with ``eps > 0``, of ``p`` clipped to ``[eps, 1 - eps]`` first."""
    q = np.asarray(p, dtype=np.float64)
    if eps > 0:
        q = np.clip(q, eps, 1 - eps)
    return np.log(q) - np.log1p(-q)


def _clip_probability(p: np.ndarray, name: str = "prob") -> np.ndarray:
    if np.any((p <= 0) | (p >= 1)):
        warnings.warn(
            f"{name} has values of exactly 0 or 1; clipped to [{_EPS}, {1 - _EPS}] "
            "for the logistic calibration fits",
            RuntimeWarning,
            stacklevel=3,
        )
        p = np.clip(p, _EPS, 1.0 - _EPS)
    return p


def logistic_fit(
    x: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None,
    tol: float = 1e-10, max_iter: int = 100,
) -> np.ndarray:
    """Maximum-likelihood logistic regression by Newton-Raphson (IRLS).

    Parameters
    ----------
    x : ndarray, shape (n, k)
        Design matrix (include a column of ones for an intercept).
    y : ndarray of 0/1
    offset : ndarray, optional
        Fixed term added to the linear predictor.

    Returns
    -------
    ndarray, shape (k,)
        Coefficients, as R ``glm(..., family = binomial)``.

    Notes
    -----
    Iteratively reweighted least squares (Nelder & Wedderburn, JRSS A
    1972;135:370-384), i.e. Newton's method for the canonical logit link.
    """
    n, k = x.shape
    off = np.zeros(n) if offset is None else offset
    beta = np.zeros(k)
    for _ in range(max_iter):
        eta = x @ beta + off
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = mu * (1.0 - mu)
        grad = x.T @ (y - mu)
        hess = (x * w[:, None]).T @ x
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            raise ValueError("logistic calibration fit is singular") from None
        beta = beta + step
        if np.max(np.abs(step)) < tol * (1.0 + np.max(np.abs(beta))):
            return beta
        if not np.all(np.isfinite(beta)):
            break
    warnings.warn("logistic calibration fit did not converge (separation?)",
                  RuntimeWarning, stacklevel=3)
    return beta


def _knn_radius(xs: np.ndarray, q: int, a: np.ndarray) -> np.ndarray:
    """Distance from each ``a`` to its ``q``-th nearest point of sorted ``xs``.

    In one dimension the ``q`` nearest points form a window ``xs[l:l+q]``; the
    radius ``max(a - xs[l], xs[l+q-1] - a)`` is smallest where the window
    centre ``(xs[l] + xs[l+q-1]) / 2`` crosses ``a``.
    """
    n = xs.size
    centre2 = xs[: n - q + 1] + xs[q - 1:]
    l1 = np.searchsorted(centre2, 2.0 * a)
    best = np.full(a.size, np.inf)
    for lo in (l1 - 1, l1):
        ok = (lo >= 0) & (lo <= n - q)
        lc = np.clip(lo, 0, n - q)
        r = np.maximum(a - xs[lc], xs[lc + q - 1] - a)
        best = np.where(ok, np.minimum(best, r), best)
    return best


def loess(
    x: np.ndarray, y: np.ndarray, at: np.ndarray | None = None,
    span: float = 0.75, degree: int = 2, chunk: int = 128,
) -> np.ndarray:
    """Local polynomial regression (loess), evaluated exactly at ``at``.

    Parameters
    ----------
    x, y : ndarray
        Data (1-D).
    at : ndarray, optional
        Evaluation points (default ``x``).
    span : float in (0, 1]
        Fraction of points in each neighbourhood: ``q = floor(n * span)``.
    degree : {0, 1, 2}
        Local polynomial degree.

    Returns
    -------
    ndarray
        Fitted values at ``at``.

    Notes
    -----
    Cleveland & Devlin, JASA 1988;83:596-610.  Tricube weights
    ``(1 - (d / h)^3)^3`` with ``h`` the distance to the ``q``-th nearest
    point, weighted least squares of degree ``degree`` centred at each point,
    no robustness iterations: R ``loess(y ~ x, span, degree,
    family = "gaussian", surface = "direct")``.  (R's default
    ``surface = "interpolate"`` approximates this on a k-d tree.)
    Evaluation points are processed in sorted chunks; weighted moments come
    from one matrix product per chunk, re-centred on each point.
    """
    if not 0.0 < span <= 1.0:
        raise ValueError(f"span must be in (0, 1], got {span}")
    if degree not in (0, 1, 2):
        raise ValueError(f"degree must be 0, 1 or 2, got {degree}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    q = min(n, int(math.floor(n * span + 1e-5)))
    if q < degree + 1:
        raise ValueError(
            f"loess needs at least {degree + 1} points per neighbourhood (span too small)"
        )
    at = x if at is None else np.asarray(at, dtype=np.float64)
    order = np.argsort(at, kind="stable")
    a_sorted = at[order]
    h_all = _knn_radius(np.sort(x), q, a_sorted)
    p = degree + 1
    npow = 2 * degree + 1
    binom = [[math.comb(k, j) for j in range(k + 1)] for k in range(npow)]
    out_sorted = np.empty(at.size)
    for start in range(0, at.size, chunk):
        a = a_sorted[start:start + chunk]
        h = h_all[start:start + chunk]
        h = np.where(h > 0, h, 1.0)
        centre = 0.5 * (a[0] + a[-1])
        scale = float(h.max())
        z = (x - centre) / scale
        az = (a - centre) / scale
        hz = h / scale
        u = np.minimum(np.abs(z[None, :] - az[:, None]) / hz[:, None], 1.0)
        w = (1.0 - u * u * u) ** 3
        zp = np.empty((n, npow + p))
        zp[:, 0] = 1.0
        for k in range(1, npow):
            zp[:, k] = zp[:, k - 1] * z
        zp[:, npow:] = zp[:, :p] * y[:, None]
        s = w @ zp  # raw weighted moments about ``centre``
        # Moments about each evaluation point, in units of its radius.
        mom = np.zeros((a.size, npow))
        rhs = np.zeros((a.size, p))
        neg = -az
        for k in range(npow):
            for j in range(k + 1):
                term = binom[k][j] * neg ** (k - j)
                mom[:, k] += term * s[:, j]
                if k < p:
                    rhs[:, k] += term * s[:, npow + j]
            mom[:, k] /= hz**k
            if k < p:
                rhs[:, k] /= hz**k
        mat = np.empty((a.size, p, p))
        for i in range(p):
            for j in range(p):
                mat[:, i, j] = mom[:, i + j]
        sol = np.linalg.pinv(mat, rcond=1e-12, hermitian=True) @ rhs[:, :, None]
        out_sorted[start:start + a.size] = sol[:, 0, 0]
    out = np.empty(at.size)
    out[order] = out_sorted
    return out


def _smooth(prob: np.ndarray, y: np.ndarray, at: np.ndarray, span: float,
            max_points: int) -> np.ndarray:
    """Loess of ``y`` on ``prob`` at ``at``; exact at up to ``max_points`` knots."""
    knots = np.unique(at)
    if knots.size > max_points:
        knots = np.unique(np.quantile(at, np.linspace(0.0, 1.0, max_points)))
        fit = loess(prob, y.astype(np.float64), knots, span=span)
        return np.interp(at, knots, fit)
    fit = loess(prob, y.astype(np.float64), knots, span=span)
    return fit[np.searchsorted(knots, at)]


RECALIBRATION_UNDEFINED = "recalibration intercept and slope not defined"


def _recalibration(lp: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``a'`` and ``b`` of ``logit P(y=1) = a' + b lp``; NaN, with a RuntimeWarning saying why, when the fit is
    singular or does not converge (a finite value it stopped at would be a number with no meaning)."""
    why = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if np.ptp(lp) == 0:  # no slope to estimate; solve() may still return one from rounding errors
                raise ValueError("constant predictions")
            b = logistic_fit(np.column_stack([np.ones(lp.size), lp]), y)
        except ValueError:
            why = ("the logistic recalibration fit is singular (the predictions are constant, or separate the "
                   "classes)")
    if why is None and any("did not converge" in str(w.message) for w in caught):
        why = "the logistic recalibration fit did not converge (the predictions separate the classes)"
    for w in caught:
        if "did not converge" not in str(w.message):
            warnings.warn(w.message, w.category, stacklevel=3)
    if why is not None:
        warnings.warn(f"{RECALIBRATION_UNDEFINED}: {why}", RuntimeWarning, stacklevel=3)
        return float("nan"), float("nan")
    return float(b[0]), float(b[1])


def calibration(
    y: ArrayLike, prob: ArrayLike, *, span: float = 0.75, max_points: int = 1000
) -> dict[str, float]:
    """Calibration summaries of predicted probabilities.

    Parameters
    ----------
    y : array-like of 0/1
    prob : array-like of float in [0, 1]
        Predicted probability of ``y == 1``.
    span : float
        Loess span for ICI/E50/E90/Emax (R default 0.75).
    max_points : int
        The loess is evaluated exactly at every distinct ``prob`` when there
        are at most this many, otherwise at ``max_points`` quantile knots and
        linearly interpolated.

    Returns
    -------
    dict
        ``in_the_large``: calibration-in-the-large, ``a`` in
        ``logit P(y=1) = a + logit(prob)`` (logistic model with the slope fixed
        at 1, i.e. an offset; ideal 0).
        ``recalibration_intercept``, ``recalibration_slope``: ``a'`` and ``b``
        of logistic recalibration ``logit P(y=1) = a' + b logit(prob)`` (Cox
        1958; ideal 0 and 1; ``b < 1`` means predictions too extreme, as from
        an overfitted model). These are what R ``rms::val.prob`` reports as
        "Intercept" and "Slope".
        ``intercept``, ``slope``, ``slope_intercept``: the same three numbers
        under their earlier names (``intercept`` is calibration-in-the-large,
        ``slope_intercept`` the recalibration intercept).
        ``brier``: mean squared error of ``prob`` (Brier, Mon Weather Rev 1950).
        ``ici``, ``e50``, ``e90``, ``emax``: mean, median, 90th percentile and
        maximum of ``|loess(y ~ prob) - prob|`` over the subjects (Austin &
        Steyerberg, Stat Med 2019;38:4051-4065).  ``n``, ``events``,
        ``mean_prob``, ``observed_rate``.

    Notes
    -----
    Probabilities of exactly 0 or 1 are clipped to ``[1e-12, 1 - 1e-12]``
    (with a warning) before taking logits. When the recalibration fit has no
    estimate (constant predictions make it singular; predictions that
    separate the classes keep it from converging) its intercept and slope are
    NaN and a RuntimeWarning starting with :data:`RECALIBRATION_UNDEFINED`
    says why; the other summaries stand.
    """
    yy = v.binary_y(y)
    p = v.probability(prob)
    v.same_length(y=yy, prob=p)
    yf = yy.astype(np.float64)
    lp = logit(_clip_probability(p))
    ones = np.ones((p.size, 1))
    intercept = float(logistic_fit(ones, yf, offset=lp)[0])
    b0, b1 = _recalibration(lp, yf)
    err = np.abs(_smooth(p, yy, p, span, max_points) - p)
    return {
        "in_the_large": intercept,
        "recalibration_intercept": b0,
        "recalibration_slope": b1,
        "intercept": intercept,
        "slope": b1,
        "slope_intercept": b0,
        "brier": float(np.mean((p - yf) ** 2)),
        "ici": float(np.mean(err)),
        "e50": float(np.median(err)),
        "e90": float(np.quantile(err, 0.9)),
        "emax": float(np.max(err)),
        "n": int(p.size),
        "events": int(yy.sum()),
        "mean_prob": float(np.mean(p)),
        "observed_rate": float(np.mean(yf)),
    }


@dataclass(frozen=True)
class CalibrationCurve:
    """Data for a calibration plot.

    Attributes
    ----------
    smoothed : polars.DataFrame
        ``prob``, ``observed``: loess of the outcome on the prediction over a grid.
    binned : polars.DataFrame
        ``bin``, ``n``, ``events``, ``mean_prob``, ``observed``, ``low``,
        ``high``: observed proportion per bin of predictions with a Wilson
        interval.
    """

    smoothed: pl.DataFrame
    binned: pl.DataFrame

    def as_dict(self) -> dict[str, Any]:
        return {"smoothed": self.smoothed.to_dicts(), "binned": self.binned.to_dicts()}


def calibration_curve(
    y: ArrayLike,
    prob: ArrayLike,
    *,
    n_bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
    level: float = 0.95,
    grid: int = 101,
    span: float = 0.75,
) -> CalibrationCurve:
    """Smoothed and binned calibration curves for plotting.

    Parameters
    ----------
    y : array-like of 0/1
    prob : array-like of float in [0, 1]
    n_bins : int
        Number of bins.
    strategy : {"quantile", "uniform"}
        Bins with equal counts (deciles of risk by default) or equal widths.
    level : float
        Level of the Wilson intervals (Wilson, JASA 1927) of each bin.
    grid : int
        Points of the smoothed curve, evenly spaced over the range of ``prob``.
    span : float
        Loess span (Austin & Steyerberg, Stat Med 2019, use R's default 0.75).

    Returns
    -------
    CalibrationCurve
    """
    level = v.level_ok(level)
    yy = v.binary_y(y)
    p = v.probability(prob)
    v.same_length(y=yy, prob=p)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    xs = np.linspace(float(p.min()), float(p.max()), int(grid))
    sm = np.clip(loess(p, yy.astype(np.float64), xs, span=span), 0.0, 1.0)
    smoothed = pl.DataFrame({"prob": xs, "observed": sm})

    if strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    idx = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        k, n = int(yy[sel].sum()), int(sel.sum())
        if n == 0:
            continue
        lo, hi = wilson_interval(k, n, level)
        rows.append(
            {"bin": b, "n": n, "events": k, "mean_prob": float(p[sel].mean()),
             "observed": k / n, "low": lo, "high": hi}
        )
    binned = pl.DataFrame(rows, schema={"bin": pl.Int64, "n": pl.Int64, "events": pl.Int64,
                                        "mean_prob": pl.Float64, "observed": pl.Float64,
                                        "low": pl.Float64, "high": pl.Float64})
    return CalibrationCurve(smoothed, binned)
