"""Performance pooled over imputations (Wood, Royston & White 2015) against R: mice::pool.scalar of pROC's DeLong
AUC, glm calibration intercept and slope, the Brier score and survival::concordance's C on mice's imputations
(fixture from make_pooled_performance.R); and the pooling's properties on constructed data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from analytics import stats
from analytics.stats.pooled_performance import (
    pool_statistic,
    pooled_auc,
    pooled_binary,
    pooled_brier,
    pooled_c_index,
    pooled_calibration,
    pooled_mean,
    pooled_means,
)

HERE = Path(__file__).parent
TOL = 1e-6
FIELDS = ("qbar", "ubar", "b", "t", "df", "riv", "fmi", "estimate", "low", "high")


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads((HERE / "pooled_performance.json").read_text(encoding="utf-8"))


def _close(got: float, want: float, what: str) -> None:
    # degrees of freedom reach 1e7 when the imputations barely differ: relative there, absolute elsewhere
    assert abs(got - want) <= TOL * max(1.0, abs(want)), f"{what}: {got!r} != R {want!r}"


def _same(res, want: dict, name: str) -> None:
    for f in FIELDS:
        _close(getattr(res, f), want[f], f"{name}.{f}")
    assert res.pooled == "rubin" and res.m == len(want["qhat"])


def test_binary_statistics_equal_r(ref: dict) -> None:
    y, scores = np.asarray(ref["y"]), np.asarray(ref["scores"])
    got = pooled_binary(y, scores)
    for name in ("auc", "in_the_large", "recalibration_intercept", "recalibration_slope", "brier"):
        _same(got[name], ref[name], name)
    np.testing.assert_allclose(got["auc"].per_imputation, ref["auc"]["per"], atol=TOL)
    assert got["auc"].transform == "logit" and got["brier"].transform == "identity"
    assert got["auc"].fmi > 0 and got["auc"].low < got["auc"].estimate < got["auc"].high
    assert "m=5" in got["auc"].method and "logit" in got["auc"].method


def test_c_index_equals_r(ref: dict) -> None:
    res = pooled_c_index(ref["time"], ref["event"], np.asarray(ref["lps"]))
    _same(res, ref["c_index"], "c_index")
    np.testing.assert_allclose(res.per_imputation, ref["c_index"]["per"], atol=TOL)


# ------------------------------------------------------------------------- m identical completions
@pytest.fixture(scope="module")
def one() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=150)
    y = (rng.random(150) < expit(-0.3 + 1.2 * x)).astype(int)
    return y, expit(0.1 + 0.9 * x + rng.normal(scale=0.3, size=150))


def test_identical_completions_give_the_single_data_values(one: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = one
    m = 6
    got = pooled_binary(y, np.tile(p, (m, 1)))
    single_auc, cov = stats.delong_covariance(y, p)
    cal = stats.calibration(y, p)
    want = {"auc": single_auc[0], "in_the_large": cal["in_the_large"], "brier": cal["brier"],
            "recalibration_intercept": cal["recalibration_intercept"], "recalibration_slope": cal["recalibration_slope"]}
    for name, value in want.items():
        res = got[name]
        assert res.estimate == pytest.approx(value, abs=1e-12), name
        assert res.b == 0.0 and res.riv == 0.0 and res.m == m
        assert res.fmi == pytest.approx(0.0, abs=1e-6), name
        assert res.t == pytest.approx(res.ubar, rel=1e-15)
    # the AUC's within variance is DeLong's, carried to the logit scale; its interval the single-data logit one
    auc = got["auc"]
    a = single_auc[0]
    assert auc.ubar == pytest.approx(cov[0, 0] / (a * (1 - a)) ** 2, rel=1e-12)
    half = 1.959963984540054 * math.sqrt(auc.ubar)
    assert auc.low == pytest.approx(expit(logit(a) - half), abs=1e-6)
    assert auc.high == pytest.approx(expit(logit(a) + half), abs=1e-6)
    # Brier: var((p - y)^2) / n
    sq = (p - y) ** 2
    assert got["brier"].ubar == pytest.approx(np.var(sq, ddof=1) / y.size, rel=1e-12)


def test_identical_survival_completions(one: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = one
    time = np.arange(1.0, y.size + 1.0)[::-1] * (1 + 0.1 * p)
    single = stats.concordance(time, y, p, interval="ij")
    res = pooled_c_index(time, y, np.tile(p, (4, 1)))
    assert res.estimate == pytest.approx(single.estimate, abs=1e-12)
    assert res.fmi == pytest.approx(0.0, abs=1e-6) and res.b == 0.0


# ------------------------------------------------------------------------- the pooling's properties
@settings(max_examples=40, deadline=None)
@given(theta=st.floats(0.55, 0.95), se=st.floats(0.005, 0.05), m=st.integers(2, 12),
       steps=st.lists(st.floats(0.01, 0.3), min_size=1, max_size=4))
def test_interval_widens_as_imputations_spread(theta: float, se: float, m: int, steps: list[float]) -> None:
    """Same estimate and within variance; the imputations pulled apart symmetrically on the pooling scale: the
    pooled centre stays, b grows, the interval nests wider and the fraction of missing information grows."""
    pattern = np.linspace(-1.0, 1.0, m)
    widths, fmis = [], []
    for s in np.cumsum([0.0, *steps]):
        est = expit(logit(theta) + s * pattern)
        # each imputation's standard error on the logit scale is the same: se / (theta (1 - theta))
        ses = se / (theta * (1 - theta)) * est * (1 - est)
        res = pool_statistic("auc", est, ses**2, "logit")
        assert res.qbar == pytest.approx(logit(theta), abs=1e-9)
        widths.append(res.high - res.low)
        fmis.append(res.fmi)
    assert all(b > a for a, b in zip(widths, widths[1:]))
    assert all(b > a for a, b in zip(fmis, fmis[1:]))


def test_mean_pooling_is_flagged_and_has_no_interval() -> None:
    res = pooled_mean("idi", [0.01, 0.03, 0.02])
    assert res.pooled == "mean" and res.estimate == pytest.approx(0.02)
    assert math.isnan(res.low) and math.isnan(res.high) and math.isnan(res.fmi)
    assert res.b == pytest.approx(1e-4) and "mean over m=3" in res.method
    assert res.as_dict()["low"] is None
    got = pooled_means([{"ici": 0.1, "nri": 0.2, "f1": None}, {"ici": 0.3, "nri": 0.4, "f1": 0.5}], skip=["nri"])
    assert list(got) == ["ici"] and got["ici"].estimate == pytest.approx(0.2)


def test_bad_input_is_refused(one: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = one
    with pytest.raises(ValueError, match="at least 2 imputations"):
        pooled_auc(y, p[None, :])
    with pytest.raises(ValueError, match=r"must be \(m, 150\)"):
        pooled_brier(y, np.tile(p[:-1], (3, 1)))
    with pytest.raises(ValueError, match="not finite"):
        pooled_calibration(y, np.tile(np.where(np.arange(p.size) == 0, np.nan, p), (3, 1)))
    perfect = np.vstack([p, y * 0.8 + 0.1])  # the second imputation separates the classes: AUC 1, no logit
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        pooled_auc(y, perfect)
    with pytest.raises(ValueError, match="imputation 2 has no estimate"):
        pooled_calibration(y, perfect)
    with pytest.raises(ValueError, match="at least 2 imputations"):
        pooled_mean("nri", [0.1])
