"""Instance files: one Parquet file per source and feature set, its name, its columns, its atomic write.

Layout beside ``store.duckdb``::

    instances/feature_set=<name>/<source_id>.parquet   one file per slide or scan

Instance files are written to a temporary name and renamed when complete, so a
file that exists is whole.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline import atomic
from pipeline.store.base import StoreError

INSTANCE_COLUMNS = ("source_id", "instance", "x", "y", "z", "level", "tissue_fraction", "embedding")


def safe_name(source_id: str) -> str:
    """A file name for a source id: readable when it can be, unique always."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", source_id)
    if clean == source_id and not source_id.startswith("."):
        return source_id
    return f"{clean}-{hashlib.sha1(source_id.encode()).hexdigest()[:8]}"


def instance_path(store: str | Path, feature_set: str, source_id: str) -> Path:
    """Where a source's instance Parquet lives (absolute)."""
    return Path(store).resolve().parent / "instances" / f"feature_set={feature_set}" / f"{safe_name(source_id)}.parquet"


MAX_FILE_NAME_BYTES = 255  # the limit of one file name on Linux, macOS and Windows file systems
# the longest name a source's files get: the temporary of its slide thumbnail, ``.<name>.thumb.png.<pid>.tmp``
# (pids have at most 7 digits), longer than the instance file's ``.<name>.parquet.<pid>.tmp``
_LONGEST_NAME = ".{}.thumb.png.9999999.tmp"


def file_name_problem(source_id: str) -> str | None:
    """Why ``source_id`` cannot name its files (instances, cache, thumbnails), or None when it can.

    An id whose file name exceeds :data:`MAX_FILE_NAME_BYTES` would pass ingest
    and then fail every ``embed`` with "File name too long".
    """
    longest = len(os.fsencode(_LONGEST_NAME.format(safe_name(source_id))))
    if longest <= MAX_FILE_NAME_BYTES:
        return None
    room = MAX_FILE_NAME_BYTES - (longest - len(os.fsencode(safe_name(source_id))))
    return (f"id of {len(source_id)} characters ({len(source_id.encode())} bytes) is too long to name its files "
            f"(at most about {room} bytes fit in a file name of {MAX_FILE_NAME_BYTES}); shorten it")


def write_instances(path: str | Path, frame: pl.DataFrame) -> Path:
    """Write one source's instances atomically (temp file, fsync, rename).

    ``frame`` holds ``INSTANCE_COLUMNS``; ``embedding`` is a list/array of float32.
    """
    path = Path(path)
    missing = [c for c in INSTANCE_COLUMNS if c not in frame.columns]
    if missing:
        raise StoreError(f"{path}: instance frame lacks columns {missing}")
    frame = frame.select(INSTANCE_COLUMNS).with_columns(
        pl.col("embedding").cast(pl.List(pl.Float32)),
        pl.col("instance").cast(pl.Int32),
        pl.col("x").cast(pl.Int64), pl.col("y").cast(pl.Int64), pl.col("z").cast(pl.Int64),
        pl.col("level").cast(pl.Int32), pl.col("tissue_fraction").cast(pl.Float64),
    )
    with atomic.staged(path, fsync=True) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
    return path


def embeddings_matrix(column: pa.ChunkedArray | pa.Array | pl.Series, dim: int | None = None) -> np.ndarray:
    """Turn a list-of-float column into a float32 (n, dim) matrix without Python loops."""
    if isinstance(column, pl.Series):
        column = column.to_arrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=pa.list_(pa.float32()))
    n = len(column)
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    width = len(values) // n
    if width * n != len(values):
        raise StoreError("embeddings of different lengths in one feature set")
    return values.reshape(n, width)
