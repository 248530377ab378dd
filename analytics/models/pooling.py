"""The pooled model of a regression fitted on m completed data sets, and its coefficient table.

Rubin (1987), *Multiple Imputation for Nonresponse in Surveys*: the pooled estimate is the mean of the m
fits' coefficients; its total variance ``t = ubar + (1 + 1/m) b``; degrees of freedom after Barnard & Rubin
(1999, Biometrika 86:948) with the complete-data df as ``mice::pool`` takes them (``n - p`` for a glm,
``events - p`` for ``coxph``). Per term (a factor's levels, a spline's basis, an interaction), the D1
multivariate Wald test (Li, Raghunathan & Rubin 1991, JASA 86:1065; ``mice::D1``). All statistics come from
:mod:`analytics.stats.rubin`.

The coefficient table keeps the columns of a single fit's (``term, estimate, se, odds_ratio|hazard_ratio,
ci_low, ci_high, z, p, penalised, note``: ``se`` is ``sqrt(t)``, the interval Rubin's t interval, ``z`` the
t statistic) and adds Rubin's: ``m, ubar, b, t, dfcom, df, riv, lambda, fmi``. ``anova.csv`` holds the D1 rows
(``chisq`` = F x df1 for the readers of a Wald table; ``statistic``, ``df2``, ``riv``, ``method`` beside it).

A penalised regression's m fits are kept as they are (the model's risk is the mean of theirs); its table is the
mean of their estimates, flagged, without standard errors.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from analytics.models.coefficients import Estimates, RegressionTables, estimates, regression_tables
from analytics.stats import rubin

POOLED_NOTE = "mean of the imputations' estimates (penalised: no standard errors)"


def _pooled_fit(fits: Sequence[Any], e: Sequence[Estimates], beta: np.ndarray, total: np.ndarray,
                datas: Sequence[Any], y: np.ndarray) -> Any:
    """A copy of the first fit carrying the pooled coefficients (and, for Cox, a Breslow baseline at them)."""
    model = copy.deepcopy(fits[0])
    if e[0].link == "logit":
        clf = model.pipeline_.steps[-1][1]
        clf.intercept_ = beta[:1].copy()
        clf.coef_ = beta[1:].reshape(1, -1).copy()
        clf.cov_ = total
        return model
    from analytics.stats.cox_validation import breslow

    inner = model.model_
    inner.coef_ = beta.copy()
    # the baseline hazard at the pooled coefficients, over every completion stacked (Breslow: events over the
    # summed risk of those at risk, each completion counted once)
    x = np.vstack([np.asarray(model.prep_.transform(d.table), dtype=np.float64) for d in datas])
    t = np.tile(np.asarray(y, dtype=np.float64)[:, 0], len(datas))
    ev = np.tile(np.asarray(y, dtype=np.float64)[:, 1], len(datas)).astype(np.int64)
    times, hazard = breslow(inner.risk(x), t, ev)
    inner.base_times_, inner.base_hazard_ = times, hazard
    return model


def rubin_model(fits: Sequence[Any], datas: Sequence[Any], y: np.ndarray) -> tuple[Any, RegressionTables] | None:
    """The pooled model and its Rubin table from the m unpenalised fits (fit i on ``datas[i]``); None when a
    fit has no coefficients or the fits' coefficients differ in name."""
    e = [estimates(f, d, y) for f, d in zip(fits, datas, strict=True)]
    if any(x is None for x in e):
        return None
    est: list[Estimates] = [x for x in e if x is not None]
    if any(x.names != est[0].names for x in est):
        return None
    q = np.stack([x.beta for x in est])
    u = np.stack([x.cov for x in est])
    m, p = q.shape
    first = est[0]
    dfcom = rubin.dfcom_glm(first.n, p) if first.link == "logit" else rubin.dfcom_cox(first.events, p)
    table = rubin.pool(q, u, dfcom, first.names)
    ubar = u.mean(axis=0)
    total = ubar + (1.0 + 1.0 / m) * np.atleast_2d(np.cov(q, rowvar=False, ddof=1))
    model = _pooled_fit(fits, est, table.estimate, total, datas, y)
    return model, RegressionTables(first.link, False, _rubin_frame(table, first.link), _d1_frame(q, u, first, dfcom),
                                   {"n": first.n, "events": first.events, "m": m, "pooled": "rubin",
                                    "dfcom": float(dfcom)})


