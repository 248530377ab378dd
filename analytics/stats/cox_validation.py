"""External validation of a Cox-type model from its linear predictor (Royston & Altman, BMC Med Res
Methodol 2013;13:33): the calibration slope and the difference in baseline survival.

The slope is the coefficient of the linear predictor in a Cox model refitted on the validation patients
(R: ``coxph(Surv(time, status) ~ lp)``, Efron ties); the validation baseline survival is Breslow's with
the linear predictor as an offset (R: ``survfit(coxph(Surv(time, status) ~ offset(lp)), newdata =
data.frame(lp = 0), ctype = 1)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .types import Interval


def breslow(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow estimate of the baseline cumulative hazard: its jump times and values.

    ``H0(t) = sum over distinct event times s <= t of d_s / sum_{j: t_j >= s} exp(eta_j)``.
    """
    eta = np.asarray(eta, dtype=np.float64)
    shift = eta.max() if len(eta) else 0.0  # exp overflow guard; H0 is rescaled below
    risk = np.exp(eta - shift)
    times = np.unique(time[event == 1])
    at_risk = np.array([risk[time >= s].sum() for s in times])
    deaths = np.array([((time == s) & (event == 1)).sum() for s in times])
    return times, np.cumsum(deaths / at_risk) * np.exp(-shift)


@dataclass(frozen=True)
class CoxOne:
    """A Cox regression on one covariate: its coefficient, standard error, the partial log-likelihood at it and
    at 0 (``lr`` is the likelihood-ratio statistic), the number of patients and events."""

    coef: float
    se: float
    loglik: float
    loglik0: float
    n: int
    events: int

    @property
    def lr(self) -> float:
        """The likelihood-ratio chi-square against the null model, ``2 (loglik - loglik0)``."""
        return max(2.0 * (self.loglik - self.loglik0), 0.0)


def _efron_pieces(time: np.ndarray, event: np.ndarray, x: np.ndarray, b: float) -> tuple[float, float, float]:
    """Efron's partial log-likelihood of ``b x``, its score and information (one covariate; Efron 1977)."""
    eta = b * x
    shift = eta.max()  # a common factor cancels in every ratio; the log-likelihood is corrected below
    r = np.exp(eta - shift)
    order = np.argsort(-time, kind="stable")
    t, e, xs, rs = time[order], event[order], x[order], r[order]
    # risk-set sums at every distinct time (descending): everyone with a time at least it
    s0, s1, s2 = np.cumsum(rs), np.cumsum(rs * xs), np.cumsum(rs * xs * xs)
    times, first = np.unique(-t, return_index=True)  # -t ascending = t descending; first row of each time
    last = np.r_[first[1:], len(t)] - 1  # the last row of each tied block: the whole risk set
    dead = e == 1
    d = np.add.reduceat(dead.astype(float), first)
    keep = d > 0
    d0, d1, d2 = (np.add.reduceat(np.where(dead, v, 0.0), first)[keep] for v in (rs, rs * xs, rs * xs * xs))
    dx = np.add.reduceat(np.where(dead, xs, 0.0), first)[keep]
    a0, a1, a2, dk = s0[last][keep], s1[last][keep], s2[last][keep], d[keep].astype(int)
    # Efron: the l-th of d tied deaths sees the risk set less l/d of the tied deaths' weight
    rep = np.repeat(np.arange(len(dk)), dk)
    frac = np.concatenate([np.arange(k) / k for k in dk])
    b0 = a0[rep] - frac * d0[rep]
    b1 = a1[rep] - frac * d1[rep]
    b2 = a2[rep] - frac * d2[rep]
    loglik = float(b * dx.sum() - np.sum(np.log(b0) + shift))
    score = float(dx.sum() - np.sum(b1 / b0))
    info = float(np.sum(b2 / b0 - (b1 / b0) ** 2))
    return loglik, score, info


