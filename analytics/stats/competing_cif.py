"""Cumulative incidence with competing risks: Aalen-Johansen, Gray's test, pseudo-values.

The Aalen-Johansen estimate of the cumulative incidence of each cause, with
the infinitesimal-jackknife standard error and the log-scale interval that R
``survival::survfit(Surv(time, factor(status)) ~ g)`` reports (survival >= 3:
Therneau, *The survival package*, "Multi-state models and competing risks"
vignette); Gray's K-sample test as R ``cmprsk::cuminc`` (Gray, Ann Stat
1988;16:1141-1154); and leave-one-out jackknife pseudo-values of the
cumulative incidence at a horizon as R ``prodlim::jackknife`` (Andersen &
Perme, Stat Methods Med Res 2010;19:71-99).

Status codes: 0 is censored, any other integer is the cause of the event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .competing_status import cause_ok as _cause_ok
from .competing_status import competing_inputs


# ------------------------------------------------------------ Aalen-Johansen
@dataclass(frozen=True)
class _AJ:
    """Aalen-Johansen pieces at the distinct event times ``s`` (any cause)."""

    s: np.ndarray          # distinct event times
    at_risk: np.ndarray    # Y(s): subjects with time >= s
    d: np.ndarray          # all-cause events at s
    d_k: np.ndarray        # (len(s), len(causes)) events of each cause at s
    surv: np.ndarray       # S(s), all-cause Kaplan-Meier just after s
    surv_before: np.ndarray
    cif: np.ndarray        # (len(s), len(causes)) F_k(s)
    causes: np.ndarray

    def cif_at(self, t: float) -> np.ndarray:
        k = int(np.searchsorted(self.s, t, side="right"))
        return np.zeros(self.causes.size) if k == 0 else self.cif[k - 1]


def _aalen_johansen(time: np.ndarray, status: np.ndarray, causes: np.ndarray) -> _AJ:
    ev = status > 0
    s = np.unique(time[ev])
    tsort = np.sort(time)
    at_risk = (time.size - np.searchsorted(tsort, s, side="left")).astype(np.float64)
    idx = np.searchsorted(s, time[ev])
    d_k = np.zeros((s.size, causes.size))
    for j, c in enumerate(causes):
        d_k[:, j] = np.bincount(idx, weights=(status[ev] == c).astype(np.float64), minlength=s.size)
    d = np.bincount(idx, minlength=s.size).astype(np.float64)
    surv = np.cumprod(1.0 - d / at_risk)
    surv_before = np.concatenate(([1.0], surv[:-1]))
    cif = np.cumsum(surv_before[:, None] * d_k / at_risk[:, None], axis=0)
    return _AJ(s, at_risk, d, d_k, surv, surv_before, cif, causes)


def _aj_influence(aj: _AJ, time: np.ndarray, status: np.ndarray, t: float) -> np.ndarray:
    """Influence of each subject's case weight on ``F_k(t)``: shape (n, len(causes)).

    The derivative of the Aalen-Johansen estimate with respect to subject
    ``i``'s case weight at weight 1 (the infinitesimal jackknife), from the
    hazard influences ``(dN_i(s) - Y_i(s) dA(s)) / Y(s)`` through the product
    integral; ``sqrt(sum_i IF_i^2)`` is survfit's ``std.err``.
    """
    keep = aj.s <= t
    s, y, h = aj.s[keep], aj.at_risk[keep], (aj.d / aj.at_risk)[keep]
    hk = (aj.d_k / aj.at_risk[:, None])[keep]
    cif, sb = aj.cif[keep], aj.surv_before[keep]
    f_t = cif[-1] if s.size else np.zeros(aj.causes.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        # (F_k(t) - F_k(s_l)) / (1 - h_l): zero where everybody at risk failed (then F is flat).
        ratio = np.where((1.0 - h)[:, None] > 0, (f_t[None, :] - cif) / (1.0 - h)[:, None], 0.0)
    per_time = (h[:, None] * ratio - sb[:, None] * hk) / y[:, None]
    cum = np.vstack((np.zeros((1, aj.causes.size)), np.cumsum(per_time, axis=0)))
    upto = np.searchsorted(s, np.minimum(time, t), side="right")
    infl = cum[upto]
    own = (status > 0) & (time <= t)
    j = np.searchsorted(s, time[own])
    own_term = -ratio[j] / y[j, None]
    own_term += (status[own][:, None] == aj.causes[None, :]) * (sb[j] / y[j])[:, None]
    infl[own] += own_term
    return infl


@dataclass(frozen=True)
class CumulativeIncidence:
    """Aalen-Johansen cumulative incidence at horizons, per group and cause.

    Attributes
    ----------
    table : polars.DataFrame
        ``group``, ``cause``, ``time``, ``estimate``, ``se``, ``low``,
        ``high``, ``n``, ``n_risk`` (subjects with time >= horizon).
    level : float
    """

    table: pl.DataFrame
    level: float

    def get(self, cause: int, group: object = "all") -> pl.DataFrame:
        """Rows of one cause (and group: ``"all"`` without ``by``)."""
        return self.table.filter((pl.col("cause") == int(cause))
                                 & (pl.col("group") == str(group)))


def _log_interval(p: np.ndarray, se: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """survfit's ``conf.type = "log"``: ``p exp(+-z se / p)``, upper cut at 1, NaN where p = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pp = np.where(p > 0, p, np.nan)
        w = z * se / pp
        return pp * np.exp(-w), np.minimum(pp * np.exp(w), 1.0)


