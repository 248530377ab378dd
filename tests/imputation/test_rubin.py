"""Rubin's rules, D1 and D3 against mice on mice's own imputations (fixtures from make_fixtures.R)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analytics.models.glm import MLLogistic
from analytics.stats.competing_cox import cox_efron
from analytics.stats.rubin import d1, d3, dfcom_cox, dfcom_glm, logistic_loglik_at, pool, pool_scalar

HERE = Path(__file__).parent
TOL = 1e-6
COLUMNS = ("estimate", "ubar", "b", "t", "df", "riv", "lambda", "fmi", "std_error", "statistic", "p_value",
           "conf_low", "conf_high")


def _fixture(name: str) -> dict:
    return json.loads((HERE / name).read_text(encoding="utf-8"))


def _by_imputation(rows: list[dict]) -> list[list[dict]]:
    m = max(r[".imp"] for r in rows)
    return [[r for r in rows if r[".imp"] == i] for i in range(1, m + 1)]


def _pbc_design(rows: list[dict], with_stage: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The design of ``dead ~ age + sex + bili + albumin + chol + platelet + ascites + stage`` with R's treatment
    coding (reference levels: sex m, ascites no, stage 1)."""
    cols = {"age": [r["age"] for r in rows], "sexf": [r["sex"] == "f" for r in rows], "bili": [r["bili"] for r in rows],
            "albumin": [r["albumin"] for r in rows], "chol": [r["chol"] for r in rows],
            "platelet": [r["platelet"] for r in rows], "ascitesyes": [r["ascites"] == "yes" for r in rows]}
    if with_stage:
        for level in ("2", "3", "4"):
            cols[f"stage{level}"] = [r["stage"] == level for r in rows]
    x = np.column_stack([np.asarray(v, dtype=np.float64) for v in cols.values()])
    return x, np.asarray([r["dead"] for r in rows], dtype=np.float64), list(cols)


def _rel(a: np.ndarray, b: list[float]) -> float:
    b_ = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b_) / np.maximum(1.0, np.abs(b_))))


@pytest.fixture(scope="module")
def glm_fits() -> tuple[dict, list, list, list]:
    fx = _fixture("rubin_glm.json")
    sets = _by_imputation(fx["completed"])
    full, reduced, designs = [], [], []
    for rows in sets:
        x, y, names = _pbc_design(rows)
        x0, _, _ = _pbc_design(rows, with_stage=False)
        full.append(MLLogistic().fit(x, y))
        reduced.append(MLLogistic().fit(x0, y))
        designs.append((x, x0, y, names))
    return fx, full, reduced, designs


def test_pooled_glm_table_equals_mice_pool(glm_fits: tuple) -> None:
    fx, full, _, designs = glm_fits
    est = np.array([np.r_[f.intercept_, f.coef_.ravel()] for f in full])
    cov = np.array([f.cov_ for f in full])
    n, p = designs[0][0].shape[0], est.shape[1]
    table = pool(est, cov, dfcom=dfcom_glm(n, p), names=["(Intercept)", *designs[0][3]])
    ref = fx["pool"]
    assert table.term == ref["term"]
    assert table.dfcom == ref["dfcom"][0] == 407
    for col in COLUMNS:
        got = table.lambda_ if col == "lambda" else getattr(table, col)
        assert _rel(got, ref[col]) < TOL, col
    assert table.rows()[0]["lambda"] == pytest.approx(ref["lambda"][0], rel=TOL)


def test_d1_of_the_stage_factor_and_of_all_terms_equal_mice(glm_fits: tuple) -> None:
    fx, full, _, designs = glm_fits
    est = np.array([np.r_[f.intercept_, f.coef_.ravel()] for f in full])
    cov = np.array([f.cov_ for f in full])
    dfc = dfcom_glm(designs[0][0].shape[0], est.shape[1])
    names = ["(Intercept)", *designs[0][3]]
    stage = [names.index(s) for s in ("stage2", "stage3", "stage4")]
    for test, ref in ((d1(est, cov, stage, dfc), fx["D1"]), (d1(est, cov, range(1, len(names)), dfc), fx["D1_all"])):
        got = np.array([test.statistic, test.df1, test.df2, test.p, test.riv])
        assert _rel(got, [ref[k] for k in ("statistic", "df1", "df2", "p", "riv")]) < TOL
        assert test.method == "D1" and test.m == 5


