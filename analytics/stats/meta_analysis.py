"""Random-effects meta-analysis of a prediction model's performance across centres.

Pooling follows Riley et al. (BMJ 2016;353:i3140) and Debray et al. (BMJ 2017;356:i6460): each centre's
measure on a scale where it is roughly normal (AUC and C on the logit scale, O:E on the log scale, the
calibration slope and calibration-in-the-large as they are), then a random-effects model

    y_i = mu + u_i + e_i,   u_i ~ N(0, tau^2),   e_i ~ N(0, v_i).

* tau^2 by restricted maximum likelihood, found by Fisher scoring exactly as ``metafor::rma.uni``
  (Viechtbauer, J Stat Softw 2010;36(3)): Hedges' estimator to start, step halving at 0, a change below
  1e-5 to stop, at most 100 steps, and metafor's check that the REML log-likelihood is not below its value
  at tau^2 = 0.  When scoring does not converge, DerSimonian & Laird's estimator (Control Clin Trials
  1986;7:177-188) is used instead, and the result says so.
* The confidence interval of mu is Hartung-Knapp-Sidik-Jonkman's (Hartung & Knapp, Stat Med
  2001;20:3875-3889; Sidik & Jonkman, Stat Med 2002;21:3153-3159): the weighted residual variance scales
  the standard error, and t with k - 1 degrees of freedom replaces the normal.
* I^2 as metafor defines it, from tau^2 and the "typical" within-centre variance (Higgins & Thompson,
  Stat Med 2002;21:1539-1558).
* The prediction interval for a new centre is ``metafor::predict.rma``'s, ``mu +- t(k-1) sqrt(tau^2 +
  SE^2)`` with the Knapp-Hartung SE; Riley, Higgins & Deeks' (BMJ 2011;342:d549) ``t(k-2)`` version is given
  beside it (and needs k >= 3).
* Two centres give a fixed-effect (inverse-variance) estimate only: tau^2 is not estimable.

``R: metafor::rma(yi, vi, method = "REML", test = "knha"); predict(fit)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, logit
from scipy.stats import chi2, norm, t

from . import _validate as v
from .types import _json_value

Scale = Literal["identity", "logit", "log"]

# metafor's defaults (rma.uni control): the step that counts as converged, the steps allowed, and the
# log-likelihood gap that sends a REML estimate back to 0
THRESHOLD = 1e-5
MAX_ITER = 100
LL_TOL = float(np.finfo(float).eps) ** 0.25

FIXED_TWO = "two centres: fixed-effect (inverse-variance) estimate; no tau² or prediction interval (need three or more)"


@dataclass(frozen=True)
class MetaAnalysis:
    """A pooled measure: estimate, confidence and prediction intervals, heterogeneity.

    Attributes
    ----------
    estimate, low, high : float
        Pooled estimate and its confidence interval, back on the measure's own scale (an AUC, an O:E ratio).
    pi_low, pi_high : float
        95% (``level``) prediction interval for a new centre, ``metafor::predict.rma``'s (t with k - 1 df and
        the Knapp-Hartung SE); NaN with fewer than three centres.
    pi_riley_low, pi_riley_high : float
        Riley et al. (2011): t with k - 2 df; NaN with fewer than three centres.
    mu, se : float
        Pooled estimate and its (Knapp-Hartung) standard error on the pooling scale.
    tau2, i2, h2, q, q_p : float
        Between-centre variance (pooling scale), I² (percent), H², Cochran's Q and its p-value.
    k : int
        Centres pooled.
    method : str
        ``"REML"``, ``"DL"`` (REML did not converge) or ``"FE"`` (two centres).
    scale : str
        ``"identity"``, ``"logit"`` or ``"log"``: the scale the centres were pooled on.
    level : float
        Level of the intervals.
    notes : tuple of str
        Why a number is missing, or that an estimator was replaced.
    """

    estimate: float
    low: float
    high: float
    pi_low: float
    pi_high: float
    pi_riley_low: float
    pi_riley_high: float
    mu: float
    se: float
    tau2: float
    i2: float
    h2: float
    q: float
    q_p: float
    k: int
    method: str
    scale: str
    level: float = 0.95
    notes: tuple[str, ...] = field(default=())

    @property
    def method_text(self) -> str:
        """How the pooled value was obtained, for a metrics file's ``method`` column."""
        if self.method == "FE":
            return f"fixed effect, inverse variance ({self.scale} scale, z CI)"
        est = "REML" if self.method == "REML" else "DerSimonian-Laird (REML did not converge)"
        return f"random effects, {est} tau², Hartung-Knapp-Sidik-Jonkman CI ({self.scale} scale)"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        out = {k: _json_value(x) for k, x in asdict(self).items()}
        out["notes"] = list(self.notes)
        return out


