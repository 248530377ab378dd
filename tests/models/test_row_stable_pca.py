"""A patient's score must not depend on which other patients are scored in the same call."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from analytics.models.classical import RowStablePCA


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("shape", [(60, 12, 4), (300, 257, 9), (40, 3, 2)])
def test_projection_equals_pca_and_ignores_the_other_rows(shape: tuple[int, int, int], whiten: bool) -> None:
    n, p, k = shape
    rng = np.random.default_rng(n + p)
    X = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
    ref = PCA(n_components=k, svd_solver="full", whiten=whiten, random_state=0).fit(X[: n // 2])
    pca = RowStablePCA(n_components=k, svd_solver="full", whiten=whiten, random_state=0).fit(X[: n // 2])
    full = pca.transform(X)
    np.testing.assert_allclose(full, ref.transform(X), rtol=1e-10, atol=1e-10)
    for size in (1, 2, 3, 5, 7, 8, 13, n // 2, n - 1):
        rows = np.sort(rng.choice(n, size=size, replace=False))
        assert pca.transform(X[rows]).tobytes() == full[rows].tobytes(), size


def test_chunking_does_not_change_a_row() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 40))
    pca = RowStablePCA(n_components=5, svd_solver="full").fit(X)
    whole = pca.transform(X)
    pca._CHUNK = 5 * 40 * 7  # seven rows a chunk
    assert pca.transform(X).tobytes() == whole.tobytes()
