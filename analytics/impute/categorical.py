"""Imputation of categories with three or more levels, as mice's ``mice.impute.polyreg`` and ``mice.impute.polr``.

Both augment the data as :func:`analytics.impute.logistic.augment`, fit a weighted model by maximum likelihood
(no parameter draw, as mice), and draw each missing case's level from its predicted probabilities by one
uniform (van Buuren 2018, §3.6):

* ``polyreg``: multinomial logistic regression (``nnet::multinom``), by Newton-Raphson;
* ``polr``: the proportional-odds model (McCullagh, JRSS B 1980;42:109-142; ``MASS::polr``),
  ``P(Y ≤ k | x) = expit(ζ_k − x'β)``, by quasi-Newton on increasing cut-points; a fit that fails falls back
  to ``polyreg``, as mice's does.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize
from scipy.special import expit, softmax

from .draws import Draws, per_row_random
from .logistic import augment


def _draw(prob: np.ndarray, rng: Draws) -> np.ndarray:
    """One level per row: the number of cumulative probabilities below a uniform (mice's ``un > cumsum``)."""
    u = per_row_random(rng, prob.shape[0])
    cum = np.cumsum(prob, axis=1)
    return np.minimum((u[:, None] > cum).sum(axis=1), prob.shape[1] - 1).astype(np.float64)


def multinomial_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, k: int, max_iter: int = 100, tol: float = 1e-10
                    ) -> np.ndarray:
    """Weighted multinomial logit by Newton-Raphson; coefficients (p, k) with the first level's column zero."""
    n, p = x.shape
    onehot = (y[:, None] == np.arange(k)[None, :]).astype(np.float64)
    beta = np.zeros((p, k - 1))

    def loglik(b: np.ndarray) -> float:
        eta = np.column_stack([np.zeros(n), x @ b])
        top = eta.max(axis=1)
        lse = top + np.log(np.exp(eta - top[:, None]).sum(axis=1))
        return float(w @ ((onehot * eta).sum(axis=1) - lse))

    ll = loglik(beta)
    for _ in range(max_iter):
        prob = softmax(np.column_stack([np.zeros(n), x @ beta]), axis=1)[:, 1:]
        grad = x.T @ (w[:, None] * (onehot[:, 1:] - prob))
        hess = np.empty((p * (k - 1), p * (k - 1)))
        for a in range(k - 1):
            for c in range(a, k - 1):
                wac = w * prob[:, a] * ((a == c) - prob[:, c])
                block = (x * wac[:, None]).T @ x
                hess[a * p:(a + 1) * p, c * p:(c + 1) * p] = block
                hess[c * p:(c + 1) * p, a * p:(a + 1) * p] = block.T
        try:
            step = linalg.solve(hess + 1e-10 * np.eye(hess.shape[0]), grad.T.reshape(-1), assume_a="pos",
                                check_finite=False)
        except (linalg.LinAlgError, ValueError):
            step = linalg.lstsq(hess, grad.T.reshape(-1), check_finite=False)[0]
        step_m = step.reshape(k - 1, p).T
        t = 1.0
        while True:
            new = beta + t * step_m
            new_ll = loglik(new)
            if new_ll >= ll - 1e-12 or t < 1e-6:
                break
            t /= 2
        done = abs(new_ll - ll) < tol * (abs(ll) + 1)
        beta, ll = new, new_ll
        if done:
            break
    return np.column_stack([np.zeros(p), beta])


def polyreg(y: np.ndarray, ry: np.ndarray, x: np.ndarray, wy: np.ndarray, rng: Draws,
            n_levels: int) -> np.ndarray:
    """Imputations (level codes) of ``y[wy]`` by multinomial logistic regression."""
    ya, rya, xa, wya, w = augment(y, ry, x, wy)
    observed = np.unique(ya[rya]).astype(np.int64)
    if observed.size == 1:
        return np.full(int(wy.sum()), float(observed[0]))
    # levels never observed cannot be drawn: fit on the observed ones (coded 0..k-1 by searchsorted) and map back
    yy = np.searchsorted(observed, ya[rya].astype(np.int64)).astype(np.float64)
    xi = np.column_stack([np.ones(xa.shape[0]), xa])
    coef = multinomial_fit(xi[rya], yy, w[rya], observed.size)
    prob = softmax(xi[wya] @ coef, axis=1)
    return observed[_draw(prob, rng).astype(np.int64)].astype(np.float64)