def _back(x: float, scale: Scale) -> float:
    if not math.isfinite(x):
        return x
    if scale == "logit":
        return float(expit(x))
    if scale == "log":
        return math.exp(x)
    return x


def _p_matrix(w: np.ndarray) -> np.ndarray:
    """``P = W - W X (X'WX)^-1 X'W`` of the intercept-only model."""
    return np.diag(w) - np.outer(w, w) / w.sum()


def _reml_ll(y: np.ndarray, vi: np.ndarray, tau2: float) -> float:
    """Restricted log-likelihood of the intercept-only model (metafor's, up to a constant it shares)."""
    w = 1.0 / (vi + tau2)
    mu = float(np.sum(w * y) / w.sum())
    rss = float(np.sum(w * (y - mu) ** 2))
    return -0.5 * float(np.sum(np.log(vi + tau2))) - 0.5 * math.log(w.sum()) - 0.5 * rss


def reml_tau2(y: np.ndarray, vi: np.ndarray) -> tuple[float, bool]:
    """REML tau² by Fisher scoring, as ``metafor::rma.uni`` (see the module notes); and whether it converged."""
    k = y.size
    # Hedges' (method-of-moments) estimator to start: (RSS - tr(P V)) / (k - 1) with OLS P
    rss = float(np.sum((y - y.mean()) ** 2))
    tau2 = max(0.0, (rss - float(vi.sum()) * (k - 1) / k) / (k - 1))
    change, it = THRESHOLD + 1.0, 0
    while change > THRESHOLD:
        it += 1
        old = tau2
        p = _p_matrix(1.0 / (vi + tau2))
        py = p @ y
        pp = p @ p
        adj = (float(py @ py) - float(np.trace(p))) / float(np.trace(pp))
        if not math.isfinite(adj):
            adj = 0.0
        while tau2 + adj < 0.0:
            adj /= 2.0
        tau2 = tau2 + adj
        change = abs(old - tau2)
        if it > MAX_ITER:
            return tau2, False
    # metafor's ll0check: a maximum below the likelihood at 0 is a local one
    if tau2 > THRESHOLD and _reml_ll(y, vi, 0.0) - _reml_ll(y, vi, tau2) > LL_TOL:
        tau2 = 0.0
    return max(0.0, tau2), True


def dl_tau2(y: np.ndarray, vi: np.ndarray) -> float:
    """DerSimonian-Laird tau²: ``max(0, (Q - (k - 1)) / (sum w - sum w² / sum w))`` with ``w = 1 / v``."""
    w = 1.0 / vi
    mu = float(np.sum(w * y) / w.sum())
    q = float(np.sum(w * (y - mu) ** 2))
    return max(0.0, (q - (y.size - 1)) / (float(w.sum()) - float(np.sum(w**2)) / float(w.sum())))