def cumulative_incidence(
    time: ArrayLike,
    status: ArrayLike,
    times: ArrayLike,
    by: ArrayLike | None = None,
    level: float = 0.95,
) -> CumulativeIncidence:
    """Aalen-Johansen cumulative incidence of every cause at horizons, overall or by group.

    Parameters
    ----------
    time : array-like
        Follow-up time.
    status : array-like of int
        0 censored, otherwise the cause of the event (1, 2, ...).
    times : array-like
        Horizons.
    by : array-like, optional
        Group of each subject; one estimate per group (labels as strings).
    level : float
        Confidence level of the interval.

    Returns
    -------
    CumulativeIncidence

    Notes
    -----
    ``F_k(t) = sum_{s <= t} S(s-) d_k(s) / Y(s)`` with ``S`` the all-cause
    Kaplan-Meier (Aalen & Johansen, Scand J Stat 1978;5:141-150).  The
    standard error is the infinitesimal jackknife ``sqrt(sum_i IF_i(t)^2)``,
    which is what R ``summary(survfit(Surv(time, factor(status)) ~ by),
    times)`` reports as ``std.err`` for ``pstate`` (survival >= 3); the
    interval is survfit's default ``conf.type = "log"``:
    ``F exp(+-z se / F)``, upper bound cut at 1.  The estimate equals
    ``cmprsk::cuminc`` + ``timepoints`` (whose variance, Gray's, differs).
    """
    from .survival_time import _times, _z

    level = v.level_ok(level)
    t_, s_ = competing_inputs(time, status)
    tt = _times(times)
    causes = np.unique(s_[s_ > 0])
    if causes.size == 0:
        raise ValueError("status has no events (all 0 = censored)")
    if by is None:
        groups = np.full(t_.size, "all", dtype=object)
    else:
        groups = np.asarray(by).astype(str).astype(object)
        if groups.shape != t_.shape:
            raise ValueError(f"lengths differ: time has {t_.size}, by has {groups.size}")
    z = _z(level)
    rows: list[dict[str, object]] = []
    for g in sorted(set(groups.tolist())):
        sel = groups == g
        tg, sg = t_[sel], s_[sel]
        aj = _aalen_johansen(tg, sg, causes)
        for t in tt:
            est = aj.cif_at(float(t))
            se = np.sqrt(np.sum(_aj_influence(aj, tg, sg, float(t)) ** 2, axis=0))
            lo, hi = _log_interval(est, se, z)
            for j, c in enumerate(causes):
                rows.append({"group": str(g), "cause": int(c), "time": float(t),
                             "estimate": float(est[j]), "se": float(se[j]),
                             "low": float(lo[j]), "high": float(hi[j]),
                             "n": int(sel.sum()), "n_risk": int((tg >= t).sum())})
    return CumulativeIncidence(pl.DataFrame(rows), level)


def aalen_johansen_risk(time: ArrayLike, status: ArrayLike, t: float, cause: int = 1) -> float:
    """Aalen-Johansen cumulative incidence of ``cause`` by ``t`` (0 without events)."""
    t_, s_ = competing_inputs(time, status)
    c = _cause_ok(s_, cause)
    aj = _aalen_johansen(t_, s_, np.array([c]))
    return float(aj.cif_at(float(t))[0])


def cif_curve(time: ArrayLike, status: ArrayLike, cause: int = 1) -> pl.DataFrame:
    """The Aalen-Johansen step function of ``cause``: ``time``, ``estimate`` at each event time."""
    t_, s_ = competing_inputs(time, status)
    c = _cause_ok(s_, cause)
    aj = _aalen_johansen(t_, s_, np.array([c]))
    return pl.DataFrame({"time": aj.s, "estimate": aj.cif[:, 0]})


