"""Added value of one model's predicted risks over another's at horizons: ΔAUC(t) and ΔBrier(t).

Both models are scored on the same patients, so each difference's standard
error comes from the difference of the two paired influence functions
(including the censoring-model term), as the ``contrasts`` of R
``riskRegression::Score(list(old, new), ..., cens.model = "km")``; with
``cause``, of the cumulative incidence of that cause with competing risks
(``Score(..., cause)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .survival_time import _auc_at, _brier_at, _censoring, _outcome, _risk_matrix, _times, _z


@dataclass(frozen=True)
class TimeContrast:
    """``new - old`` of a metric at each horizon, with its paired standard error and Wald test.

    Attributes
    ----------
    metric : str
        ``"auc"`` or ``"brier"`` (a negative ΔBrier favours ``new``).
    times, old, new, delta, se, low, high, z, p : ndarray
        Horizons; the two models' estimates; ``new - old``, its SE, the
        ``delta -+ z_level * se`` interval (not cut), ``delta / se`` and its
        two-sided p-value.
    level : float
    """

    metric: str
    times: np.ndarray
    old: np.ndarray
    new: np.ndarray
    delta: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    z: np.ndarray
    p: np.ndarray
    level: float = 0.95

    def row(self, t: float) -> dict[str, float]:
        """The values at horizon ``t`` (one of :attr:`times`) by name."""
        hit = np.flatnonzero(self.times == float(t))
        if hit.size == 0:
            raise KeyError(f"horizon {t!r} not evaluated; times are {self.times.tolist()}")
        k = int(hit[0])
        return {name: float(getattr(self, name)[k])
                for name in ("old", "new", "delta", "se", "low", "high", "z", "p")}

    def to_frame(self) -> pl.DataFrame:
        """``time``, ``old``, ``new``, ``delta``, ``se``, ``low``, ``high``, ``z``, ``p``."""
        return pl.DataFrame({"time": self.times, "old": self.old, "new": self.new, "delta": self.delta,
                             "se": self.se, "low": self.low, "high": self.high, "z": self.z, "p": self.p})


def _contrast(metric: str, times: np.ndarray, est: np.ndarray, infl: np.ndarray, level: float) -> TimeContrast:
    """``est`` (2, k) and ``infl`` (2, k, n) of old and new as their paired contrast per horizon."""
    from scipy.stats import norm

    n = infl.shape[2]
    delta = est[1] - est[0]
    se = np.std(infl[1] - infl[0], axis=1, ddof=1) / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):  # identical risks: se 0, no test
        z = delta / se
    p = 2.0 * norm.sf(np.abs(z))
    half = _z(level) * se
    return TimeContrast(metric, times, est[0], est[1], delta, se, delta - half, delta + half, z, p, level)


def time_contrasts(
    time: ArrayLike,
    event: ArrayLike,
    risk_old: ArrayLike,
    risk_new: ArrayLike,
    times: ArrayLike,
    cause: int | None = None,
    level: float = 0.95,
) -> tuple[TimeContrast, TimeContrast]:
    """ΔAUC(t) and ΔBrier(t) of ``new`` over ``old``, with paired influence-function SEs.

    Parameters
    ----------
    time, event : array-like
        Follow-up time and event indicator (1 = event); with ``cause``,
        competing-risk status codes (0 censored, otherwise the cause).
    risk_old, risk_new : array-like, shape (n, len(times)) or (n,) for one horizon
        Each model's predicted risk (with ``cause``, cumulative incidence of
        it) by each horizon.
    times : array-like
    cause : int, optional
        The cause of interest when causes compete.
    level : float

    Returns
    -------
    (TimeContrast, TimeContrast)
        ΔAUC(t) then ΔBrier(t), each ``new - old``.

    Notes
    -----
    AUC(t) is the cumulative/dynamic IPCW AUC (Uno, Cai, Tian & Wei, JASA
    2007; with competing risks, controls include subjects with a competing
    event by ``t``: Blanche, Dartigues & Jacqmin-Gadda, Stat Med
    2013;32:5381-5397) and Brier(t) the IPCW Brier score (Graf et al., Stat
    Med 1999), both with a Kaplan-Meier censoring model, as
    :func:`~analytics.stats.time_auc` and :func:`~analytics.stats.brier`.
    The SE of ``new - old`` is ``sd(IF_new - IF_old) / sqrt(n)``, the
    influence-function contrast of R ``riskRegression::Score(list(old, new),
    ..., cens.model = "km", conservative = FALSE)``'s ``contrasts`` (Gerds &
    Kattan, *Medical Risk Prediction Models*, 2021, ch. 7); the p-value is
    the two-sided Wald test of ``delta / se``.
    """
    level = v.level_ok(level)
    t_, e, hit, other = _outcome(time, event, cause)
    tt = _times(times)
    pair = [_risk_matrix(r, t_.size, tt.size, name, broadcast=False)
            for r, name in ((risk_old, "risk_old"), (risk_new, "risk_new"))]
    for p, name in zip(pair, ("risk_old", "risk_new")):
        if ((p < 0) | (p > 1)).any():
            i, j = np.argwhere((p < 0) | (p > 1))[0]
            raise ValueError(f"{name} must lie in [0, 1]; found {p[i, j]!r} at row {i}, column {j}")
    cz = _censoring(t_, e)
    g_before = cz.before(t_)
    out = []
    for fn, metric in ((_auc_at, "auc"), (_brier_at, "brier")):
        est = np.empty((2, tt.size))
        infl = np.empty((2, tt.size, t_.size))
        for m, p in enumerate(pair):
            for k, t in enumerate(tt):
                est[m, k], infl[m, k] = fn(t_, e, hit, other, cz, g_before, p[:, k], float(t))
        out.append(_contrast(metric, tt, est, infl, level))
    return out[0], out[1]


__all__ = ["TimeContrast", "time_contrasts"]
