"""cox_zph against survival::cox.zph (survival 3.5, transform km / rank / identity) on survival::lung.

Fixture: zph_fixture.R (R's model matrix, coefficients and cox.zph output, written as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analytics.stats.terms import Term
from analytics.stats.zph import cox_zph, transform_times

FIXTURE = json.loads((Path(__file__).parent / "zph_lung.json").read_text())
X = np.array(FIXTURE["X"], dtype=float)
TIME = np.array(FIXTURE["time"], dtype=float)
EVENT = np.array(FIXTURE["status"], dtype=float)
BETA = np.array(FIXTURE["coefficients"], dtype=float)
TERMS = [Term(name, (name,), tuple(np.atleast_1d(cols).tolist())) for name, cols in FIXTURE["assign"].items()]


def test_fixture_has_tied_event_times_and_multi_column_terms() -> None:
    event_times = TIME[EVENT == 1]
    assert np.unique(event_times).size < event_times.size
    assert sorted(len(t.columns) for t in TERMS) == [1, 1, 2, 3]


@pytest.mark.parametrize("case", FIXTURE["zph"], ids=lambda c: c["transform"])
def test_table_and_residuals_equal_cox_zph(case: dict) -> None:
    z = cox_zph(X, TIME, EVENT, BETA, TERMS, transform=case["transform"])
    assert [t.term for t in z.tests] == case["terms"]
    np.testing.assert_allclose([t.chisq for t in z.tests], case["chisq"], rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal([t.df for t in z.tests], case["df"])
    np.testing.assert_allclose([t.p for t in z.tests], case["p"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(z.x, case["x"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(z.time, case["time"], rtol=0, atol=0)
    np.testing.assert_allclose(z.residuals, np.array(case["y"]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(z.var, np.array(case["var"]), rtol=1e-9, atol=1e-9)


def test_per_column_tests_equal_terms_false() -> None:
    ref = FIXTURE["zph_columns"]
    z = cox_zph(X, TIME, EVENT, BETA, None, transform="km")
    np.testing.assert_allclose([t.chisq for t in z.tests], ref["chisq"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(z.residuals, np.array(ref["y"]), rtol=1e-9, atol=1e-9)


def test_beta_refitted_by_lifelines_gives_the_same_table() -> None:
    # an independent fit of the same model (lifelines, Efron ties): the table moves only as much as beta does
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    frame = pd.DataFrame(X, columns=[f"c{j}" for j in range(X.shape[1])]).assign(T=TIME, E=EVENT)
    cph = lifelines.CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-12})
    beta = cph.params_.to_numpy()
    assert np.abs(beta - BETA).max() < 1e-8  # lifelines at its default precision (1e-7) is 1.4e-5 away
    z = cox_zph(X, TIME, EVENT, beta, TERMS, transform="km")
    np.testing.assert_allclose([t.chisq for t in z.tests], FIXTURE["zph"][0]["chisq"], rtol=1e-7)


def test_km_transform_by_hand() -> None:
    # times 1, 2, 2, 3, events at 1 and at 2 (one of the two): S = 3/4 after 1 (4 at risk), 3/4 * 2/3 after 2
    # (3 at risk); g(t) is 1 - S just before t, so the tied times share 1 - 3/4
    g = transform_times(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 0.0]), "km")
    np.testing.assert_allclose(g, [0.0, 0.25, 0.25, 0.5])


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="beta"):
        cox_zph(X, TIME, EVENT, BETA[:-1], TERMS)
    with pytest.raises(ValueError, match="cover"):
        cox_zph(X, TIME, EVENT, BETA, TERMS[:-1])
    with pytest.raises(ValueError, match="transform"):
        cox_zph(X, TIME, EVENT, BETA, TERMS, transform="spline")  # type: ignore[arg-type]


@pytest.mark.parametrize("i", range(4))
def test_smooth_equals_plot_cox_zph(i: int) -> None:
    from analytics.stats.zph import smooth

    z = cox_zph(X, TIME, EVENT, BETA, TERMS, transform="km")
    ref = FIXTURE["smooth_km"][i]
    s = smooth(z, i)
    np.testing.assert_allclose(s.x, ref["x"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.fit, ref["fit"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(s.band, ref["se2"], rtol=1e-7, atol=1e-9)


def test_breslow_ties_equal_cox_zph() -> None:
    ref = FIXTURE["breslow"]
    z = cox_zph(X, TIME, EVENT, ref["coefficients"], TERMS, transform="km", ties="breslow")
    np.testing.assert_allclose([t.chisq for t in z.tests], ref["chisq"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(z.residuals, np.array(ref["y"]), rtol=1e-9, atol=1e-9)
