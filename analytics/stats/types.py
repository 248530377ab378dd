"""Small immutable result types: :class:`Interval` and :class:`Comparison`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def _fmt(x: float, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _range(low: float, high: float, digits: int) -> str:
    lo, hi = _fmt(low, digits), _fmt(high, digits)
    # An en dash reads badly next to a minus sign.
    sep = " to " if lo.startswith("-") or hi.startswith("-") else "\u2013"
    return f"{lo}{sep}{hi}"


def _level(level: float) -> str:
    return f"{level * 100:g}%"


def _json_value(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval.

    Attributes
    ----------
    estimate, low, high : float
        Point estimate and interval bounds.
    level : float
        Confidence level, e.g. 0.95.
    method : str
        How the interval was obtained (``"delong"``, ``"bootstrap-percentile"``,
        ``"bootstrap-bca"``, ``"wilson"``, ...).
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95
    method: str = ""

    def __str__(self) -> str:
        return (
            f"{_fmt(self.estimate, 3)} ({_level(self.level)} CI "
            f"{_range(self.low, self.high, 3)})"
        )

    def __repr__(self) -> str:
        return f"Interval({self}, method={self.method!r})"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``, infinities ``"inf"``/``"-inf"``)."""
        return {k: _json_value(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Comparison:
    """Difference between two paired AUCs (``auc_a - auc_b``) with its test.

    Attributes
    ----------
    difference : float
        ``auc_a - auc_b``.
    z, p : float
        Test statistic and two-sided p-value.
    low, high : float
        Confidence interval of the difference.
    auc_a, auc_b : float
        The two AUCs.
    level : float
        Confidence level of ``low``/``high``.
    method : str
        ``"delong"`` or ``"bootstrap"``.
    """

    difference: float
    z: float
    p: float
    low: float
    high: float
    auc_a: float
    auc_b: float
    level: float = 0.95
    method: str = ""

    def __str__(self) -> str:
        return (
            f"AUC {_fmt(self.auc_a, 3)} vs {_fmt(self.auc_b, 3)}: difference "
            f"{_fmt(self.difference, 3)} ({_level(self.level)} CI "
            f"{_range(self.low, self.high, 3)}), z = {_fmt(self.z, 2)}, "
            f"p = {_fmt_p(self.p)}"
        )

    def __repr__(self) -> str:
        return f"Comparison({self}, method={self.method!r})"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        return {k: _json_value(v) for k, v in asdict(self).items()}


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "nan"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"
