"""What the user checks after imputing: the missingness pattern, convergence of the chains, implausible values.

* :func:`md_pattern`: ``mice::md.pattern`` (columns by increasing missingness, patterns sorted, counts, the
  number missing per pattern and per column).
* :func:`split_rhat`: the split-R̂ of Gelman et al. (*Bayesian Data Analysis*, 3rd ed. 2013, §11.4) of each
  imputed column's per-iteration mean across chains (Oberman, van Buuren & Vink, Stat Med 2021;40: non-
  convergence of MICE is seen in the chain means); above 1.1 is a red flag.
* :func:`out_of_range`: imputed values outside the observed range of their column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .chains import Imputations

RHAT_FLAG = 1.1


@dataclass(frozen=True)
class Pattern:
    """``mice::md.pattern``'s matrix.

    Attributes
    ----------
    columns : list of str
        Column order: by increasing number missing (ties in input order).
    observed : ndarray (n_patterns, k) of int
        1 where the pattern has the column observed.
    counts : ndarray of int
        Patients with each pattern (mice's row names).
    missing_per_pattern : ndarray of int
        Columns missing in each pattern (mice's last column).
    missing_per_column : ndarray of int
        Patients missing each column (mice's last row), with ``total`` their sum.
    """

    columns: list[str]
    observed: np.ndarray
    counts: np.ndarray
    missing_per_pattern: np.ndarray
    missing_per_column: np.ndarray

    @property
    def total(self) -> int:
        return int(self.missing_per_column.sum())


def md_pattern(frame: pl.DataFrame) -> Pattern:
    """The missing-data pattern of ``frame``, as ``mice::md.pattern(frame, plot = FALSE)``."""
    miss = np.column_stack([(frame[c].is_null() | (frame[c].is_nan() if frame[c].dtype.is_float() else False)).to_numpy()
                            for c in frame.columns]).astype(np.int64)
    nmis = miss.sum(axis=0)
    order = np.argsort(nmis, kind="stable")
    r = miss[:, order]
    # distinct rows in lexicographic order (as mice sorts its pattern strings), counted without per-row Python
    pats, counts = np.unique(r.reshape(r.shape[0], len(order)), axis=0, return_counts=True)
    pats = pats.astype(np.int64).reshape(-1, len(order))
    counts = counts.astype(np.int64)
    return Pattern([frame.columns[j] for j in order], 1 - pats, counts, pats.sum(axis=1), nmis[order])


def split_rhat(chain_mean: np.ndarray) -> float:
    """Split-R̂ of one column's chain means, shape (iterations, chains); NaN with fewer than 4 iterations.

    Each chain is cut in two halves (the middle iteration dropped when odd); with ``n`` iterations per half,
    ``W`` the mean within-half variance and ``B / n`` the variance of the half means,
    ``R̂ = sqrt(((n - 1) / n W + B / n) / W)``.
    """
    it, chains = chain_mean.shape
    if it < 4 or chains < 1:
        return float("nan")
    n = it // 2
    halves = np.concatenate([chain_mean[:n], chain_mean[it - n:]], axis=1)
    w = float(halves.var(axis=0, ddof=1).mean())
    b_over_n = float(halves.mean(axis=0).var(ddof=1))
    if w == 0.0:
        return 1.0 if b_over_n == 0.0 else float("inf")
    return float(np.sqrt(((n - 1) / n * w + b_over_n) / w))


@dataclass(frozen=True)
class Diagnostics:
    """Per imputed column: ``rhat`` (split-R̂ of the chain means), ``out_of_range`` (count over all imputations of
    imputed numbers outside the observed range) and ``flags`` (readable red flags)."""

    rhat: dict[str, float]
    out_of_range: dict[str, int]
    flags: list[str]


def out_of_range(imp: Imputations) -> dict[str, int]:
    """Imputed numbers below the observed minimum or above the observed maximum, counted over the m sets."""
    out: dict[str, int] = {}
    for j, v in enumerate(imp.variables):
        if not imp.methods.get(v.name) or v.kind != "numeric":
            continue
        col = imp.data[:, j]
        lo, hi = np.nanmin(col), np.nanmax(col)
        rows = imp.rows[np.isnan(col[imp.rows])]
        vals = imp.imputed[:, rows, j]
        out[v.name] = int(np.sum((vals < lo) | (vals > hi)))
    return out


def diagnose(imp: Imputations) -> Diagnostics:
    """Split-R̂ and out-of-range counts of every imputed column, with a flag for each problem."""
    rhat = {v.name: split_rhat(imp.chain_mean[j]) for j, v in enumerate(imp.variables) if imp.methods.get(v.name)}
    oor = out_of_range(imp)
    flags = [f"{name}: split-R̂ {value:.3f} > {RHAT_FLAG} across chains (not converged; raise maxit)"
             for name, value in rhat.items() if np.isfinite(value) and value > RHAT_FLAG]
    flags += [f"{name}: {count} imputed value(s) outside the observed range" for name, count in oor.items() if count]
    return Diagnostics(rhat, oor, flags)


def trace_table(imp: Imputations) -> pl.DataFrame:
    """Long table of the chains' traces: ``variable``, ``iteration`` (1-based), ``chain`` (1-based), ``mean``, ``sd``."""
    rows: dict[str, list[object]] = {"variable": [], "iteration": [], "chain": [], "mean": [], "sd": []}
    for j, v in enumerate(imp.variables):
        if not imp.methods.get(v.name):
            continue
        iters, chains = imp.chain_mean[j].shape
        for c in range(chains):
            for t in range(iters):
                rows["variable"].append(v.name)
                rows["iteration"].append(t + 1)
                rows["chain"].append(c + 1)
                rows["mean"].append(float(imp.chain_mean[j, t, c]))
                rows["sd"].append(float(imp.chain_sd[j, t, c]))
    return pl.DataFrame(rows, schema={"variable": pl.String, "iteration": pl.Int64, "chain": pl.Int64,
                                      "mean": pl.Float64, "sd": pl.Float64})
