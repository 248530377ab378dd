"""sample_size_survival against Riley et al. BMJ 2020's published example and pmsampsize's own test cases.

pmsampsize (R) is not installable here (no CRAN); its testthat file tests/testthat/test_surv.R
(cran/pmsampsize, version 1.1.x) lists the expected sample sizes and events per parameter used below.
"""

from __future__ import annotations

import math

import pytest

from analytics.stats.sample_size_survival import max_r2_cs_survival, sample_size_survival


def test_bmj_2020_worked_example() -> None:
    # Riley et al. BMJ 2020;368:m441, time-to-event example (recurrent venous thromboembolism): 30 parameters,
    # R2cs 0.051, rate 0.065 per year, 2-year horizon, mean follow-up 2.07 years -> 5143 patients, 692 events,
    # 23.07 events per parameter
    s = sample_size_survival(30, rate=0.065, timepoint=2, mean_follow_up=2.07, r2_cs=0.051)
    assert s.n == 5143
    assert math.ceil(s.events) == 692
    assert round(s.events_per_parameter, 2) == 23.07
    assert s.criterion_1 == 5143
    assert s.person_time == pytest.approx(5143 * 2.07)
    # overall risk at 2 years: 1 - exp(-0.13) and a CI inside +-0.05 (criterion 3 met)
    assert s.risk == pytest.approx(1 - math.exp(-0.13), abs=1e-15)
    assert s.risk_low < s.risk < s.risk_high and s.margin_ok


# (rsquared, parameters, rate, timepoint, meanfup) -> criteria 1, 2, 3, final; EPP of the same rows
PMSAMPSIZE_TESTS = [
    ((0.051, 25, 0.065, 2, 2.07), (4286, 875, 4286, 4286), (23.07, 4.71, 23.07, 23.07)),
    ((0.065, 25, 0.065, 2, 2.07), (3335, 868, 3335, 3335), (17.95, 4.67, 17.95, 17.95)),
    ((0.051, 50, 0.065, 2, 2.07), (8572, 1749, 8572, 8572), (23.07, 4.71, 23.07, 23.07)),
    ((0.051, 25, 0.1, 2, 2.07), (4286, 725, 4286, 4286), (35.49, 6.0, 35.49, 35.49)),
    ((0.051, 25, 0.065, 4, 2.07), (4286, 875, 4286, 4286), (23.07, 4.71, 23.07, 23.07)),
    ((0.051, 25, 0.065, 2, 4), (4286, 684, 4286, 4286), (44.57, 7.11, 44.57, 44.57)),
    ((0.06, 40, 0.08, 3, 5), (5798, 974, 5798, 5798), (57.98, 9.74, 57.98, 57.98)),
    ((0.03, 10, 0.09, 3, 3), (2950, 273, 2950, 2950), (79.65, 7.37, 79.65, 79.65)),
    ((0.3, 80, 0.03, 1, 5), (1974, 2279, 2279, 2279), (3.7, 4.27, 4.27, 4.27)),
]


@pytest.mark.parametrize("args,sizes,epp", PMSAMPSIZE_TESTS)
def test_pmsampsize_testthat_cases(args: tuple, sizes: tuple, epp: tuple) -> None:
    r2, parameters, rate, timepoint, meanfup = args
    s = sample_size_survival(parameters, rate=rate, timepoint=timepoint, mean_follow_up=meanfup, r2_cs=r2)
    assert (s.criterion_1, s.criterion_2, s.criterion_3, s.n) == sizes
    per = [round(n * rate * meanfup / parameters, 2) for n in sizes]
    assert per == list(epp)
    assert round(s.events_per_parameter, 2) == epp[-1]


def test_nagelkerke_is_converted_with_the_maximum_r2() -> None:
    m = max_r2_cs_survival(0.065, 2.07)
    a = sample_size_survival(30, rate=0.065, timepoint=2, mean_follow_up=2.07, r2_nagelkerke=0.051 / m)
    b = sample_size_survival(30, rate=0.065, timepoint=2, mean_follow_up=2.07, r2_cs=0.051)
    assert a.r2_cs == pytest.approx(0.051, abs=1e-15) and a.n == b.n


def test_margin_is_the_ci_half_width_by_hand() -> None:
    s = sample_size_survival(30, rate=0.065, timepoint=2, mean_follow_up=2.07, r2_cs=0.051)
    half = 1.96 * math.sqrt(0.065 / round(5143 * 2.07, 1))
    assert s.risk_high == pytest.approx(1 - math.exp(-(0.065 + half) * 2), abs=1e-15)
    assert s.margin == pytest.approx(s.risk_high - s.risk, abs=1e-15)


@pytest.mark.parametrize("kwargs,match", [
    ({"r2_cs": 0.7}, "largest possible"),
    ({}, "r2_cs or r2_nagelkerke"),
    ({"r2_cs": 0.05, "rate": -1.0}, "rate"),
    ({"r2_cs": 0.05, "shrinkage": 1.2}, "shrinkage"),
])
def test_bad_inputs_are_named(kwargs: dict, match: str) -> None:
    args = {"parameters": 10, "rate": 0.065, "timepoint": 2.0, "mean_follow_up": 2.07, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_size_survival(**args)
