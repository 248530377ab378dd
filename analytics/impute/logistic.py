"""Logistic regression imputation of a binary variable, as mice's ``mice.impute.logreg`` with ``augment``.

Data augmentation (White, Daniel & Royston, Comput Stat Data Anal 2010;54:2267-2275; mice's ``augment``): for
each predictor and each category, two pseudo-observations at the predictor's mean ± half its SD (clipped to its
range), the other predictors at their means, with total weight ``p + 1``, so that perfect prediction cannot make
the fit diverge. The weighted logistic fit (IRLS, as ``glm.fit``) gives ``β̂`` and ``(X'WX)⁻¹``; one draw
``β* = β̂ + L z`` gives the probabilities, and each missing case is 1 where a uniform is at most its probability
(van Buuren 2018, §3.6, algorithm 3.4).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.special import expit

from .draws import Draws, per_row_random


def augment(y: np.ndarray, ry: np.ndarray, x: np.ndarray, wy: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``y, ry, x, wy, w`` with mice's augmentation rows appended (weight ``(p + 1) / (2 p K)`` each)."""
    n, p = x.shape
    cats = np.unique(y[ry])
    k = cats.size
    if p == 0 or int((~ry).sum()) == 1:
        return y, ry, x, wy, np.ones(n)
    xo = x
    mean = xo.mean(axis=0)
    sd = xo.std(axis=0, ddof=1)
    nr = 2 * p * k
    d = np.tile(mean, (nr, 1))
    rows = np.arange(nr)
    col = rows // (2 * k)
    d[rows, col] += np.where(rows % 2 == 0, 0.5, -0.5) * sd[col]
    d = np.clip(d, xo.min(axis=0), xo.max(axis=0))
    e = np.tile(np.repeat(cats, 2), p)
    w = np.r_[np.ones(n), np.full(nr, (p + 1) / nr)]
    return (np.r_[y, e], np.r_[ry, np.ones(nr, dtype=bool)], np.vstack([x, d]), np.r_[wy, np.zeros(nr, dtype=bool)], w)


def weighted_logit(x: np.ndarray, y: np.ndarray, w: np.ndarray, max_iter: int = 25, tol: float = 1e-8
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted logistic regression by IRLS (``glm.fit``'s stopping rule); ``β̂`` and the unscaled covariance."""
    beta = np.zeros(x.shape[1])
    mu = (w * y + 0.5) / (w + 1.0)
    eta = np.log(mu / (1 - mu))
    dev_old = np.inf
    for _ in range(max_iter):
        mu = expit(eta)
        var = np.maximum(mu * (1 - mu), 1e-12)
        z = eta + (y - mu) / var
        ww = w * var
        sw = np.sqrt(ww)
        beta, *_ = linalg.lstsq(x * sw[:, None], z * sw, lapack_driver="gelsy", check_finite=False)
        eta = x @ beta
        mu = expit(eta)
        dev = -2.0 * float(np.sum(w * (y * np.log(np.maximum(mu, 1e-300)) + (1 - y) * np.log(np.maximum(1 - mu, 1e-300)))))
        if abs(dev - dev_old) / (abs(dev) + 0.1) < tol:
            break
        dev_old = dev
    ww = w * np.maximum(mu * (1 - mu), 1e-12)
    info = (x * ww[:, None]).T @ x
    cov = linalg.pinvh(info, check_finite=False)
    return beta, cov


def logreg(y: np.ndarray, ry: np.ndarray, x: np.ndarray, wy: np.ndarray, rng: Draws) -> np.ndarray:
    """Imputations (0/1 codes) of ``y[wy]`` by Bayesian logistic regression with augmentation."""
    ya, rya, xa, wya, w = augment(y, ry, x, wy)
    xi = np.column_stack([np.ones(xa.shape[0]), xa])
    beta, cov = weighted_logit(xi[rya], ya[rya], w[rya])
    try:
        chol = linalg.cholesky((cov + cov.T) / 2, lower=True, check_finite=False)
    except linalg.LinAlgError:
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
        chol = vecs * np.sqrt(np.maximum(vals, 0.0))
    beta_star = beta + chol @ rng.standard_normal(beta.size)
    prob = expit(xi[wya] @ beta_star)
    return (per_row_random(rng, prob.size) <= prob).astype(np.float64)
