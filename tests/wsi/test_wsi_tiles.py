"""The batched region reader against openslide's own per-tile read_region, pixel for pixel."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from PIL import Image

from pipeline import wsi
from pipeline.wsi.tiles import TileDataset, iter_tiles, resize_tile, runs


def _direct(osr, x, y, level, read, out, resample):
    """Reference: one openslide read_region per tile, composited on white, then the same resize."""
    rgba = osr.read_region((int(x), int(y)), level, (read, read))
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return resize_tile(rgb, out, resample)


def _dataset(path, mpp_override, target, tile, threshold=0.25, batch=8):
    with wsi.open_slide(path, mpp=mpp_override) as s:
        spec = wsi.grid_spec(s, target, tile)
        grid = wsi.tile_grid(s, target, tile, threshold)
        mpp = s.mpp
    ds = TileDataset(path, mpp, grid["x"].to_numpy(), grid["y"].to_numpy(), spec.level, spec.read_size, tile,
                     batch_size=batch, resample=Image.BICUBIC, downsample=spec.downsample)
    return ds, grid, spec


@pytest.mark.parametrize(
    "name, override, target, tile, level, read",
    [
        ("CMU-1-Small-Region.svs", None, 0.5, 224, 0, 224),  # no resize (0.499 -> 0.5 within tolerance)
        ("CMU-1-Small-Region.svs", None, 1.0, 224, 0, 449),  # 449 px shrunk to 224
        ("CMU-1-Small-Region.svs", None, 0.75, 96, 0, 144),  # runs with gaps, odd sizes
        ("boxes.tiff", 2.0, 4.0, 32, 1, 32),  # pyramid level 1 (downsample 2)
        ("boxes.tiff", 2.0, 6.0, 32, 1, 48),  # level 1 again, shrunk
    ],
)
def test_batched_tiles_equal_direct_reads(wsi_data, name, override, target, tile, level, read):
    path = wsi_data / name
    ds, grid, spec = _dataset(path, override, target, tile, threshold=0.1)
    assert (spec.level, spec.read_size) == (level, read)
    assert grid.height > 3
    got = np.concatenate([ds[i][0].numpy() for i in range(len(ds))])
    assert got.shape == (grid.height, tile, tile, 3) and got.dtype == np.uint8
    osr = openslide.OpenSlide(str(path))
    for k, (x, y) in enumerate(zip(grid["x"].to_list(), grid["y"].to_list())):
        np.testing.assert_array_equal(got[k], _direct(osr, x, y, level, read, tile, Image.BICUBIC), err_msg=f"tile {k}")


def test_worker_processes_give_the_same_batches_in_order(cmu):
    ds, grid, _ = _dataset(cmu, None, 1.0, 224, batch=4)
    inproc = [(b.numpy(), i.numpy()) for b, i in iter_tiles(ds, num_workers=0)]
    workers = [(b.numpy(), i.numpy()) for b, i in iter_tiles(ds, num_workers=2)]
    assert len(inproc) == len(workers) == (grid.height + 3) // 4
    for (a, ia), (b, ib) in zip(inproc, workers):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(a, b)
    assert np.concatenate([i for _, i in workers]).tolist() == list(range(grid.height))


def test_runs_split_rows_gaps_and_length():
    xs = np.array([0, 10, 20, 60, 0, 10, 20, 30, 40])
    ys = np.array([0, 0, 0, 0, 10, 10, 10, 10, 10])
    # new run at the row change, after a gap of more than 2 tile widths, and every 3 tiles
    assert runs(xs, ys, read0=10, max_run=3, max_gap=2) == [(0, 3), (3, 4), (4, 7), (7, 9)]
    assert runs(xs[:0], ys[:0], read0=10) == []


def test_reader_error_names_the_slide(wsi_data):
    ds = TileDataset(wsi_data / "unreadable.svs", 0.499, np.array([0]), np.array([0]), 0, 16, 16, batch_size=1)
    with pytest.raises(wsi.SlideError, match="unreadable.svs.*Bogus marker length"):
        ds[0]