# ------------------------------------------------------------- Gray's test
@dataclass(frozen=True)
class GrayTest:
    """Gray's test of equal cumulative incidence of one cause across groups.

    Attributes
    ----------
    cause : int
    statistic, p : float
    df : int
    score : ndarray
        Scores of the first ``df`` groups.
    variance : ndarray
    """

    cause: int
    statistic: float
    p: float
    df: int
    score: np.ndarray
    variance: np.ndarray


def _gray_stratum(y: np.ndarray, m: np.ndarray, ig: np.ndarray, ng: int,
                  rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Score and variance in one stratum: a line-by-line transcription of cmprsk's ``crst``."""
    ng1 = ng - 1
    rs = np.bincount(ig, minlength=ng).astype(np.float64)
    s = np.zeros(ng1)
    v_ = np.zeros((ng1, ng1))
    f1m = np.zeros(ng)
    skmm = np.ones(ng)
    skm = np.ones(ng)
    f1 = np.zeros(ng)
    v3 = np.zeros(ng)
    v2 = np.zeros((ng1, ng))
    c = np.zeros((ng, ng))
    fm = 0.0
    bounds = np.flatnonzero(np.diff(y)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [y.size]))
    for lo, hi in zip(starts, ends, strict=True):
        d = np.zeros((3, ng))
        np.add.at(d, (m[lo:hi], ig[lo:hi]), 1.0)
        nd1, nd2 = d[1].sum(), d[2].sum()
        if nd1 > 0 or nd2 > 0:
            pos = rs > 0
            td = d[1] + d[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                skm = np.where(pos, skmm * (rs - td) / rs, skm)
                f1 = np.where(pos, f1m + skmm * d[1] / rs, f1)
                hr = np.where(pos, rs / skmm, 0.0)
                tr = hr.sum()
                tq = np.where(pos, rs * (1.0 - f1m) / skmm, 0.0).sum()
            f = fm + nd1 / tr
            fb = (1.0 - fm) ** rho
            # a(i, j): -fb t1_i t1_j / tr off the diagonal, fb t1 (1 - t1 / tr) on it.
            a = -fb * np.outer(hr, hr) / tr
            a[np.diag_indices(ng)] = fb * hr * (1.0 - hr / tr)
            a[~pos, :] = 0.0
            a[:, ~pos] = 0.0
            c += a * nd1 / (tr * (1.0 - fm))
            with np.errstate(divide="ignore", invalid="ignore"):
                s += np.where(pos[:ng1], fb * (d[1, :ng1] - nd1 * rs[:ng1] * (1.0 - f1m[:ng1])
                                               / (skmm[:ng1] * tq)), 0.0)
            if nd1 > 0:
                for k in np.flatnonzero(pos).tolist():
                    t4 = 1.0 - (1.0 - f) / skm[k] if skm[k] > 0 else 1.0
                    t5 = 1.0 - (nd1 - 1.0) / (tr * skmm[k] - 1.0) if nd1 > 1 else 1.0
                    t3 = t5 * skmm[k] * nd1 / (tr * rs[k])
                    v3[k] += t4 * t4 * t3
                    t1 = a[:ng1, k] - t4 * c[:ng1, k]
                    v2[:, k] += t1 * t4 * t3
                    v_ += np.outer(t1, t1) * t3
            if nd2 > 0:
                for k in range(ng):
                    if skm[k] <= 0 or d[2, k] <= 0:
                        continue
                    t4 = (1.0 - f) / skm[k]
                    t5 = 1.0 - (d[2, k] - 1.0) / (rs[k] - 1.0) if d[2, k] > 1 else 1.0
                    t3 = t5 * skmm[k] ** 2 * d[2, k] / rs[k] ** 2
                    v3[k] += t4 * t4 * t3
                    t1 = t4 * c[:ng1, k]
                    v2[:, k] -= t1 * t4 * t3
                    v_ += np.outer(t1, t1) * t3
            fm = f
            f1m = f1.copy()
            skmm = skm.copy()
        np.subtract.at(rs, ig[lo:hi], 1.0)
    cc = c[:ng1, :]
    v_ += (cc * v3) @ cc.T + cc @ v2.T + v2 @ cc.T
    return s, v_


def gray_test(
    time: ArrayLike,
    status: ArrayLike,
    group: ArrayLike,
    cause: int = 1,
    rho: float = 0.0,
    strata: ArrayLike | None = None,
) -> GrayTest:
    """Gray's K-sample test of the cumulative incidence of ``cause``, as ``cmprsk::cuminc``'s ``Tests``.

    Parameters
    ----------
    time, status : array-like
        Follow-up time; status 0 censored, otherwise the cause.
    group : array-like
        Group of each subject (two or more levels).
    cause : int
        Cause whose cumulative incidence is compared.
    rho : float
        Power of the weight ``(1 - F(t-))^rho`` (0 is the log-rank-type test).
    strata : array-like, optional
        Stratified test: scores and variances summed over strata.

    Returns
    -------
    GrayTest
        Chi-square statistic on ``groups - 1`` df and its p-value.

    Notes
    -----
    Gray, Ann Stat 1988;16:1141-1154: a comparison of the subdistribution
    hazards weighted by ``(1 - F(t-))^rho``, with Gray's variance estimator;
    the score and variance follow cmprsk's Fortran ``crstm`` step by step
    (groups ordered as sorted labels, the last one the reference).
    """
    from scipy.stats import chi2

    t_, s_ = competing_inputs(time, status)
    c = _cause_ok(s_, cause)
    g = np.asarray(group)
    if g.shape != t_.shape:
        raise ValueError(f"lengths differ: time has {t_.size}, group has {g.size}")
    levels, ig = np.unique(g, return_inverse=True)
    ng = levels.size
    if ng < 2:
        raise ValueError("gray_test needs at least two groups")
    st = np.zeros(t_.size, dtype=np.int64) if strata is None else np.unique(
        np.asarray(strata), return_inverse=True)[1]
    m = np.where(s_ == 0, 0, np.where(s_ == c, 1, 2))
    score = np.zeros(ng - 1)
    var = np.zeros((ng - 1, ng - 1))
    for k in np.unique(st):
        sel = st == k
        order = np.argsort(t_[sel], kind="stable")
        sc, vv = _gray_stratum(t_[sel][order], m[sel][order], ig[sel][order], ng, float(rho))
        score += sc
        var += vv
    stat = float(score @ np.linalg.solve(var, score))
    df = ng - 1
    return GrayTest(c, stat, float(chi2.sf(stat, df)), df, score, var)


# ---------------------------------------------------------- pseudo-values
def pseudo_values(time: ArrayLike, status: ArrayLike, t: float, cause: int = 1,
                  chunk_elements: int = 4_000_000) -> np.ndarray:
    """Jackknife pseudo-values of the Aalen-Johansen cumulative incidence of ``cause`` at ``t``.

    Parameters
    ----------
    time, status : array-like
    t : float
        Horizon.
    cause : int
    chunk_elements : int
        Memory bound of the leave-one-out computation.

    Returns
    -------
    ndarray, shape (n,)
        ``n F(t) - (n - 1) F_{-i}(t)``, with ``F_{-i}`` the estimate without
        subject ``i`` (exact leave-one-out, as R ``prodlim::jackknife``).

    Notes
    -----
    Andersen, Klein & Rosthoj, Biometrika 2003;90:15-27; Andersen & Perme,
    Stat Methods Med Res 2010;19:71-99.  Subjects with the same (time,
    status) up to ``t`` share their pseudo-value, so the leave-one-out
    estimates are computed once per distinct pair.
    """
    t_, s_ = competing_inputs(time, status)
    c = _cause_ok(s_, cause)
    t = float(t)
    n = t_.size
    aj = _aalen_johansen(t_, s_, np.array([c]))
    keep = aj.s <= t
    s, y, d, dk = aj.s[keep], aj.at_risk[keep], aj.d[keep], aj.d_k[keep, 0]
    full = float(aj.cif_at(t)[0])
    # Beyond t only "at risk through t" matters: collapse those subjects.
    key_t = np.where(t_ > t, np.inf, t_)
    key_s = np.where(t_ > t, 0, s_)
    pairs, inv = np.unique(np.column_stack((key_t, key_s)), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    loo = np.empty(pairs.shape[0])
    step = max(1, chunk_elements // max(1, s.size))
    for lo in range(0, pairs.shape[0], step):
        pt, ps = pairs[lo:lo + step, 0], pairs[lo:lo + step, 1]
        at = (s[None, :] <= pt[:, None]).astype(np.float64)
        own = (s[None, :] == pt[:, None])
        y1 = y[None, :] - at
        d1 = d[None, :] - own * (ps[:, None] > 0)
        dk1 = dk[None, :] - own * (ps[:, None] == c)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where(y1 > 0, d1 / y1, 0.0)
            hk = np.where(y1 > 0, dk1 / y1, 0.0)
        sv = np.cumprod(1.0 - h, axis=1)
        sb = np.hstack((np.ones((pt.size, 1)), sv[:, :-1]))
        loo[lo:lo + step] = np.sum(sb * hk, axis=1)
    return n * full - (n - 1) * loo[inv]
