"""A Cox model fitted as R's ``survival::coxph.fit`` does (Efron ties, Newton-Raphson from 0 with step
halving, stop when ``|1 - loglik_old / loglik_new| <= eps``), so that refits on R's resamples give
``cph``'s coefficients to the last digits (rms fits with ``iter.max = 10, eps = 1e-4``, far from the
exact maximiser).  Written for the tests from the Efron (JASA 1977) likelihood, independently of the
one-covariate code in analytics.stats.internal_measures."""

from __future__ import annotations

import numpy as np


def efron(time: np.ndarray, event: np.ndarray, X: np.ndarray, beta: np.ndarray):
    """Log partial likelihood, score and information matrix, one event time at a time."""
    Xc = X - X.mean(axis=0)
    eta = Xc @ beta
    r = np.exp(eta)
    ll, p = 0.0, X.shape[1]
    u, imat = np.zeros(p), np.zeros((p, p))
    for t in np.unique(time[event == 1]):
        risk = time >= t
        dead = (time == t) & (event == 1)
        d = int(dead.sum())
        s0, s1 = r[risk].sum(), (r[risk, None] * Xc[risk]).sum(axis=0)
        s2 = (r[risk, None, None] * Xc[risk, :, None] * Xc[risk, None, :]).sum(axis=0)
        d0, d1 = r[dead].sum(), (r[dead, None] * Xc[dead]).sum(axis=0)
        d2 = (r[dead, None, None] * Xc[dead, :, None] * Xc[dead, None, :]).sum(axis=0)
        ll += eta[dead].sum()
        u += Xc[dead].sum(axis=0)
        for k in range(d):
            f = k / d
            a0, a1, a2 = s0 - f * d0, s1 - f * d1, s2 - f * d2
            ll -= np.log(a0)
            u -= a1 / a0
            imat += a2 / a0 - np.outer(a1, a1) / a0 ** 2
    return ll, u, imat


def coxph(time, event, X, iter_max: int = 10, eps: float = 1e-4) -> np.ndarray:
    beta = np.zeros(X.shape[1])
    ll, u, imat = efron(time, event, X, beta)
    new = beta + np.linalg.solve(imat, u)
    halving = 0
    for it in range(1, iter_max + 1):
        newlk, u_new, i_new = efron(time, event, X, new)
        if abs(1 - ll / newlk) <= eps and halving == 0:
            return new
        if it == iter_max:
            break
        if newlk < ll:
            halving += 1
            new = (new + beta) / 2
        else:
            halving = 0
            ll, beta = newlk, new
            new = new + np.linalg.solve(i_new, u_new)
    return beta
