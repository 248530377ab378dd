"""Benchmark: what verifying instance files by content costs, next to the cheap check.

Builds a throw-away store with 3,000 done instance files of a realistic size
(200 tiles x 1024 float32 each, about 0.8 MB; written as ``embed`` writes
them: zstd Parquet with statistics) and their recorded sha256, size and time,
then times over all of them:

* the cheap check (``cohortlab sql``): size, Parquet footer and the
  ``source_id`` in its statistics (:func:`pipeline.store.unreadable_instances`);
* the content check (``features``, ``cohort``, ``fit``, ``run``, ``verify``):
  the same plus the sha256 of every byte (``content=True``), cold-ish (the
  files' pages dropped from the page cache with ``posix_fadvise``; the device
  may still cache them) and warm;
* for the record, the alternative of Parquet page checksums
  (``write_page_checksum`` / ``page_checksum_verification``, pyarrow decoding
  every page) on a tenth of the files, warm.

It prints files/s, MB/s, the time extrapolated to 100 GB of instance files
and the ratios to the cheap check, and writes
``reports/bench/verify_instances.json``.

Run from the repository root:  python bench/verify_instances.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import store  # noqa: E402

N_FILES, TILES, DIM = 3_000, 200, 1024
FS = "bench"
HUNDRED_GB = 100e9


def frame(source_id: str, rng: np.random.Generator) -> pl.DataFrame:
    # non-negative like pooled CNN activations; random, so zstd gains little (as on real embeddings)
    emb = rng.random((TILES, DIM), dtype=np.float32)
    return pl.DataFrame({
        "source_id": [source_id] * TILES, "instance": np.arange(TILES, dtype=np.int32),
        "x": np.arange(TILES, dtype=np.int64) * 224, "y": np.zeros(TILES, dtype=np.int64),
        "z": pl.Series([None] * TILES, dtype=pl.Int64), "level": np.zeros(TILES, dtype=np.int32),
        "tissue_fraction": np.full(TILES, 0.9), "embedding": pl.Series(emb).cast(pl.List(pl.Float32)),
    })


def build(root: Path) -> tuple[Path, list[Path]]:
    """A store with N_FILES done items and their files (written as ``store.write_instances`` does, without fsync)."""
    db = root / "store.duckdb"
    rng = np.random.default_rng(0)
    con = store.connect(db)
    paths = []
    try:
        store.register_feature_set(con, store.FeatureSetRecord(FS, "wsi", "resnet50", "random", {}, DIM))
        with store.transaction(con):
            for i in range(N_FILES):
                sid = f"S{i:05d}"
                path = store.instance_path(db, FS, sid)
                path.parent.mkdir(parents=True, exist_ok=True)
                frame(sid, rng).write_parquet(path, compression="zstd", statistics=True)
                store.record_item(con, FS, sid, f"P{i:05d}", "done", TILES, None, 0.0,
                                  str(path.relative_to(root)), "fp", store.stamp_file(path))
                paths.append(path)
    finally:
        con.close()
    return db, paths


def drop_cache(paths: list[Path]) -> None:
    """Ask the kernel to drop these files' pages (clean ones; written pages are flushed first)."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cohortlab-bench-") as tmp:
        root = Path(tmp)
        t_build, (db, paths) = timed(lambda: build(root))
        total = sum(p.stat().st_size for p in paths)
        con = store.connect(db, read_only=True)
        try:
            def check(content: bool) -> list[store.InstanceProblem]:
                return store.unreadable_instances(con, content=content)

            rows: dict[str, float] = {}
            check(False)  # footers warm, as they are on a second query
            rows["cheap (size + footer + source_id)"] = min(timed(lambda: check(False))[0] for _ in range(3))
            drop_cache(paths)
            rows["content, cold-ish (sha256 + cheap)"], problems_cold = timed(lambda: check(True))
            rows["content, warm (sha256 + cheap)"], problems = timed(lambda: check(True))
        finally:
            con.close()
        assert problems == [] and problems_cold == []

        # the alternative: page checksums written at embed time, verified by decoding every page
        subset = paths[: N_FILES // 10]
        sub_bytes = 0
        for p in subset:
            q = p.with_suffix(".crc.parquet")
            pq.write_table(pq.read_table(p), q, compression="zstd", write_page_checksum=True)
            sub_bytes += q.stat().st_size
        crc = [p.with_suffix(".crc.parquet") for p in subset]
        for q in crc:  # warm
            q.read_bytes()
        t_crc, _ = timed(lambda: [pq.read_table(q, page_checksum_verification=True) for q in crc])

    cheap = rows["cheap (size + footer + source_id)"]
    table = []
    for name, seconds in rows.items():
        table.append({"check": name, "files": N_FILES, "seconds": seconds, "files_per_s": N_FILES / seconds,
                      "mb_per_s": total / seconds / 1e6, "s_per_100gb": HUNDRED_GB / (total / seconds),
                      "x_cheap": seconds / cheap})
    table.append({"check": "page checksums, warm (pyarrow decode, 1/10 of files)", "files": len(crc),
                  "seconds": t_crc, "files_per_s": len(crc) / t_crc, "mb_per_s": sub_bytes / t_crc / 1e6,
                  "s_per_100gb": HUNDRED_GB / (sub_bytes / t_crc),
                  "x_cheap": (t_crc * N_FILES / len(crc)) / cheap})
    print(f"{N_FILES} instance files of {TILES} x {DIM} float32, {total / 1e9:.2f} GB "
          f"({total / N_FILES / 1e6:.2f} MB each); built in {t_build:.1f} s; "
          f"{os.cpu_count()} cores, {store._workers(N_FILES)} verify threads")
    head = f"{'check':<54} {'seconds':>8} {'files/s':>9} {'MB/s':>8} {'100 GB':>9} {'x cheap':>8}"
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['check']:<54} {r['seconds']:>8.2f} {r['files_per_s']:>9.0f} {r['mb_per_s']:>8.0f} "
              f"{r['s_per_100gb'] / 60:>7.1f} m {r['x_cheap']:>8.1f}")
    print("(100 GB: the time extrapolated from MB/s; x cheap: time for all files / the cheap check's)")
    out = {"files": N_FILES, "tiles": TILES, "dim": DIM, "bytes": total, "rows": table,
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}}
    folder = ROOT / "reports" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "verify_instances.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
