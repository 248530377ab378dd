"""Benchmark: where to decode tiles on Ray, beside the encoder or in front of it.

Item 2 of the Ray embedding asks whether tile decoding (tissue mask and grid,
``read_region`` of each tile, resize) keeps the encoders busy best when it runs

* ``actor``: in the encoder actor's own process, as the production runner
  does on CPU (``pipeline.ray_runner`` with ``num_workers = 0``);
* ``loader``: in a DataLoader worker process per actor (the production runner
  with ``num_workers = 1`` set in the feature set);
* ``tasks``: in Ray CPU tasks, one per slide, whose tile arrays travel to the
  encoder actor through the object store (the actor only encodes and writes).

One synthetic study (``pipeline.synth``, WSI only, resnet18 with random weights),
copied once per design; each copy is embedded once on the same local Ray
(started before the timings, as a running cluster would be). The encoder's
load in each actor is timed, as is the tiling. Prints, per design, tiles/s and
sources/s over the whole run and the steady tiles/s once the encoders run (from
the instance files' times, leaving out the start every design pays once), and
checks that every design wrote the same instances.

The ``tasks`` design is driven here (not by the production runner): it writes
the instance files but no status files and does not fold them into the store,
which favours it by the runner's bookkeeping (well under a second per run).

Run from the repository root:  python bench/embed_ray_decode.py [n_patients] [tile_size] [mpp]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURE_SET = """
[[feature_sets]]
name = "wsi"
modality = "wsi"
encoder = "resnet18"
weights = "random"
mpp = {mpp}
tile_size = {tile}
tissue_threshold = 0.25
batch_size = 8
num_workers = {workers}
"""


def _study(folder: Path, n: int, tile: int, mpp: float, workers: int):
    from pipeline.config import load_config
    from pipeline.ingest import ingest
    from pipeline.synth import make_study

    toml = make_study(folder, n_patients=n, small=True)
    head = toml.read_text().split("[[feature_sets]]", 1)[0]
    toml.write_text(head.replace('scans = "manifests/scans.csv"\n', "")
                    + FEATURE_SET.format(mpp=mpp, tile=tile, workers=workers))
    study = load_config(toml)
    ingest(study, progress=False)
    return study


def _with_workers(study_root: Path, workers: int):
    """The study with the feature set's ``num_workers`` changed (a fresh store is not needed: nothing is embedded)."""
    from pipeline.config import load_config

    toml = study_root / "study.toml"
    text = toml.read_text()
    toml.write_text(text.replace("num_workers = 0", f"num_workers = {workers}"))
    return load_config(toml)


# --- the "tasks" design: decode in CPU tasks, encode in actors ------------------------


def decode(row: dict[str, Any], source_id: str, fingerprint: str, settings: Any, tile: int, resample: int,
           batch: int, cache: str) -> dict[str, Any]:
    """Tiling (cached as the runner caches it) and every tile of one slide, as uint8 (n, tile, tile, 3)."""
    from pipeline.wsi.cache import TileCache
    from pipeline.wsi.slide import open_slide
    from pipeline.wsi.tiles import TileDataset

    override = row.get("mpp") if row.get("mpp_source") == "manifest" else None
    with open_slide(row["path"], mpp=override) as slide:
        tiled = TileCache(Path(cache) / "tiles").tiling(slide, settings, fingerprint, source_id)
        slide_mpp = slide.mpp
    grid, spec = tiled.grid, tiled.spec
    ds = TileDataset(row["path"], slide_mpp, grid["x"].to_numpy(), grid["y"].to_numpy(), spec.level, spec.read_size,
                     tile, batch, resample, spec.downsample)
    try:
        parts = [ds.read_batch(i * batch, min((i + 1) * batch, grid.height)) for i in range(len(ds))]
    finally:
        ds.close()
    tiles = np.concatenate(parts) if parts else np.zeros((0, tile, tile, 3), dtype=np.uint8)
    return {"grid": grid, "tiles": tiles}


