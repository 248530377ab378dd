"""The study's patients and their image sources (slides and scans) as ingest stored them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from pipeline.store.base import query

# each modality's sources: table, id column and the columns holding file paths (relative to the study)
SOURCE_TABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "wsi": ("slides", "slide_id", ("path",)),
    "ct": ("scans", "scan_id", ("image_path", "mask_path")),
}


def source_rows(con: duckdb.DuckDBPyConnection, modality: str, root: str | Path) -> dict[str, dict[str, Any]]:
    """Every slide (``wsi``) or scan (``ct``) of the store, ``source_id -> row`` sorted by id, with its file
    paths made absolute against the study folder ``root`` (as the study resolves them).

    Raises
    ------
    ValueError
        An unknown modality.
    """
    if modality not in SOURCE_TABLES:
        raise ValueError(f"unknown modality {modality!r}")
    table, id_col, path_cols = SOURCE_TABLES[modality]
    out: dict[str, dict[str, Any]] = {}
    for row in query(con, f"SELECT * FROM {table} ORDER BY {id_col}").to_dicts():
        for c in path_cols:
            if row.get(c) is not None:
                p = Path(row[c])
                row[c] = str(p if p.is_absolute() else (Path(root) / p).resolve())
        out[str(row[id_col])] = row
    return out


def patient_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The ids of the store's ``patients`` table."""
    return {str(r[0]) for r in con.execute("SELECT patient_id FROM patients").fetchall()}
