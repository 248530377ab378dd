"""What stain normalisation costs in tiles/s (a benchmark, not a test).

Prints, measured in one run on the same tiles (224-pixel tiles of the real H&E
slide ``tests/data/wsi/CMU-1-Small-Region.svs`` at 0.5 um/px), side by side:

- the encoder alone (ResNet18, random weights: speed does not depend on them);
- the encoder after Macenko, and after Reinhard normalisation of each batch
  (:class:`pipeline.wsi.stain.StainNormalizer`, on the encoder's device), with
  their ratio to the encoder alone;
- the normalisers alone, and torchstain's own one-image-at-a-time normalise
  for comparison.

The conditions are interleaved batch by batch, so drift in the machine's load
hits them alike. Results go to ``reports/bench/stain_norm.json``.

    python bench/stain_norm.py [--device cpu] [--batch 16] [--batches 4] [--reps 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import wsi  # noqa: E402
from pipeline.image_encoders import load_encoder  # noqa: E402
from pipeline.wsi.stain import StainNormalizer, fit_reference  # noqa: E402
from pipeline.wsi.tiles import TileDataset  # noqa: E402

CMU = ROOT / "tests" / "data" / "wsi" / "CMU-1-Small-Region.svs"


def cmu_tiles(n: int, tile: int = 224) -> np.ndarray:
    """``n`` tissue tiles of the CMU slide (repeated when it has fewer), uint8 (n, tile, tile, 3)."""
    with wsi.open_slide(CMU) as slide:
        grid = wsi.tile_grid(slide, mpp=0.5, tile=tile)
        spec = wsi.grid_spec(slide, 0.5, tile)
        mpp = slide.mpp
    data = TileDataset(CMU, mpp, grid["x"].to_numpy(), grid["y"].to_numpy(), spec.level, spec.read_size, tile,
                       grid.height, downsample=spec.downsample)
    tiles = data.read_batch(0, grid.height)
    data.close()
    return np.resize(tiles, (n, *tiles.shape[1:]))


def torchstain_per_tile(method: str, values: dict, tiles: np.ndarray) -> float:
    """Seconds for torchstain to normalise ``tiles`` one image at a time (its API), on the CPU."""
    import torchstain

    if method == "macenko":
        norm = torchstain.normalizers.MacenkoNormalizer(backend="torch")
        norm.HERef = torch.tensor(values["stain_matrix"], dtype=torch.float32)
        norm.maxCRef = torch.tensor(values["max_concentrations"], dtype=torch.float32)
    else:
        norm = torchstain.normalizers.ReinhardNormalizer(backend="torch")
        norm.target_means = torch.tensor(values["lab_mean"], dtype=torch.float32)
        norm.target_stds = torch.tensor(values["lab_std"], dtype=torch.float32)
    t0 = time.perf_counter()
    for tile in tiles:
        if method == "macenko":
            norm.normalize(torch.from_numpy(tile).permute(2, 0, 1), stains=False)
        else:
            norm.normalize(torch.from_numpy(tile).permute(2, 0, 1))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "stain_norm.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = load_encoder(args.model, "random", args.device)
    tiles = cmu_tiles(args.batch * args.batches, enc.input_size)
    batches = [torch.from_numpy(tiles[i:i + args.batch]) for i in range(0, len(tiles), args.batch)]
    values = {m: fit_reference(m, tiles[:16]) for m in ("macenko", "reinhard")}  # the reference: 16 of the tiles
    norms = {m: StainNormalizer(m, v, enc.device) for m, v in values.items()}
    failed = {m: int(sum(int(norms[m](b)[1].sum()) for b in batches)) for m in norms}

    def sync() -> None:
        if enc.device.type == "cuda":
            torch.cuda.synchronize(enc.device)

    steps = {
        "encoder": lambda b: enc.embed(b),
        "macenko": lambda b: norms["macenko"](b),
        "reinhard": lambda b: norms["reinhard"](b),
        "macenko+encoder": lambda b: enc.embed(norms["macenko"](b)[0]),
        "reinhard+encoder": lambda b: enc.embed(norms["reinhard"](b)[0]),
    }
    for fn in steps.values():  # warm-up
        fn(batches[0])
    seconds = dict.fromkeys(steps, 0.0)
    for _ in range(args.reps):
        for b in batches:
            for name, fn in steps.items():
                sync()
                t0 = time.perf_counter()
                fn(b)
                sync()
                seconds[name] += time.perf_counter() - t0
    n = len(tiles) * args.reps
    rate = {k: n / v for k, v in seconds.items()}
    per_tile = {m: len(tiles) / torchstain_per_tile(m, values[m], tiles) for m in norms}

    print(f"{args.model} (random weights) on {enc.device}, torch threads {torch.get_num_threads()}: "
          f"{len(tiles)} tiles of {enc.input_size} px x {args.reps} reps, batches of {args.batch}")
    print(f"{'':<22}{'tiles/s':>10}{'vs encoder':>12}")
    print(f"{'encoder alone':<22}{rate['encoder']:>10.1f}{1.0:>12.2f}")
    for m in ("macenko", "reinhard"):
        print(f"{m + ' + encoder':<22}{rate[m + '+encoder']:>10.1f}{rate[m + '+encoder'] / rate['encoder']:>12.2f}")
    for m in ("macenko", "reinhard"):
        print(f"{m + ' alone':<22}{rate[m]:>10.1f}   (torchstain one tile at a time: {per_tile[m]:.1f} tiles/s; "
              f"{failed[m]} tile(s) left unnormalised)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": args.model, "device": str(enc.device), "threads": torch.get_num_threads(), "tiles": len(tiles),
        "tile_size": enc.input_size, "batch": args.batch, "reps": args.reps, "tiles_per_s": rate,
        "ratio_to_encoder": {m: rate[m + "+encoder"] / rate["encoder"] for m in norms},
        "torchstain_per_tile_tiles_per_s": per_tile, "unnormalised_tiles": failed,
        "machine": platform.platform(), "torch": torch.__version__,
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
