"""Minimum sample size to develop a time-to-event (Cox) prediction model, as ``pmsampsize(type = "s")``.

The survival counterpart of :func:`analytics.stats.added_value.sample_size` (binary outcomes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# 1.96, not Phi^-1(0.975): the constant of the paper and of pmsampsize
Z = 1.96
# pmsampsize's nominal study size for the largest possible R^2cs (its "n from the original study")
NOMINAL_N = 10_000


@dataclass(frozen=True)
class SurvivalSampleSize:
    """Riley et al. minimum sample size for a time-to-event model (criteria 1-3) and what it implies.

    Attributes
    ----------
    criterion_1 : int
        n for an expected uniform shrinkage of at least ``shrinkage``.
    criterion_2 : int
        n for a difference of at most ``r2_difference`` between apparent and adjusted Nagelkerke R^2.
    criterion_3 : int
        n at which the overall risk at ``timepoint`` is checked (the larger of criteria 1 and 2, as in
        pmsampsize); ``risk_low``/``risk_high`` give its 95% CI and ``margin`` the half-width above.
    n : int
        The required n, the largest of the three.
    events : float
        Expected events, ``n * rate * mean_follow_up``.
    events_per_parameter : float
    person_time : float
        ``n * mean_follow_up``.
    r2_cs, max_r2_cs : float
        Anticipated Cox-Snell R^2 and the largest possible one (rounded to 2 decimals, as pmsampsize).
    shrinkage, shrinkage_2 : float
        Target shrinkage of criterion 1 and the shrinkage criterion 2 implies (rounded to 3 decimals).
    risk, risk_low, risk_high : float
        Overall risk at ``timepoint``, ``1 - exp(-rate t)``, and its 95% CI at ``n``.
    margin : float
        ``risk_high - risk``; compare with ``target_margin`` (``margin_ok``).
    """

    criterion_1: int
    criterion_2: int
    criterion_3: int
    n: int
    events: float
    events_per_parameter: float
    person_time: float
    r2_cs: float
    max_r2_cs: float
    shrinkage: float
    shrinkage_2: float
    parameters: int
    rate: float
    timepoint: float
    mean_follow_up: float
    risk: float
    risk_low: float
    risk_high: float
    margin: float
    target_margin: float

    @property
    def margin_ok(self) -> bool:
        """Whether the overall risk at the timepoint is estimated within ``target_margin`` (criterion 3)."""
        return self.margin <= self.target_margin

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict, ``margin_ok`` included."""
        return {**asdict(self), "margin_ok": self.margin_ok}


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value


def _n_for_shrinkage(parameters: int, r2: float, s: float) -> int:
    return int(math.ceil(parameters / ((s - 1.0) * math.log(1.0 - r2 / s))))


def max_r2_cs_survival(rate: float, mean_follow_up: float) -> float:
    """Largest possible Cox-Snell R^2 of a survival model with this event rate and follow-up, rounded to 2
    decimals (Riley et al. 2019 part II eq. 23, pmsampsize's computation at its nominal n = 10,000)."""
    events = math.ceil(rate * mean_follow_up * NOMINAL_N)
    ln_null = events * math.log(events / NOMINAL_N) - events
    return round(1.0 - math.exp(2.0 * ln_null / NOMINAL_N), 2)


