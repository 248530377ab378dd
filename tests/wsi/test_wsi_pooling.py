"""Per-patient pooling on hand-computed cases, including one instance per source (CT 3D, radiomics)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline import store
from pipeline.pooling import Bag, pool, pool_bags, pool_feature_set


def test_pool_bags_by_hand():
    bags = pool_bags([
        ("A", np.array([[1.0, 2.0], [5.0, -2.0]])),
        ("B", np.zeros((0, 2))),  # a source with no instances adds nothing
        ("A", np.array([[0.0, 3.0]])),
        ("C", np.array([[-1.0, -1.0]])),
    ])
    assert sorted(bags) == ["A", "C"]
    ids, mean, n = pool(bags, "mean")
    assert ids == ["A", "C"] and n == [3, 1]
    np.testing.assert_allclose(mean, [[2.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(pool(bags, "max")[1], [[5.0, 3.0], [-1.0, -1.0]])
    np.testing.assert_allclose(pool(bags, "meanmax")[1], [[2.0, 1.0, 5.0, 3.0], [-1.0, -1.0, -1.0, -1.0]])
    with pytest.raises(ValueError, match="unknown pooling"):
        bags["A"].pooled("attention")
    with pytest.raises(ValueError, match="width"):
        Bag.of(np.ones((1, 2))).add(np.ones((1, 3)))


def _write(tmp_path, fs: str, sid: str, rows: list[list[float]]) -> str:
    path = store.instance_path(tmp_path / "store.duckdb", fs, sid)
    frame = pl.DataFrame({
        "source_id": [sid] * len(rows), "instance": list(range(len(rows))), "x": [None] * len(rows),
        "y": [None] * len(rows), "z": [None] * len(rows), "level": [None] * len(rows),
        "tissue_fraction": [None] * len(rows), "embedding": rows,
    }, schema_overrides={"embedding": pl.List(pl.Float32), "x": pl.Int64, "y": pl.Int64, "z": pl.Int64,
                         "level": pl.Int32, "tissue_fraction": pl.Float64})
    store.write_instances(path, frame)
    return str(path.relative_to(tmp_path))


def test_one_instance_per_source_pools_over_the_patients_sources(tmp_path):
    con = store.connect(tmp_path / "store.duckdb")
    try:
        # patient P has two scans with one embedding each, Q one scan, R only a failed scan
        for sid, pid, rows in [("s1", "P", [[1.0, 4.0, 0.0]]), ("s2", "P", [[3.0, 0.0, 2.0]]), ("s3", "Q", [[7.0, 7.0, 7.0]])]:
            store.record_item(con, "ct3d", sid, pid, "done", 1, path=_write(tmp_path, "ct3d", sid, rows), fingerprint="f")
        store.record_item(con, "ct3d", "s4", "R", "failed", 0, error="unreadable", fingerprint="f")
        written = pool_feature_set(con, "ct3d")
        assert written == {"mean": 2, "max": 2, "meanmax": 2}
        ids, mean = store.read_patient_features(con, "ct3d", "mean")
        assert ids == ["P", "Q"]
        np.testing.assert_allclose(mean, [[2.0, 2.0, 1.0], [7.0, 7.0, 7.0]])
        np.testing.assert_array_equal(store.read_patient_features(con, "ct3d", "max")[1], [[3.0, 4.0, 2.0], [7.0, 7.0, 7.0]])
        # restricted to current sources: s2 left out
        pool_feature_set(con, "ct3d", ["mean"], source_ids=["s1", "s3"])
        np.testing.assert_allclose(store.read_patient_features(con, "ct3d", "mean")[1], [[1.0, 4.0, 0.0], [7.0, 7.0, 7.0]])
        n = store.query(con, "SELECT patient_id, n_instances FROM patient_features WHERE pooling = 'max' ORDER BY 1")
        assert n.rows() == [("P", 2), ("Q", 1)]
    finally:
        con.close()
