"""Tissue detection and the tile grid on the real CMU-1-Small-Region slide (H&E on white glass)."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from pipeline import wsi

W, H = 2220, 2967  # CMU-1-Small-Region level 0


@pytest.fixture(scope="module")
def slide(cmu):
    with wsi.open_slide(cmu) as s:
        yield s


@pytest.fixture(scope="module")
def mask(slide):
    return wsi.tissue_mask(slide)


@pytest.fixture(scope="module")
def reference(cmu, mask):
    """An independent tissue mask: openslide's own thumbnail, grey level below 220 (glass is ~240)."""
    h, w = mask.mask.shape
    thumb = openslide.OpenSlide(str(cmu)).get_thumbnail((w, h)).convert("RGB").resize((w, h))
    grey = np.asarray(thumb, dtype=np.float64).mean(axis=-1)
    return grey, grey < 220


def test_mask_finds_the_stained_tissue_not_the_glass(mask, reference):
    grey, ref = reference
    assert mask.downsample == 8.0 and mask.mpp == pytest.approx(3.992)
    assert mask.mask.shape == (371, 278)  # ceil(2967 / 8), ceil(2220 / 8)
    assert np.asarray(mask).dtype == bool
    iou = (ref & mask.mask).sum() / (ref | mask.mask).sum()
    assert iou > 0.8
    # tissue is dark and coloured, background bright and grey
    assert grey[mask.mask].mean() < 170 and grey[~mask.mask].mean() > 230
    sat = wsi.saturation(mask.thumbnail)
    assert sat[mask.mask].mean() > 5 * sat[~mask.mask].mean()
    assert 0.2 < mask.mask.mean() < 0.5


def _reference_coverage(ref: np.ndarray, grid, extent: float, down: float) -> np.ndarray:
    out = []
    for x, y in zip(grid["x"].to_list(), grid["y"].to_list()):
        c0, c1 = round(x / down), round((x + extent) / down)
        r0, r1 = round(y / down), round((y + extent) / down)
        out.append(ref[r0:r1, c0:c1].mean())
    return np.array(out)


