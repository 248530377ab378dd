"""Helpers of the store-integrity tests: copies of a study folder, store snapshots."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import store


def copy_study(src: Path, dest: Path, keep_times: bool = True) -> Path:
    """A copy of a study folder; without ``keep_times`` every file gets a new modification time (``cp -r``)."""
    shutil.copytree(src, dest, copy_function=shutil.copy2 if keep_times else shutil.copyfile)
    return dest


def tables(root: Path) -> dict[str, pl.DataFrame]:
    """The ingested tables and the embedding rows of a study's store, sorted, without time stamps."""
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        out = {t: store.query(con, f"SELECT * FROM {t} ORDER BY ALL") for t in ("patients", "clinical", "slides", "scans")}
        out["embed_items"] = store.query(
            con, "SELECT feature_set, source_id, patient_id, status, n_instances, path, fingerprint "
            "FROM embed_items ORDER BY feature_set, source_id")
        return out
    finally:
        con.close()


def pooled(root: Path, feature_set: str, pooling: str = "mean") -> tuple[list[str], Any]:
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        return store.read_patient_features(con, feature_set, pooling)
    finally:
        con.close()
