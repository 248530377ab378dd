"""Weighted dominance counts: for each subject, the weight of the later subjects with a lower value.

The pair counts of Harrell's and Uno's concordance (:mod:`analytics.stats.survival`) reduce to these
counts once the subjects are put in time order. They are computed by a bottom-up merge sort
(the inversion count of Knuth, *The Art of Computer Programming* vol. 3, 5.1.1, kept per
element), each level vectorised over all blocks: O(n log n) comparisons in ``log2 n`` numpy
passes, with any number of weight columns (bootstrap replicates) carried together.
"""

from __future__ import annotations

import numpy as np


def _columns(weights: np.ndarray) -> np.ndarray:
    """Weights as a (n, b) float array (one column when given as a vector)."""
    w = np.asarray(weights, dtype=np.float64)
    return w[:, None] if w.ndim == 1 else w


def later_lower(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``out[i] = sum(weights[j] for j > i if values[j] < values[i])``.

    Parameters
    ----------
    values : ndarray of int, shape (n,)
        Non-negative integer codes (e.g. ranks); ties are not "lower".
    weights : ndarray, shape (n,) or (n, b)
        Weight of each subject, one column per weighting (e.g. per bootstrap replicate).

    Returns
    -------
    ndarray, the shape of ``weights``

    Notes
    -----
    At block size ``s`` every block of ``s`` consecutive subjects is sorted by value; a left block's
    subjects look up the weight of its right sibling's lower values (cumulative sums over the
    concatenated right blocks, which stay globally sorted once each key is offset by its block), and
    the two blocks are merged by their lookups' counts, without a sort. Integer weights give exact
    sums (float64 below 2**53).
    """
    v = np.asarray(values, dtype=np.int64)
    n = v.size
    w = _columns(weights)
    out = np.zeros(w.shape)
    if n < 2:
        return out.reshape(np.shape(weights))
    k = int(v.max()) + 1
    pos = np.arange(n, dtype=np.int64)
    perm = pos.copy()  # perm[p]: the subject at position p once every block is sorted
    sorted_v = v.copy()
    s = 1
    while s < n:
        block = pos // (2 * s)
        right = (pos // s) % 2 == 1
        left = ~right
        key = block * k + sorted_v  # increasing across blocks, sorted within each half
        rkey, lkey = key[right], key[left]
        rblock, lblock = block[right], block[left]
        # right elements of earlier blocks (s each) plus this block's lower ones
        hi = np.searchsorted(rkey, lkey, side="left")
        lo = lblock * s
        pr, pl = perm[right], perm[left]
        cum = np.zeros((rkey.size + 1, w.shape[1]))
        np.cumsum(w[pr], axis=0, out=cum[1:])
        out[pl] += cum[hi] - cum[lo]
        # merge: a left element goes after its block's lower right elements, a right one after the left
        # elements at or below it (ties keep left first: stable)
        at_or_below = np.searchsorted(lkey, rkey, side="right") - rblock * s
        merged = np.empty_like(perm)
        merged[pos[left] + (hi - lo)] = pl
        merged[pos[right] - s + at_or_below] = pr
        perm = merged
        sorted_v = v[perm]
        s *= 2
    return out.reshape(np.shape(weights))


def earlier_higher(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``out[j] = sum(weights[i] for i < j if values[i] > values[j])`` (:func:`later_lower` read backwards)."""
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return np.zeros(np.shape(weights))
    flipped = (int(v.max()) - v)[::-1]
    return later_lower(flipped, np.asarray(weights, dtype=np.float64)[::-1])[::-1]


def later_tied(values: np.ndarray, keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``out[i] = sum(weights[j] for j if values[j] == values[i] and keys[j] > keys[i])``.

    ``values`` and ``keys`` are non-negative integers; one sort by (value, key).
    """
    v = np.asarray(values, dtype=np.int64)
    p = np.asarray(keys, dtype=np.int64)
    n = v.size
    w = _columns(weights)
    if n == 0:
        return np.zeros(np.shape(weights))
    m = int(p.max()) + 1
    code = v * m + p
    order = np.argsort(code, kind="stable")
    sorted_code = code[order]
    cum = np.zeros((n + 1, w.shape[1]))
    np.cumsum(w[order], axis=0, out=cum[1:])
    after = np.searchsorted(sorted_code, code, side="right")
    end = np.searchsorted(sorted_code, v * m + (m - 1), side="right")
    return (cum[end] - cum[after]).reshape(np.shape(weights))


def earlier_tied(values: np.ndarray, keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``out[j] = sum(weights[i] for i if values[i] == values[j] and keys[i] < keys[j])``."""
    v = np.asarray(values, dtype=np.int64)
    p = np.asarray(keys, dtype=np.int64)
    if v.size == 0:
        return np.zeros(np.shape(weights))
    return later_tied(v, int(p.max()) - p, weights)


def later_total(keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``out[i] = sum(weights[j] for j if keys[j] > keys[i])``."""
    p = np.asarray(keys, dtype=np.int64)
    w = _columns(weights)
    order = np.argsort(p, kind="stable")
    cum = np.zeros((p.size + 1, w.shape[1]))
    np.cumsum(w[order], axis=0, out=cum[1:])
    after = np.searchsorted(p[order], p, side="right")
    return (cum[-1] - cum[after]).reshape(np.shape(weights))


def earlier_total(keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``out[j] = sum(weights[i] for i if keys[i] < keys[j])``."""
    p = np.asarray(keys, dtype=np.int64)
    w = _columns(weights)
    order = np.argsort(p, kind="stable")
    cum = np.zeros((p.size + 1, w.shape[1]))
    np.cumsum(w[order], axis=0, out=cum[1:])
    before = np.searchsorted(p[order], p, side="left")
    return cum[before].reshape(np.shape(weights))
