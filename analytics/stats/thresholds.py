"""ROC coordinates, threshold selection, and binary metrics at a fixed threshold.

Candidate thresholds follow pROC (Robin et al., BMC Bioinformatics 2011;12:77,
``roc.utils.thresholds``): ``-Inf``, the midpoints between consecutive distinct
scores, ``+Inf``.  A subject is called positive when ``score >= threshold``.

Choose a threshold on the training data and pass that number unchanged to
:func:`binary_metrics` on every test set; never re-optimise on a test set.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import ArrayLike
from scipy.special import ndtri

from . import _validate as v
from .bootstrap import drop_nan, group_draws, percentile_interval
from .types import Interval

Rule = Literal["youden", "closest_topleft", "sensitivity", "specificity"]


def _candidates(score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct sorted values, their codes, and pROC's candidate thresholds."""
    u, inv = np.unique(score, return_inverse=True)
    lo, hi = u[:-1], u[1:]
    mid = (lo + hi) / 2.0
    big = np.abs(mid) > 1e100
    mid[big] = lo[big] / 2.0 + hi[big] / 2.0
    # A midpoint that rounds onto the lower value moves to the upper one, so
    # that ``score >= t`` still separates the two values (pROC does the same).
    mid = np.where(mid == lo, hi, mid)
    thr = np.concatenate(([-np.inf], mid, [np.inf]))
    return u, inv, thr


