"""The predictor design of one imputation model, and mice's removal of near-constant and collinear predictors."""

from __future__ import annotations

import numpy as np

from .spec import Variable


def dummies(values: np.ndarray, variables: list[Variable], columns: list[int]) -> np.ndarray:
    """Numbers as they are, categories as treatment-coded dummies (first level the reference), no intercept."""
    parts = []
    n = values.shape[0]
    for j in columns:
        v = variables[j]
        if v.kind == "numeric":
            parts.append(values[:, j : j + 1])
        else:
            codes = values[:, j]
            parts.append((codes[:, None] == np.arange(1, len(v.levels))[None, :]).astype(np.float64))
    return np.concatenate(parts, axis=1) if parts else np.empty((n, 0))


def remove_lindep(x: np.ndarray, y: np.ndarray, ry: np.ndarray, eps: float = 1e-4, maxcor: float = 0.99) -> np.ndarray:
    """Which predictor columns to keep, as mice's ``remove.lindep``.

    Drops a column whose variance among the observed rows is at most ``eps`` or whose correlation with the
    observed target reaches ``maxcor``, then, while the smallest eigenvalue of the predictors' correlation matrix
    is below ``eps`` times the largest, the column loading most on the smallest eigenvector.
    """
    k = x.shape[1]
    keep = np.ones(k, dtype=bool)
    if k == 0:
        return keep
    xobs = x[ry]
    yobs = y[ry]
    if xobs.shape[0] < 2:
        return keep
    xc = xobs - xobs.mean(axis=0)
    var = np.einsum("ij,ij->j", xc, xc) / (xobs.shape[0] - 1)
    keep &= var > eps
    yc = yobs - yobs.mean()
    ysd = float(np.sqrt(yc @ yc / (yobs.size - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        cor = (yc @ xc) / ((xobs.shape[0] - 1) * np.sqrt(var) * ysd)
        # the predictors' correlation matrix, from the centred columns already at hand
        sd = np.sqrt(np.where(var > 0, var, np.nan))
        corr = (xc.T @ xc) / (xobs.shape[0] - 1) / np.outer(sd, sd)
    # mice compares the signed correlation (NA keeps the column's variance verdict)
    keep &= ~(np.isfinite(cor) & (cor >= maxcor))
    idx = np.flatnonzero(keep)
    while idx.size > 1:
        cx = corr[np.ix_(idx, idx)]
        vals, vecs = np.linalg.eigh(cx)
        # eigh sorts ascending: vals[0] is the smallest
        if vals[0] / vals[-1] >= eps:
            break
        drop = int(np.argmax(np.abs(vecs[:, 0])))
        keep[idx[drop]] = False
        idx = np.flatnonzero(keep)
    return keep
