"""What the analytics stages write back: the digests of each model's files and each model's predictions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.store.base import StoreError, _now, _scalar, query, transaction
from pipeline.store.connection import _open
from pipeline.store.schema import _version


def record_model_artifacts(con: duckdb.DuckDBPyConnection, model: str, digests: Mapping[str, str]) -> None:
    """Replace the sha256 of every file of ``model``'s folder (``file -> hex digest``) in one transaction.

    The store is the trust anchor of a model folder: a file is read back only if its digest matches the one
    recorded here when ``cohortlab fit`` wrote it (:mod:`analytics.models.persist`).
    """
    recorded_at = _now()
    with transaction(con):
        con.execute("DELETE FROM model_artifacts WHERE model = ?", [model])
        if digests:
            con.executemany("INSERT INTO model_artifacts VALUES (?, ?, ?, ?)",
                            [[model, name, digest, recorded_at] for name, digest in sorted(digests.items())])


def model_artifacts(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, str]:
    """The sha256 recorded for each file of ``model``'s folder (empty: none recorded, e.g. a store migrated from
    schema 3, or a read-only connection to a store not migrated yet)."""
    has_table = _scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
                             "AND table_name = 'model_artifacts'")
    if not has_table:
        return {}
    rows = con.execute("SELECT file, sha256 FROM model_artifacts WHERE model = ? ORDER BY file", [model]).fetchall()
    return {str(f): str(d) for f, d in rows}


def recorded_model_artifacts(path: str | Path, model: str, wait_s: float = 60.0) -> dict[str, str]:
    """:func:`model_artifacts` of the store at ``path``, opened read-only (and without the ``instances`` view:
    nothing else is read). Waits up to ``wait_s`` seconds while another process writes the store."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no store here (run `cohortlab ingest` first)")
    con = _open(path, True, wait_s, share_writer=True)
    try:
        if _version(con) is None:
            raise StoreError(f"{path}: not a cohortlab store (no schema version)")
        return model_artifacts(con, model)
    finally:
        con.close()


PREDICTION_COLUMNS = ("model", "patient_id", "split", "score", "fold")


def replace_predictions(con: duckdb.DuckDBPyConnection, model: str, frame: pl.DataFrame) -> None:
    """Replace one model's rows of the ``predictions`` table (``PREDICTION_COLUMNS`` of ``frame``) in one
    transaction: a reader sees the old rows or the new ones, never a mix."""
    table = frame.select(list(PREDICTION_COLUMNS)).to_arrow()
    with transaction(con):
        con.execute("DELETE FROM predictions WHERE model = ?", [model])
        con.register("_cohortlab_predictions", table)
        try:
            con.execute("INSERT INTO predictions SELECT model, patient_id, split, score, fold "
                        "FROM _cohortlab_predictions")
        finally:
            con.unregister("_cohortlab_predictions")


def read_predictions(con: duckdb.DuckDBPyConnection, model: str | None = None) -> pl.DataFrame:
    """Rows of the ``predictions`` table (of one model), ordered by model and patient.

    The one reader of predictions for validation, the report, explanations and the notebook: ``fit`` writes
    each model's rows here and, as a checked copy, in its model folder (``predictions.parquet``, whose hash
    the model's record holds); ``fit`` rewrites the rows when they differ from the folder's.
    """
    sql = "SELECT model, patient_id, split, score, fold FROM predictions"
    params: list[Any] = []
    if model is not None:
        sql += " WHERE model = ?"
        params.append(model)
    return query(con, sql + " ORDER BY model, patient_id", params or None)