def cox_one(time: np.ndarray, event: np.ndarray, x: np.ndarray, max_iter: int = 100) -> CoxOne:
    """Maximum partial likelihood of ``coxph(Surv(time, event) ~ x)`` (Efron ties) by Newton-Raphson with step
    halving, as ``coxph.fit`` (one parameter, so every step is safe to check): the recalibration model of a
    linear predictor, which lifelines' fitter can fail on ("overflow encountered in exp").

    Raises
    ------
    ValueError
        No events, a constant covariate, or no finite maximum: the covariate orders the events perfectly
        (a monotone likelihood, where ``coxph`` warns that the coefficient may be infinite).
    """
    time = np.asarray(time, dtype=np.float64).ravel()
    event = np.asarray(event, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64).ravel()
    if not (time.size == event.size == x.size) or time.size == 0:
        raise ValueError("time, event and the covariate must be non-empty and of one length")
    if not (np.isfinite(time).all() and np.isfinite(x).all()) or not np.isin(event, (0.0, 1.0)).all():
        raise ValueError("time and the covariate must be finite, event 0 or 1")
    if event.sum() < 1:
        raise ValueError("no events")
    sd = float(x.std())
    if sd == 0.0:
        raise ValueError("the linear predictor is constant")
    z = (x - x.mean()) / sd  # the slope of x is that of z over sd: a scale-free iteration
    span = float(np.ptp(z))
    diverged = ValueError("no finite estimate: the linear predictor orders the events (almost) perfectly, so the "
                          "partial likelihood has no maximum (monotone likelihood)")
    b = 0.0
    loglik0, score, info = _efron_pieces(time, event, z, 0.0)
    loglik = loglik0
    for _ in range(max_iter):
        if not info > 1e-10:
            raise diverged
        step = score / info
        for _ in range(60):  # halve until the likelihood does not fall
            # a relative risk beyond e^40 over the data: the likelihood rises without a maximum (as coxph's
            # "coefficient may be infinite"); it would also underflow the risk sets' sums
            if abs(b + step) * span > 40.0:
                raise diverged
            new = _efron_pieces(time, event, z, b + step)
            if np.isfinite(new[0]) and new[0] >= loglik - 1e-12 * abs(loglik):
                break
            step /= 2.0
        else:
            raise diverged
        b += step
        converged = abs(new[0] - loglik) <= 1e-10 * (abs(loglik) + 1e-10) and abs(step) < 1e-9 * (1.0 + abs(b))
        loglik, score, info = new
        if converged:
            break
    else:
        raise diverged
    if abs(b) * span > 30.0 or not info > 1e-10:
        raise diverged
    return CoxOne(b / sd, 1.0 / (sd * float(np.sqrt(info))), loglik, loglik0, int(time.size), int(event.sum()))


def calibration_slope(time: np.ndarray, event: np.ndarray, lp: np.ndarray, level: float = 0.95) -> Interval:
    """The calibration slope of a linear predictor on validation patients, with its Wald interval
    (1 = neither over- nor under-fitted): :func:`cox_one` of the outcome on ``lp``.

    Raises
    ------
    ValueError
        The Cox model cannot be fitted (no events, a constant ``lp``, no finite maximum).
    """
    from scipy.stats import norm

    fit = cox_one(time, event, lp)
    z = float(norm.ppf(0.5 + level / 2))
    return Interval(fit.coef, fit.coef - z * fit.se, fit.coef + z * fit.se, level, "wald")


def baseline_survival_difference(time: np.ndarray, event: np.ndarray, lp: np.ndarray, horizons: Sequence[float],
                                 risk: np.ndarray) -> list[float | None]:
    """At each horizon ``t``: the validation patients' baseline survival ``S0(t)`` (Breslow, ``lp`` as an
    offset) minus the development one, recovered from the development model's risks
    ``risk[:, j] = 1 - exp(-H0(t_j) exp(lp))`` (the median over patients of ``H0``); None where no risk
    gives it back (every risk 0 or 1)."""
    times, h0 = breslow(lp, time, event)
    out: list[float | None] = []
    for j, t in enumerate(horizons):
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = -np.log1p(-risk[:, j]) / np.exp(lp)
        dev = dev[np.isfinite(dev)]
        if not len(dev):
            out.append(None)
            continue
        s_dev = float(np.exp(-np.median(dev)))
        s_val = float(np.exp(-(h0[times <= t][-1] if (times <= t).any() else 0.0)))
        out.append(s_val - s_dev)
    return out