class EncodeActor:
    """Loads the feature set's encoder once; encodes decoded slides and writes their instance files."""

    def __init__(self, fs: Any, threads: int) -> None:
        import torch

        from pipeline.embed import make_embedder

        torch.set_num_threads(threads)
        self.embedder = make_embedder(fs, "cpu")

    def encode(self, source_id: str, out: str, decoded: dict[str, Any]) -> int:
        from pipeline import store

        grid, tiles = decoded["grid"], decoded["tiles"]
        enc, batch = self.embedder.encoder, self.embedder.fs.batch_size
        emb = np.empty((grid.height, enc.dim), dtype=np.float32)
        for a in range(0, grid.height, batch):
            emb[a:a + batch] = enc.embed(np.array(tiles[a:a + batch]))  # object-store arrays are read-only
        frame = pl.DataFrame({
            "source_id": pl.Series([source_id] * grid.height, dtype=pl.String),
            "instance": pl.Series(np.arange(grid.height, dtype=np.int32)),
            "x": grid["x"], "y": grid["y"], "z": pl.Series([None] * grid.height, dtype=pl.Int64),
            "level": grid["level"], "tissue_fraction": grid["tissue_fraction"],
            "embedding": pl.Series(emb).cast(pl.List(pl.Float32)),
        })
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        store.write_instances(out, frame)
        return grid.height


