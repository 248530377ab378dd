"""Pooled patient features: one embedding per patient of a (feature set, pooling), in the ``patient_features`` table."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from pipeline.store.base import StoreError, transaction
from pipeline.store.instance_files import embeddings_matrix


def write_patient_features(
    con: duckdb.DuckDBPyConnection,
    feature_set: str,
    pooling: str,
    patient_ids: Sequence[str],
    matrix: np.ndarray,
    n_instances: Sequence[int],
) -> None:
    """Replace the pooled features of one (feature set, pooling) in one transaction."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(patient_ids) or len(n_instances) != len(patient_ids):
        raise StoreError(f"patient features for {feature_set}/{pooling}: shapes do not agree")
    if not np.isfinite(matrix).all():
        raise StoreError(f"patient features for {feature_set}/{pooling}: non-finite values")
    dim = matrix.shape[1]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim).cast(pa.list_(pa.float32()))
    table = pa.table(
        {
            "feature_set": pa.array([feature_set] * len(patient_ids)),
            "pooling": pa.array([pooling] * len(patient_ids)),
            "patient_id": pa.array(list(patient_ids), type=pa.string()),
            "n_instances": pa.array(list(n_instances), type=pa.int32()),
            "embedding": emb,
        }
    )
    with transaction(con):
        con.execute("DELETE FROM patient_features WHERE feature_set = ? AND pooling = ?", [feature_set, pooling])
        con.register("_pf_new", table)
        try:
            con.execute("INSERT INTO patient_features SELECT * FROM _pf_new")
        finally:
            con.unregister("_pf_new")


def read_patient_features(
    con: duckdb.DuckDBPyConnection, feature_set: str, pooling: str
) -> tuple[list[str], np.ndarray]:
    """Patient ids (sorted) and the float32 matrix of one pooled feature set."""
    tbl = con.sql(
        "SELECT patient_id, embedding FROM patient_features WHERE feature_set = ? AND pooling = ? ORDER BY patient_id",
        params=[feature_set, pooling],
    ).to_arrow_table()
    return tbl.column("patient_id").to_pylist(), embeddings_matrix(tbl.column("embedding"))
