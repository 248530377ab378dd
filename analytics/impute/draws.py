"""Random draws of one imputation step over rows that must not share a random stream.

A new patient imputed at prediction time (:func:`analytics.impute.impute_new`) must get the same values whoever
else is imputed in the same call. Its draws therefore come from a generator of its own, keyed by the patient,
while the draws of the imputation model's parameters (which do not depend on the rows imputed) come from a
generator keyed by the chain, iteration and variable only. :class:`RowDraws` carries both; the ``per_row_*``
functions draw one value per imputed row, from each row's generator when given a :class:`RowDraws` and as one
vectorised call of a plain generator otherwise (the same bytes as before for the development rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class RowDraws:
    """Parameter draws from ``shared``; one draw per imputed row from that row's own generator (``rows``)."""

    def __init__(self, shared: np.random.Generator, rows: Sequence[np.random.Generator]) -> None:
        self.shared = shared
        self.rows = list(rows)

    def chisquare(self, df: float) -> float:
        return float(self.shared.chisquare(df))

    def standard_normal(self, size: int) -> np.ndarray:
        return self.shared.standard_normal(size)

    def permutation(self, n: int) -> np.ndarray:
        return self.shared.permutation(n)

    def _check(self, n: int) -> None:
        if n != len(self.rows):
            raise ValueError(f"{n} row draws asked of {len(self.rows)} row generators")


Draws = np.random.Generator | RowDraws


def per_row_random(rng: Draws, n: int) -> np.ndarray:
    """One uniform draw on [0, 1) per imputed row."""
    if isinstance(rng, RowDraws):
        rng._check(n)
        return np.array([g.random() for g in rng.rows], dtype=np.float64)
    return np.asarray(rng.random(n))


def per_row_normal(rng: Draws, n: int) -> np.ndarray:
    """One standard normal draw per imputed row."""
    if isinstance(rng, RowDraws):
        rng._check(n)
        return np.array([g.standard_normal() for g in rng.rows], dtype=np.float64)
    return rng.standard_normal(n)


def per_row_integers(rng: Draws, k: int, n: int) -> np.ndarray:
    """One integer in ``0 .. k - 1`` per imputed row."""
    if isinstance(rng, RowDraws):
        rng._check(n)
        return np.array([g.integers(0, k) for g in rng.rows], dtype=np.int64)
    return rng.integers(0, k, size=n)


__all__ = ["Draws", "RowDraws", "per_row_integers", "per_row_normal", "per_row_random"]