def sample_size_survival(
    parameters: int,
    rate: float,
    timepoint: float,
    mean_follow_up: float,
    r2_cs: float | None = None,
    r2_nagelkerke: float | None = None,
    shrinkage: float = 0.9,
    r2_difference: float = 0.05,
    margin: float = 0.05,
) -> SurvivalSampleSize:
    """Minimum sample size to develop a Cox (time-to-event) prediction model.

    Riley et al., "Minimum sample size for developing a multivariable prediction model: Part II -
    binary and time-to-event outcomes", Stat Med 2019;38:1276-1296, and "Calculating the sample
    size required for developing a clinical prediction model", BMJ 2020;368:m441, computed as the
    pmsampsize package's ``type = "s"`` (its rounding included: the maximum R^2cs to 2 decimals, the
    shrinkage of criterion 2 to 3), so that the published example (30 parameters, R^2cs 0.051, rate
    0.065, timepoint 2, mean follow-up 2.07: n = 5143, 692 events) is reproduced.

    Parameters
    ----------
    parameters : int
        Candidate predictor parameters (a factor's levels - 1, a spline's basis columns ...).
    rate : float
        Overall event rate per unit of time (the units of ``timepoint`` and ``mean_follow_up``).
    timepoint : float
        The horizon of the predictions (criterion 3).
    mean_follow_up : float
        Anticipated mean follow-up.
    r2_cs : float, optional
        Anticipated Cox-Snell R^2 (an adjusted one from a previous development, or an external
        validation's apparent one).
    r2_nagelkerke : float, optional
        Anticipated Nagelkerke R^2, used when ``r2_cs`` is not given: ``r2_cs = r2_nagelkerke * max_r2_cs``.
    shrinkage : float
        Target expected uniform shrinkage (criterion 1).
    r2_difference : float
        Largest acceptable optimism in Nagelkerke's R^2 (criterion 2).
    margin : float
        Acceptable margin of error of the overall risk at ``timepoint`` (criterion 3).

    Returns
    -------
    SurvivalSampleSize

    Raises
    ------
    ValueError
        An invalid argument, or an R^2 above the largest possible; the message names it.

    Notes
    -----
    1. ``n = P / ((S - 1) ln(1 - R2cs / S))``.
    2. ``S = R2cs / (R2cs + delta maxR2cs)``, ``maxR2cs = 1 - exp(2 lnL0 / n0)``, ``lnL0 = E ln(E / n0) - E``
       with ``E = rate * mean_follow_up * n0`` events in a nominal ``n0 = 10,000``; then formula 1.
    3. At ``n = max(n1, n2)`` the 95% CI of the rate, ``rate +- 1.96 sqrt(rate / (n * mean_follow_up))``
       (person-time rounded to 1 decimal), gives the CI of the risk ``1 - exp(-rate t)``; pmsampsize reports
       it (``margin``) rather than raising n.
    """
    if isinstance(parameters, bool) or int(parameters) != parameters or parameters < 1:
        raise ValueError(f"parameters must be a positive integer, got {parameters!r}")
    parameters = int(parameters)
    rate = _positive("rate", rate)
    timepoint = _positive("timepoint", timepoint)
    mean_follow_up = _positive("mean_follow_up", mean_follow_up)
    shrinkage = float(shrinkage)
    if not 0.0 < shrinkage < 1.0:
        raise ValueError(f"shrinkage must lie in (0, 1), got {shrinkage}")
    r2_difference = _positive("r2_difference", r2_difference)
    margin = _positive("margin", margin)
    max_r2 = max_r2_cs_survival(rate, mean_follow_up)
    if r2_cs is None:
        if r2_nagelkerke is None:
            raise ValueError("give r2_cs or r2_nagelkerke (the anticipated Cox-Snell or Nagelkerke R^2)")
        nag = float(r2_nagelkerke)
        if not 0.0 < nag < 1.0:
            raise ValueError(f"r2_nagelkerke must lie in (0, 1), got {nag}")
        r2 = nag * max_r2
    else:
        r2 = float(r2_cs)
    if not (math.isfinite(r2) and 0.0 < r2 < 1.0):
        raise ValueError(f"r2_cs must lie in (0, 1), got {r2}: no explained variation to derive a sample size from")
    if max_r2 < r2:
        raise ValueError(f"r2_cs ({r2:.4g}) exceeds the largest possible Cox-Snell R^2 ({max_r2}) at rate {rate} "
                         f"and mean follow-up {mean_follow_up}")
    if shrinkage <= r2:
        raise ValueError(f"shrinkage ({shrinkage}) must exceed r2_cs ({r2:.4g}) for criterion 1")
    n1 = _n_for_shrinkage(parameters, r2, shrinkage)
    s2 = round(r2 / (r2 + r2_difference * max_r2), 3)
    if s2 <= r2:
        raise ValueError(f"r2_cs = {r2:.3g} implies almost no explained variation: the shrinkage of criterion 2 "
                         f"({s2}) leaves no sample size")
    n2 = _n_for_shrinkage(parameters, r2, s2)
    n3 = max(n1, n2)
    person_time_3 = round(mean_follow_up * n3, 1)
    half = Z * math.sqrt(rate / person_time_3)
    risk = 1.0 - math.exp(-rate * timepoint)
    high = 1.0 - math.exp(-(rate + half) * timepoint)
    low = 1.0 - math.exp(-(rate - half) * timepoint)
    n = max(n1, n2, n3)
    events = n * rate * mean_follow_up
    return SurvivalSampleSize(n1, n2, n3, n, events, events / parameters, n * mean_follow_up, r2, max_r2,
                              shrinkage, s2, parameters, rate, timepoint, mean_follow_up, risk, low, high,
                              high - risk, margin)
