"""Competing-risk status codes: 0 is censored, any other integer is the cause of the event."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v


def competing_inputs(time: ArrayLike, status: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``time`` (finite, >= 0) and ``status`` (integer codes, 0 = censored) as arrays.

    Raises
    ------
    ValueError
        Naming the argument and the first offending value.
    """
    t = v.as_1d(time, "time")
    v.no_nan(t, "time", finite=True)
    if (t < 0).any():
        raise ValueError(f"time must be non-negative; found {t[t < 0][0]!r}")
    s_raw = v.as_1d(status, "status")
    v.no_nan(s_raw, "status", finite=True)
    s = s_raw.astype(np.int64)
    if np.any(s != s_raw) or np.any(s < 0):
        bad = s_raw[(s != s_raw) | (s_raw < 0)][0]
        raise ValueError(f"status must hold non-negative integer codes (0 = censored); found {bad!r}")
    v.same_length(time=t, status=s)
    return t, s


def cause_ok(status: np.ndarray, cause: int) -> int:
    """``cause`` as a positive int code (it need not occur in ``status``)."""
    c = int(cause)
    if c <= 0 or c != cause:
        raise ValueError(f"cause must be a positive integer status code, got {cause!r}")
    return c
