"""Survival validation: risk groups, Kaplan-Meier with log-rank, Cox model, Harrell's and Uno's C.

Risk groups are cut at quantiles of the TRAINING risk and the same cut-points
are applied to every set (no re-estimation on test data).  Kaplan-Meier,
log-rank and Cox fits use lifelines (Davidson-Pilon, JOSS 2019;4:1317).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .bootstrap import CHUNK_ELEMENTS, drop_nan, group_draws, percentile_interval
from .dominance import earlier_higher, earlier_tied, earlier_total, later_lower, later_tied, later_total
from .types import Interval


def _survival_inputs(time: ArrayLike, event: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = v.as_1d(time, "time")
    v.no_nan(t, "time", finite=True)
    if (t < 0).any():
        raise ValueError("time must be non-negative")
    e = v.binary_y(event, both_classes=False, name="event")
    v.same_length(time=t, event=e)
    return t, e


# ------------------------------------------------------------------ risk groups
def risk_cutpoints(train_risk: ArrayLike, q: Sequence[float] = (0.5,)) -> np.ndarray:
    """Cut-points at quantiles ``q`` of the training risk.

    Quantiles by linear interpolation: definition 7 of Hyndman & Fan (Am Stat
    1996;50:361-365), R's default ``quantile`` type.
    """
    r = v.as_1d(train_risk, "train_risk")
    v.no_nan(r, "train_risk")
    qq = np.asarray(q, dtype=np.float64)
    if qq.ndim != 1 or qq.size == 0 or np.any((qq <= 0) | (qq >= 1)) or np.any(np.diff(qq) <= 0):
        raise ValueError(f"q must be increasing values in (0, 1), got {q!r}")
    return np.quantile(r, qq)


def risk_groups(
    train_risk: ArrayLike, risk: ArrayLike, q: Sequence[float] = (0.5,)
) -> np.ndarray:
    """Assign risk groups using cut-points from the training set.

    Parameters
    ----------
    train_risk : array-like
        Risk scores of the training patients; the cut-points are their
        quantiles ``q``.
    risk : array-like
        Risk scores to classify (training, internal or external set).
    q : sequence of float
        Quantiles, e.g. ``(0.5,)`` for a median split or ``(1/3, 2/3)`` for tertiles.

    Returns
    -------
    ndarray of int
        Group ``0`` is the lowest risk; a subject moves up one group for each
        cut-point its risk strictly exceeds (a risk equal to the median is "low").

    Notes
    -----
    Fixed cut-points from the development data, as recommended for validating
    prognostic groups (Royston & Altman, BMC Med Res Methodol 2013;13:33).
    """
    cuts = risk_cutpoints(train_risk, q)
    r = v.as_1d(risk, "risk")
    v.no_nan(r, "risk")
    return np.searchsorted(cuts, r, side="left").astype(np.int64)


def group_labels(n_groups: int) -> list[str]:
    """Default names: ``low/high``, ``low/intermediate/high``, else ``Q1..Qk``."""
    if n_groups == 2:
        return ["low", "high"]
    if n_groups == 3:
        return ["low", "intermediate", "high"]
    return [f"Q{i + 1}" for i in range(n_groups)]


# ------------------------------------------------------------- Kaplan-Meier
@dataclass(frozen=True)
class KMResult:
    """Kaplan-Meier curves by group and the log-rank test.

    Attributes
    ----------
    fitters : dict
        ``label -> lifelines.KaplanMeierFitter``.
    curves : polars.DataFrame
        ``group``, ``time``, ``survival``, ``low``, ``high``, ``at_risk``.
    summary : polars.DataFrame
        Per group: ``group``, ``n``, ``events``, ``median`` survival time.
    logrank : dict
        ``statistic`` (chi-square), ``df``, ``p``.
    """

    fitters: dict[str, Any]
    curves: pl.DataFrame
    summary: pl.DataFrame
    logrank: dict[str, float]


def km_by_group(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike,
    labels: Sequence[str] | Mapping[Any, str] | None = None,
    level: float = 0.95,
) -> KMResult:
    """Kaplan-Meier estimates per group with a log-rank test.

    Parameters
    ----------
    time, event : array-like
        Follow-up time and event indicator (1 = event).
    group : array-like
        Group of each subject, e.g. from :func:`risk_groups`.
    labels : sequence or mapping, optional
        Names of the groups (by sorted group value, or a mapping value -> name).
    level : float
        Level of the pointwise (Greenwood, exponential) intervals.

    Returns
    -------
    KMResult

    Notes
    -----
    Kaplan & Meier, JASA 1958;53:457-481; log-rank test of Mantel (Cancer
    Chemother Rep 1966;50:163-170) / Peto & Peto (JRSS A 1972), k - 1 degrees
    of freedom; lifelines ``KaplanMeierFitter`` and
    ``multivariate_logrank_test`` (same chi-square as R ``survdiff``).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    level = v.level_ok(level)
    t, e = _survival_inputs(time, event)
    g = np.asarray(group)
    if g.ndim != 1 or g.size != t.size:
        raise ValueError(f"lengths differ: time has {t.size}, group has {g.size}")
    values = np.unique(g)
    if values.size < 2:
        raise ValueError("need at least two groups for a log-rank test")
    if labels is None:
        names = (group_labels(values.size) if np.issubdtype(values.dtype, np.integer)
                 and values.tolist() == list(range(values.size))
                 else [str(x) for x in values])
    elif isinstance(labels, Mapping):
        names = [str(labels[x]) for x in values.tolist()]
    else:
        if len(labels) != values.size:
            raise ValueError(f"{len(labels)} labels for {values.size} groups")
        names = [str(x) for x in labels]
    fitters: dict[str, Any] = {}
    curves, summary = [], []
    for val, name in zip(values.tolist(), names):
        sel = g == val
        kmf = KaplanMeierFitter(alpha=1.0 - level, label=name)
        kmf.fit(t[sel], e[sel])
        fitters[name] = kmf
        sf = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_survival_function_
        at_risk = kmf.event_table["at_risk"].reindex(sf.index).to_numpy()
        curves.append(pl.DataFrame({
            "group": [name] * sf.size,
            "time": sf.index.to_numpy(dtype=np.float64),
            "survival": sf.to_numpy(dtype=np.float64),
            "low": ci.iloc[:, 0].to_numpy(dtype=np.float64),
            "high": ci.iloc[:, 1].to_numpy(dtype=np.float64),
            "at_risk": at_risk.astype(np.int64),
        }))
        summary.append({"group": name, "n": int(sel.sum()), "events": int(e[sel].sum()),
                        "median": float(kmf.median_survival_time_)})
    lr = multivariate_logrank_test(t, g, e)
    return KMResult(
        fitters=fitters,
        curves=pl.concat(curves),
        summary=pl.DataFrame(summary),
        logrank={"statistic": float(lr.test_statistic), "df": int(lr.degrees_of_freedom),
                 "p": float(lr.p_value)},
    )


