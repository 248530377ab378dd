"""Numbers as metrics.json holds them, one measure's value (:class:`Estimate`, :class:`LogRank`), the
validation error, and the checked readers of a parsed metrics file (each error names the file and key)."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analytics import stats
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.validate")


class ValidateError(CohortlabError, ValueError):
    """Metrics that cannot be computed as configured (no predictions, or models without them), or a
    metrics file that cannot be read back; the message names the file or key."""


# calibration measures kept (names as stats.calibration), and how each is computed
CALIBRATION = {
    "in_the_large": "calibration-in-the-large: intercept of logit(y) ~ offset(logit(p)), slope fixed at 1",
    "recalibration_intercept": "logistic recalibration logit(y) ~ a + b logit(p): a (rms::val.prob Intercept)",
    "recalibration_slope": "logistic recalibration logit(y) ~ a + b logit(p): b (rms::val.prob Slope)",
    "brier": "mean squared error",
    "ici": "loess (Austin & Steyerberg)",
    "e50": "loess (Austin & Steyerberg)",
    "e90": "loess (Austin & Steyerberg)",
}


THRESHOLD_CHOSEN_ON = "train (out-of-fold scores)"


def clean(x: Any) -> float | None:
    """A number as metrics.json holds it: rounded to 12 significant digits; NaN and infinities as None."""
    if x is None:
        return None
    f = float(x)
    return float(f"{f:.12g}") if math.isfinite(f) else None


def jsonable(value: Any) -> Any:
    """JSON-safe and stable: NaN -> None, numpy scalars -> Python, floats rounded to 12 digits."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(type(v) is float for v in value):  # a curve's coordinates: one pass, no recursion
            return [float(f"{v:.12g}") if math.isfinite(v) else None for v in value]
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return clean(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _signed(x: Any) -> float | None:
    """A comparison's number: as :func:`clean`, but an infinity keeps its sign (written "inf" / "-inf")."""
    if isinstance(x, str) and x in ("inf", "-inf"):
        return float(x)
    if x is not None and math.isinf(float(x)):
        return float(x)
    return clean(x)


def _signed_json(x: float | None) -> Any:
    return ("inf" if x > 0 else "-inf") if x is not None and math.isinf(x) else x


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def fmt_number(x: float | None, decimals: int = 3) -> str:
    """``x`` with ``decimals`` decimals, "-" when there is none."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.{decimals}f}"


def safe(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """``fn(*args, **kwargs)`` and None; or None and why, when it cannot be computed (one class, too few events).

    Numerical warnings (e.g. bootstrap resamples that lacked a class) go to the
    log rather than the console.
    """
    name = getattr(fn, "__name__", str(fn))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out: tuple[Any, str | None] = fn(*args, **kwargs), None
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            out = None, f"{name}: {exc}"
    for w in caught:
        log.info("%s: %s", name, w.message)
    # a Cox fit (lifelines) that stopped short of its maximum gives a number that is not the estimate:
    # no number, and the reason where it would be (issue 23: a slope of 62 with an "overflow" logged at INFO)
    failed = [str(w.message).split(".")[0] for w in caught if type(w.message).__name__ == "ConvergenceWarning"
              and any(k in str(w.message) for k in NOT_CONVERGED)]
    if out[1] is None and failed:
        out = None, f"{name}: the Cox fit did not converge ({failed[0]})"
    return out


# lifelines' warnings that its Newton-Raphson stopped without a maximum (its others, e.g. a covariate correlated
# with time, leave the estimate valid)
NOT_CONVERGED = ("failed to converge", "suspiciously close to 0")


@dataclass(frozen=True)
class Estimate:
    """One measure's value: the estimate, its interval (``low``/``high`` None when there is none) and how
    it was obtained (``method``: "delong", "wilson", "bootstrap-percentile", "no CI", "count", ...).

    A measure pooled over multiply imputed data (:mod:`analytics.validation.pooled`) also has ``m``, the number of
    imputations, and, when pooled by Rubin's rules, ``fmi``, its fraction of missing information (None when pooled
    as a mean); both are None otherwise, and metrics.json then holds neither key."""

    estimate: float | None
    low: float | None = None
    high: float | None = None
    method: str = ""
    level: float | None = None
    m: int | None = None
    fmi: float | None = None

    @classmethod
    def of(cls, iv: stats.Interval) -> Estimate:
        """An interval from :mod:`analytics.stats`, as written."""
        return cls(clean(iv.estimate), clean(iv.low), clean(iv.high), iv.method, clean(iv.level))

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> Estimate:
        d = _mapping(d, where, source)
        m = None if d.get("m") is None else _count(d, "m", where, source)
        return cls(_number(d, "estimate", where, source), clean(d.get("low")), clean(d.get("high")),
                   str(d.get("method", "")), clean(d.get("level")), m, clean(d.get("fmi")))

    def to_dict(self) -> dict[str, Any]:
        pooled = {} if self.m is None else {"m": self.m, "fmi": self.fmi}  # only a pooled measure has them
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "method": self.method,
                "level": self.level, **pooled}

    def text(self, decimals: int = 3) -> str:
        """``0.812 (0.701-0.923)``; ``0.812 (no CI)`` without an interval."""
        bounds = (f"{fmt_number(self.low, decimals)}-{fmt_number(self.high, decimals)}"
                  if self.low is not None and self.high is not None else "no CI")
        return f"{fmt_number(self.estimate, decimals)} ({bounds})"


@dataclass(frozen=True)
class LogRank:
    """The log-rank test across the risk groups of one split."""

    statistic: float | None
    df: int | None
    p: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "df": self.df, "p": self.p}


def _read(path: Path, missing: str | None) -> Any:
    if not path.exists():
        raise ValidateError(missing or f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValidateError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None


def _mapping(d: Any, where: str, source: str) -> Mapping[str, Any]:
    if not isinstance(d, dict):
        raise ValidateError(f"{source}: key '{where or '(top level)'}' must be an object, not {type(d).__name__}")
    return d


def _required(d: Mapping[str, Any], key: str, where: str, source: str) -> Any:
    if key not in d:
        raise ValidateError(f"{source}: key '{where + '.' if where else ''}{key}' is missing")
    return d[key]


def _number(d: Mapping[str, Any], key: str, where: str, source: str) -> float | None:
    x = _required(d, key, where, source)
    if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
        raise ValidateError(f"{source}: key '{where}.{key}' must be a number or null, not {x!r}")
    return clean(x)


def _count(d: Any, key: str, where: str, source: str) -> int:
    x = _required(_mapping(d, where, source), key, where, source)
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValidateError(f"{source}: key '{where}.{key}' must be a whole number, not {x!r}")
    return x