def _rubin_frame(t: rubin.PooledTable, link: str) -> pl.DataFrame:
    ratio = "odds_ratio" if link == "logit" else "hazard_ratio"
    return pl.DataFrame({
        "term": t.term, "estimate": t.estimate, "se": t.std_error, ratio: np.exp(t.estimate),
        "ci_low": np.exp(t.conf_low), "ci_high": np.exp(t.conf_high), "z": t.statistic, "p": t.p_value,
        "penalised": [False] * len(t.term), "m": [t.m] * len(t.term), "ubar": t.ubar, "b": t.b, "t": t.t,
        "dfcom": [t.dfcom] * len(t.term), "df": t.df, "riv": t.riv, "lambda": t.lambda_, "fmi": t.fmi,
        "note": pl.Series([None] * len(t.term), dtype=pl.String),
    })


def _d1_frame(q: np.ndarray, u: np.ndarray, e: Estimates, dfcom: float) -> pl.DataFrame | None:
    """One D1 test per formula term (its columns jointly zero); None without a formula design."""
    if not e.terms:
        return None
    shift = 1 if e.link == "logit" else 0
    rows: dict[str, list[Any]] = {"row": [], "chisq": [], "df": [], "p": [], "statistic": [], "df2": [], "riv": [],
                                  "method": []}
    for term in e.terms:
        rows["row"].append(term.label)
        rows["df"].append(len(term.columns))
        tested = [c + shift for c in term.columns]
        try:
            test = rubin.d1(q, u, tested, dfcom)
            rows["method"].append("D1")
        except ZeroDivisionError:
            # k (m - 1) = 2 leaves Reiter's small-sample denominator df undefined: the large-sample df of Li,
            # Raghunathan & Rubin (1991), as mitml::testModels without df.com
            try:
                test = rubin.d1(q, u, tested)
                rows["method"].append("D1 (large-sample df)")
            except ZeroDivisionError:  # no between-imputation variance (nothing was missing): no df, no test
                rows["method"].append("D1 (not defined: no between-imputation variance)")
                for col in ("chisq", "p", "statistic", "df2", "riv"):
                    rows[col].append(None)
                continue
        rows["chisq"].append(test.statistic * test.df1)
        rows["p"].append(test.p)
        rows["statistic"].append(test.statistic)
        rows["df2"].append(test.df2)
        rows["riv"].append(test.riv)
    return pl.DataFrame(rows, schema={"row": pl.String, "chisq": pl.Float64, "df": pl.Int64, "p": pl.Float64,
                                      "statistic": pl.Float64, "df2": pl.Float64, "riv": pl.Float64,
                                      "method": pl.String})


def mean_tables(fits: Sequence[Any], datas: Sequence[Any], y: np.ndarray) -> RegressionTables | None:
    """The mean of the fits' coefficient estimates, flagged as point estimates without standard errors (None
    when the fits have no table, or their terms differ)."""
    tables = [regression_tables(f, d, y) for f, d in zip(fits, datas, strict=True)]
    if any(t is None for t in tables):
        return None
    tabs: list[RegressionTables] = [t for t in tables if t is not None]
    first = tabs[0].coefficients
    if "cause" in first.columns or any(t.coefficients["term"].to_list() != first["term"].to_list() for t in tabs):
        return None
    beta = np.mean(np.stack([t.coefficients["estimate"].to_numpy() for t in tabs]), axis=0)
    n = len(first)
    frame = pl.DataFrame({
        "term": first["term"], "estimate": beta, "se": [None] * n, tabs[0].ratio: np.exp(beta),
        "ci_low": [None] * n, "ci_high": [None] * n, "z": [None] * n, "p": [None] * n, "penalised": [True] * n,
        "m": [len(tabs)] * n, "note": [POOLED_NOTE] * n,
    }, schema_overrides={"se": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "z": pl.Float64,
                         "p": pl.Float64})
    summary = {k: v for k, v in tabs[0].summary.items() if k in ("n", "events")}
    return RegressionTables(tabs[0].link, True, frame, None, {**summary, "m": len(tabs), "pooled": "mean"})


__all__ = ["POOLED_NOTE", "mean_tables", "rubin_model"]