def tiling_inputs(study: Any) -> tuple[tuple[Any, int, int], dict[str, float]]:
    """The feature set's tiling settings, tile size and resampling filter, as its embedder derives them,
    and the cost of each step alone in this process on one thread (s/tile): tiling and decoding, encoding.
    """
    import torch

    from pipeline import store
    from pipeline.embed import list_sources, make_embedder

    fs = study.feature_sets[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    emb = make_embedder(fs, "cpu")
    try:
        inputs = (emb.tiling_settings, emb.tile, emb.encoder.resample)
        con = store.connect(study.store_path, read_only=True)
        try:
            sources = list_sources(con, study, "wsi")
        finally:
            con.close()
        cache = str(store.store_dir(study.store_path) / "cache")
        t0 = time.perf_counter()
        decoded = [decode(src.row, src.source_id, src.fingerprint, *inputs, fs.batch_size, cache)["tiles"]
                   for src in sources]
        t1 = time.perf_counter()
        for tiles in decoded:
            for a in range(0, len(tiles), fs.batch_size):
                emb.encoder.embed(tiles[a:a + fs.batch_size])
        t2 = time.perf_counter()
        n = sum(len(t) for t in decoded)
        return inputs, {"tiling + decode": (t1 - t0) / n, "encode": (t2 - t1) / n}
    finally:
        emb.close()
        torch.set_num_threads(threads)


def run_tasks(ray: Any, study: Any, actors: int, actor_cpus: float, decode_cpus: float,
              tiling: tuple[Any, int, int]) -> tuple[int, int]:
    """Decode each slide in a CPU task and encode it in one of ``actors`` actors; (tiles, sources)."""
    from pipeline import store
    from pipeline.embed import list_sources

    fs = study.feature_sets[0]
    settings, tile, resample = tiling
    con = store.connect(study.store_path, read_only=True)
    try:
        sources = list_sources(con, study, "wsi")
    finally:
        con.close()
    pool = [ray.remote(EncodeActor).options(num_cpus=actor_cpus).remote(fs, max(1, int(actor_cpus)))
            for _ in range(actors)]
    task = ray.remote(decode).options(num_cpus=decode_cpus)
    cache = str(store.store_dir(study.store_path) / "cache")
    ahead = 2 * actors + 1  # slides in flight (decoding or decoded), bounding the object store's use
    pending: list[Any] = []
    tiles = 0
    for i, src in enumerate(sources):
        ref = task.remote(src.row, src.source_id, src.fingerprint, settings, tile, resample, fs.batch_size, cache)
        out = str(store.instance_path(study.store_path, fs.name, src.source_id))
        pending.append(pool[i % actors].encode.remote(src.source_id, out, ref))
        if len(pending) >= ahead:
            done, pending = ray.wait(pending, num_returns=1)
            tiles += ray.get(done[0])
    tiles += sum(ray.get(pending))
    for a in pool:
        ray.kill(a)
    return tiles, len(sources)


def _steady(study: Any) -> float:
    """Tiles/s once the encoders run: tiles of the files written after the first one, over the time between them.

    Leaves out the start (actors loading the model, the first slide's tiling), which every design pays once.
    """
    files = sorted((p.stat().st_mtime_ns, p) for p in (study.root / "instances" / "feature_set=wsi").glob("*.parquet"))
    if len(files) < 2:
        return float("nan")
    tiles = sum(pl.read_parquet(p).height for _, p in files[1:])
    return tiles / ((files[-1][0] - files[0][0]) / 1e9)


def main() -> None:
    import ray

    from pipeline import ray_runner

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    tile = int(sys.argv[2]) if len(sys.argv) > 2 else 112
    mpp = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
    cpus = os.cpu_count() or 1
    designs = {
        "actor x2 (current)": ("runner", 0, 2),
        "loader x2": ("runner", 1, 2),
        "loader x1 (2 CPUs)": ("runner", 1, 1),
        "tasks + 1 actor": ("tasks", 1, 1.0),
        "tasks + 2 actors": ("tasks", 2, 0.99),
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = _study(Path(tmp) / "base", n, tile, mpp, 0)
        copies = {}
        for k, name in enumerate(designs):
            root = Path(tmp) / f"d{k}"
            shutil.copytree(base.root, root)
            copies[name] = _with_workers(root, designs[name][1]) if designs[name][0] == "runner" else _with_workers(root, 0)
        ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
        try:
            tiling, alone = tiling_inputs(base)
            out = {}
            for name, study in copies.items():
                kind, workers, k = designs[name]
                t0 = time.perf_counter()
                if kind == "runner":
                    res = ray_runner.embed(study, device="cpu", progress=False, workers=int(k)).feature_sets[0]
                    tiles, sources = res.instances, res.done + res.failed
                else:
                    # decode tasks get the CPUs the encoders leave (a sliver when they take them all: they share the cores)
                    decode_cpus = round(cpus - workers * k, 2)
                    tiles, sources = run_tasks(ray, study, workers, float(k), decode_cpus, tiling)
                out[name] = (tiles, sources, time.perf_counter() - t0, _steady(study))
        finally:
            ray.shutdown()
        frames = {k: pl.read_parquet(s.root / "instances" / "feature_set=wsi" / "*.parquet").sort("source_id", "instance")
                  for k, s in copies.items()}
    first = next(iter(frames))
    for k, f in frames.items():
        assert f.drop("embedding").equals(frames[first].drop("embedding")), k
        np.testing.assert_allclose(np.stack(f["embedding"].to_numpy()), np.stack(frames[first]["embedding"].to_numpy()),
                                   atol=1e-5, err_msg=k)
    tiles0, sources0, _, _ = out[first]
    print(f"{n} patients, {sources0} slides, {tiles0} tiles of {tile} px at {mpp} um/px, {cpus} CPU(s); "
          "every design wrote the same instances")
    print("each step alone, one thread, ms/tile: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in alone.items())
          + f" (tiling and decoding: {alone['tiling + decode'] / sum(alone.values()):.0%} of the work)")
    print(f"{'design':20s} {'wall':>8s}  {'tiles/s':>8s}  {'sources/s':>9s}  {'steady tiles/s':>14s}")
    for name, (tiles, sources, secs, steady) in out.items():
        print(f"{name:20s} {secs:7.2f}s  {tiles / secs:8.1f}  {sources / secs:9.2f}  {steady:14.1f}")


if __name__ == "__main__":
    main()