def _polr_negll(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    p = x.shape[1]
    beta, a, logd = theta[:p], theta[p], theta[p + 1:]
    zeta = a + np.r_[0.0, np.cumsum(np.exp(logd))]
    eta = x @ beta
    yi = y.astype(np.int64)
    upper = np.where(yi < k - 1, zeta[np.minimum(yi, k - 2)] - eta, np.inf)
    lower = np.where(yi > 0, zeta[np.maximum(yi - 1, 0)] - eta, -np.inf)
    fu, fl = expit(upper), expit(lower)
    prob = np.maximum(fu - fl, 1e-300)
    du, dl = fu * (1 - fu), fl * (1 - fl)
    ll = float(np.sum(w * np.log(prob)))
    g_eta = -(du - dl) / prob * w
    g_beta = x.T @ g_eta
    g_zeta = np.zeros(k - 1)
    np.add.at(g_zeta, np.minimum(yi, k - 2)[yi < k - 1], (w * du / prob)[yi < k - 1])
    np.add.at(g_zeta, np.maximum(yi - 1, 0)[yi > 0], -(w * dl / prob)[yi > 0])
    g_a = g_zeta.sum()
    # zeta_j = a + sum_{i<=j} exp(logd_i): d zeta_j / d logd_i = exp(logd_i) for j >= i
    g_logd = np.exp(logd) * np.cumsum(g_zeta[::-1])[::-1][1:]
    return -ll, -np.r_[g_beta, g_a, g_logd]


def polr_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Weighted proportional-odds fit: ``(beta, zeta)``, or None where it does not converge."""
    cum = np.cumsum(np.bincount(y.astype(np.int64), weights=w, minlength=k))[:-1] / w.sum()
    cum = np.clip(cum, 1e-4, 1 - 1e-4)
    zeta0 = np.log(cum / (1 - cum))
    diffs = np.maximum(np.diff(zeta0), 1e-3)
    theta0 = np.r_[np.zeros(x.shape[1]), zeta0[0], np.log(diffs)]
    res = optimize.minimize(_polr_negll, theta0, args=(x, y, w, k), jac=True, method="BFGS",
                            options={"gtol": 1e-8, "maxiter": 500})
    if not (res.success or res.status == 2) or not np.all(np.isfinite(res.x)):
        return None
    p = x.shape[1]
    beta = res.x[:p]
    zeta = res.x[p] + np.r_[0.0, np.cumsum(np.exp(res.x[p + 1:]))]
    return beta, zeta


def polr(y: np.ndarray, ry: np.ndarray, x: np.ndarray, wy: np.ndarray, rng: Draws,
         n_levels: int) -> np.ndarray:
    """Imputations (level codes) of ``y[wy]`` by the proportional-odds model, falling back to ``polyreg``."""
    ya, rya, xa, wya, w = augment(y, ry, x, wy)
    observed = np.unique(ya[rya]).astype(np.int64)
    if observed.size < 3:
        return polyreg(y, ry, x, wy, rng, n_levels)
    yy = np.searchsorted(observed, ya[rya].astype(np.int64)).astype(np.float64)
    # centred predictors make the cut-points and slopes nearly orthogonal, which the quasi-Newton fit likes
    centre = xa[rya].mean(axis=0)
    fit = polr_fit(xa[rya] - centre, yy, w[rya], observed.size)
    if fit is None:
        return polyreg(y, ry, x, wy, rng, n_levels)
    beta, zeta = fit
    eta = (xa[wya] - centre) @ beta
    cdf = expit(zeta[None, :] - eta[:, None])
    prob = np.diff(np.column_stack([np.zeros(eta.size), cdf, np.ones(eta.size)]), axis=1)
    return observed[_draw(prob, rng).astype(np.int64)].astype(np.float64)