# ---------------------------------------------------------------------- Cox
@dataclass(frozen=True)
class CoxResult:
    """A fitted Cox model.

    Attributes
    ----------
    fitter : lifelines.CoxPHFitter
    summary : polars.DataFrame
        ``term``, ``coef``, ``se``, ``hr``, ``hr_low``, ``hr_high``, ``z``, ``p``.
    n, events : int
    concordance : float
        Harrell's C of the fitted linear predictor on the fitting data.
    """

    fitter: Any
    summary: pl.DataFrame
    n: int
    events: int
    concordance: float


def _covariate_frame(covariates: Any, n: int) -> pd.DataFrame:
    if covariates is None:
        return pd.DataFrame(index=range(n))
    if isinstance(covariates, pl.DataFrame):
        df = covariates.to_pandas()
    elif isinstance(covariates, pd.DataFrame):
        df = covariates.reset_index(drop=True).copy()
    elif isinstance(covariates, Mapping):
        df = pd.DataFrame({k: np.asarray(val) for k, val in covariates.items()})
    else:
        raise TypeError("covariates must be a polars/pandas DataFrame or a mapping of arrays")
    if len(df) != n:
        raise ValueError(f"lengths differ: time has {n}, covariates have {len(df)} rows")
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            raise ValueError(f"covariate {col!r} is not numeric; encode it first")
        if df[col].isna().any():
            raise ValueError(f"covariate {col!r} has missing values")
    return df.astype(np.float64)