def test_d3_likelihood_ratio_equals_mice(glm_fits: tuple) -> None:
    fx, full, reduced, designs = glm_fits
    q1 = np.mean([np.r_[f.intercept_, f.coef_.ravel()] for f in full], axis=0)
    q0 = np.mean([np.r_[f.intercept_, f.coef_.ravel()] for f in reduced], axis=0)
    l1 = [f.loglik_ for f in full]
    l0 = [f.loglik_ for f in reduced]
    p1 = [logistic_loglik_at(np.column_stack([np.ones(len(y)), x]), y, q1) for x, _, y, _ in designs]
    p0 = [logistic_loglik_at(np.column_stack([np.ones(len(y)), x0]), y, q0) for _, x0, y, _ in designs]
    test = d3(l1, l0, p1, p0, k=len(q1) - len(q0))
    ref = fx["D3"]
    got = np.array([test.statistic, test.df1, test.df2, test.p, test.riv])
    assert _rel(got, [ref[k] for k in ("statistic", "df1", "df2", "p", "riv")]) < TOL


def test_pooled_coxph_table_and_d1_equal_mice() -> None:
    fx = _fixture("rubin_cox.json")
    names = ["age", "sex", "ph.karno", "wt.loss", "meal.cal"]
    fits = []
    for rows in _by_imputation(fx["completed"]):
        x = np.array([[r[c] for c in names] for r in rows], dtype=np.float64)
        fits.append(cox_efron(x, [r["time"] for r in rows], [r["status"] for r in rows], names=names))
    est = np.array([f.coef for f in fits])
    cov = np.array([f.var for f in fits])
    dfc = dfcom_cox(fits[0].events, len(names))
    table = pool(est, cov, dfcom=dfc, names=names)
    ref = fx["pool"]
    assert table.dfcom == ref["dfcom"][0] == 160
    for col in COLUMNS:
        got = table.lambda_ if col == "lambda" else getattr(table, col)
        assert _rel(got, ref[col]) < TOL, col
    test = d1(est, cov, [3, 4], dfc)
    r = fx["D1"]
    assert _rel(np.array([test.statistic, test.df2, test.p, test.riv]), [r["statistic"], r["df2"], r["p"], r["riv"]]) < TOL


def test_pool_with_large_sample_df_is_rubins_and_rejects_one_imputation() -> None:
    q = np.array([[1.0], [1.2], [0.9]])
    u = np.array([[0.04], [0.05], [0.045]])
    t = pool(q, u)
    b = np.var(q, ddof=1)
    lam = (1 + 1 / 3) * b / t.t[0]
    assert t.df[0] == pytest.approx(2 / lam**2)
    assert math.isinf(t.dfcom)
    with pytest.raises(ValueError, match="at least 2 imputations"):
        pool(q[:1], u[:1])


def test_pool_scalar_on_the_logit_scale_back_transforms_inside_zero_one() -> None:
    auc = np.array([0.80, 0.82, 0.79, 0.81])
    se = np.array([0.03, 0.03, 0.031, 0.029])
    r = pool_scalar(auc, se, "logit")
    logit = np.log(auc / (1 - auc))
    assert r.estimate == pytest.approx(1 / (1 + np.exp(-logit.mean())))
    assert 0 < r.low < r.estimate < r.high < 1
    assert 0 <= r.fmi <= 1
    ident = pool_scalar(auc, se, "identity")
    assert ident.estimate == pytest.approx(auc.mean())
    with pytest.raises(ValueError, match="between 0 and 1"):
        pool_scalar(np.array([1.0, 0.9]), np.array([0.1, 0.1]))
