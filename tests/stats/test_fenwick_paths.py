"""Harrell's C sweeps a Fenwick tree; its index paths, built for all ranks at once, equal the paths walked one
rank at a time (``i -= i & -i`` for a prefix query, ``i += i & -i`` for an update)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.stats.survival import _fenwick_paths


def _walked(k: int, query: bool) -> np.ndarray:
    paths = []
    for r in range(k + 1):
        p, i = [], r
        while (i > 0) if query else (0 < i <= k):
            p.append(i)
            i = i - (i & -i) if query else i + (i & -i)
        paths.append(p)
    pad = 0 if query else k + 1
    out = np.full((k + 1, max(1, max(len(p) for p in paths))), pad, dtype=np.int64)
    for r, p in enumerate(paths):
        out[r, :len(p)] = p
    return out


@pytest.mark.parametrize("k", [*range(0, 40), 63, 64, 65, 1000, 4097])
@pytest.mark.parametrize("query", [True, False])
def test_paths_equal_the_walked_ones(k: int, query: bool) -> None:
    got, want = _fenwick_paths(k, query), _walked(k, query)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
