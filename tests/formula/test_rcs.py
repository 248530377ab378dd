"""Restricted cubic splines against rms::rcs (Hmisc::rcspline.eval): knots at rms's default quantiles, the
n < 100 rule, the rule for a value tied at an end, and the normalised basis, to 1e-10."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from analytics.models.formula import DesignError, rcs_basis, rcs_knots


def _values(reference: dict[str, Any], case: dict[str, Any]) -> np.ndarray:
    x = case["x"] if isinstance(case.get("x"), list) else reference["data"]["age"]  # nwtco's age when left out
    return np.asarray(x, dtype=np.float64)


@pytest.mark.parametrize("name", ["full3", "full4", "full5", "full6", "full7", "small3", "small4", "small5", "tied4"])
def test_knots_and_basis_equal_rms(reference: dict[str, Any], name: str) -> None:
    case = reference["rcs"][name]
    x = _values(reference, case)
    assert len(x) == case["n"]
    knots = rcs_knots(x, case["k"])
    np.testing.assert_allclose(knots, case["knots"], rtol=0, atol=1e-10)
    basis = rcs_basis(x, knots)[case["rows"]]
    expected = np.asarray(case["basis"]).T
    assert basis.shape == expected.shape == (len(case["rows"]), case["k"] - 1)
    np.testing.assert_allclose(basis, expected, rtol=1e-12, atol=1e-10)


def test_small_samples_put_outer_knots_at_fifth_values(reference: dict[str, Any]) -> None:
    case = reference["rcs"]["small4"]
    x = np.sort(_values(reference, case))
    knots = rcs_knots(x, 4)
    assert len(x) < 100 and knots[0] == x[4] and knots[-1] == x[-5]
    # the same values 100 times over follow the quantile rule instead
    many = np.repeat(x, 2)
    assert rcs_knots(many, 4)[0] == pytest.approx(np.quantile(many, 0.05))


def test_basis_of_new_values_at_given_knots(reference: dict[str, Any]) -> None:
    case = reference["rcs_new"]
    np.testing.assert_allclose(rcs_basis(np.asarray(case["x"]), case["knots"]), np.asarray(case["basis"]).T,
                               rtol=1e-12, atol=1e-10)


def test_too_few_distinct_values_name_the_variable() -> None:
    x = np.tile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 20)
    with pytest.raises(DesignError, match=r"rcs\(grade, 5\): grade has 6 distinct values"):
        rcs_knots(x, 5, "grade")
    assert len(rcs_knots(x, 3, "grade")) == 3
    with pytest.raises(DesignError, match="at least 6"):
        rcs_knots(np.arange(5.0), 3, "grade")
