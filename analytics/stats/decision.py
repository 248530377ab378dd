"""Decision-curve analysis: net benefit over a grid of threshold probabilities."""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .bootstrap import group_draws

DEFAULT_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def net_benefit(
    y: ArrayLike,
    prob: ArrayLike,
    thresholds: ArrayLike | None = None,
    n_boot: int = 0,
    level: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """Decision curve: net benefit of treating when ``prob >= threshold``.

    Parameters
    ----------
    y : array-like of 0/1
    prob : array-like of float in [0, 1]
    thresholds : array-like, optional
        Threshold probabilities in (0, 1); default 0.01, 0.02, ..., 0.99.
    n_boot : int
        If > 0, add ``low``/``high``: percentile interval of the model's net
        benefit from ``n_boot`` ordinary (unstratified) bootstrap resamples of
        subjects, so that prevalence varies as it would between samples.
    level : float
    seed : int

    Returns
    -------
    polars.DataFrame
        ``threshold``, ``net_benefit``, ``treat_all``, ``treat_none`` and,
        when ``n_boot > 0``, ``low``, ``high``.

    Notes
    -----
    Vickers & Elkin, Med Decis Making 2006;26:565-574:
    ``NB(pt) = TP/N - FP/N * pt / (1 - pt)``; treat-all is
    ``prev - (1 - prev) * pt / (1 - pt)``; treat-none is 0.
    """
    level = v.level_ok(level)
    n_boot = v.n_boot_ok(n_boot, allow_zero=True)
    yy = v.binary_y(y, both_classes=False)
    p = v.probability(prob)
    v.same_length(y=yy, prob=p)
    pt = DEFAULT_THRESHOLDS if thresholds is None else v.as_1d(thresholds, "thresholds")
    v.no_nan(pt, "thresholds")
    if np.any((pt <= 0) | (pt >= 1)):
        raise ValueError("thresholds must lie strictly between 0 and 1")
    n = p.size
    odds = pt / (1.0 - pt)
    # Subjects sorted by decreasing probability; c[t] = number with prob >= pt.
    order = np.argsort(-p, kind="stable")
    ys = yy[order].astype(np.int64)
    c = np.searchsorted(-p[order], -pt, side="right")
    cum_tp = np.concatenate(([0], np.cumsum(ys)))
    tp = cum_tp[c]
    fp = c - tp
    nb = tp / n - fp / n * odds
    prev = yy.mean()
    cols: dict[str, np.ndarray] = {
        "threshold": pt,
        "net_benefit": nb,
        "treat_all": prev - (1.0 - prev) * odds,
        "treat_none": np.zeros(pt.size),
    }
    if n_boot > 0:
        reps = np.empty((n_boot, pt.size))
        row = 0
        pos_in_sorted = np.empty(n, dtype=np.int64)
        pos_in_sorted[order] = np.arange(n)
        for (idx,) in group_draws([n], n_boot, seed, width=n + pt.size):
            b = idx.shape[0]
            # Resampled counts per sorted position, then cumulative TP/N counts.
            w = np.bincount(
                (pos_in_sorted[idx] + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n
            ).reshape(b, n)
            cw = np.concatenate((np.zeros((b, 1), np.int64), np.cumsum(w, axis=1)), axis=1)
            ctp = np.concatenate(
                (np.zeros((b, 1), np.int64), np.cumsum(w * ys[None, :], axis=1)), axis=1
            )
            tp_b = ctp[:, c]
            fp_b = cw[:, c] - tp_b
            reps[row:row + b] = tp_b / n - fp_b / n * odds[None, :]
            row += b
        alpha = (1.0 - level) / 2.0
        lo, hi = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
        cols["low"] = lo
        cols["high"] = hi
    return pl.DataFrame(cols)