def cox(
    time: ArrayLike,
    event: ArrayLike,
    score: ArrayLike,
    covariates: Any = None,
    *,
    score_name: str = "score",
    level: float = 0.95,
    penalizer: float = 0.0,
) -> CoxResult:
    """Cox proportional-hazards model of a score plus covariates.

    Parameters
    ----------
    time, event : array-like
    score : array-like
        The model score (e.g. deep-learning score or risk).
    covariates : polars/pandas DataFrame or mapping of arrays, optional
        Numeric clinical covariates, same rows as ``time``.
    score_name : str
        Name of the score term in the summary.
    level : float
        Level of the hazard-ratio intervals.
    penalizer : float
        lifelines ridge penalty (0 = ordinary partial likelihood).

    Returns
    -------
    CoxResult

    Notes
    -----
    Cox, JRSS B 1972;34:187-220; Efron's tie handling (Efron, JASA
    1977;72:557-565) as lifelines ``CoxPHFitter`` and R ``coxph`` defaults.
    """
    from lifelines import CoxPHFitter

    level = v.level_ok(level)
    t, e = _survival_inputs(time, event)
    s = v.as_1d(score, "score")
    v.same_length(time=t, score=s)
    v.no_nan(s, "score")
    df = _covariate_frame(covariates, t.size)
    if score_name in df.columns or score_name in ("_time", "_event"):
        raise ValueError(f"score_name {score_name!r} clashes with a covariate")
    df.insert(0, score_name, s)
    df["_time"] = t
    df["_event"] = e.astype(np.int64)
    cph = CoxPHFitter(alpha=1.0 - level, penalizer=penalizer)
    cph.fit(df, duration_col="_time", event_col="_event")
    sm = cph.summary
    summary = pl.DataFrame({
        "term": [str(x) for x in sm.index],
        "coef": sm["coef"].to_numpy(dtype=np.float64),
        "se": sm["se(coef)"].to_numpy(dtype=np.float64),
        "hr": sm["exp(coef)"].to_numpy(dtype=np.float64),
        "hr_low": np.exp(sm.iloc[:, sm.columns.get_loc("coef lower %g%%" % (level * 100))]
                         .to_numpy(dtype=np.float64)),
        "hr_high": np.exp(sm.iloc[:, sm.columns.get_loc("coef upper %g%%" % (level * 100))]
                          .to_numpy(dtype=np.float64)),
        "z": sm["z"].to_numpy(dtype=np.float64),
        "p": sm["p"].to_numpy(dtype=np.float64),
    })
    return CoxResult(cph, summary, int(t.size), int(e.sum()), float(cph.concordance_index_))


