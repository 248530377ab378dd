"""Building small test stores directly through pipeline.store (no manifests, no images)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

DUCK_TYPES = {pl.Float64: "DOUBLE", pl.Int64: "BIGINT", pl.String: "VARCHAR", pl.Boolean: "BOOLEAN", pl.Date: "DATE"}


def write_patients(
    con: duckdb.DuckDBPyConnection, patients: pl.DataFrame, variables: Iterable[Mapping[str, Any]] = ()
) -> None:
    """Fill ``patients``, the wide ``clinical`` table and ``variables`` from one frame.

    ``patients`` holds patient_id, center and clinical columns; each variable
    entry gives name and type, and optionally unit, role (default predictor),
    label (default the name) and levels. Missing counts come from the frame.
    """
    ids = patients["patient_id"].to_list()
    con.register("_p", pa.table({
        "patient_id": pa.array(ids, type=pa.string()),
        "center": pa.array(patients["center"].to_list(), type=pa.string()),
        "source_file": pa.array(["patients.csv"] * len(ids), type=pa.string()),
        "source_row": pa.array(list(range(2, len(ids) + 2)), type=pa.int32()),
    }))
    con.execute("INSERT INTO patients SELECT * FROM _p")
    con.unregister("_p")
    clinical = patients.drop("center")
    for col in clinical.columns[1:]:
        con.execute(f'ALTER TABLE clinical ADD COLUMN "{col}" {DUCK_TYPES[clinical[col].dtype]}')
    con.register("_c", clinical.to_arrow())
    con.execute("INSERT INTO clinical SELECT * FROM _c")
    con.unregister("_c")
    for v in variables:
        con.execute(
            "INSERT INTO variables VALUES (?, ?, ?, ?, ?, ?, ?)",
            [v["name"], v["type"], v.get("unit"), v.get("role", "predictor"), v.get("label", v["name"]),
             int(patients[v["name"]].null_count()), v.get("levels")],
        )
