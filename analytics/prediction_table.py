"""The store's ``predictions`` table as the fit stage writes and reads it: one model's rows at a time.

A model's rows are replaced in one transaction (:func:`pipeline.store.replace_predictions`), so a reader never
sees half of a refit.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline import store

PREDICTION_SCHEMA = pl.Schema({"model": pl.String, "patient_id": pl.String, "split": pl.String, "score": pl.Float64,
                               "fold": pl.Int32})


def write_predictions(store_path: Path, model: str, frame: pl.DataFrame) -> None:
    """Replace one model's rows of the ``predictions`` table in one transaction."""
    con = store.connect(store_path)
    try:
        store.replace_predictions(con, model, frame.select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA))
    finally:
        con.close()


def stored_predictions(store_path: Path, model: str | None = None) -> pl.DataFrame:
    """Rows of the ``predictions`` table (of one model), ordered by model and patient."""
    con = store.connect(store_path, read_only=True)
    try:
        return store.read_predictions(con, model).cast(PREDICTION_SCHEMA)
    finally:
        con.close()


__all__ = ["PREDICTION_SCHEMA", "stored_predictions", "write_predictions"]