# --------------------------------------------------------------- Harrell's C
def _pair_order(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subjects in pair order, with their time key and risk rank in that order.

    The key ``2 * rank(time) + (event != 1)`` puts a censoring after the events at its time, so that
    subject ``i`` with an event and subject ``j`` form a comparable pair, ``i`` the shorter, exactly when
    ``key[j] > key[i]``; within a key, subjects go by risk rank.
    """
    _, t_rank = np.unique(time, return_inverse=True)
    key = 2 * t_rank.astype(np.int64).reshape(-1) + (event != 1)
    _, r_rank = np.unique(risk, return_inverse=True)
    r_rank = r_rank.astype(np.int64).reshape(-1)
    order = np.lexsort((r_rank, key))
    return order, key[order], r_rank[order]


def harrell_counts(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted concordant and comparable pair counts for Harrell's C.

    Parameters
    ----------
    time, event, risk : ndarray, shape (n,)
    weights : ndarray, shape (n, b)
        Column ``j`` gives each subject's multiplicity in replicate ``j``
        (bootstrap counts; ones for the point estimate).

    Returns
    -------
    concordant, comparable : ndarray, shape (b,)
        ``concordant`` counts a pair with tied risk as one half.

    Notes
    -----
    A pair is comparable when the subject with the shorter time had the event;
    at a tied time, an event and a censoring are comparable (the censored
    subject outlived the event), two events are not (Harrell et al., Stat Med
    1996;15:361-387; as lifelines ``concordance_index`` and R
    ``survival::concordance``).  A pair weighs the product of its members'
    weights.  With the subjects in pair order (:func:`_pair_order`), the counts
    are weighted dominance counts (:mod:`analytics.stats.dominance`), all ``b``
    replicates carried together: O(n log n * b), exact for integer weights.
    """
    order, key, rank = _pair_order(time, event, risk)
    w = np.asarray(weights, dtype=np.float64)[order]
    lower = later_lower(rank, w)  # later key (a later subject of the same key has a rank at or above)
    tied = later_tied(rank, key, w)
    shorter = w * (event[order] == 1)[:, None]
    conc = np.sum(shorter * (lower + 0.5 * tied), axis=0)
    comp = np.sum(shorter * later_total(key, w), axis=0)
    return conc, comp


def concordance(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    method: str = "harrell",
    tau: float | None = None,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    interval: str = "bootstrap",
) -> Interval:
    """Harrell's or Uno's concordance index with a confidence interval.

    Parameters
    ----------
    time, event : array-like
        Follow-up time and event indicator (1 = event).
    risk : array-like
        Higher risk means shorter expected survival (e.g. a Cox linear
        predictor).  For lifelines ``concordance_index`` pass ``-risk``.
    method : {"harrell", "uno"}
        ``"harrell"``: every comparable pair weighs one; the interval as ``interval`` says.
        ``"uno"``: a pair whose shorter time is an event at ``T_i`` weighs
        ``1 / G(T_i-)^2`` (inverse probability of censoring weights, ``G`` the
        Kaplan-Meier estimate of the censoring distribution), normal interval
        from the infinitesimal-jackknife standard error.
    tau : float, optional
        Truncation time: only pairs whose shorter time is an event at
        ``T_i <= tau`` count (R ``ymax``).
    level : float
    n_boot : int
        Harrell with ``interval="bootstrap"`` only: ordinary bootstrap
        resamples of subjects (percentile interval); 0 gives the point
        estimate with NaN bounds.
    seed : int
    interval : {"bootstrap", "ij"}
        Harrell only.  ``"ij"``: normal interval from the infinitesimal-jackknife
        standard error of R ``survival::concordance`` (the estimate and
        variance R reports; no resampling, ``n_boot`` and ``seed`` unused).

    Returns
    -------
    Interval
        ``method`` ``"bootstrap-percentile"`` (Harrell, bootstrap) or
        ``"ij-normal"`` (Uno, and Harrell with ``interval="ij"``: estimate +-
        z * se; ``se = (high - low) / (2 z)``).

    Notes
    -----
    Harrell, Califf, Pryor, Lee & Rosati, JAMA 1982;247:2543-2546; Harrell,
    Lee & Mark, Stat Med 1996;15:361-387.  Risk ties count one half; see
    :func:`harrell_counts` for comparable pairs.  Replicates are computed
    together (vectorised over resamples), not by refitting in a loop.  The
    infinitesimal-jackknife variance of Harrell's C is R
    ``survival::concordance(timewt = "n")``'s (survival 3.5, ``reverse =
    TRUE``; times are compared exactly, without R's ``timefix`` merging of
    times equal to rounding error).

    Uno, Cai, Pencina, D'Agostino & Wei, Stat Med 2011;30:1105-1117, as R
    ``survival::concordance(timewt = "n/G2", ymax = tau)`` (survival 3.5):
    same comparable pairs and tie rules as Harrell's C, ``G(t-)`` from the
    censoring Kaplan-Meier with censorings after events at a tied time, and the
    variance of R's infinitesimal jackknife with the weights held fixed
    (Therneau & Atkinson, "Concordance", vignette of R survival 3.5).
    """
    level = v.level_ok(level)
    n_boot = v.n_boot_ok(n_boot, allow_zero=True)
    if method not in ("harrell", "uno"):
        raise ValueError(f"method must be 'harrell' or 'uno', got {method!r}")
    if interval not in ("bootstrap", "ij"):
        raise ValueError(f"interval must be 'bootstrap' or 'ij', got {interval!r}")
    t, e = _survival_inputs(time, event)
    r = v.as_1d(risk, "risk")
    v.same_length(time=t, risk=r)
    v.no_nan(r, "risk")
    e = e.astype(np.int64)
    observed = e
    if tau is not None:
        tau = float(tau)
        if not np.isfinite(tau) or tau <= 0:
            raise ValueError(f"tau must be a positive number, got {tau!r}")
        # An event after tau still outlives earlier events; it only stops
        # being the shorter member of a pair (as R's ymax).
        e = e * (t <= tau)
    if method == "uno":
        return _uno_concordance(t, observed, e, r, level)
    if interval == "ij":
        counts, per = weighted_pair_counts(t, e, r, np.ones(t.size))
        return _ij_interval(counts, per, level)
    num, den = harrell_counts(t, e, r, np.ones((t.size, 1)))
    if den[0] == 0:
        raise ValueError("no comparable pairs (no events before another subject's time)")
    est = float(num[0] / den[0])
    if n_boot == 0:
        return Interval(est, float("nan"), float("nan"), level, "none")
    n = t.size
    reps = np.empty(n_boot)
    col = 0
    rows = max(1, CHUNK_ELEMENTS // (4 * n))  # about four (n, rows) arrays live per merge level
    for (idx,) in group_draws([n], n_boot, seed, chunk_rows=rows):
        b = idx.shape[0]
        w = np.bincount((idx + (np.arange(b) * n)[:, None]).ravel(),
                        minlength=b * n).reshape(b, n).T.astype(np.float64)
        c, d = harrell_counts(t, e, r, np.ascontiguousarray(w))
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[col:col + b] = np.where(d > 0, c / d, np.nan)
        col += b
    reps = drop_nan(reps)
    lo, hi = percentile_interval(reps, level)
    return Interval(est, lo, hi, level, "bootstrap-percentile")


# ------------------------------------------------------------------ Uno's C
def censoring_km(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate of the censoring survival ``G`` (censorings after events).

    Parameters
    ----------
    time, event : ndarray, shape (n,)

    Returns
    -------
    times, surv : ndarray
        Distinct observed times and ``G`` just after each (right-continuous).

    Notes
    -----
    At a time with both events and censorings, the censored subjects are taken
    to outlive the events: the censoring risk set excludes the tied events
    (as R ``survival``'s concordance and ``survfit(..., reverse)``-style
    weights in Uno et al. 2011).
    """
    times, inv = np.unique(time, return_inverse=True)
    cens = np.bincount(inv, weights=1.0 - event, minlength=times.size)
    deaths = np.bincount(inv, weights=event.astype(np.float64), minlength=times.size)
    n_at = np.cumsum(np.bincount(inv, minlength=times.size)[::-1])[::-1].astype(np.float64)
    at_risk = n_at - deaths  # >= cens wherever cens > 0
    factor = 1.0 - cens / np.where(cens > 0, at_risk, 1.0)
    return times, np.cumprod(factor)


def _step_before(times: np.ndarray, surv: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Value of a right-continuous step function just before ``at`` (1 before the first step)."""
    k = np.searchsorted(times, at, side="left")
    return np.concatenate(([1.0], surv))[k]


def weighted_pair_counts(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, pair_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted concordant/discordant/tied-risk pair counts and per-subject shares.

    Parameters
    ----------
    time, event, risk : ndarray, shape (n,)
    pair_weight : ndarray, shape (n,)
        Weight of every pair whose shorter member is subject ``i`` (used for
        events only).

    Returns
    -------
    counts : ndarray, shape (3,)
        Concordant (higher risk has the earlier event), discordant and tied on
        risk, each pair weighted.
    per_subject : ndarray, shape (n, 3)
        The same counts restricted to the pairs that contain each subject
        (R's ``influence`` matrix of ``concordancefit``).

    Notes
    -----
    Comparable pairs as :func:`harrell_counts`.  A subject's share as the
    shorter member is its weight times the number of its later partners with a
    lower, higher or tied risk; as the longer member, the weight of its earlier
    partners with a higher, lower or tied risk: dominance counts in pair order
    (:mod:`analytics.stats.dominance`), O(n log n).
    """
    n = time.size
    order, key, rank = _pair_order(time, event, risk)
    w = (np.asarray(pair_weight, dtype=np.float64) * (event == 1))[order]  # as the shorter member
    ones = np.ones(n)
    lower_after = later_lower(rank, ones)
    tied_after = later_tied(rank, key, ones)
    higher_after = later_total(key, ones) - lower_after - tied_after
    higher_before = earlier_higher(rank, w)  # an earlier subject of the same key has a rank at or below
    tied_before = earlier_tied(rank, key, w)
    lower_before = earlier_total(key, w) - higher_before - tied_before
    per = np.empty((n, 3))
    per[order] = np.column_stack([w * lower_after + higher_before, w * higher_after + lower_before,
                                  w * tied_after + tied_before])
    counts = np.array([np.sum(w * lower_after), np.sum(w * higher_after), np.sum(w * tied_after)])
    return counts, per


def _ij_interval(counts: np.ndarray, per: np.ndarray, level: float) -> Interval:
    """C = (Somers' d + 1) / 2 with the infinitesimal-jackknife standard error of R ``concordancefit``.

    ``dfbeta_i = ((conc_i - disc_i) - d * (conc_i + disc_i + tied_i)) / npair`` and
    ``var(C) = sum(dfbeta_i^2) / 4`` (Therneau & Atkinson, "Concordance", vignette of R survival 3.5);
    normal interval ``C +- z * se``.
    """
    from scipy.stats import norm

    npair = counts.sum()
    if npair == 0:
        raise ValueError("no comparable pairs (no events before another subject's time)")
    somer = (counts[0] - counts[1]) / npair
    dfbeta = ((per[:, 0] - per[:, 1]) - somer * per.sum(axis=1)) / npair
    se = float(np.sqrt(np.sum(dfbeta ** 2) / 4.0))
    est = float((somer + 1.0) / 2.0)
    z = float(norm.ppf(0.5 + level / 2.0))
    return Interval(est, est - z * se, est + z * se, level, "ij-normal")


def _uno_concordance(
    t: np.ndarray, observed: np.ndarray, e: np.ndarray, r: np.ndarray, level: float
) -> Interval:
    """Uno's C; ``observed`` are the events, ``e`` those before tau."""
    if e.sum() == 0:
        raise ValueError("no comparable pairs (no events before another subject's time)")
    g_times, g = censoring_km(t, observed)
    weight = np.zeros(t.size)
    ev = e == 1
    weight[ev] = 1.0 / _step_before(g_times, g, t[ev]) ** 2
    counts, per = weighted_pair_counts(t, e, r, weight)
    return _ij_interval(counts, per, level)
