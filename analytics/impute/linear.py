"""Bayesian linear regression draws and predictive mean matching, as mice's ``.norm.draw``, ``mice.impute.norm``
and ``mice.impute.pmm``.

* The draw (Rubin 1987, p. 167; van Buuren 2018, §3.2, algorithm 3.1): least squares by QR, then
  ``σ* = sqrt(RSS / χ²(n_obs − p))`` and ``β* = β̂ + σ* L z`` with ``L`` the Cholesky factor of ``(X'X)⁻¹``
  (a ridge of ``1e-5 · diag(X'X)`` where ``X'X`` cannot be inverted, as mice's ``estimice``).
* Predictive mean matching, type 1 (van Buuren 2018, §3.4, algorithm 3.3; Little 1988, J Bus Econ Stat 6:287):
  observed cases are predicted with ``β̂``, missing ones with ``β*``, and each missing case takes the observed
  value of one of its ``donors`` (5) nearest observed predictions chosen at random, ties broken at random
  (mice's ``matchindex``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from .draws import Draws, per_row_integers, per_row_normal


@dataclass(frozen=True)
class NormDraw:
    """``coef`` (β̂), ``beta`` (β*) and ``sigma`` (σ*) of one draw."""

    coef: np.ndarray
    beta: np.ndarray
    sigma: float


def norm_draw(y: np.ndarray, x: np.ndarray, rng: Draws, ridge: float = 1e-5) -> NormDraw:
    """One draw of the regression parameters given the observed ``y`` and design ``x`` (with intercept)."""
    n, p = x.shape
    df = max(n - p, 1)
    coef, _, rank, _ = linalg.lstsq(x, y, lapack_driver="gelsy", check_finite=False)
    resid = y - x @ coef
    xtx = x.T @ x
    try:
        if rank < p:
            raise np.linalg.LinAlgError
        v = linalg.inv(xtx, check_finite=False)
        chol = linalg.cholesky((v + v.T) / 2, lower=True, check_finite=False)
    except (np.linalg.LinAlgError, linalg.LinAlgError):
        v = linalg.inv(xtx + np.diag(np.diag(xtx) * ridge), check_finite=False)
        chol = linalg.cholesky((v + v.T) / 2, lower=True, check_finite=False)
    sigma = float(np.sqrt(np.sum(resid**2) / rng.chisquare(df)))
    beta = coef + (chol @ rng.standard_normal(p)) * sigma
    return NormDraw(coef, beta, sigma)


def match_donors(yhat_obs: np.ndarray, yhat_mis: np.ndarray, donors: int, rng: Draws) -> np.ndarray:
    """For each missing case, the index (into the observed cases) of a donor drawn from its ``donors`` nearest."""
    n_obs = yhat_obs.size
    k = max(1, min(donors, n_obs))
    # a random order first, so that equal predictions are ranked at random (ties broken as mice's matchindex)
    shuffle = rng.permutation(n_obs)
    order = shuffle[np.argsort(yhat_obs[shuffle], kind="stable")]
    sorted_obs = yhat_obs[order]
    pos = np.searchsorted(sorted_obs, yhat_mis)
    # the k nearest lie within k places either side of the insertion point
    window = pos[:, None] + np.arange(-k, k)[None, :]
    valid = (window >= 0) & (window < n_obs)
    dist = np.where(valid, np.abs(sorted_obs[np.clip(window, 0, n_obs - 1)] - yhat_mis[:, None]), np.inf)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    pick = nearest[np.arange(yhat_mis.size), per_row_integers(rng, k, yhat_mis.size)]
    return order[np.clip(window[np.arange(yhat_mis.size), pick], 0, n_obs - 1)]


def pmm(y: np.ndarray, ry: np.ndarray, x: np.ndarray, wy: np.ndarray, rng: Draws,
        donors: int = 5) -> np.ndarray:
    """Imputations of ``y[wy]`` by type-1 predictive mean matching (observed values only).

    Parameters
    ----------
    y : ndarray (n,)
        The variable (NaN where missing; level codes for a category).
    ry : ndarray of bool (n,)
        The rows the model is fitted on (observed and not ignored).
    x : ndarray (n, p)
        The predictors, without intercept.
    wy : ndarray of bool (n,)
        The rows to impute.
    rng : numpy Generator
    donors : int

    Returns
    -------
    ndarray (wy.sum(),)
    """
    xi = np.column_stack([np.ones(x.shape[0]), x])
    yobs = y[ry]
    draw = norm_draw(yobs, xi[ry], rng)
    idx = match_donors(xi[ry] @ draw.coef, xi[wy] @ draw.beta, donors, rng)
    return yobs[idx]


def norm(y: np.ndarray, ry: np.ndarray, x: np.ndarray, wy: np.ndarray, rng: Draws) -> np.ndarray:
    """Imputations of ``y[wy]`` from the Bayesian linear regression, as ``mice.impute.norm``."""
    xi = np.column_stack([np.ones(x.shape[0]), x])
    draw = norm_draw(y[ry], xi[ry], rng)
    return xi[wy] @ draw.beta + per_row_normal(rng, int(wy.sum())) * draw.sigma
