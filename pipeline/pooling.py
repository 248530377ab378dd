"""Per-patient pooling of instance embeddings: mean, max and their concatenation.

All instances of all of a patient's sources (slides or scans) form one bag.
``mean`` is the average instance, ``max`` the element-wise maximum, ``meanmax``
the two concatenated (mean first). A feature set with one instance per source
(a 3D CT embedding, radiomics) pools the same way: over the patient's sources.
Attention pooling is learned later, by the MIL model, from the instances.

Files are read one at a time and reduced on the fly, so memory holds one
source's instances plus one row per patient, whatever the cohort size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from pipeline import store

log = logging.getLogger("cohortlab.pooling")

POOLINGS = ("mean", "max", "meanmax")


@dataclass
class Bag:
    """Running sum, maximum and count of one patient's instances."""

    total: np.ndarray
    maximum: np.ndarray
    n: int

    @classmethod
    def of(cls, matrix: np.ndarray) -> Bag:
        return cls(matrix.sum(axis=0, dtype=np.float64), matrix.max(axis=0).astype(np.float32), len(matrix))

    def add(self, matrix: np.ndarray) -> Bag:
        if matrix.shape[1] != self.total.shape[0]:
            raise ValueError(f"embedding width {matrix.shape[1]} differs from {self.total.shape[0]}")
        return Bag(self.total + matrix.sum(axis=0, dtype=np.float64), np.maximum(self.maximum, matrix.max(axis=0)), self.n + len(matrix))

    def pooled(self, how: str) -> np.ndarray:
        mean = (self.total / self.n).astype(np.float32)
        if how == "mean":
            return mean
        if how == "max":
            return self.maximum
        if how == "meanmax":
            return np.concatenate([mean, self.maximum])
        raise ValueError(f"unknown pooling {how!r} (use one of {', '.join(POOLINGS)})")


def pool_bags(bags: Iterable[tuple[str, np.ndarray]]) -> dict[str, Bag]:
    """Reduce ``(patient_id, instance matrix)`` pairs to one :class:`Bag` per patient (empty matrices skipped)."""
    out: dict[str, Bag] = {}
    for pid, matrix in bags:
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) == 0:
            continue
        out[pid] = out[pid].add(matrix) if pid in out else Bag.of(matrix)
    return out


def pool(bags: dict[str, Bag], how: str) -> tuple[list[str], np.ndarray, list[int]]:
    """Patient ids (sorted), the pooled float32 matrix and instance counts."""
    ids = sorted(bags)
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32), []
    return ids, np.stack([bags[p].pooled(how) for p in ids]), [bags[p].n for p in ids]


def _read_matrix(path: Path) -> np.ndarray:
    table = pq.read_table(path, columns=["embedding"])
    return store.embeddings_matrix(table.column("embedding"))


def pool_feature_set(
    con: duckdb.DuckDBPyConnection,
    feature_set: str,
    poolings: Sequence[str] = POOLINGS,
    source_ids: Sequence[str] | None = None,
) -> dict[str, int]:
    """Pool a feature set's done instances per patient into ``patient_features``.

    Parameters
    ----------
    con
        A writable store connection.
    feature_set
        The feature set.
    poolings
        Any of ``mean``, ``max``, ``meanmax``; each replaces its earlier rows.
    source_ids
        Only these sources (the runner passes those whose fingerprint is current).

    Returns
    -------
    dict
        Patients written per pooling.
    """
    bad = [p for p in poolings if p not in POOLINGS]
    if bad:
        raise ValueError(f"unknown pooling {bad} (use {', '.join(POOLINGS)})")
    rows = con.execute(
        "SELECT source_id, patient_id, path FROM embed_items WHERE feature_set = ? AND status = 'done' "
        "AND n_instances > 0 AND path IS NOT NULL ORDER BY patient_id, source_id",
        [feature_set],
    ).fetchall()
    if source_ids is not None:
        keep = set(source_ids)
        rows = [r for r in rows if r[0] in keep]
    base = store.store_dir(con)
    bags = pool_bags((pid, _read_matrix(base / path)) for _, pid, path in rows)
    out: dict[str, int] = {}
    for how in poolings:
        ids, matrix, counts = pool(bags, how)
        if not ids:
            matrix = np.zeros((0, 1), dtype=np.float32)
        store.write_patient_features(con, feature_set, how, ids, matrix, counts)
        out[how] = len(ids)
    log.info("pooled %s: %d patients from %d sources (%s)", feature_set, len(bags), len(rows), ", ".join(poolings))
    return out
