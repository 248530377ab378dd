"""Input checks shared by the statistics functions (clear errors, float64 output)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl


def as_1d(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float64 array, or raise ``ValueError``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {np.shape(x)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def no_nan(arr: np.ndarray, name: str, *, finite: bool = False) -> None:
    """Raise if ``arr`` has NaN (or, with ``finite``, infinite) values."""
    bad = ~np.isfinite(arr) if finite else np.isnan(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        what = "non-finite" if finite else "NaN"
        raise ValueError(
            f"{name} contains {int(bad.sum())} {what} value(s) (first at index {first})"
        )


def same_length(**arrays: np.ndarray) -> None:
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k} has {v}" for k, v in sizes.items())
        raise ValueError(f"lengths differ: {desc}")


def binary_y(y: Any, *, both_classes: bool = True, name: str = "y") -> np.ndarray:
    """Return ``y`` as an int8 array of 0/1, or raise ``ValueError``."""
    arr = as_1d(y, name)
    no_nan(arr, name)
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be 0/1; found {arr[first]!r} at index {first} "
            f"({int(bad.sum())} value(s) not 0/1)"
        )
    out = arr.astype(np.int8)
    if both_classes:
        n1 = int(out.sum())
        if n1 == 0 or n1 == out.size:
            raise ValueError(
                f"{name} contains only one class (all {int(out[0])}); "
                "need both cases (1) and controls (0)"
            )
    return out


def binary_and_score(
    y: Any, score: Any, *, score_name: str = "score", both_classes: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 0/1 outcome and a same-length score without NaN."""
    yy = binary_y(y, both_classes=both_classes)
    s = as_1d(score, score_name)
    same_length(y=yy, **{score_name: s})
    no_nan(s, score_name)
    return yy, s


def probability(prob: Any, name: str = "prob") -> np.ndarray:
    """Validate predicted probabilities in [0, 1]."""
    p = as_1d(prob, name)
    no_nan(p, name)
    if (p < 0).any() or (p > 1).any():
        bad = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise ValueError(f"{name} must lie in [0, 1]; found {p[bad]!r} at index {bad}")
    return p


def level_ok(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return level


def n_boot_ok(n_boot: int, *, allow_zero: bool = False) -> int:
    if isinstance(n_boot, bool) or int(n_boot) != n_boot:
        raise ValueError(f"n_boot must be an integer, got {n_boot!r}")
    n_boot = int(n_boot)
    if n_boot < (0 if allow_zero else 1):
        raise ValueError(f"n_boot must be {'>= 0' if allow_zero else '>= 1'}, got {n_boot}")
    return n_boot


def take_rows(x: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a design: a polars or pandas frame stays a frame, anything else becomes an array."""
    if isinstance(x, pl.DataFrame):
        return x[idx]
    if hasattr(x, "iloc"):
        return x.iloc[idx]
    return np.asarray(x)[idx]
