"""Attention heatmaps and top tiles on the real CMU-1 slide (tests/data/wsi/CMU-1-Small-Region.svs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analytics.explain.heatmaps import attention_raster, blend, rank_normalise, slide_heatmap
from analytics.explain.tiles import RESAMPLE, TileGeometry, gallery, read_tiles, top_bottom
from pipeline import wsi
from pipeline.wsi.tiles import TileDataset, resize_tile

from explain_helpers import CMU


def test_rank_normalise_hand_computed() -> None:
    # ranks 3.5, 1, 3.5, 2 (ties share their mean rank) -> (r - 1) / 3
    np.testing.assert_allclose(rank_normalise(np.array([3.0, 1.0, 3.0, 2.0])), [2.5 / 3, 0.0, 2.5 / 3, 1 / 3])
    np.testing.assert_array_equal(rank_normalise(np.array([0.2])), [1.0])


def test_attention_raster_paints_tile_footprints_and_keeps_the_larger_weight() -> None:
    # downsample 10: a 20-pixel tile covers 2x2 raster pixels; the second overlaps the first at (1, 1)
    r = attention_raster((4, 6), 10.0, np.array([0, 10]), np.array([0, 10]), 20.0, np.array([0.5, 0.9]))
    expected = np.full((4, 6), np.nan)
    expected[0:2, 0:2] = 0.5
    expected[1:3, 1:3] = 0.9
    np.testing.assert_array_equal(r, expected)


def _yellow(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the colour map's top end (bright yellow-orange) blended over tissue or glass."""
    x = rgb.astype(np.float64)
    return ((x[..., 0] + x[..., 1]) / 2 - x[..., 2] >= 50) & (x[..., 0] >= 180)


def test_high_attention_quadrant_lands_in_that_quadrant_of_the_rendered_heatmap(tmp_path: Path) -> None:
    with wsi.open_slide(CMU) as slide:
        geometry = TileGeometry(mpp=0.5, tile=224, overlap=0, resample=int(RESAMPLE["bilinear"]))
        grid = wsi.tile_grid(slide, geometry.mpp, geometry.tile, 0.25)
        extent = geometry.extent0(slide)
        w, h = slide.dimensions
        xs, ys = grid["x"].to_numpy(), grid["y"].to_numpy()
        # high attention on the tiles wholly inside the top-right quadrant (top-right: a transposed or
        # flipped map would put them elsewhere), the same low weight everywhere else
        hot = (xs >= w / 2) & (ys + extent <= h / 2)
        assert 3 <= hot.sum() < len(xs) / 2
        attention = np.where(hot, 1.0 + 0.01 * np.arange(len(xs)), 0.0)
        heat = slide_heatmap(slide, xs, ys, attention, extent, tmp_path / "heat.png", "CMU-1")
    png = np.asarray(Image.open(heat.path).convert("RGB"))
    left, top, bw, bh = heat.image_box
    panel = png[top:top + bh, left:left + bw]
    assert panel.shape[:2] == (bh, bw)
    yellow = _yellow(panel)
    rows, cols = np.nonzero(yellow)
    assert len(rows) > 0
    in_quadrant = (cols >= bw / 2 - 2) & (rows <= bh / 2 + 2)
    assert in_quadrant.mean() > 0.98
    # and it covers the hot tiles: at least 60% of their drawn area is yellow
    scale = bw / w
    area = hot.sum() * (extent * scale) ** 2
    assert yellow.sum() > 0.6 * area
    # nothing yellow elsewhere in the quadrant map of the raster itself either
    assert not _yellow(blend(np.full((8, 8, 3), 230, np.uint8), np.full((8, 8), 0.37))).any()


def test_top_tiles_read_back_equal_the_embedded_tiles() -> None:
    for mpp in (1.0, 0.5):  # resized from ~449 px, and read at native resolution
        with wsi.open_slide(CMU) as slide:
            geometry = TileGeometry(mpp=mpp, tile=224, overlap=0, resample=int(RESAMPLE["bicubic"]))
            spec = geometry.spec(slide)
            grid = wsi.tile_grid(slide, mpp, 224, 0.25)
            xs, ys = grid["x"].to_numpy(), grid["y"].to_numpy()
            attention = np.random.default_rng(0).uniform(size=len(xs))
            top, bottom = top_bottom(attention, 3)
            idx = np.concatenate([top, bottom])
            got = read_tiles(slide, xs[idx], ys[idx], geometry)
            # the same tiles read directly with pipeline.wsi at the same mpp and size
            direct = np.stack([resize_tile(slide.read_region((int(xs[i]), int(ys[i])), spec.level,
                                                             (spec.read_size, spec.read_size)), 224,
                                           geometry.resample) for i in idx])
            mpp0 = slide.mpp
        # and the embedder's own batched reader (whole rows of tiles per read)
        dataset = TileDataset(CMU, mpp0, xs, ys, spec.level, spec.read_size, 224, len(xs), geometry.resample,
                              spec.downsample)
        embedded = dataset.read_batch(0, len(xs))
        dataset.close()
        assert got.shape == (6, 224, 224, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, direct)
        np.testing.assert_array_equal(got, embedded[idx])
        assert attention[top].min() > attention[bottom].max()


def test_top_bottom_orders_and_breaks_ties_by_instance() -> None:
    top, bottom = top_bottom(np.array([0.2, 0.9, 0.2, 0.5, 0.9]), 2)
    assert top.tolist() == [1, 4] and bottom.tolist() == [0, 2]
    top, bottom = top_bottom(np.array([0.3, 0.1, 0.2]), 8)  # fewer than 2k: no tile in both rows
    assert top.tolist() == [0, 2] and bottom.tolist() == [1]


def test_gallery_is_written(tmp_path: Path) -> None:
    tiles = np.zeros((2, 32, 32, 3), np.uint8)
    path = gallery(tiles, [0.9, 0.8], tiles[:1], [0.1], tmp_path / "g.png", "t", [(0, 0), (32, 0)], [(64, 0)])
    assert Image.open(path).size[0] > 100


def test_geometry_from_feature_set_params() -> None:
    g = TileGeometry.from_params({"mpp": 0.5, "tile_size": 256, "preprocessing": {"interpolation": "bicubic"}})
    assert (g.mpp, g.tile, g.overlap, g.resample) == (0.5, 256, 0, int(RESAMPLE["bicubic"]))
    with pytest.raises(ValueError, match="mpp / tile_size"):
        TileGeometry.from_params({"mode": "3d"})