def _inputs(yi: ArrayLike, vi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = v.as_1d(yi, "yi")
    var = v.as_1d(vi, "vi")
    v.same_length(yi=y, vi=var)
    v.no_nan(y, "yi", finite=True)
    v.no_nan(var, "vi", finite=True)
    if np.any(var <= 0):
        first = int(np.flatnonzero(var <= 0)[0])
        raise ValueError(f"vi must be positive; found {float(var[first])!r} at index {first}")
    if y.size < 2:
        raise ValueError(f"meta-analysis needs two or more centres, got {y.size}")
    return y, var


def random_effects(yi: ArrayLike, vi: ArrayLike, *, scale: Scale = "identity", level: float = 0.95) -> MetaAnalysis:
    """Pool per-centre estimates ``yi`` with sampling variances ``vi`` (both on the pooling scale).

    Parameters
    ----------
    yi, vi : array-like
        One estimate and its variance per centre, already transformed (see :func:`transform`).
    scale : {"identity", "logit", "log"}
        The scale of ``yi``; ``estimate``, ``low``, ``high`` and the prediction intervals are back-transformed.
    level : float
        Level of the confidence and prediction intervals.

    Returns
    -------
    MetaAnalysis
        REML random effects with a Hartung-Knapp-Sidik-Jonkman CI for three or more centres; a fixed-effect
        estimate for two.

    Notes
    -----
    Equals ``metafor::rma(yi, vi, method = "REML", test = "knha")`` and ``predict()`` (Viechtbauer 2010);
    see the module docstring for every reference.

    Raises
    ------
    ValueError
        Fewer than two centres, a non-finite value, or a variance that is not positive.
    """
    level = v.level_ok(level)
    y, vi_ = _inputs(yi, vi)
    k = y.size
    w0 = 1.0 / vi_
    mu0 = float(np.sum(w0 * y) / w0.sum())
    q = float(np.sum(w0 * (y - mu0) ** 2))
    q_p = float(chi2.sf(q, k - 1))
    nan = float("nan")
    if k == 2:
        se = 1.0 / math.sqrt(float(w0.sum()))
        z = float(norm.ppf(0.5 + level / 2))
        return MetaAnalysis(_back(mu0, scale), _back(mu0 - z * se, scale), _back(mu0 + z * se, scale), nan, nan,
                            nan, nan, mu0, se, nan, nan, nan, q, q_p, k, "FE", scale, level, (FIXED_TWO,))
    tau2, converged = reml_tau2(y, vi_)
    notes: list[str] = []
    method = "REML"
    if not converged:
        tau2, method = dl_tau2(y, vi_), "DL"
        notes.append(f"REML (Fisher scoring) did not converge in {MAX_ITER} steps; tau² is DerSimonian-Laird's")
    w = 1.0 / (vi_ + tau2)
    mu = float(np.sum(w * y) / w.sum())
    # Knapp-Hartung: the weighted residual variance scales Var(mu) = 1 / sum(w)
    s2w = float(np.sum(w * (y - mu) ** 2)) / (k - 1)
    se = math.sqrt(s2w / float(w.sum()))
    crit = float(t.ppf(0.5 + level / 2, k - 1))
    # I² and H² from tau² and metafor's typical within-centre variance (k - 1) / tr(P) with FE weights
    vt = (k - 1) * float(w0.sum()) / (float(w0.sum()) ** 2 - float(np.sum(w0**2)))
    i2 = 100.0 * tau2 / (vt + tau2)
    h2 = (vt + tau2) / vt
    half = crit * math.sqrt(tau2 + se**2)
    half_r = float(t.ppf(0.5 + level / 2, k - 2)) * math.sqrt(tau2 + se**2)
    riley = (_back(mu - half_r, scale), _back(mu + half_r, scale))
    return MetaAnalysis(_back(mu, scale), _back(mu - crit * se, scale), _back(mu + crit * se, scale),
                        _back(mu - half, scale), _back(mu + half, scale), riley[0], riley[1], mu, se, tau2, i2, h2,
                        q, q_p, k, method, scale, level, tuple(notes))


# --- per-centre measures on their pooling scale (Debray et al. 2017) -------------------------------------


def logit_auc(auc: float, var: float) -> tuple[float, float]:
    """An AUC (or C statistic) and its variance on the logit scale (delta method: ``var / (auc (1 - auc))²``)."""
    if not 0.0 < auc < 1.0:
        raise ValueError(f"AUC must lie strictly between 0 and 1 for the logit scale, got {auc!r}")
    return float(logit(auc)), var / (auc * (1.0 - auc)) ** 2


def log_oe_binary(observed: float, expected: float, n: int) -> tuple[float, float]:
    """``log(O / E)`` of a binary outcome and its variance ``1 / O - 1 / N`` (Debray et al. 2017, table 1).

    ``observed``: events; ``expected``: the sum of the predicted risks; ``n``: patients.
    """
    if observed <= 0 or expected <= 0:
        raise ValueError(f"O:E needs events and a positive expected count (O = {observed!r}, E = {expected!r})")
    return math.log(observed / expected), 1.0 / observed - 1.0 / n


def log_oe_survival(observed_risk: float, se_observed: float, expected_risk: float) -> tuple[float, float]:
    """``log(O / E)`` at a horizon from the Kaplan-Meier observed risk ``O = 1 - S(t)`` and its Greenwood
    SE, and the mean predicted risk ``E``; variance ``(SE(O) / O)²`` by the delta method (Debray et al. 2017)."""
    if observed_risk <= 0 or expected_risk <= 0:
        raise ValueError(f"O:E needs an observed and an expected risk above 0 (O = {observed_risk!r}, "
                         f"E = {expected_risk!r})")
    return math.log(observed_risk / expected_risk), (se_observed / observed_risk) ** 2


def km_risk(time: ArrayLike, event: ArrayLike, horizon: float) -> tuple[float, float]:
    """Kaplan-Meier risk ``1 - S(horizon)`` and its Greenwood standard error (R ``survfit``'s ``std.err``
    times ``S``)."""
    tt = v.as_1d(time, "time")
    ee = v.as_1d(event, "event")
    v.same_length(time=tt, event=ee)
    surv, gw = 1.0, 0.0
    for s in np.unique(tt[(ee == 1) & (tt <= horizon)]):
        n_risk = float(np.sum(tt >= s))
        d = float(np.sum((tt == s) & (ee == 1)))
        surv *= 1.0 - d / n_risk
        gw += d / (n_risk * (n_risk - d)) if n_risk > d else math.inf
    return 1.0 - surv, surv * math.sqrt(gw) if math.isfinite(gw) else math.nan


SCALES: dict[str, Scale] = {"auc": "logit", "c_index": "logit", "oe_ratio": "log",
                            "calibration_in_the_large": "identity", "calibration_recalibration_slope": "identity"}


def pool(measure: str, estimates: Sequence[float], variances: Sequence[float], level: float = 0.95) -> MetaAnalysis:
    """Pool one measure's per-centre ``estimates`` (on the measure's own scale) with their ``variances``.

    AUC and C (``auc``, ``c_index``, ``auc_t*``) are pooled on the logit scale and O:E (``oe_ratio``, ``oe_ratio_t*``)
    on the log scale, their variances carried over by the delta method (the variance of log O:E is the
    caller's: :func:`log_oe_binary`, :func:`log_oe_survival`); the rest as they are.
    """
    scale: Scale = ("log" if measure.startswith("oe_ratio") else "logit" if measure.startswith("auc_t")
                    else SCALES.get(measure, "identity"))
    est = np.asarray(estimates, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    if scale == "logit":
        pairs = [logit_auc(float(a), float(s)) for a, s in zip(est, var)]
        est, var = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    elif scale == "log":
        if np.any(est <= 0):
            raise ValueError(f"{measure}: an O:E ratio of 0 cannot be pooled on the log scale")
        est = np.log(est)
    return random_effects(est, var, scale=scale, level=level)
