"""Whole-slide embedding throughput and memory (a benchmark, not a test).

Prints, measured on this machine in one run:

- tile reading alone: per-tile ``read_region`` versus the batched region reader
  (in process, and in DataLoader worker processes);
- encoder alone on tiles already decoded in memory;
- end to end (tissue mask, grid, reading, encoding) and its ratio to encoder alone;
- peak memory (main process plus workers) embedding a small real slide and two
  much larger synthetic pyramidal TIFFs: it must not grow with the slide.

Results go to ``reports/bench/embed_wsi.json``. ResNet50 by default
(``--model`` picks another), then one row per other slide backbone of the
study this tool reproduces (``--backbones``: InceptionV3 at 299 px, ViT-S/16),
each at its own pretrained input size and normalisation, with its
end-to-end/encoder ratio; CUDA with bfloat16 when available (``--device``).
Encoder weights are random (no download here): speed does not depend on them.

    python bench/embed_wsi.py [--model resnet50] [--device auto] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import wsi  # noqa: E402
from pipeline.config import FeatureSet  # noqa: E402
from pipeline.source import Source  # noqa: E402
from pipeline.wsi.tiles import TileDataset, iter_tiles, resize_tile  # noqa: E402

CMU = ROOT / "tests" / "data" / "wsi" / "CMU-1-Small-Region.svs"


# --- a synthetic pyramidal slide, written tile by tile ------------------------------


def _field(seed: int, shape: tuple[int, int], tissue: float) -> np.ndarray:
    """Smooth tissue-probability field in [0, 1], about ``tissue`` of it above 0.5."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(shape) / 24, mode="wrap")
    cut = np.quantile(f, 1 - tissue)
    return np.clip((f - cut) / (f.std() * 0.3) + 0.5, 0, 1).astype(np.float32)


def _tiles(field: np.ndarray, width: int, height: int, tile: int, seed: int):
    """H&E-like tiles of one level: pink stroma with purple nuclei on white, where the field says tissue."""
    fh, fw = field.shape
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            rng = np.random.default_rng((seed, ty, tx))
            # bilinear look-up of the field at this tile's pixels
            ys = (np.arange(ty, ty + tile) + 0.5) * fh / height - 0.5
            xs = (np.arange(tx, tx + tile) + 0.5) * fw / width - 0.5
            box = (min(xs[0] + 0.5, fw), min(ys[0] + 0.5, fh), min(xs[-1] + 0.5, fw), min(ys[-1] + 0.5, fh))
            crop = Image.fromarray(field).resize((tile, tile), Image.BILINEAR, box=box)
            m = np.asarray(crop)[..., None]
            nuclei = (rng.random((tile, tile)) < 0.02)[..., None]
            tissue = np.where(nuclei, (90, 60, 150), (225, 140, 190)).astype(np.float32)
            tissue += rng.normal(0, 10, (tile, tile, 1))
            rgb = (1 - m) * 245 + m * tissue
            yield np.clip(rgb, 0, 255).astype(np.uint8)


