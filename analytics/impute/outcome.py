"""The outcome's columns in an imputation model.

A time-to-event outcome enters as the event indicator and the Nelson-Aalen estimate of the cumulative hazard at
each patient's time, never the raw time (White & Royston, Stat Med 2009;28:1982-1998), as ``mice::nelsonaalen``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .spec import ImputationError


def nelson_aalen(time: ArrayLike, event: ArrayLike) -> np.ndarray:
    """Cumulative hazard at each patient's own time, as ``mice::nelsonaalen``.

    mice takes it from ``basehaz(coxph(Surv(time, status) ~ 1))``: with Efron's ties that is the
    Fleming-Harrington form, ``d`` tied events at a time with ``n`` at risk adding ``sum_{l<d} 1 / (n - l)``.

    Parameters
    ----------
    time : array-like
    event : array-like of 0/1

    Returns
    -------
    ndarray
    """
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    e = np.asarray(event, dtype=np.float64).reshape(-1)
    if t.size != e.size:
        raise ImputationError(f"time has {t.size} values and event {e.size}")
    if np.isnan(t).any() or np.isnan(e).any():
        row = int(np.flatnonzero(np.isnan(t) | np.isnan(e))[0])
        raise ImputationError(f"the survival outcome is missing at row {row + 1}; an outcome cannot be imputed from")
    uniq = np.unique(t)
    at_risk = t.size - np.searchsorted(np.sort(t), uniq, side="left")
    deaths = np.bincount(np.searchsorted(uniq, t[e == 1]), minlength=uniq.size)
    inc = np.array([np.sum(1.0 / (n - np.arange(d))) if d else 0.0 for n, d in zip(at_risk, deaths, strict=True)])
    return np.cumsum(inc)[np.searchsorted(uniq, t)]
