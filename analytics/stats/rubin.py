"""Rubin's rules for multiply imputed data, equal to R ``mice::pool``, ``summary.mipo``, ``mice::D1`` and ``mice::D3``.

* :func:`pool`: per-coefficient pooling (Rubin, *Multiple Imputation for Nonresponse in Surveys*, 1987, §3.1) with
  the small-sample degrees of freedom of Barnard & Rubin (Biometrika 1999;86:948-955), as ``mice::pool`` with
  ``rule = "rubin1987"`` and ``summary(pool(fit), conf.int = TRUE)`` (van Buuren, *Flexible Imputation of Missing
  Data*, 2nd ed. 2018, §5.2). ``dfcom`` is the complete-data degrees of freedom: ``n - p`` for ``glm`` and
  ``events - p`` for ``coxph``, as mice's ``get.dfcom`` takes them (:func:`dfcom_glm`, :func:`dfcom_cox`).
* :func:`d1`: the multivariate Wald test of Li, Raghunathan & Rubin (JASA 1991;86:1065-1073) with the
  denominator degrees of freedom of Reiter (Biometrika 2007;94:502-508) when ``dfcom`` is finite, as ``mice::D1``
  (which calls ``mitml::testModels(method = "D1")``).
* :func:`d3`: the likelihood-ratio test of Meng & Rubin (Biometrika 1992;79:103-111), as ``mice::D3``;
  :func:`logistic_loglik_at` gives the log-likelihoods at the pooled coefficients the way mice's ``fix.coef``
  does for a ``glm`` (the linear predictor as an offset, the intercept re-estimated).
* :func:`pool_scalar`: one performance statistic (AUC, C, calibration slope, Brier) pooled on a scale where it is
  closer to normal and back-transformed (Marshall, Altman, Holder & Royston, BMC Med Res Methodol 2009;9:57;
  Wood, Royston & White, Biom J 2015;57:614-632).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps
from scipy.special import expit

# mice's barnard.rubin floors lambda here before computing the degrees of freedom
_LAMBDA_FLOOR = 1e-4


# ----------------------------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class PooledTable:
    """Per-term pooled estimates: the columns of ``mice::pool(fit)$pooled`` and ``summary(..., conf.int = TRUE)``.

    Attributes
    ----------
    term : list of str
    m : int
        Number of imputations.
    estimate, ubar, b, t : ndarray
        Pooled estimate (mean over imputations), within-, between- and total variance.
    dfcom : float
        Complete-data degrees of freedom (``inf`` for large-sample).
    df, riv, lambda_, fmi : ndarray
        Barnard-Rubin degrees of freedom, relative increase in variance, proportion of the variance due to the
        missing data, fraction of missing information.
    std_error, statistic, p_value, conf_low, conf_high : ndarray
        ``sqrt(t)``, ``estimate / std_error``, the two-sided t-test p and the t interval at ``level``.
    level : float
    """

    term: list[str]
    m: int
    estimate: np.ndarray
    ubar: np.ndarray
    b: np.ndarray
    t: np.ndarray
    dfcom: float
    df: np.ndarray
    riv: np.ndarray
    lambda_: np.ndarray
    fmi: np.ndarray
    std_error: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray
    conf_low: np.ndarray
    conf_high: np.ndarray
    level: float = 0.95

    def rows(self) -> list[dict[str, float | str | int]]:
        """One dict per term, in the column order of the coefficient table (``lambda`` spelt as mice spells it)."""
        out: list[dict[str, float | str | int]] = []
        for i, name in enumerate(self.term):
            out.append({"term": name, "m": self.m, "estimate": float(self.estimate[i]), "ubar": float(self.ubar[i]),
                        "b": float(self.b[i]), "t": float(self.t[i]), "dfcom": float(self.dfcom),
                        "df": float(self.df[i]), "riv": float(self.riv[i]), "lambda": float(self.lambda_[i]),
                        "fmi": float(self.fmi[i]), "std_error": float(self.std_error[i]),
                        "statistic": float(self.statistic[i]), "p_value": float(self.p_value[i]),
                        "conf_low": float(self.conf_low[i]), "conf_high": float(self.conf_high[i])})
        return out


@dataclass(frozen=True)
class PooledTest:
    """A pooled test of several coefficients: ``mice::D1`` / ``mice::D3``'s ``result`` row.

    Attributes
    ----------
    statistic : float
        The F statistic.
    df1, df2 : float
        Numerator (number of tested parameters) and denominator degrees of freedom.
    p : float
    riv : float
        Average relative increase in variance due to the missing data.
    m : int
    method : str
        ``"D1"`` or ``"D3"``.
    dfcom : float
    """

    statistic: float
    df1: float
    df2: float
    p: float
    riv: float
    m: int
    method: str
    dfcom: float


@dataclass(frozen=True)
class PooledScalar:
    """One performance statistic pooled over imputations on a transformed scale, back-transformed.

    Attributes
    ----------
    estimate, low, high : float
        Back-transformed pooled estimate and interval.
    level : float
    transform : str
        ``"logit"``, ``"log"`` or ``"identity"``: the scale the pooling ran on.
    scale : PooledTable
        The one-row pooling on that scale (its ``fmi`` is the statistic's fraction of missing information).
    """

    estimate: float
    low: float
    high: float
    level: float
    transform: str
    scale: PooledTable

    @property
    def fmi(self) -> float:
        """Fraction of missing information of the statistic, on the pooling scale."""
        return float(self.scale.fmi[0])


# ----------------------------------------------------------------------------------------------- pooling
def dfcom_glm(n: int, p: int) -> float:
    """Complete-data degrees of freedom of a glm as mice takes them: its residual df, ``n - p`` (p with intercept)."""
    return float(max(n - p, 1))


def dfcom_cox(events: int, p: int) -> float:
    """Complete-data degrees of freedom of a Cox model as mice's ``get.dfcom``: ``max(events - p, 1)``."""
    return float(max(events - p, 1))


def barnard_rubin(m: int, b: ArrayLike, t: ArrayLike, dfcom: float = math.inf) -> np.ndarray:
    """Barnard & Rubin (1999) degrees of freedom, as mice's ``barnard.rubin`` (lambda floored at 1e-4).

    Parameters
    ----------
    m : int
        Number of imputations.
    b, t : array-like
        Between-imputation and total variance.
    dfcom : float
        Complete-data degrees of freedom; ``inf`` gives Rubin's (1987) ``(m - 1) / lambda^2``.

    Returns
    -------
    ndarray
    """
    b_ = np.asarray(b, dtype=np.float64)
    t_ = np.asarray(t, dtype=np.float64)
    lam = np.maximum((1.0 + 1.0 / m) * b_ / t_, _LAMBDA_FLOOR)
    dfold = (m - 1) / lam**2
    if math.isinf(dfcom):
        return dfold
    dfobs = (dfcom + 1.0) / (dfcom + 3.0) * dfcom * (1.0 - lam)
    return dfold * dfobs / (dfold + dfobs)


def _variances(variances: ArrayLike, m: int, p: int) -> np.ndarray:
    """The (m, p) within-imputation variances from variances (m, p) or covariance matrices (m, p, p)."""
    v = np.asarray(variances, dtype=np.float64)
    if v.ndim == 3:
        v = np.diagonal(v, axis1=1, axis2=2)
    if v.ndim == 1 and p == 1:
        v = v[:, None]
    if v.shape != (m, p):
        raise ValueError(f"variances have shape {v.shape}; expected ({m}, {p}) or ({m}, {p}, {p})")
    return v


def pool(estimates: ArrayLike, variances: ArrayLike, dfcom: float = math.inf, names: Sequence[str] | None = None,
         level: float = 0.95) -> PooledTable:
    """Pool per-imputation estimates by Rubin's rules, as ``mice::pool`` and ``summary(conf.int = TRUE)``.

    Rubin (1987): the pooled estimate is the mean of the m estimates, the total variance
    ``t = ubar + (1 + 1/m) b`` with ``ubar`` the mean within-imputation variance and ``b`` the sample variance of
    the estimates; degrees of freedom after Barnard & Rubin (1999); ``riv = (1 + 1/m) b / ubar``,
    ``lambda = (1 + 1/m) b / t``, ``fmi = (riv + 2 / (df + 3)) / (riv + 1)`` (van Buuren 2018, §2.3.5).

    Parameters
    ----------
    estimates : array-like (m, p)
        One row of coefficients per completed data set.
    variances : array-like (m, p) or (m, p, p)
        Their squared standard errors, or covariance matrices.
    dfcom : float
        Complete-data degrees of freedom (:func:`dfcom_glm`, :func:`dfcom_cox`); ``inf`` for large samples.
    names : sequence of str, optional
        Term names; default ``x1 .. xp``.
    level : float
        Confidence level of the t interval.

    Returns
    -------
    PooledTable
    """
    q = np.asarray(estimates, dtype=np.float64)
    if q.ndim == 1:
        q = q[:, None]
    if q.ndim != 2:
        raise ValueError(f"estimates must be (m, p), got shape {q.shape}")
    m, p = q.shape
    if m < 2:
        raise ValueError(f"Rubin's rules need at least 2 imputations, got {m}")
    u = _variances(variances, m, p)
    if not (np.isfinite(q).all() and np.isfinite(u).all()):
        raise ValueError("an estimate or variance is missing or not finite")
    terms = [str(n) for n in names] if names is not None else [f"x{j + 1}" for j in range(p)]
    if len(terms) != p:
        raise ValueError(f"{len(terms)} names for {p} estimates")
    qbar = q.mean(axis=0)
    ubar = u.mean(axis=0)
    b = q.var(axis=0, ddof=1)
    t = ubar + (1.0 + 1.0 / m) * b
    dfc = float(max(dfcom, 1.0)) if not math.isinf(dfcom) else math.inf
    df = barnard_rubin(m, b, t, dfc)
    with np.errstate(divide="ignore", invalid="ignore"):
        riv = (1.0 + 1.0 / m) * b / ubar
        lam = (1.0 + 1.0 / m) * b / t
        fmi = (riv + 2.0 / (df + 3.0)) / (riv + 1.0)
        se = np.sqrt(t)
        stat = qbar / se
    dfp = np.maximum(df, 0.001)
    pval = 2.0 * sps.t.sf(np.abs(stat), dfp)
    crit = sps.t.ppf(0.5 + level / 2.0, dfp)
    return PooledTable(terms, m, qbar, ubar, b, t, dfc, df, riv, lam, fmi, se, stat, pval,
                       qbar - crit * se, qbar + crit * se, level)


# ----------------------------------------------------------------------------------------------- D1
def _reiter_df(k: int, m: int, r: float, dfcom: float) -> float:
    """Denominator df of D1: Reiter (2007) for finite ``dfcom``, else Li, Raghunathan & Rubin (1991)."""
    t = k * (m - 1)
    if not math.isinf(dfcom):
        a = r * t / (t - 2)
        vstar = ((dfcom + 1) / (dfcom + 3)) * dfcom
        c0 = 1 / (t - 4)
        c1 = vstar - 2 * (1 + a)
        c2 = vstar - 4 * (1 + a)
        z = (1 / c2 + c0 * (a**2 * c1 / ((1 + a) ** 2 * c2)) + c0 * (8 * a**2 * c1 / ((1 + a) * c2**2)
             + 4 * a**2 / ((1 + a) * c2)) + c0 * (4 * a**2 / (c2 * c1) + 16 * a**2 * c1 / c2**3) + c0 * (8 * a**2 / c2**2))
        return 4 + 1 / z
    return _meng_rubin_df(k, m, r)


def _meng_rubin_df(k: int, m: int, r: float) -> float:
    t = k * (m - 1)
    if t > 4:
        return 4 + (t - 4) * (1 + (1 - 2 / t) / r) ** 2
    return t * (1 + 1 / k) * (1 + 1 / r) ** 2 / 2


def d1(estimates: ArrayLike, covariances: ArrayLike, tested: Sequence[int] | None = None,
       dfcom: float = math.inf) -> PooledTest:
    """Multivariate Wald test that the ``tested`` coefficients are all zero, pooled over imputations (D1).

    Li, Raghunathan & Rubin (1991): ``D1 = qbar' ((1 + r) ubar)^-1 qbar / k`` with the average relative increase
    in variance ``r = (1 + 1/m) tr(B ubar^-1) / k``, referred to F(k, v), ``v`` after Reiter (2007) when ``dfcom``
    is finite; as ``mice::D1(fit1, fit0)`` (``mitml::testModels(method = "D1", df.com = dfcom)``), where the
    tested coefficients are those of ``fit1`` not in ``fit0``.

    Parameters
    ----------
    estimates : array-like (m, p)
    covariances : array-like (m, p, p)
        Each imputation's covariance matrix of its estimates.
    tested : sequence of int, optional
        Indices of the coefficients tested (e.g. the dummies of a factor, the columns of a spline); default all.
    dfcom : float
        Complete-data degrees of freedom of the full model (``n - p`` for glm, ``events - p`` for coxph).

    Returns
    -------
    PooledTest
    """
    q = np.asarray(estimates, dtype=np.float64)
    u = np.asarray(covariances, dtype=np.float64)
    m, p = q.shape
    if u.shape != (m, p, p):
        raise ValueError(f"covariances have shape {u.shape}; expected ({m}, {p}, {p})")
    if m < 2:
        raise ValueError(f"D1 needs at least 2 imputations, got {m}")
    idx = np.arange(p) if tested is None else np.asarray(list(tested), dtype=np.int64)
    k = int(idx.size)
    if k == 0:
        raise ValueError("D1 needs at least one tested coefficient")
    qk = q[:, idx]
    uk = u[:, idx][:, :, idx]
    qbar = qk.mean(axis=0)
    ubar = uk.mean(axis=0)
    bmat = np.atleast_2d(np.cov(qk, rowvar=False, ddof=1))
    r = float((1 + 1 / m) * np.trace(bmat @ np.linalg.inv(ubar)) / k)
    val = float(qbar @ np.linalg.solve((1 + r) * ubar, qbar) / k)
    dfc = float(dfcom)
    v = _reiter_df(k, m, r, dfc)
    return PooledTest(val, float(k), v, float(sps.f.sf(val, k, v)), r, m, "D1", dfc)


# ----------------------------------------------------------------------------------------------- D3
def d3(loglik_full: ArrayLike, loglik_reduced: ArrayLike, loglik_full_pooled: ArrayLike,
       loglik_reduced_pooled: ArrayLike, k: int, dfcom: float = math.inf) -> PooledTest:
    """Likelihood-ratio test of nested models pooled over imputations (D3), as ``mice::D3(fit1, fit0)``.

    Meng & Rubin (1992): with ``dbar`` the mean of the m likelihood-ratio statistics at each imputation's own
    estimates and ``dtilde`` their mean at the pooled estimates, ``r = (m + 1) / (k (m - 1)) (dbar - dtilde)``,
    ``D3 = dtilde / (k (1 + r))`` referred to F(k, w), ``w`` as in Li, Raghunathan & Rubin (1991).

    Parameters
    ----------
    loglik_full, loglik_reduced : array-like (m,)
        Each imputation's maximised log-likelihood of the full and the reduced model.
    loglik_full_pooled, loglik_reduced_pooled : array-like (m,)
        The same, evaluated on each completed data set at the pooled coefficients of each model (for a
        logistic glm: :func:`logistic_loglik_at`, as mice's ``fix.coef``).
    k : int
        Number of coefficients tested (full minus reduced).
    dfcom : float
        Recorded only (mice's D3 does not use it).

    Returns
    -------
    PooledTest
    """
    l1, l0 = np.asarray(loglik_full, dtype=np.float64), np.asarray(loglik_reduced, dtype=np.float64)
    p1, p0 = np.asarray(loglik_full_pooled, dtype=np.float64), np.asarray(loglik_reduced_pooled, dtype=np.float64)
    m = int(l1.size)
    if m < 2 or not (l0.size == p1.size == p0.size == m):
        raise ValueError("D3 needs the same number (at least 2) of log-likelihoods for each model")
    if k < 1:
        raise ValueError(f"D3 needs a positive number of tested coefficients, got {k}")
    dev_m = float(np.mean(-2 * l0 + 2 * l1))
    dev_l = float(np.mean(-2 * p0 + 2 * p1))
    rm = ((m + 1) / (k * (m - 1))) * (dev_m - dev_l)
    dm = dev_l / (k * (1 + rm))
    w = _meng_rubin_df(k, m, rm)
    return PooledTest(dm, float(k), w, float(sps.f.sf(dm, k, w)), rm, m, "D3", float(dfcom))


def logistic_loglik_at(design: ArrayLike, y: ArrayLike, beta: ArrayLike, max_iter: int = 100,
                       tol: float = 1e-12) -> float:
    """Binomial log-likelihood at fixed coefficients, as mice's ``fix.coef`` evaluates a glm for D3.

    ``fix.coef`` refits ``update(model, . ~ 1, offset = X beta)``: the linear predictor at ``beta`` enters as an
    offset and an intercept is estimated on top of it (by Newton's method here), so the value is the maximum
    over that one shift.

    Parameters
    ----------
    design : array-like (n, p)
        The design with its intercept column, in the order of ``beta``.
    y : array-like of 0/1
    beta : array-like (p,)

    Returns
    -------
    float
    """
    x = np.asarray(design, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    off = x @ np.asarray(beta, dtype=np.float64)
    a = 0.0
    for _ in range(max_iter):
        mu = expit(off + a)
        w = float(np.sum(mu * (1 - mu)))
        step = float(np.sum(yy - mu)) / w
        a += step
        if abs(step) < tol * (1 + abs(a)):
            break
    eta = off + a
    return float(np.sum(yy * eta - np.logaddexp(0.0, eta)))


# ----------------------------------------------------------------------------------------------- scalars
Transform = Literal["logit", "log", "identity"]


def pool_scalar(estimates: ArrayLike, std_errors: ArrayLike, transform: Transform = "logit",
                dfcom: float = math.inf, level: float = 0.95) -> PooledScalar:
    """Pool one performance statistic over imputations on a transformed scale (Wood, Royston & White 2015).

    Each imputation's estimate ``θ_i`` and standard error are carried to ``g(θ)`` by the delta method
    (``se_g = se · g'(θ)``), pooled there by Rubin's rules (:func:`pool`) and the estimate and interval are
    back-transformed. Marshall et al. (2009) and Wood, Royston & White (2015) recommend the logit scale for the
    AUC and the C statistic; ``log`` suits a ratio, ``identity`` a calibration intercept or slope.

    Parameters
    ----------
    estimates, std_errors : array-like (m,)
        The statistic and its within-imputation standard error on each completed data set.
    transform : {"logit", "log", "identity"}
    dfcom : float
        Complete-data degrees of freedom (default large-sample).
    level : float

    Returns
    -------
    PooledScalar
    """
    th = np.asarray(estimates, dtype=np.float64).reshape(-1)
    se = np.asarray(std_errors, dtype=np.float64).reshape(-1)
    if th.size != se.size:
        raise ValueError(f"{th.size} estimates and {se.size} standard errors")
    if transform == "logit":
        if np.any((th <= 0) | (th >= 1)):
            raise ValueError("a logit-scale statistic must lie strictly between 0 and 1")
        g, dg = np.log(th / (1 - th)), 1.0 / (th * (1 - th))
        back = expit
    elif transform == "log":
        if np.any(th <= 0):
            raise ValueError("a log-scale statistic must be positive")
        g, dg = np.log(th), 1.0 / th
        back = np.exp
    elif transform == "identity":
        g, dg = th, np.ones_like(th)

        def back(v: np.ndarray) -> np.ndarray:
            return v
    else:
        raise ValueError(f"unknown transform {transform!r}; expected logit, log or identity")
    table = pool(g[:, None], ((se * dg) ** 2)[:, None], dfcom=dfcom, names=["statistic"], level=level)
    est, lo, hi = (float(back(np.asarray(v))[0]) for v in (table.estimate, table.conf_low, table.conf_high))
    return PooledScalar(est, lo, hi, level, transform, table)
