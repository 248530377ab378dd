"""Per-centre validation measures and model updating for one centre.

* :func:`centre_measures`: n, events, AUC with its DeLong variance (pROC), calibration-in-the-large from
  ``glm(y ~ offset(lp))`` and the calibration slope from ``glm(y ~ lp)``, each with its SE, O:E with the
  variance of log O:E (``1/O - 1/N``, Debray et al., BMJ 2017;356:i6460) and the Brier score.
* :func:`update_logistic`: the updating methods of Steyerberg (Clinical Prediction Models, 2009, ch. 20;
  Janssen et al., J Clin Epidemiol 2008;61:76-86) -- the original model, recalibration-in-the-large,
  logistic recalibration and revision -- with their deviances, the likelihood-ratio tests between them and
  the closed testing procedure of Vergouwe et al. (Stat Med 2017;36:4529-4539) choosing the simplest
  adequate one at ``alpha``.
* :func:`update_cox`: a Cox model's baseline survival at each horizon re-estimated (Breslow, the linear
  predictor as an offset) and the slope of its linear predictor (van Houwelingen, Stat Med 2000;19:3401-3415).
* :func:`membership_c`: the c-statistic of a model telling a centre's patients from the development
  patients by their predictors and outcome (Debray et al., J Clin Epidemiol 2015;68:279-289): near 0.5 the
  case-mix is alike, near 1 the centre is a different population.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import chi2

from . import _validate as v
from .calibrate import logistic_fit
from .cox_validation import _efron_pieces, breslow, cox_one
from .roc import auc as _auc
from .roc import delong_covariance
from .types import _json_value

METHODS = ("original", "recalibration_in_the_large", "logistic_recalibration", "revision")


def _log1pexp(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _deviance(y: np.ndarray, eta: np.ndarray) -> float:
    """Binomial deviance ``-2 log L`` of a linear predictor ``eta`` (R ``glm``'s ``deviance()`` for 0/1 data)."""
    return float(2.0 * np.sum(_log1pexp(eta) - y * eta))


@dataclass(frozen=True)
class GlmFit:
    """A maximum-likelihood logistic regression: coefficients, their standard errors, the deviance."""

    coef: tuple[float, ...]
    se: tuple[float, ...]
    deviance: float


def glm_logistic(x: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None) -> GlmFit:
    """``glm(y ~ x + offset(offset), family = binomial)`` (``x`` holds the intercept column when wanted).

    Raises
    ------
    ValueError
        The fit is singular or does not converge (separation): no estimate to report.
    """
    off = np.zeros(y.size) if offset is None else offset
    if x.shape[1] == 0:
        return GlmFit((), (), _deviance(y, off))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        beta = logistic_fit(x, y.astype(np.float64), offset=off)
    if any("did not converge" in str(w.message) for w in caught):
        raise ValueError("the logistic regression did not converge (the predictors separate the outcome)")
    eta = x @ beta + off
    mu = 1.0 / (1.0 + np.exp(-eta))
    cov = np.linalg.inv((x * (mu * (1.0 - mu))[:, None]).T @ x)
    return GlmFit(tuple(float(b) for b in beta), tuple(float(s) for s in np.sqrt(np.diag(cov))), _deviance(y, eta))


# --- per-centre measures ------------------------------------------------------------------------------


def centre_measures(y: ArrayLike, lp: ArrayLike) -> dict[str, float]:
    """Validation measures of a logistic model's linear predictor ``lp`` on one centre's patients ``y``.

    Returns
    -------
    dict
        ``n``, ``events``; ``auc`` and ``auc_var`` (DeLong; NaN with fewer than two patients of a class);
        ``calibration_in_the_large`` and ``citl_se`` (``glm(y ~ offset(lp))``);
        ``calibration_recalibration_slope`` and ``slope_se`` (``glm(y ~ lp)``); ``oe_ratio`` (events over the
        sum of predicted risks) and ``log_oe_var`` (``1/O - 1/N``); ``brier``; ``lp_mean``, ``lp_sd``.
        A measure that cannot be estimated (no events, separation) is NaN.

    Notes
    -----
    Equal to pROC ``auc()``/``var(method = "delong")`` and R ``glm`` (Debray et al. 2017 for O:E).
    """
    yy = v.binary_y(y, both_classes=False)
    eta = v.as_1d(lp, "lp")
    v.same_length(y=yy, lp=eta)
    v.no_nan(eta, "lp", finite=True)
    yf = yy.astype(np.float64)
    n, o = int(yy.size), int(yy.sum())
    nan = float("nan")
    p = 1.0 / (1.0 + np.exp(-eta))
    out: dict[str, float] = {"n": float(n), "events": float(o), "brier": float(np.mean((p - yf) ** 2)),
                             "lp_mean": float(eta.mean()), "lp_sd": float(eta.std(ddof=1)) if n > 1 else nan}
    out["auc"], out["auc_var"] = nan, nan
    if 0 < o < n:
        out["auc"] = _auc(yy, eta)
        if min(o, n - o) >= 2:
            out["auc_var"] = float(delong_covariance(yy, eta)[1][0, 0])
    e = float(p.sum())
    out["oe_ratio"] = o / e if e > 0 else nan
    out["log_oe_var"] = 1.0 / o - 1.0 / n if o > 0 else nan
    out["calibration_in_the_large"], out["citl_se"] = nan, nan
    out["calibration_recalibration_slope"], out["slope_se"] = nan, nan
    if 0 < o < n:
        try:
            f = glm_logistic(np.ones((n, 1)), yf, eta)
            out["calibration_in_the_large"], out["citl_se"] = f.coef[0], f.se[0]
        except (ValueError, np.linalg.LinAlgError):
            pass
        if np.ptp(eta) > 0:
            try:
                f = glm_logistic(np.column_stack([np.ones(n), eta]), yf)
                out["calibration_recalibration_slope"], out["slope_se"] = f.coef[1], f.se[1]
            except (ValueError, np.linalg.LinAlgError):
                pass
    return out


# --- model updating ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LRStep:
    """A likelihood-ratio test of ``reduced`` nested in ``full``: ``statistic`` = the difference of deviances,
    chi-square on ``df`` (R ``anova(reduced, full, test = "LRT")``)."""

    reduced: str
    full: str
    statistic: float
    df: int
    p: float


@dataclass(frozen=True)
class Updating:
    """The updating methods fitted on one centre and the closed testing procedure's choice.

    Attributes
    ----------
    deviance : dict
        ``-2 log L`` of each method of :data:`METHODS` that was fitted (``revision`` only with a design).
    coef : dict
        Each method's estimated coefficients: ``()`` for the original, ``(a,)`` for
        recalibration-in-the-large, ``(a, b)`` for logistic recalibration, the intercept and coefficients of
        the design for revision.
    parameters : dict
        Parameters each method estimates (0, 1, 2, 1 + columns of the design).
    tests : tuple of LRStep
        The closed test's steps against the most complex method, then the sequential ones (1 vs 2, 2 vs 3).
    choice : str
        The simplest method not significantly worse than the most complex one at ``alpha``.
    alpha : float
    """

    deviance: dict[str, float]
    coef: dict[str, tuple[float, ...]]
    parameters: dict[str, int]
    tests: tuple[LRStep, ...]
    choice: str
    alpha: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        d = asdict(self)
        d["tests"] = [{k: _json_value(x) for k, x in asdict(s).items()} for s in self.tests]
        return d

    def test(self, reduced: str, full: str) -> LRStep:
        """The LR test of ``reduced`` against ``full``."""
        for s in self.tests:
            if (s.reduced, s.full) == (reduced, full):
                return s
        raise KeyError(f"no LR test of {reduced} against {full}")


def _lr(dev: dict[str, float], par: dict[str, int], reduced: str, full: str) -> LRStep:
    stat = dev[reduced] - dev[full]
    df = par[full] - par[reduced]
    return LRStep(reduced, full, stat, df, float(chi2.sf(stat, df)))


def update_logistic(y: ArrayLike, lp: ArrayLike, x: ArrayLike | None = None, *, alpha: float = 0.05) -> Updating:
    """Update a logistic model for a new centre and choose how far to go by closed testing.

    Parameters
    ----------
    y : array-like of 0/1
        The centre's outcomes.
    lp : array-like
        The original model's linear predictor (for a model without one: the logit of its risk).
    x : array-like, shape (n, p), optional
        The model's design matrix (without the intercept column) for revision, whose coefficients are all
        re-estimated; without it only the three recalibration methods are fitted.
    alpha : float
        Level of the closed test.

    Returns
    -------
    Updating

    Notes
    -----
    Methods (Steyerberg 2009, ch. 20): 1 the original model, ``glm(y ~ 0 + offset(lp))``; 2
    recalibration-in-the-large, ``glm(y ~ offset(lp))``; 3 logistic recalibration, ``glm(y ~ lp)``; 4
    revision, ``glm(y ~ x)``. Closed testing (Vergouwe et al. 2017): the most complex method is tested
    against the original (df = its parameters); when it is significantly better, against
    recalibration-in-the-large, then against logistic recalibration; the first test that is not
    significant picks the simpler method, and revision is chosen when all three are.

    Raises
    ------
    ValueError
        Only one outcome class, or a fit that has no estimate (separation).
    """
    yy = v.binary_y(y).astype(np.float64)
    eta = v.as_1d(lp, "lp")
    v.same_length(y=yy, lp=eta)
    v.no_nan(eta, "lp", finite=True)
    n = yy.size
    ones = np.ones((n, 1))
    fits = {"original": glm_logistic(np.empty((n, 0)), yy, eta),
            "recalibration_in_the_large": glm_logistic(ones, yy, eta),
            "logistic_recalibration": glm_logistic(np.column_stack([ones, eta]), yy)}
    methods = list(METHODS[:3])
    if x is not None:
        xm = np.asarray(x, dtype=np.float64)
        xm = xm.reshape(n, -1)
        if not np.isfinite(xm).all():
            raise ValueError("the design matrix for revision has non-finite values")
        fits["revision"] = glm_logistic(np.column_stack([ones, xm]), yy)
        methods.append("revision")
    dev = {m: fits[m].deviance for m in methods}
    par = {m: len(fits[m].coef) for m in methods}
    top = methods[-1]
    closed = [_lr(dev, par, m, top) for m in methods[:-1]]
    choice = top
    for step in closed:
        if not step.p < alpha:
            choice = step.reduced
            break
    sequential = [_lr(dev, par, a, b) for a, b in zip(methods[:-1], methods[1:]) if b != top]
    return Updating(dev, {m: fits[m].coef for m in methods}, par, tuple(closed + sequential), choice, alpha)


def updated_lp(updating: Updating, lp: ArrayLike, x: ArrayLike | None = None, method: str | None = None) -> np.ndarray:
    """The linear predictor of ``method`` (default: the closed test's choice) for patients with original
    linear predictor ``lp`` (and design ``x`` for revision)."""
    m = method or updating.choice
    eta = np.asarray(lp, dtype=np.float64)
    c = updating.coef[m]
    if m == "original":
        return eta
    if m == "recalibration_in_the_large":
        return c[0] + eta
    if m == "logistic_recalibration":
        return c[0] + c[1] * eta
    if x is None:
        raise ValueError("revision needs the design matrix")
    xm = np.asarray(x, dtype=np.float64).reshape(eta.size, -1)
    return c[0] + xm @ np.asarray(c[1:])


@dataclass(frozen=True)
class CoxUpdating:
    """A Cox model updated for a centre: baseline survival at each horizon with the original linear predictor
    as an offset, the slope of the linear predictor and the baseline survival under it, and the LR test of
    the slope against 1."""

    horizons: tuple[float, ...]
    baseline_survival: tuple[float, ...]
    slope: float
    slope_se: float
    baseline_survival_slope: tuple[float, ...]
    lr_slope: LRStep

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        d = {k: _json_value(x) for k, x in asdict(self).items()}
        d["lr_slope"] = {k: _json_value(x) for k, x in asdict(self.lr_slope).items()}
        return d


def _s0(eta: np.ndarray, time: np.ndarray, event: np.ndarray, horizons: Sequence[float]) -> tuple[float, ...]:
    times, h0 = breslow(eta, time, event)
    return tuple(float(math.exp(-(h0[times <= h][-1] if (times <= h).any() else 0.0))) for h in horizons)


def update_cox(time: ArrayLike, event: ArrayLike, lp: ArrayLike, horizons: Sequence[float]) -> CoxUpdating:
    """Recalibrate a Cox model for a centre: ``S0(t)`` at ``horizons`` by Breslow with ``lp`` as an offset
    (R ``survfit(coxph(Surv(time, status) ~ offset(lp)), newdata = data.frame(lp = 0), ctype = 1)``), the
    slope ``b`` of ``coxph(Surv(time, status) ~ lp)`` (Efron ties) with ``S0`` under ``b lp``, and the LR test
    of ``b = 1`` (``2 (logL(b) - logL(1))``, 1 df).

    Raises
    ------
    ValueError
        No events, or a linear predictor the slope cannot be estimated for.
    """
    tt = v.as_1d(time, "time")
    ee = v.as_1d(event, "event")
    eta = v.as_1d(lp, "lp")
    v.same_length(time=tt, event=ee, lp=eta)
    fit = cox_one(tt, ee, eta)
    ll1 = _efron_pieces(tt, ee, eta, 1.0)[0]
    stat = max(2.0 * (fit.loglik - ll1), 0.0)
    lr = LRStep("original", "slope", stat, 1, float(chi2.sf(stat, 1)))
    hs = tuple(float(h) for h in horizons)
    return CoxUpdating(hs, _s0(eta, tt, ee, hs), fit.coef, fit.se, _s0(fit.coef * eta, tt, ee, hs), lr)


def membership_c(x_dev: ArrayLike, y_dev: ArrayLike, x_centre: ArrayLike, y_centre: ArrayLike) -> float:
    """Apparent c-statistic of the membership model ``logit P(centre) = a + x b + y g`` fitted on the
    development and one centre's patients stacked (Debray et al. 2015): how well predictors and outcome tell
    the centre apart.

    Raises
    ------
    ValueError
        The model does not converge (a predictor separates the centre completely: c = 1 in effect).
    """
    xd = np.asarray(x_dev, dtype=np.float64)
    xc = np.asarray(x_centre, dtype=np.float64)
    yd = v.as_1d(y_dev, "y_dev")
    yc = v.as_1d(y_centre, "y_centre")
    xd = xd.reshape(yd.size, -1)
    xc = xc.reshape(yc.size, -1)
    design = np.column_stack([np.ones(yd.size + yc.size), np.vstack([xd, xc]), np.concatenate([yd, yc])])
    member = np.concatenate([np.zeros(yd.size), np.ones(yc.size)])
    # a column constant over both groups adds nothing and makes the fit singular
    keep = [0] + [j for j in range(1, design.shape[1]) if np.ptp(design[:, j]) > 0]
    fit = glm_logistic(design[:, keep], member)
    return _auc(member, design[:, keep] @ np.asarray(fit.coef))