def _roc_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (ascending) with true- and false-positive counts at each."""
    u, inv, thr = _candidates(score)
    k = u.size
    pos = np.bincount(inv, weights=y.astype(np.float64), minlength=k).astype(np.int64)
    allc = np.bincount(inv, minlength=k).astype(np.int64)
    neg = allc - pos
    # Threshold i (0..k) calls values u[i:] positive.
    tp = np.concatenate((np.cumsum(pos[::-1])[::-1], [0]))
    fp = np.concatenate((np.cumsum(neg[::-1])[::-1], [0]))
    return thr, tp, fp


def roc_curve(y: ArrayLike, score: ArrayLike) -> pl.DataFrame:
    """ROC coordinates at pROC's candidate thresholds.

    Parameters
    ----------
    y : array-like of 0/1
    score : array-like of float

    Returns
    -------
    polars.DataFrame
        Columns ``threshold`` (ascending, from ``-inf`` to ``inf``),
        ``sensitivity``, ``specificity``, ``tp``, ``fp``, ``tn``, ``fn``.

    Notes
    -----
    Same rows as pROC ``coords(roc(y, score, direction = "<"), "all")``
    (Robin et al., BMC Bioinformatics 2011).
    """
    yy, s = v.binary_and_score(y, score)
    thr, tp, fp = _roc_counts(yy, s)
    m = int(yy.sum())
    n = yy.size - m
    return pl.DataFrame(
        {
            "threshold": thr,
            "sensitivity": tp / m,
            "specificity": (n - fp) / n,
            "tp": tp,
            "fp": fp,
            "tn": n - fp,
            "fn": m - tp,
        }
    )


def threshold(
    y: ArrayLike,
    score: ArrayLike,
    rule: Rule = "youden",
    target: float | None = None,
) -> float:
    """Choose a classification threshold on (training) data.

    Parameters
    ----------
    y : array-like of 0/1
    score : array-like of float
    rule : {"youden", "closest_topleft", "sensitivity", "specificity"}
        ``"youden"``: maximise sensitivity + specificity - 1 (Youden, Cancer
        1950;3:32-35).  ``"closest_topleft"``: minimise
        ``(1 - sens)^2 + (1 - spec)^2`` (Perkins & Schisterman, Am J Epidemiol
        2006;163:670-675).  Both as pROC ``coords(roc, "best", best.method =
        "youden" | "closest.topleft")`` with default ``best.weights``.
        ``"sensitivity"``: the highest threshold whose sensitivity is at least
        ``target`` (so specificity is as high as possible given that
        sensitivity).  ``"specificity"``: the lowest threshold whose
        specificity is at least ``target``.
    target : float, optional
        Required sensitivity or specificity in (0, 1]; only for those rules.

    Returns
    -------
    float
        A pROC candidate threshold (a midpoint between consecutive distinct
        scores, or ``-inf``/``inf``); classify ``score >= threshold`` as positive.

    Notes
    -----
    Ties: criteria are compared exactly in integer arithmetic
    (``tp * n + tn * m`` for Youden, ``(fn * n)^2 + (fp * m)^2`` for the
    top-left distance).  When several thresholds are optimal the **lowest** is
    returned, i.e. the first row of pROC's ``coords(..., "best")`` output.
    """
    yy, s = v.binary_and_score(y, score)
    thr, tp, fp = _roc_counts(yy, s)
    m = int(yy.sum())
    n = yy.size - m
    tn = n - fp
    fn = m - tp
    if rule in ("sensitivity", "specificity"):
        if target is None:
            raise ValueError(f"rule={rule!r} needs target, e.g. target=0.9")
        target = float(target)
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target must be in (0, 1], got {target}")
        if rule == "sensitivity":
            need = math.ceil(target * m - 1e-9)
            ok = np.flatnonzero(tp >= need)
            return float(thr[ok[-1]])  # tp decreases with the threshold
        need = math.ceil(target * n - 1e-9)
        ok = np.flatnonzero(tn >= need)
        return float(thr[ok[0]])
    if target is not None:
        raise ValueError("target is only used with rule='sensitivity' or 'specificity'")
    if rule == "youden":
        crit = tp * n + tn * m
        return float(thr[int(np.argmax(crit))])
    if rule in ("closest_topleft", "closest.topleft", "topleft"):
        if float(m) * float(n) < 2.0e9:
            dist = (fn * n) ** 2 + (fp * m) ** 2
        else:  # exact big integers
            dist = np.array([(int(a) * n) ** 2 + (int(b) * m) ** 2 for a, b in zip(fn, fp)],
                            dtype=object)
        return float(thr[int(np.argmin(dist))])
    raise ValueError(
        f"unknown rule {rule!r}; use 'youden', 'closest_topleft', 'sensitivity' or 'specificity'"
    )


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Notes
    -----
    Wilson, JASA 1927;22:209-212; method 3 of Newcombe, Stat Med
    1998;17:857-872.  Equals R ``prop.test(k, n, correct = FALSE)$conf.int``.
    Returns ``(nan, nan)`` when ``n == 0``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    z = float(ndtri(1.0 - (1.0 - level) / 2.0))
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def confusion(y: ArrayLike, score: ArrayLike, threshold: float) -> dict[str, int]:
    """2x2 classification table at a fixed threshold.

    Returns counts ``tp, fp, tn, fn`` with ``score >= threshold`` called
    positive (the convention of pROC's ``direction = "<"``; Robin et al., BMC
    Bioinformatics 2011).
    """
    yy, s = v.binary_and_score(y, score, both_classes=False)
    pred = s >= float(threshold)
    pos = yy == 1
    return {
        "tp": int(np.sum(pred & pos)),
        "fp": int(np.sum(pred & ~pos)),
        "tn": int(np.sum(~pred & ~pos)),
        "fn": int(np.sum(~pred & pos)),
    }


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def binary_metrics(
    y: ArrayLike,
    score: ArrayLike,
    threshold: float,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Interval]:
    """Sensitivity, specificity, accuracy, PPV, NPV and F1 at a fixed threshold.

    Parameters
    ----------
    y : array-like of 0/1
    score : array-like of float
    threshold : float
        Subjects with ``score >= threshold`` are called positive.  Pass the
        threshold chosen on the training data (:func:`threshold`).
    level : float
    n_boot : int
        Bootstrap replicates for the F1 interval; 0 gives F1 without an
        interval (NaN bounds, method ``"none"``).
    seed : int

    Returns
    -------
    dict of str to Interval
        Keys ``sensitivity``, ``specificity``, ``accuracy``, ``ppv``, ``npv``
        (Wilson score intervals; Wilson, JASA 1927; Newcombe, Stat Med 1998)
        and ``f1`` (percentile interval from a stratified bootstrap, cases and
        controls resampled separately as in pROC ``ci.coords``).  A proportion
        with an empty denominator (e.g. PPV with no positive calls) is NaN.
    """
    level = v.level_ok(level)
    n_boot = v.n_boot_ok(n_boot, allow_zero=True)
    yy, s = v.binary_and_score(y, score)
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    c = confusion(yy, s, t)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    out: dict[str, Interval] = {}
    for name, k, n in (
        ("sensitivity", tp, tp + fn),
        ("specificity", tn, tn + fp),
        ("accuracy", tp + tn, tp + tn + fp + fn),
        ("ppv", tp, tp + fp),
        ("npv", tn, tn + fn),
    ):
        lo, hi = wilson_interval(k, n, level)
        out[name] = Interval(_ratio(k, n), lo, hi, level, "wilson")

    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if n_boot == 0:
        out["f1"] = Interval(f1, float("nan"), float("nan"), level, "none")
        return out
    pred = (s >= t).astype(np.int64)
    pred_pos, pred_neg = pred[yy == 1], pred[yy == 0]
    m, n = pred_pos.size, pred_neg.size
    reps = np.empty(n_boot)
    col = 0
    for ip, ineg in group_draws([m, n], n_boot, seed):
        b = ip.shape[0]
        tp_b = pred_pos[ip].sum(axis=1)
        fp_b = pred_neg[ineg].sum(axis=1)
        den = m + tp_b + fp_b  # 2tp + fp + fn with fn = m - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[col:col + b] = np.where(den > 0, 2.0 * tp_b / den, np.nan)
        col += b
    reps = drop_nan(reps)
    lo, hi = percentile_interval(reps, level) if reps.size else (float("nan"),) * 2
    out["f1"] = Interval(f1, lo, hi, level, "bootstrap-percentile")
    return out
