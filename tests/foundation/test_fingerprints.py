"""Source fingerprints hold content (never a path or a time); instance files are checked against their stamp."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import store


def _bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_fingerprint_follows_content_not_place_or_time(tmp_path: Path) -> None:
    a = tmp_path / "a" / "scan.nii"
    a.parent.mkdir()
    a.write_bytes(_bytes(5000))
    b = tmp_path / "elsewhere" / "renamed.nii"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    os.utime(b, ns=(1, 1))
    assert store.content_digest(a) == store.content_digest(b) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert store.file_fingerprint(a, 1) == store.file_fingerprint(b, 1) != store.file_fingerprint(a, 2)
    data = bytearray(a.read_bytes())
    data[2500] ^= 1
    b.write_bytes(bytes(data))
    assert store.file_fingerprint(a, 1) != store.file_fingerprint(b, 1)


def test_large_files_are_sampled_head_middle_and_tail(tmp_path: Path) -> None:
    size = 3 * (1 << 20) + 12345
    a = tmp_path / "slide.svs"
    a.write_bytes(_bytes(size))
    digest = store.content_digest(a, sample_above=1 << 20)
    assert digest != hashlib.sha256(a.read_bytes()).hexdigest()  # sampled, not whole
    for where in (0, size // 2, size - 1):
        data = bytearray(a.read_bytes())
        step = (size - 2 * (1 << 20) - (64 << 10)) // 15
        # the byte changed lies in the head, in a sampled middle block, or in the tail
        pos = where if where != size // 2 else (1 << 20) + 7 * step + 10
        data[pos] ^= 1
        b = tmp_path / f"changed-{where}.svs"
        b.write_bytes(bytes(data))
        assert store.content_digest(b, sample_above=1 << 20) != digest, where
    shorter = tmp_path / "shorter.svs"
    shorter.write_bytes(a.read_bytes()[:-1])
    assert store.content_digest(shorter, sample_above=1 << 20) != digest


def test_folder_digest_covers_names_and_contents(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        (series / f"IM{i}.dcm").write_bytes(_bytes(100, i))
    digest = store.content_digest(series)
    copy = tmp_path / "copy"
    shutil.copytree(series, copy)
    assert store.content_digest(copy) == digest
    (copy / "IM2.dcm").rename(copy / "IM3.dcm")
    assert store.content_digest(copy) != digest


def _instance_file(tmp_path: Path, n: int = 3) -> Path:
    frame = pl.DataFrame({
        "source_id": ["s"] * n, "instance": list(range(n)), "x": [0] * n, "y": [0] * n, "z": [None] * n,
        "level": [0] * n, "tissue_fraction": [1.0] * n,
        "embedding": np.arange(n * 4, dtype=np.float32).reshape(n, 4).tolist(),
    })
    return store.write_instances(tmp_path / "s.parquet", frame)


def test_verify_instance_file(tmp_path: Path) -> None:
    path = _instance_file(tmp_path)
    stamp = store.stamp_file(path)
    assert stamp.checksum == hashlib.sha256(path.read_bytes()).hexdigest() and stamp.bytes == path.stat().st_size
    assert store.verify_instance_file(path, stamp, 3) == (None, None)  # size and time as recorded: a stat

    os.utime(path, ns=(stamp.mtime_ns + 10**9, stamp.mtime_ns + 10**9))  # touched: same bytes
    problem, fresh = store.verify_instance_file(path, stamp, 3)
    assert problem is None and fresh == store.FileStamp(stamp.checksum, stamp.bytes, stamp.mtime_ns + 10**9)

    # a row of an older store (no stamp): footer and row count, then a stamp to record
    assert store.verify_instance_file(path, None, 3) == (None, store.stamp_file(path))
    assert "2 recorded" in store.verify_instance_file(path, None, 2)[0]

    data = bytearray(path.read_bytes())
    data[8] ^= 0xFF  # in the first page, the footer intact: readable, same size, other bytes
    path.write_bytes(bytes(data))
    assert store.check_instance_file(path, stamp.bytes) is None
    assert store.verify_instance_file(path, stamp, 3)[0] == "not the file that was written (sha256 differs)"

    os.truncate(path, stamp.bytes // 2)
    assert "truncated" in store.verify_instance_file(path, stamp, 3)[0]
    assert store.check_instance_file(path).startswith("not a readable Parquet file")
    path.unlink()
    assert store.verify_instance_file(path, stamp, 3) == ("missing", None)


@pytest.mark.parametrize("content", [b"", b"PAR1", b"not parquet at all" * 100])
def test_check_instance_file_rejects_what_is_not_parquet(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(content)
    assert store.check_instance_file(path).startswith("not a readable Parquet file")


def test_parquet_without_instance_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(path)
    assert store.check_instance_file(path).startswith("not an instance file (no column source_id")
