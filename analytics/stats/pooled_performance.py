"""Performance of a prediction model pooled over multiply imputed validation data (Wood, Royston & White 2015).

Each of the m completed versions of a validation split gives every statistic with its within-imputation variance;
the m pairs are pooled by Rubin's rules (:func:`analytics.stats.rubin.pool_scalar`: Rubin 1987 with the degrees of
freedom of Barnard & Rubin 1999, as R ``mice::pool.scalar``) on a scale where the statistic is closer to normal,
and the estimate and interval are back-transformed (Wood, Royston & White, Biom J 2015;57:614-632; Marshall,
Altman, Holder & Royston, BMC Med Res Methodol 2009;9:57):

* the AUC on the logit scale with the DeLong variance (DeLong, DeLong & Clarke-Pearson 1988) carried there by the
  delta method, ``var(logit AUC) = var(AUC) / (AUC (1 - AUC))^2`` (:func:`pooled_auc`);
* Harrell's C on the logit scale with its infinitesimal-jackknife variance, R ``survival::concordance``'s
  (:func:`pooled_c_index`);
* the calibration intercept (``logit P(y) = a + offset(logit p)``) and the intercept and slope of logistic
  recalibration (``logit P(y) = a' + b logit p``; Cox 1958) with their glm (inverse-information) variances, on their
  own scale (:func:`pooled_calibration`);
* the Brier score with the variance of a mean, ``var((p - y)^2) / n`` (Bradley, Schwartz & Hashino, Weather and
  Forecasting 2008;23:992-1006), on its own scale (:func:`pooled_brier`);

every one large-sample (``dfcom = inf``, ``mice::pool.scalar``'s default ``n = Inf``), so that identical completions
(no between-imputation variance) give the single-data estimate and interval with no missing information;
* a statistic without an analytic within-imputation variance (IDI, NRI, Brier(t), AUC(t) ...) as the plain mean
  over imputations, flagged ``pooled = "mean"``, with no interval (:func:`pooled_mean`; Wood et al. 2015, §4).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri

from .calibrate import _clip_probability, logistic_fit, logit
from .roc import delong_covariance
from .rubin import Transform, pool_scalar
from .survival import concordance

Pooling = Literal["rubin", "mean"]


@dataclass(frozen=True)
class PooledStatistic:
    """One performance statistic pooled over m imputations.

    Attributes
    ----------
    name : str
    estimate, low, high : float
        Pooled estimate and its interval at ``level``, back-transformed (``low``/``high`` NaN when
        ``pooled == "mean"``).
    level : float
    m : int
        Number of imputations.
    pooled : {"rubin", "mean"}
        ``"rubin"``: Rubin's rules with the within-imputation variances; ``"mean"``: the plain mean over
        imputations (no within-imputation variance).
    transform : str
        The pooling scale: ``"logit"``, ``"identity"`` (``"none"`` for a mean).
    qbar, ubar, b, t : float
        On the pooling scale: pooled estimate, mean within-imputation variance, between-imputation variance and
        total variance ``ubar + (1 + 1/m) b`` (NaN for a mean, except ``qbar`` and ``b``).
    df, riv, fmi : float
        Barnard-Rubin degrees of freedom, relative increase in variance and fraction of missing information
        (NaN for a mean).
    per_imputation : tuple of float
        The statistic on each completed data set.
    method : str
        How it was pooled, in words.
    """

    name: str
    estimate: float
    low: float
    high: float
    level: float
    m: int
    pooled: Pooling
    transform: str
    qbar: float
    ubar: float
    b: float
    t: float
    df: float
    riv: float
    fmi: float
    per_imputation: tuple[float, ...]
    method: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinities as None)."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"name": self.name, "estimate": num(self.estimate), "low": num(self.low), "high": num(self.high),
                "level": self.level, "m": self.m, "pooled": self.pooled, "transform": self.transform,
                "qbar": num(self.qbar), "ubar": num(self.ubar), "b": num(self.b), "t": num(self.t),
                "df": num(self.df), "riv": num(self.riv), "fmi": num(self.fmi),
                "per_imputation": [num(x) for x in self.per_imputation], "method": self.method}


def pool_statistic(name: str, estimates: ArrayLike, variances: ArrayLike, transform: Transform = "identity",
                   dfcom: float = math.inf, level: float = 0.95, method: str = "") -> PooledStatistic:
    """Pool one statistic's per-imputation estimates and within-imputation variances by Rubin's rules.

    The estimates and variances are carried to the ``transform`` scale by the delta method, pooled there by Rubin
    (1987) with Barnard & Rubin (1999) degrees of freedom (``dfcom``: complete-data degrees of freedom, ``inf`` for
    large samples), and the estimate and t interval back-transformed: :func:`analytics.stats.rubin.pool_scalar`, as
    R ``mice::pool.scalar(Q, U, n, k)`` with ``dfcom = n - k`` (Wood, Royston & White 2015).

    Parameters
    ----------
    name : str
    estimates, variances : array-like (m,)
        The statistic and its squared standard error on each completed data set, on the statistic's own scale.
    transform : {"logit", "log", "identity"}
    dfcom : float
    level : float
    method : str
        Said in :attr:`PooledStatistic.method` after the pooling.

    Returns
    -------
    PooledStatistic
    """
    u = np.asarray(variances, dtype=np.float64).reshape(-1)
    if np.any(u < 0):
        raise ValueError(f"{name}: a within-imputation variance is negative")
    q = np.asarray(estimates, dtype=np.float64).reshape(-1)
    res = pool_scalar(q, np.sqrt(u), transform=transform, dfcom=dfcom, level=level)
    tab = res.scale
    scale = "" if transform == "identity" else f" on the {transform} scale"
    text = f"Rubin's rules over m={tab.m} imputations{scale}" + (f", {method}" if method else "")
    return PooledStatistic(name, res.estimate, res.low, res.high, level, tab.m, "rubin", transform,
                           float(tab.estimate[0]), float(tab.ubar[0]), float(tab.b[0]), float(tab.t[0]),
                           float(tab.df[0]), float(tab.riv[0]), float(tab.fmi[0]), tuple(float(x) for x in q), text)


def pooled_mean(name: str, estimates: ArrayLike, level: float = 0.95, method: str = "") -> PooledStatistic:
    """A statistic without an analytic within-imputation variance, pooled as the mean over imputations.

    Wood, Royston & White (2015, §4) pool such a statistic (IDI, NRI, Brier(t) or AUC(t) without a standard error)
    by its average over the completed data sets; Rubin's total variance needs the within-imputation variance, so
    there is no interval here (a bootstrap over the whole procedure gives one). ``b`` is still the spread between
    imputations.

    Parameters
    ----------
    name : str
    estimates : array-like (m,)
    level : float
        Recorded only.
    method : str

    Returns
    -------
    PooledStatistic
        ``pooled = "mean"``, ``low``/``high``/``fmi`` NaN.
    """
    q = np.asarray(estimates, dtype=np.float64).reshape(-1)
    if q.size < 2:
        raise ValueError(f"{name}: pooling needs at least 2 imputations, got {q.size}")
    if not np.isfinite(q).all():
        raise ValueError(f"{name}: a per-imputation estimate is missing or not finite")
    nan = float("nan")
    text = f"mean over m={q.size} imputations (no within-imputation variance; no CI)" + (f", {method}" if method else "")
    return PooledStatistic(name, float(q.mean()), nan, nan, level, int(q.size), "mean", "none", float(q.mean()),
                           nan, float(q.var(ddof=1)), nan, nan, nan, nan, tuple(float(x) for x in q), text)


def _rows(scores: ArrayLike, n: int, what: str) -> np.ndarray:
    """The (m, n) per-imputation scores; at least two imputations of the ``n`` patients."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != n:
        raise ValueError(f"{what} must be (m, {n}): one row per imputation of the {n} patients, got shape {s.shape}")
    if s.shape[0] < 2:
        raise ValueError(f"{what}: pooling needs at least 2 imputations, got {s.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError(f"{what}: a value is missing or not finite")
    return s


def pooled_auc(y: ArrayLike, scores: ArrayLike, level: float = 0.95) -> PooledStatistic:
    """The AUC pooled on the logit scale with its DeLong variance (Marshall et al. 2009; Wood et al. 2015).

    Each imputation's AUC and DeLong variance (DeLong, DeLong & Clarke-Pearson, Biometrics 1988;44:837-845; pROC
    ``var(roc, method = "delong")``, :func:`analytics.stats.delong_covariance`) enter :func:`pool_statistic` on
    the logit scale, large-sample (``dfcom = inf``); the interval is back-transformed, so it stays in (0, 1).

    Parameters
    ----------
    y : array-like of 0/1, shape (n,)
        The outcome (the same in every imputation).
    scores : array-like (m, n)
        The model's score of each patient in each completed data set.
    level : float

    Returns
    -------
    PooledStatistic
    """
    yy = np.asarray(y)
    s = _rows(scores, yy.size, "scores")
    est = np.empty(s.shape[0])
    var = np.empty(s.shape[0])
    for i, row in enumerate(s):
        a, cov = delong_covariance(yy, row)
        est[i], var[i] = a[0], cov[0, 0]
    return pool_statistic("auc", est, var, "logit", level=level, method="DeLong variance within")


def pooled_c_index(time: ArrayLike, event: ArrayLike, risks: ArrayLike, level: float = 0.95) -> PooledStatistic:
    """Harrell's C pooled on the logit scale with its infinitesimal-jackknife variance (Wood et al. 2015).

    Each imputation's C and variance are R ``survival::concordance(timewt = "n", reverse = TRUE)``'s
    (:func:`analytics.stats.concordance` with ``interval = "ij"``; Harrell et al. 1982; Therneau & Atkinson,
    "Concordance", vignette of R survival), pooled by :func:`pool_statistic` on the logit scale, large-sample.

    Parameters
    ----------
    time, event : array-like, shape (n,)
        Follow-up (the same in every imputation).
    risks : array-like (m, n)
        Higher means shorter expected survival (a Cox linear predictor).
    level : float

    Returns
    -------
    PooledStatistic
    """
    t = np.asarray(time, dtype=np.float64)
    r = _rows(risks, t.size, "risks")
    est = np.empty(r.shape[0])
    var = np.empty(r.shape[0])
    z = float(ndtri(0.5 + 0.5 * 0.95))
    for i, row in enumerate(r):
        iv = concordance(t, event, row, interval="ij", level=0.95)
        # the interval is C +- z se: its half-width gives the variance back
        est[i], var[i] = iv.estimate, ((iv.high - iv.low) / (2.0 * z)) ** 2
    return pool_statistic("c_index", est, var, "logit", level=level,
                          method="infinitesimal-jackknife variance within (R survival::concordance)")


def _logistic_glm(x: np.ndarray, y: np.ndarray, offset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of a binomial glm and their covariance, the inverse Fisher information at the estimate (R
    ``vcov(glm(..., family = binomial))``)."""
    beta = logistic_fit(x, y, offset=offset)
    eta = x @ beta + (0.0 if offset is None else offset)
    mu = 1.0 / (1.0 + np.exp(-eta))
    info = (x * (mu * (1.0 - mu))[:, None]).T @ x
    return beta, np.linalg.inv(info)


def _binary_rows(y: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    if not np.isin(yy, (0.0, 1.0)).all():
        raise ValueError("y must be 0/1")
    p = _rows(probs, yy.size, "probabilities")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    return yy, p


CALIBRATION_NAMES = ("in_the_large", "recalibration_intercept", "recalibration_slope")


def pooled_calibration(y: ArrayLike, probs: ArrayLike, level: float = 0.95) -> dict[str, PooledStatistic]:
    """Calibration intercept and slope pooled by Rubin's rules with their glm variances (Wood et al. 2015).

    Per imputation: calibration-in-the-large, the intercept of ``glm(y ~ offset(logit p), binomial)``, and the
    intercept and slope of logistic recalibration ``glm(y ~ logit p, binomial)`` (Cox, Biometrika 1958;45:562-565;
    Steyerberg, *Clinical Prediction Models*, 2019, ch. 15), as :func:`analytics.stats.calibration`; their variances
    the inverse information (``vcov``). Pooled on their own scale, large-sample.

    Parameters
    ----------
    y : array-like of 0/1, shape (n,)
    probs : array-like (m, n)
        Predicted probabilities in each completed data set (0 and 1 are clipped to ``[1e-12, 1 - 1e-12]``, with a
        warning, as :func:`analytics.stats.calibration` does).
    level : float

    Returns
    -------
    dict
        ``in_the_large``, ``recalibration_intercept``, ``recalibration_slope``: :class:`PooledStatistic`.
    """
    yy, p = _binary_rows(y, probs)
    n, m = yy.size, p.shape[0]
    est = np.empty((m, 3))
    var = np.empty((m, 3))
    ones = np.ones((n, 1))
    for i, row in enumerate(p):
        lp = logit(_clip_probability(row))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a fit that did not converge has no estimate
            try:
                a, va = _logistic_glm(ones, yy, lp)
                b, vb = _logistic_glm(np.column_stack([ones[:, 0], lp]), yy, None)
            except (RuntimeWarning, ValueError, np.linalg.LinAlgError) as exc:
                raise ValueError(f"calibration fit of imputation {i + 1} has no estimate ({exc})") from None
        est[i] = a[0], b[0], b[1]
        var[i] = va[0, 0], vb[0, 0], vb[1, 1]
    return {key: pool_statistic(key, est[:, j], var[:, j], "identity", level=level, method="glm variance within")
            for j, key in enumerate(CALIBRATION_NAMES)}


def pooled_brier(y: ArrayLike, probs: ArrayLike, level: float = 0.95) -> PooledStatistic:
    """The Brier score pooled by Rubin's rules with the analytic variance of a mean (Wood et al. 2015).

    Per imputation the Brier score ``mean((p - y)^2)`` (Brier, Mon Weather Rev 1950;78:1-3) and its variance
    ``var((p - y)^2) / n``, the sample variance (denominator ``n - 1``) of the squared errors over ``n`` (Bradley,
    Schwartz & Hashino, Weather and Forecasting 2008;23:992-1006); pooled on its own scale, large-sample.

    Parameters
    ----------
    y : array-like of 0/1, shape (n,)
    probs : array-like (m, n)
    level : float

    Returns
    -------
    PooledStatistic
    """
    yy, p = _binary_rows(y, probs)
    if yy.size < 2:
        raise ValueError("the Brier score's variance needs at least 2 patients")
    sq = (p - yy[None, :]) ** 2
    return pool_statistic("brier", sq.mean(axis=1), sq.var(axis=1, ddof=1) / yy.size, "identity", level=level,
                          method="variance var((p - y)^2) / n within")


def pooled_binary(y: ArrayLike, probs: ArrayLike, level: float = 0.95) -> dict[str, PooledStatistic]:
    """The headline statistics of a binary model pooled over imputations: ``auc``, ``in_the_large``,
    ``recalibration_intercept``, ``recalibration_slope`` and ``brier`` (:func:`pooled_auc`,
    :func:`pooled_calibration`, :func:`pooled_brier`)."""
    out = {"auc": pooled_auc(y, probs, level)}
    out.update(pooled_calibration(y, probs, level))
    out["brier"] = pooled_brier(y, probs, level)
    return out


def pooled_means(per_imputation: Sequence[Mapping[str, float | None]], level: float = 0.95,
                 skip: Sequence[str] = ()) -> dict[str, PooledStatistic]:
    """Every statistic present with a finite value in all of ``per_imputation`` (one mapping of name to value per
    imputation) and not in ``skip``, pooled as its mean over imputations (:func:`pooled_mean`)."""
    if not per_imputation:
        return {}
    out: dict[str, PooledStatistic] = {}
    for key in per_imputation[0]:
        if key in skip:
            continue
        vals = [d.get(key) for d in per_imputation]
        if all(x is not None and math.isfinite(float(x)) for x in vals):
            out[key] = pooled_mean(key, [float(x) for x in vals if x is not None], level)
    return out
