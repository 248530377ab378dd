"""Vectorised bootstrap of the AUC: resampling streams, replicates, intervals.

Resampling follows pROC's default (Robin et al., BMC Bioinformatics 2011;12:77):
cases and controls are resampled separately (stratified), each from its own
``Generator(PCG64)`` stream spawned from ``SeedSequence(seed)``.  Replicate
``b`` uses row ``b`` of each stream, so results do not depend on chunk size.

AUC replicates are computed without refitting anything: the scores are sorted
once (``np.unique``), each replicate's cases and controls are counted per
distinct score value (``bincount``), and the Mann-Whitney statistic is read
off cumulative control counts, in exact integer arithmetic.  Work is chunked
so that at most about ``CHUNK_ELEMENTS`` (2**20) values are live per array
(peak memory about 40 MB for n up to ~10^5, independent of B).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from scipy.special import ndtr, ndtri

CHUNK_ELEMENTS = 1 << 20


def spawn_generators(seed: int, k: int) -> list[np.random.Generator]:
    """``k`` independent ``Generator(PCG64)`` streams from ``SeedSequence(seed)``."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    children = np.random.SeedSequence(int(seed)).spawn(k)
    return [np.random.Generator(np.random.PCG64(c)) for c in children]


def _chunk_rows(width: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        return max(1, int(chunk_rows))
    return max(1, CHUNK_ELEMENTS // max(1, width))


def group_draws(
    sizes: Sequence[int], n_boot: int, seed: int, chunk_rows: int | None = None,
    width: int | None = None,
) -> Iterator[list[np.ndarray]]:
    """Yield chunks of within-group resampling indices.

    Group ``g`` of size ``sizes[g]`` is resampled with replacement from its
    own stream; each chunk is a list with one ``(rows, sizes[g])`` int64 array
    per group.
    """
    rngs = spawn_generators(seed, len(sizes))
    rows = _chunk_rows(width if width is not None else int(sum(sizes)), chunk_rows)
    done = 0
    while done < n_boot:
        b = min(rows, n_boot - done)
        yield [rng.integers(0, s, size=(b, s)) for rng, s in zip(rngs, sizes)]
        done += b


def bootstrap_indices(
    y: np.ndarray, n_boot: int, seed: int = 0, stratified: bool = True,
    chunk_rows: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``(rows, len(y))`` arrays of resampled row indices into ``y``.

    These are exactly the resamples used by :func:`auc_replicates` (and the
    other bootstrap functions of this package) for the same ``seed``: with
    ``stratified`` the first ``m`` columns are cases and the rest controls.
    """
    y = np.asarray(y)
    if stratified:
        cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        for ip, ineg in group_draws([cases.size, controls.size], n_boot, seed, chunk_rows):
            yield np.concatenate([cases[ip], controls[ineg]], axis=1)
    else:
        for (idx,) in group_draws([y.size], n_boot, seed, chunk_rows):
            yield idx


def _counts(codes: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row histogram of ``codes`` (rows, r) over ``0..k-1`` -> (rows, k)."""
    b = codes.shape[0]
    flat = (codes + (np.arange(b, dtype=np.int64) * k)[:, None]).ravel()
    w = None if weights is None else weights.ravel()
    return np.bincount(flat, weights=w, minlength=b * k).reshape(b, k)


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Twice the Mann-Whitney numerator per row from per-value counts."""
    below = np.cumsum(neg, axis=1) - neg
    return (pos * (2 * below + neg)).sum(axis=1)


def auc_replicates(
    y: np.ndarray, scores: Sequence[np.ndarray], n_boot: int, seed: int = 0,
    stratified: bool = True, chunk_rows: int | None = None,
) -> np.ndarray:
    """Bootstrap AUC replicates for one or more paired scores.

    Parameters
    ----------
    y : ndarray of 0/1
    scores : sequence of ndarray
        Scores measured on the same subjects (paired); all use the same resamples.
    n_boot : int
    seed : int
    stratified : bool
        Resample cases and controls separately (pROC default).  Without it,
        replicates lacking a class are NaN.

    Returns
    -------
    ndarray, shape (len(scores), n_boot)

    Notes
    -----
    Mann-Whitney form of the AUC (Hanley & McNeil, Radiology 1982;143:29-36),
    ties counting one half, evaluated on per-value counts.
    """
    y = np.asarray(y)
    coded = [np.unique(s, return_inverse=True) for s in scores]
    ks = [u.size for u, _ in coded]
    out = np.empty((len(scores), n_boot))
    col = 0
    if stratified:
        cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        m, n = cases.size, controls.size
        width = max(m + n, max(ks))
        case_codes = [inv[cases] for _, inv in coded]
        control_codes = [inv[controls] for _, inv in coded]
        for ip, ineg in group_draws([m, n], n_boot, seed, chunk_rows, width=width):
            b = ip.shape[0]
            for j, k in enumerate(ks):
                pos = _counts(case_codes[j][ip], k)
                neg = _counts(control_codes[j][ineg], k)
                out[j, col:col + b] = _auc_from_counts(pos, neg) / (2.0 * m * n)
            col += b
    else:
        width = max(y.size, max(ks))
        yf = y.astype(np.float64)
        for (idx,) in group_draws([y.size], n_boot, seed, chunk_rows, width=width):
            b = idx.shape[0]
            lab = yf[idx]
            m_b = lab.sum(axis=1)
            n_b = idx.shape[1] - m_b
            with np.errstate(invalid="ignore", divide="ignore"):
                for j, ((_, inv), k) in enumerate(zip(coded, ks)):
                    codes = inv[idx]
                    allc = _counts(codes, k)
                    pos = _counts(codes, k, lab)
                    out[j, col:col + b] = _auc_from_counts(pos, allc - pos) / (2.0 * m_b * n_b)
            col += b
    return out


def drop_nan(reps: np.ndarray, what: str = "replicate(s)") -> np.ndarray:
    """Remove NaN replicates (columns with any NaN for 2-D input), warning if any."""
    bad = np.isnan(reps) if reps.ndim == 1 else np.isnan(reps).any(axis=0)
    if bad.any():
        warnings.warn(
            f"{int(bad.sum())} bootstrap {what} undefined (a resample lacked a class "
            "or comparable pairs) and ignored",
            RuntimeWarning,
            stacklevel=3,
        )
        reps = reps[~bad] if reps.ndim == 1 else reps[:, ~bad]
    return reps


def percentile_interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13).

    Quantiles use linear interpolation (R ``quantile`` type 7, as pROC).
    """
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bca_interval(
    reps: np.ndarray, estimate: float, influence: Sequence[np.ndarray], level: float
) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa) interval (Efron, JASA 1987;82:171-185).

    Parameters
    ----------
    reps : ndarray
        Bootstrap replicates.
    estimate : float
        Estimate on the original data.
    influence : sequence of ndarray
        Empirical influence values, one array per resampling stratum (a single
        array for an unstratified bootstrap).  The acceleration is the
        stratified form given by Davison & Hinkley (1997, *Bootstrap Methods
        and their Application*, section 5.3):
        ``a = sum_s sum_i l_si^3 / n_s^3 / (6 (sum_s sum_i l_si^2 / n_s^2)^1.5)``;
        with one stratum it is the usual jackknife acceleration.

    Notes
    -----
    The bias correction ``z0 = Phi^-1((#{reps < est} + #{reps <= est}) / 2B)``
    counts ties with the estimate one half (as ``scipy.stats.bootstrap``).
    """
    reps = np.asarray(reps, dtype=np.float64)
    frac = (np.sum(reps < estimate) + np.sum(reps <= estimate)) / (2.0 * reps.size)
    z0 = float(ndtri(frac))
    num = sum(float(np.sum(u**3)) / u.size**3 for u in influence)
    den = sum(float(np.sum(u**2)) / u.size**2 for u in influence)
    a = num / (6.0 * den**1.5) if den > 0 else 0.0
    if not np.isfinite(z0):
        warnings.warn(
            "BCa bias correction is infinite (all replicates on one side of the "
            "estimate); returning NaN bounds",
            RuntimeWarning,
            stacklevel=3,
        )
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    zs = ndtri(np.array([alpha, 1.0 - alpha]))
    adj = ndtr(z0 + (z0 + zs) / (1.0 - a * (z0 + zs)))
    lo, hi = np.quantile(reps, adj)
    return float(lo), float(hi)