@pytest.mark.parametrize("mpp, read", [(0.5, 224), (1.0, 449)])
def test_tile_count_matches_tissue_area(slide, mask, reference, mpp, read):
    _, ref = reference
    grid = wsi.tile_grid(slide, mpp=mpp, tile=224, mask=mask)
    full = wsi.tile_grid(slide, mpp=mpp, tile=224, tissue_threshold=0.0, mask=mask)
    # whole tiles only: floor(2220 / read) x floor(2967 / read)
    assert full.height == (W // read) * (H // read)
    assert set(grid["read_size"].to_list()) == {read} and set(grid["level"].to_list()) == {0}
    cover = _reference_coverage(ref, full, read, mask.downsample)
    area_tiles = cover.sum()  # independent tissue area inside the grid, in tiles
    border = int(((cover > 0) & (cover < 1)).sum())
    # Keeping tiles from 25 % coverage adds, per border tile, between -0.25 and +0.75 of a tile;
    # for border coverage spread evenly the mean is +0.25, so allow [area, area + 0.5 * border].
    assert area_tiles <= grid.height <= area_tiles + 0.5 * border
    assert grid["tissue_fraction"].min() >= 0.25


def test_about_four_times_fewer_tiles_at_half_the_resolution(slide, mask):
    n05 = wsi.tile_grid(slide, mpp=0.5, mask=mask).height
    n10 = wsi.tile_grid(slide, mpp=1.0, mask=mask).height
    assert (n05, n10) == (52, 13)
    assert 3.0 <= n05 / n10 <= 5.0


def test_coordinates_are_level0_and_inside_the_slide(slide, mask):
    for mpp in (0.5, 1.0):
        g = wsi.tile_grid(slide, mpp=mpp, mask=mask)
        read = g["read_size"][0]
        assert (g["x"] >= 0).all() and (g["y"] >= 0).all()
        assert (g["x"] + read <= W).all() and (g["y"] + read <= H).all()
        assert (g["x"] == g["col"] * read).all() and (g["y"] == g["row"] * read).all()
        # row-major order
        assert g.select(["row", "col"]).rows() == sorted(g.select(["row", "col"]).rows())


def test_overlap_shrinks_the_stride(slide, mask):
    g = wsi.tile_grid(slide, mpp=0.5, tile=224, overlap=112, tissue_threshold=0.0, mask=mask)
    assert sorted(set(g["x"].to_list()))[:3] == [0, 112, 224]
    assert g.height == ((W - 224) // 112 + 1) * ((H - 224) // 112 + 1)
    with pytest.raises(ValueError, match="overlap"):
        wsi.tile_grid(slide, mpp=0.5, tile=224, overlap=224, mask=mask)


def test_tissue_fraction_is_the_mask_mean_over_the_tile(slide, mask):
    g = wsi.tile_grid(slide, mpp=0.5, tissue_threshold=0.0, mask=mask)
    direct = _reference_coverage(mask.mask, g, 224, mask.downsample)
    np.testing.assert_allclose(g["tissue_fraction"].to_numpy(), direct, atol=1e-12)
    # and the kept set is exactly the tiles at or above the threshold
    assert wsi.tile_grid(slide, mpp=0.5, tissue_threshold=0.6, mask=mask).height == int((direct >= 0.6).sum())


def test_slide_smaller_than_a_tile_has_no_tiles(wsi_data):
    with wsi.open_slide(wsi_data / "small.svs") as s:
        g = wsi.tile_grid(s, mpp=0.5)
    assert g.height == 0 and g.columns[:3] == ["x", "y", "tissue_fraction"]


def _write_tiff(path, rgb: np.ndarray, mpp: float) -> None:
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(64, 64), compression="jpeg", resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")


def test_blank_glass_gives_no_tissue(tmp_path):
    # white glass with faint grey noise: Otsu alone would split the noise, the saturation floor keeps it out
    rng = np.random.default_rng(0)
    grey = rng.integers(225, 250, size=(512, 640), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[..., 0] = np.minimum(255, rgb[..., 0].astype(int) + rng.integers(0, 4, size=grey.shape))
    path = tmp_path / "blank.tiff"
    _write_tiff(path, rgb, 0.5)
    with wsi.open_slide(path) as s:
        assert s.vendor == "generic-tiff" and s.mpp == pytest.approx(0.5) and s.mpp_source == "metadata"
        m = wsi.tissue_mask(s)
        assert m.mask.sum() == 0
        assert wsi.tile_grid(s, mpp=0.5, tile=64, mask=m).height == 0


def test_fixed_saturation_threshold_and_cleaning(tmp_path):
    # one tissue-coloured square with a small hole, and a speck far smaller than the minimum area
    rgb = np.full((512, 512, 3), 245, dtype=np.uint8)
    rgb[100:400, 100:400] = (190, 90, 160)
    rgb[240:256, 240:256] = 245  # hole of 16 x 16 px = 64 um2 at 0.5 um/px (mask pixels are 4 um)
    rgb[20:28, 460:468] = (190, 90, 160)  # speck of 16 um2
    path = tmp_path / "square.tiff"
    _write_tiff(path, rgb, 0.5)
    with wsi.open_slide(path) as s:
        m = wsi.tissue_mask(s, saturation_threshold=0.2)
        assert m.saturation_threshold == 0.2
        # the square (150 x 150 um = 37.5 mask px a side) with its hole filled, and no speck
        area = m.mask.sum() * m.mpp**2
        assert area == pytest.approx(150 * 150, rel=0.1)
        r0, r1 = int(240 / m.downsample), int(256 / m.downsample)
        assert m.mask[r0:r1 + 1, r0:r1 + 1].all()
        assert not m.mask[: int(40 / m.downsample), int(440 / m.downsample):].any()
        Image.fromarray(m.thumbnail)  # a valid RGB image for the report


def test_saturation_and_otsu_agree_with_scikit_image():
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    rgb[0, 0] = 0  # black: saturation 0
    np.testing.assert_allclose(wsi.saturation(rgb), rgb2hsv(rgb)[..., 1], atol=1e-6)
    values = np.concatenate([rng.normal(0.05, 0.02, 4000), rng.normal(0.4, 0.1, 2500)]).clip(0, 1)
    assert wsi.otsu_threshold(values) == pytest.approx(threshold_otsu(values), abs=1e-9)
