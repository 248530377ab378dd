"""Reading stored features for a cohort's patients: pooled blocks, instance bags and their coverage."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from analytics.cohort.errors import CohortError
from pipeline import store

DEFAULT_POOLING = "mean"
_IDS_TABLE = "_cohortlab_cohort_ids"


def feature_key(ref: str) -> tuple[str, str]:
    """``"resnet50"`` -> ``("resnet50", "mean")``; ``"resnet50:max"`` -> ``("resnet50", "max")``."""
    fs, _, pooling = ref.partition(":")
    if not fs or ":" in pooling:
        raise CohortError(f"feature reference {ref!r}: write feature_set or feature_set:pooling")
    return fs, pooling or DEFAULT_POOLING


def _key(ref: str) -> str:
    return ":".join(feature_key(ref))


@dataclass(frozen=True, eq=False)
class FeatureBlock:
    """One pooled feature set aligned to the cohort's patients.

    Attributes
    ----------
    key
        ``"feature_set:pooling"``.
    values
        float32 ``(n_patients, dim)``, read-only; rows of patients without the
        features are NaN.
    available
        bool ``(n_patients,)``: the patient has these features.
    n_instances
        int32 ``(n_patients,)``: instances pooled (0 where unavailable).
    names
        ``"feature_set:pooling:j"`` for j in 0..dim-1.
    """

    key: str
    values: np.ndarray
    available: np.ndarray
    n_instances: np.ndarray
    names: tuple[str, ...]

    def take(self, index: np.ndarray) -> FeatureBlock:
        return replace(self, values=_frozen(self.values[index]), available=_frozen(self.available[index]),
                       n_instances=_frozen(self.n_instances[index]))

    def digest(self) -> str:
        h = hashlib.sha256(self.key.encode())
        for arr in (self.available, self.n_instances, self.values):
            h.update(np.ascontiguousarray(arr).view(np.uint8).reshape(-1).data)
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Bags:
    """Instance bags of one feature set for multiple-instance learning, aligned to the cohort.

    Attributes
    ----------
    feature_set
        The feature set's name.
    patient_ids
        The cohort's patients, in cohort order.
    embeddings
        One float32 ``(n_i, dim)`` array per patient (``(0, dim)`` when the
        patient has no instances), ordered by source_id then instance.
    instances
        One frame per patient, row j describing ``embeddings[i][j]``: source_id,
        instance, x, y, z, level, tissue_fraction (x, y in level-0 pixels), for
        attention maps.
    dim
        Embedding width.
    """

    feature_set: str
    patient_ids: tuple[str, ...]
    embeddings: tuple[np.ndarray, ...]
    instances: tuple[pl.DataFrame, ...]
    dim: int

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, pl.DataFrame]:
        return self.embeddings[i], self.instances[i]

    @property
    def sizes(self) -> np.ndarray:
        """Instances per patient."""
        return np.array([e.shape[0] for e in self.embeddings], dtype=np.int64)

    @property
    def missing(self) -> list[str]:
        """Patients with no instances."""
        return [p for p, e in zip(self.patient_ids, self.embeddings) if e.shape[0] == 0]

    def take(self, index: np.ndarray) -> Bags:
        idx = [int(i) for i in index]
        return replace(self, patient_ids=tuple(self.patient_ids[i] for i in idx),
                       embeddings=tuple(self.embeddings[i] for i in idx),
                       instances=tuple(self.instances[i] for i in idx))

    def digest(self) -> str:
        h = hashlib.sha256(self.feature_set.encode())
        for pid, emb, meta in zip(self.patient_ids, self.embeddings, self.instances):
            h.update(pid.encode() + b"\0")
            h.update(np.ascontiguousarray(emb).view(np.uint8).reshape(-1).data)
            h.update(meta.write_ndjson().encode())
        return h.hexdigest()


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _register_ids(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> None:
    con.register(_IDS_TABLE, pa.table({"patient_id": pa.array(list(ids), type=pa.string()),
                                       "pos": pa.array(np.arange(len(ids), dtype=np.int64))}))


def _stored_dim(con: duckdb.DuckDBPyConnection, fs: str, pooling: str) -> int | None:
    rows = con.execute(
        "SELECT len(embedding) FROM patient_features WHERE feature_set = ? AND pooling = ? LIMIT 1", [fs, pooling]
    ).fetchall()
    return int(rows[0][0]) if rows else None


def read_block(con: duckdb.DuckDBPyConnection, ref: str, patient_ids: Sequence[str]) -> FeatureBlock:
    """Pooled features ``ref`` for ``patient_ids`` (in that order; NaN rows where absent).

    Joins the store's rows to the patient positions inside DuckDB (no ORDER BY:
    sorting rows of 2048 floats is the slow part of a plain read) and scatters
    the float32 matrix into place; when the store already holds the rows in
    cohort order and every patient has them, the Arrow buffer is used as is.
    """
    fs, pooling = feature_key(ref)
    n = len(patient_ids)
    _register_ids(con, patient_ids)
    try:
        tbl = con.sql(
            f"SELECT c.pos, f.n_instances, f.embedding FROM patient_features f JOIN {_IDS_TABLE} c USING (patient_id) "
            "WHERE f.feature_set = $fs AND f.pooling = $pooling",
            params={"fs": fs, "pooling": pooling},
        ).to_arrow_table()
    finally:
        con.unregister(_IDS_TABLE)
    if tbl.num_rows:
        matrix = store.embeddings_matrix(tbl.column("embedding"))
        dim = matrix.shape[1]
    else:
        dim = _stored_dim(con, fs, pooling)
        matrix = np.zeros((0, dim or 0), np.float32)
    if dim is None:
        have = con.execute(
            "SELECT DISTINCT feature_set || ':' || pooling FROM patient_features ORDER BY 1"
        ).fetchall()
        raise CohortError(
            f"no pooled features '{fs}:{pooling}' in the store (have: {', '.join(r[0] for r in have) or 'none'})"
        )
    pos = tbl.column("pos").to_numpy()
    available = np.zeros(n, dtype=bool)
    available[pos] = True
    n_inst = np.zeros(n, dtype=np.int32)
    n_inst[pos] = tbl.column("n_instances").to_numpy(zero_copy_only=False)
    if len(pos) == n and (n == 0 or (pos[0] == 0 and (np.diff(pos) == 1).all())):
        values = matrix  # already in cohort order, nothing missing
    else:
        values = np.empty((n, dim), dtype=np.float32)
        values[pos] = matrix
        values[~available] = np.nan
    names = tuple(f"{fs}:{pooling}:{j}" for j in range(dim))
    return FeatureBlock(f"{fs}:{pooling}", _frozen(values), _frozen(available), _frozen(n_inst), names)


def read_bags(con: duckdb.DuckDBPyConnection, feature_set: str, patient_ids: Sequence[str]) -> Bags:
    """Instance bags of ``feature_set`` for ``patient_ids`` (in that order), from the instance Parquet files."""
    rows = con.execute("SELECT dim FROM feature_sets WHERE name = ?", [feature_set]).fetchall()
    known = rows[0] if rows else None
    if known is None:
        raise CohortError(f"no feature set '{feature_set}' in the store")
    _register_ids(con, patient_ids)
    try:
        sources = con.execute(
            f"SELECT e.source_id FROM embed_items e JOIN {_IDS_TABLE} c USING (patient_id) "
            "WHERE e.feature_set = ? AND e.status = 'done' ORDER BY e.source_id",
            [feature_set],
        ).fetchall()
    finally:
        con.unregister(_IDS_TABLE)
    inst = store.read_instances(con, feature_set, [s[0] for s in sources]) if sources else None
    dim = int(known[0]) if known[0] is not None else 0
    n = len(patient_ids)
    if inst is None or inst.height == 0:
        empty = pl.DataFrame(schema={c: t for c, t in _META_SCHEMA.items()})
        return Bags(feature_set, tuple(patient_ids), tuple(np.zeros((0, dim), np.float32) for _ in range(n)),
                    tuple(empty for _ in range(n)), dim)
    where = pl.DataFrame({"patient_id": list(patient_ids), "_pos": np.arange(n, dtype=np.int64)})
    inst = inst.join(where, on="patient_id", how="inner").sort(["_pos", "source_id", "instance"])
    matrix = store.embeddings_matrix(inst["embedding"])
    dim = matrix.shape[1]
    counts = np.bincount(inst["_pos"].to_numpy(), minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    meta = inst.select(list(_META_SCHEMA)).cast(_META_SCHEMA)
    embeddings = tuple(_frozen(matrix[s:s + c]) for s, c in zip(starts, counts))
    frames = tuple(meta.slice(int(s), int(c)) for s, c in zip(starts, counts))
    return Bags(feature_set, tuple(patient_ids), embeddings, frames, dim)


_META_SCHEMA: dict[str, Any] = {
    "source_id": pl.String, "instance": pl.Int32, "x": pl.Int64, "y": pl.Int64, "z": pl.Int64,
    "level": pl.Int32, "tissue_fraction": pl.Float64,
}


def feature_coverage(con: duckdb.DuckDBPyConnection, patient_ids: Sequence[str], refs: Sequence[str]) -> pl.DataFrame:
    """For each ``feature_set:pooling`` (or ``feature_set:instances``), how many patients have it and who lacks it.

    A patient has ``feature_set:instances`` when one of its done sources has an
    instance file that the connection's ``instances`` view reads: a file left
    out (missing, damaged, another source's; see
    :func:`pipeline.store.refresh_instances_view`) counts as missing.
    """
    left_out = {(p.feature_set, p.source_id) for p in store.left_out_instances(con)}
    _register_ids(con, patient_ids)
    rows = []
    try:
        for ref in refs:
            fs, pooling = feature_key(ref)
            if pooling == "instances":
                sql = (f"SELECT DISTINCT patient_id, source_id FROM embed_items JOIN {_IDS_TABLE} USING (patient_id) "
                       "WHERE feature_set = $fs AND status = 'done'")
                have = {r[0] for r in con.sql(sql, params={"fs": fs}).fetchall() if (fs, r[1]) not in left_out}
            else:
                sql = (f"SELECT patient_id FROM patient_features JOIN {_IDS_TABLE} USING (patient_id) "
                       "WHERE feature_set = $fs AND pooling = $pooling")
                have = {r[0] for r in con.sql(sql, params={"fs": fs, "pooling": pooling}).fetchall()}
            lacking = [p for p in patient_ids if p not in have]
            rows.append({"features": f"{fs}:{pooling}", "patients": len(have), "missing": len(lacking),
                         "missing ids": ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")})
    finally:
        con.unregister(_IDS_TABLE)
    return pl.DataFrame(rows, schema={"features": pl.String, "patients": pl.Int64, "missing": pl.Int64,
                                      "missing ids": pl.String})