def write_synthetic_slide(path: Path, width: int, height: int, mpp: float = 0.5, tissue: float = 0.4, seed: int = 0) -> Path:
    """A pyramidal tiled TIFF (one page per level, 4x downsamples, 256-px JPEG tiles, mpp in the resolution tags).

    Written tile by tile: memory stays small whatever the size. OpenSlide opens it as generic-tiff.
    """
    field = _field(seed, (max(8, height // 64), max(8, width // 64)), tissue)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        w, h, ds, level = width, height, 1, 0
        while True:
            res = 1e4 / (mpp * ds)  # pixels per centimetre
            tw.write(
                _tiles(field, w, h, 256, seed + level),
                shape=(h, w, 3), dtype=np.uint8, tile=(256, 256), compression="jpeg", compressionargs={"level": 90}, photometric="rgb",
                resolution=(res, res), resolutionunit="CENTIMETER", subfiletype=1 if level else 0,
            )
            if max(w, h) <= 1024:
                break
            w, h, ds, level = w // 4, h // 4, ds * 4, level + 1
    return path


# --- measurements --------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                stack += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


def _kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next((int(ln.split()[1]) for ln in fh if ln.startswith(field + ":")), 0)
    except OSError:
        return 0


def memory_tree_kb(pid: int) -> tuple[int, int]:
    """(RSS of ``pid``, PSS of ``pid`` plus all its descendants) in kB.

    PSS splits each shared page between the processes that map it, so forked
    workers that share the parent's pages are not counted twice, as RSS would.
    """
    return _kb(pid, "Rss"), sum(_kb(p, "Pss") for p in _descendants(pid))


class PeakMemory(threading.Thread):
    """Samples this process tree's memory every 25 ms and keeps the peaks."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.main_kb = self.total_kb = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            main, total = memory_tree_kb(os.getpid())
            self.main_kb, self.total_kb = max(self.main_kb, main), max(self.total_kb, total)
            time.sleep(0.025)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children (DataLoader workers once joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _grid(path: Path, mpp: float, tile: int):
    with wsi.open_slide(path) as s:
        spec = wsi.grid_spec(s, mpp, tile)
        grid = wsi.tile_grid(s, mpp, tile)
        return spec, grid, s.mpp


def bench_reading(path: Path, mpp: float, tile: int, batch: int, workers: int, limit: int) -> dict:
    import openslide

    spec, grid, slide_mpp = _grid(path, mpp, tile)
    grid = grid.head(limit)
    xs, ys = grid["x"].to_numpy(), grid["y"].to_numpy()
    n = len(xs)
    # per tile: one read_region per tile, composited on white and resized (a fresh handle: a cold cache, like the reader's)
    osr = openslide.OpenSlide(str(path))
    t = time.perf_counter()
    for x, y in zip(xs, ys):
        rgb = np.asarray(wsi.rgba_to_rgb(osr.read_region((int(x), int(y)), spec.level, (spec.read_size, spec.read_size))))
        resize_tile(rgb, tile)
    per_tile = n / (time.perf_counter() - t)
    osr.close()
    ds = TileDataset(path, slide_mpp, xs, ys, spec.level, spec.read_size, tile, batch, downsample=spec.downsample)
    t = time.perf_counter()
    for i in range(len(ds)):
        ds.read_batch(i * batch, min((i + 1) * batch, n))
    batched = n / (time.perf_counter() - t)
    ds.close()
    out = {"tiles": n, "per_tile_read_region_tiles_s": per_tile, "batched_reader_tiles_s": batched}
    if workers:
        t = time.perf_counter()
        for _ in iter_tiles(ds, workers):
            pass
        out[f"batched_reader_{workers}_workers_tiles_s"] = n / (time.perf_counter() - t)
    return out


def bench_encoder_and_e2e(path: Path, fs: FeatureSet, device: str, reps: int) -> dict:
    """Encoder alone on decoded tiles versus the whole slide end to end, alternated ``reps`` times.

    Alternating the two and taking medians keeps a busy, shared machine from
    favouring one of them; CPU seconds (workers included) are reported as a
    load-independent measure of the extra work that reading adds.
    """
    import torch

    from pipeline.wsi.embedder import make_embedder, reader_workers

    emb = make_embedder(fs, device)
    enc = emb.encoder
    spec, grid, slide_mpp = _grid(path, emb.mpp, emb.tile)
    ds = TileDataset(path, slide_mpp, grid["x"].to_numpy(), grid["y"].to_numpy(), spec.level, spec.read_size,
                     emb.tile, fs.batch_size, enc.resample, spec.downsample)
    batches = [ds[i][0] for i in range(len(ds))]  # decoded up front
    ds.close()
    cuda = enc.device.type == "cuda"
    if cuda:
        batches = [b.pin_memory() for b in batches]
    enc.embed(batches[0])  # warm-up (kernel selection)
    source = Source("bench", "p", "f", {"path": str(path), "mpp": None, "mpp_source": "metadata"})
    n = grid.height
    walls: dict[str, list[float]] = {"encoder": [], "e2e": []}
    cpus: dict[str, list[float]] = {"encoder": [], "e2e": []}
    for _ in range(reps):
        t, c = time.perf_counter(), _cpu_s()
        for b in batches:
            enc.embed(b)
        if cuda:
            torch.cuda.synchronize()
        walls["encoder"].append(time.perf_counter() - t)
        cpus["encoder"].append(_cpu_s() - c)
        t, c = time.perf_counter(), _cpu_s()
        frame = emb.embed(source)
        walls["e2e"].append(time.perf_counter() - t)
        cpus["e2e"].append(_cpu_s() - c)
        assert frame.height == n
    emb.close()
    med = {k: float(np.median(v)) for k, v in walls.items()}
    cpu = {k: float(np.median(v)) for k, v in cpus.items()}
    # each end-to-end run against the encoder run just before it: slow drifts in load cancel
    paired = float(np.median([e / x for e, x in zip(walls["encoder"], walls["e2e"])]))
    return {
        "model": fs.encoder,
        "device": str(enc.device),
        "precision": "bfloat16 autocast" if enc.amp else "float32",
        "tile": emb.tile,
        "batch_size": fs.batch_size,
        "num_workers": reader_workers(fs, enc.device.type, len(batches)),
        "torch_threads": torch.get_num_threads(),
        "tiles": n,
        "repetitions": reps,
        "encoder_only_tiles_s": n / med["encoder"],
        "end_to_end_tiles_s": n / med["e2e"],
        "ratio_end_to_end_over_encoder": paired,
        "ratio_of_median_rates": med["encoder"] / med["e2e"],
        "cpu_s_per_tile_encoder": cpu["encoder"] / n,
        "cpu_s_per_tile_end_to_end": cpu["e2e"] / n,
        "cpu_ratio_encoder_over_end_to_end": cpu["encoder"] / cpu["e2e"],
        "all_walls_s": walls,
    }


def memory_child(path: str, model: str, device: str, workers: int, batch: int) -> None:
    """Embed one slide and print its peak memory as JSON (run in a fresh process)."""
    from pipeline.wsi.embedder import make_embedder

    sampler = PeakMemory()
    sampler.start()
    fs = FeatureSet(name="mem", modality="wsi", encoder=model, weights="random", num_workers=workers, batch_size=batch)
    emb = make_embedder(fs, device)
    after_load = memory_tree_kb(os.getpid())[1]
    with wsi.open_slide(path) as s:
        dims, levels = s.dimensions, s.level_count
    t = time.perf_counter()
    frame = emb.embed(Source("m", "p", "f", {"path": path, "mpp": None, "mpp_source": "metadata"}))
    seconds = time.perf_counter() - t
    sampler.stop()
    print(json.dumps({
        "slide": Path(path).name, "width": dims[0], "height": dims[1], "tiles": frame.height, "seconds": seconds,
        "pss_after_model_load_mb": after_load / 1024, "peak_rss_main_mb": sampler.main_kb / 1024,
        "peak_pss_with_workers_mb": sampler.total_kb / 1024,
        "raw_rgb_of_level0_mb": dims[0] * dims[1] * 3 / 2**20, "levels": levels,
    }))


def _memory(path: Path, model: str, device: str, workers: int, batch: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(path), "--model", model, "--device", device,
         "--workers", str(workers), "--batch-size", str(batch)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--backbones", default="inception_v3,vit_small_patch16_224",
                    help="more encoders measured end to end and alone, default reader workers (comma-separated; '' for none)")
    ap.add_argument("--memory-model", default="resnet18", help="encoder for the memory runs (any: memory is about reading)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=2560, help="side of the synthetic slide for throughput")
    ap.add_argument("--reps", type=int, default=3, help="alternations of encoder-only and end-to-end runs")
    ap.add_argument("--large", type=int, default=12288, help="side of the large synthetic slide for memory (and twice it)")
    ap.add_argument("--read-tiles", type=int, default=400)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "embed_wsi.json"))
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.model, args.device, args.workers, args.batch_size)
        return

    import torch

    result: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "weights": "random (throughput does not depend on the weights)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        mid = write_synthetic_slide(Path(tmp) / "synthetic_mid.tiff", args.size, args.size, tissue=0.6, seed=1)
        # the large slides keep about the same number of tissue tiles, so only the slide size changes
        large = write_synthetic_slide(Path(tmp) / "synthetic_large.tiff", args.large, args.large, tissue=0.08, seed=2)
        huge = write_synthetic_slide(Path(tmp) / "synthetic_huge.tiff", 2 * args.large, 2 * args.large, tissue=0.02, seed=3)
        print(f"synthetic slides written in {time.perf_counter() - t:.1f} s "
              f"({mid.stat().st_size / 2**20:.1f} MB, {large.stat().st_size / 2**20:.1f} MB, {huge.stat().st_size / 2**20:.1f} MB)")

        reading = {
            "CMU-1-Small-Region.svs (aperio, level 0, 0.5 mpp)": bench_reading(CMU, 0.5, 224, args.batch_size, args.workers, args.read_tiles),
            f"synthetic {args.size}px (generic-tiff, level 0, 0.5 mpp)": bench_reading(mid, 0.5, 224, args.batch_size, args.workers, args.read_tiles),
            f"synthetic {args.size}px (level 1 at 2.0 mpp)": bench_reading(mid, 2.0, 224, args.batch_size, args.workers, args.read_tiles),
        }
        result["reading"] = reading
        print("\n== tile reading alone (tiles/s)")
        for name, r in reading.items():
            extra = "".join(f", {k.removeprefix('batched_reader_').removesuffix('_tiles_s').replace('_', ' ')} {v:.0f}"
                            for k, v in r.items() if "workers" in k)
            print(f"{name}: per-tile read_region {r['per_tile_read_region_tiles_s']:.0f}, "
                  f"batched reader {r['batched_reader_tiles_s']:.0f}{extra}  ({r['tiles']} tiles)")

        result["throughput"] = []
        print(f"\n== encoder alone vs end to end ({args.model}, synthetic {args.size}px slide at 0.5 mpp)")
        from pipeline.device import resolve_device
        from pipeline.wsi.embedder import reader_workers

        seen: set[int] = set()
        for workers in (None, 0, args.workers):
            # None: the feature-set default (the embedder picks the reader workers for the device)
            extra = {} if workers is None else {"num_workers": workers}
            fs = FeatureSet(name="bench", modality="wsi", encoder=args.model, weights="random",
                            batch_size=args.batch_size, **extra)
            used = reader_workers(fs, resolve_device(args.device).type, 1 << 20)
            if used in seen:
                continue
            seen.add(used)
            r = bench_encoder_and_e2e(mid, fs, args.device, args.reps)
            result["throughput"].append(r)
            print(f"num_workers {'default' if workers is None else workers} (reader workers used: {r['num_workers']}): {r['tiles']} tiles on {r['device']} ({r['precision']}, median of {r['repetitions']}): "
                  f"encoder alone {r['encoder_only_tiles_s']:.2f} tiles/s, end to end {r['end_to_end_tiles_s']:.2f} tiles/s, "
                  f"ratio {r['ratio_end_to_end_over_encoder']:.3f}; CPU s/tile {r['cpu_s_per_tile_encoder']:.3f} vs "
                  f"{r['cpu_s_per_tile_end_to_end']:.3f} (ratio {r['cpu_ratio_encoder_over_end_to_end']:.3f})")

        for model in [m for m in args.backbones.split(",") if m and m != args.model]:
            fs = FeatureSet(name="bench", modality="wsi", encoder=model, weights="random", batch_size=args.batch_size)
            r = bench_encoder_and_e2e(mid, fs, args.device, args.reps)
            result["throughput"].append(r)
            print(f"{model} (input {r['tile']} px, reader workers {r['num_workers']}): {r['tiles']} tiles on {r['device']} "
                  f"({r['precision']}): encoder alone {r['encoder_only_tiles_s']:.2f} tiles/s, end to end "
                  f"{r['end_to_end_tiles_s']:.2f} tiles/s, ratio {r['ratio_end_to_end_over_encoder']:.3f}")
        print("\n== end to end / encoder alone, per backbone (default reader workers)")
        best: dict[str, dict] = {}
        for r in result["throughput"]:
            best.setdefault(r["model"], r)
        for model, r in best.items():
            print(f"{model:28s} input {r['tile']:3d} px  encoder {r['encoder_only_tiles_s']:7.2f} tiles/s  "
                  f"end to end {r['end_to_end_tiles_s']:7.2f} tiles/s  ratio {r['ratio_end_to_end_over_encoder']:.3f}")

        print(f"\n== peak memory embedding one slide ({args.memory_model}, {args.workers} workers, fresh process each)")
        result["memory"] = [
            _memory(path, args.memory_model, args.device, args.workers, args.batch_size) for path in (CMU, large, huge)
        ]
        for m in result["memory"]:
            print(f"{m['slide']}: {m['width']}x{m['height']} px (raw RGB {m['raw_rgb_of_level0_mb']:.0f} MB), "
                  f"{m['tiles']} tiles in {m['seconds']:.1f} s; peak RSS main process {m['peak_rss_main_mb']:.0f} MB, "
                  f"peak PSS with workers {m['peak_pss_with_workers_mb']:.0f} MB (after model load {m['pss_after_model_load_mb']:.0f} MB)")
        small, big = result["memory"][0], result["memory"][-1]
        result["memory_growth_ratio"] = big["peak_pss_with_workers_mb"] / small["peak_pss_with_workers_mb"]
        print(f"peak memory (PSS, workers included) largest / smallest slide: {result['memory_growth_ratio']:.2f} "
              f"for {big['raw_rgb_of_level0_mb'] / small['raw_rgb_of_level0_mb']:.0f}x the pixels")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
