"""Maximum-likelihood logistic regression, fitted as R's ``glm(family = binomial)`` fits it.

:class:`MLLogistic` is the classifier of ``kind = "logistic"`` with ``params.penalty = "none"``.
It maximises the binomial log-likelihood by Newton-Raphson, which for the canonical logit link
is iteratively reweighted least squares (McCullagh & Nelder, *Generalized Linear Models*, 2nd
ed. 1989, §2.5; Green 1984, JRSS B 46:149), each step solved by a QR decomposition of the
weighted design, with step-halving if the deviance rises, and it stops at a far tighter
tolerance than ``glm``'s (``epsilon = 1e-8`` on the relative deviance change), so the
estimates are the maximum-likelihood ones to rounding. The covariance is the inverse Fisher
information at the estimates.

A fit that has no finite maximum is refused rather than returned as a number:

* a design whose columns are linearly dependent (with the intercept): R gives ``NA`` for the
  aliased coefficients; the error names the columns that add nothing to the earlier ones;
* separation (Albert & Anderson 1984, Biometrika 71:1): a linear combination of the columns
  classifies every patient (complete) or every patient but ties (quasi-complete), so a
  coefficient diverges; detected, when the fitted probabilities become numerically 0 or 1 (as
  ``glm`` warns) or the iterations do not settle, by the linear program of Konis (2007,
  *Linear programming algorithms for detecting separated data in binary logistic regression
  models*, DPhil thesis, Oxford; R's ``safeBinaryRegression`` / ``detectseparation``), whose
  solution names the columns involved;
* no convergence within ``max_iter`` iterations.

Only numpy arrays and numbers are kept on the fitted object (it is saved with skops).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import linalg
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin

from pipeline.errors import CohortlabError

# glm's threshold for "fitted probabilities numerically 0 or 1 occurred" (binomial()$family: 10 * .Machine$double.eps)
_NUMERICALLY_01 = 10 * np.finfo(np.float64).eps
# R's lm/glm QR tolerance for an aliased (linearly dependent) column
_ALIAS_TOL = 1e-7


class EstimationError(CohortlabError, ValueError):
    """A logistic design without a finite maximum-likelihood fit; ``columns`` are the 0-based indices (no
    intercept) of the columns involved, ``reason`` what is wrong with them (``aliased``, ``separation``,
    ``convergence``, ``extreme``). Not :class:`analytics.models.formula.DesignError`, which is a formula that
    cannot be built at all."""

    def __init__(self, message: str, columns: Sequence[int] | np.ndarray, reason: str) -> None:
        super().__init__(message)
        self.columns = tuple(int(c) for c in columns)
        self.reason = reason


class MLLogistic(ClassifierMixin, BaseEstimator):
    """Unpenalised (maximum-likelihood) logistic regression with an intercept, equal to R's ``glm``.

    Newton-Raphson / IRLS (McCullagh & Nelder 1989) to convergence; Wald covariance from the inverse
    Fisher information. See the module notes for the refused fits (aliased columns, separation
    after Albert & Anderson 1984 detected as Konis 2007, non-convergence).

    Parameters
    ----------
    feature_names
        Names of the design's columns, used in error messages; default: the DataFrame's column names
        when fitted on one, else ``x[j]``.
    max_iter
        Newton iterations before giving up (``glm``'s default is 25; a well-posed fit needs < 10).
    tol
        Convergence: the largest change of a coefficient, relative to ``1 + |β|``.

    Attributes
    ----------
    classes_, coef_ (1, p), intercept_ (1,)
        As :class:`sklearn.linear_model.LogisticRegression`.
    cov_ : ndarray (p + 1, p + 1)
        Covariance of (intercept, coefficients), intercept first.
    loglik_, loglik_null_ : float
        Log-likelihood of the fit and of the intercept-only model (deviance = -2 loglik for 0/1 data).
    n_iter_ : int
    converged_ : bool
    feature_names_in_ : ndarray of str
        The column names used in messages (set when known).
    """

    def __init__(self, feature_names: Sequence[str] | None = None, max_iter: int = 100, tol: float = 1e-12) -> None:
        self.feature_names = feature_names
        self.max_iter = max_iter
        self.tol = tol

    # --- fitting ------------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> MLLogistic:
        names = self._names(X)
        # C order whatever the input (a pandas frame is column-major): the same products, bit for bit, as for
        # the matrix the design gives without names
        x = np.ascontiguousarray(X, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"a logistic regression needs a 2-d design, got shape {x.shape}")
        y_arr = np.asarray(y)
        self.classes_ = np.unique(y_arr)
        if self.classes_.size != 2:
            raise ValueError(f"a logistic regression needs both outcome classes; got {self.classes_.tolist()}")
        target = (y_arr == self.classes_[1]).astype(np.float64)
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=0))
            raise ValueError(f"missing or infinite values in {_quote(names, bad)}")
        self.n_features_in_ = x.shape[1]
        design = np.column_stack([np.ones(x.shape[0]), x])
        aliased = _aliased(design)
        if aliased.size:
            cols = aliased - 1
            raise EstimationError(f"rank-deficient design: {_quote(names, cols)} "
                              f"{'is a linear combination' if cols.size == 1 else 'are linear combinations'} of the "
                              "intercept and earlier columns (glm would give NA)", cols, "aliased")
        beta, cov, loglik, n_iter, converged = _newton(design, target, self.max_iter, self.tol)
        p = expit(design @ beta)
        extreme = bool(np.any((p < _NUMERICALLY_01) | (p > 1 - _NUMERICALLY_01)))
        if extreme or not converged:
            direction = separation_direction(design, target)
            if direction is not None:
                cols = np.flatnonzero(direction[1:] != 0)
                which = _quote(names, cols) if cols.size else "the intercept alone"
                raise EstimationError(f"separation: {which} predict{'s' if cols.size == 1 else ''} the outcome "
                                  "perfectly for some patients, so a coefficient diverges (glm: fitted probabilities "
                                  "numerically 0 or 1 occurred); merge sparse levels, drop or penalise the "
                                  "variable", cols, "separation")
            if not converged:
                worst = np.asarray([int(np.argmax(np.abs(beta[1:])))] if beta.size > 1 else [], dtype=np.int64)
                raise EstimationError(f"no convergence after {n_iter} Newton iterations (largest coefficient: "
                                  f"{_quote(names, worst)})", worst, "convergence")
            raise EstimationError("fitted probabilities numerically 0 or 1 occurred (as glm warns) without "
                              "separation: check the scale of the inputs", [], "extreme")
        self.intercept_ = beta[:1].copy()
        self.coef_ = beta[1:].reshape(1, -1).copy()
        self.cov_ = cov
        self.loglik_ = float(loglik)
        mean = float(target.mean())
        self.loglik_null_ = float(target.size * (mean * np.log(mean) + (1 - mean) * np.log1p(-mean)))
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        return self

    def _names(self, X: Any) -> list[str] | None:
        if self.feature_names is not None:
            names = [str(n) for n in self.feature_names]
        elif hasattr(X, "columns"):
            names = [str(c) for c in X.columns]
        else:
            return None
        self.feature_names_in_ = np.asarray(names, dtype=object)
        return names

    # --- prediction ---------------------------------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        x = np.ascontiguousarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[-1]} columns; the model was fitted on {self.n_features_in_}")
        return x @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]

    @property
    def se_(self) -> np.ndarray:
        """Wald standard errors of (intercept, coefficients)."""
        return np.sqrt(np.diag(self.cov_))


def _quote(names: Sequence[str] | None, cols: np.ndarray) -> str:
    """``'age', 'stage_3'`` (or ``x[0], x[3]`` without names)."""
    return ", ".join(f"'{names[c]}'" if names is not None and c < len(names) else f"x[{c}]" for c in cols)


def _aliased(design: np.ndarray) -> np.ndarray:
    """Columns of ``design`` that are linear combinations of the columns before them.

    As R's ``lm``/``glm`` (LINPACK ``dqrdc2`` with tolerance 1e-7, limited pivoting): a column whose
    Householder residual is below 1e-7 of its own norm adds nothing, and the later of two dependent
    columns is the one reported.
    """
    norms = np.linalg.norm(design, axis=0)
    r = np.asarray(np.linalg.qr(design, mode="r"))
    diag = np.abs(np.diag(r))
    return np.flatnonzero((diag <= _ALIAS_TOL * np.where(norms > 0, norms, 1.0)) | (norms == 0))


def _loglik(eta: np.ndarray, y: np.ndarray) -> float:
    # y log p + (1 - y) log(1 - p) written without p, stable for large |eta|
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def _newton(design: np.ndarray, y: np.ndarray, max_iter: int, tol: float,
            ) -> tuple[np.ndarray, np.ndarray, float, int, bool]:
    """Newton-Raphson (= IRLS for the logit link) from glm's start, with step-halving when the
    log-likelihood falls. Returns (β, covariance, log-likelihood, iterations, converged)."""
    # glm's starting values: mustart = (y + 0.5) / 2, i.e. eta = logit(mu) with beta from one weighted LS
    mu = (y + 0.5) / 2.0
    eta0 = np.log(mu / (1 - mu))
    w0 = mu * (1 - mu)
    beta = np.linalg.lstsq(design * np.sqrt(w0)[:, None], eta0 * np.sqrt(w0), rcond=None)[0]
    eta = design @ beta
    ll = _loglik(eta, y)
    converged = False
    n_iter = 0
    for it in range(1, max_iter + 1):
        n_iter = it
        p = expit(eta)
        w = p * (1 - p)
        sw = np.sqrt(w)
        # Newton step: solve (X'WX) d = X'(y - p) through the QR of W^1/2 X (as glm's weighted least squares)
        q, r = np.linalg.qr(design * sw[:, None])
        try:
            step = linalg.solve_triangular(r, q.T @ ((y - p) / np.where(sw > 0, sw, 1.0)))
        except np.linalg.LinAlgError:  # weights underflowed to 0: fitted probabilities of 0 or 1 (separation)
            break
        if not np.isfinite(step).all():
            break
        new_beta, new_ll, shrink = beta + step, _loglik(design @ (beta + step), y), 0
        while new_ll < ll - 1e-12 * abs(ll) and shrink < 30:
            step /= 2.0
            shrink += 1
            new_beta = beta + step
            new_ll = _loglik(design @ new_beta, y)
        change = float(np.max(np.abs(new_beta - beta) / (1.0 + np.abs(new_beta))))
        # at the maximum the step is rounding noise: a log-likelihood that no longer moves ends it too
        settled = abs(new_ll - ll) <= 4 * np.finfo(np.float64).eps * abs(ll) and change < 1e-9
        beta, ll, eta = new_beta, new_ll, design @ new_beta
        if change < tol or settled:
            converged = True
            break
    p = expit(eta)
    sw = np.sqrt(p * (1 - p))
    r = np.asarray(np.linalg.qr(design * sw[:, None], mode="r"))
    try:
        r_inv = linalg.solve_triangular(r, np.eye(r.shape[0]))
    except np.linalg.LinAlgError:  # a singular information: the caller refuses the fit (separation)
        r_inv = np.full(r.shape, np.nan)
        converged = False
    cov = r_inv @ r_inv.T  # (X'WX)^-1 at the estimate
    return beta, cov, ll, n_iter, converged


def separation_direction(design: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """A direction ``d`` of (quasi-)complete separation of a binary outcome, or None when there is none.

    Konis (2007)'s linear program: maximise ``sum_i s_i x_i'd`` subject to ``s_i x_i'd >= 0`` for every
    patient and ``-1 <= d_j <= 1``, with ``s_i = +1`` for events and ``-1`` otherwise. The data are
    separated (Albert & Anderson 1984) exactly when the optimum is positive; ``d``'s non-zero entries
    are the columns whose combination separates them.

    Parameters
    ----------
    design
        The model matrix, intercept column included.
    y
        0/1 outcome.
    """
    from scipy.optimize import linprog

    s = np.where(np.asarray(y) > 0.5, 1.0, -1.0)
    scale = np.maximum(np.abs(design).max(axis=0), 1e-300)  # unit-scale columns keep the LP well conditioned
    a = design / scale * s[:, None]
    res = linprog(-a.sum(axis=0), A_ub=-a, b_ub=np.zeros(a.shape[0]), bounds=[(-1.0, 1.0)] * a.shape[1],
                  method="highs")
    if res.status != 0 or -res.fun <= 1e-8 * a.shape[0]:
        return None
    # the fewest columns that separate: among separating directions (margin sum >= 1), the least L1 norm of
    # the non-intercept entries (variables u_j >= |d_j|), so a noise column that merely widens the margin
    # is not named
    n, p = a.shape
    free = np.arange(1, p)
    eye = np.eye(p)[free]
    cost = np.r_[np.zeros(p), np.ones(free.size)]
    a_ub = np.vstack([np.c_[-a, np.zeros((n, free.size))], np.r_[-a.sum(axis=0), np.zeros(free.size)][None, :],
                      np.c_[eye, -np.eye(free.size)], np.c_[-eye, -np.eye(free.size)]])
    b_ub = np.r_[np.zeros(n), -1.0, np.zeros(2 * free.size)]
    sparse = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * p + [(0, None)] * free.size,
                     method="highs")
    d = np.asarray(sparse.x[:p] if sparse.status == 0 else res.x)
    d = d / max(float(np.abs(d).max()), 1e-300)
    d[np.abs(d) < 1e-7] = 0.0
    return d / scale


__all__ = ["EstimationError", "MLLogistic", "separation_direction"]
