"""Tiling as a step of its own: a slide's mask and grid computed once per settings, shared by feature sets."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from pipeline import store, wsi
from pipeline.embed import embed
from pipeline.wsi import cache as tile_cache
from pipeline.wsi.cache import TileCache, TilingSettings, tiling

# small tiles at low resolution keep every feature set quick (both CNNs take 64-pixel tiles)
FAST = {"mpp": 4.0, "tile_size": 64, "batch_size": 8}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every mask and grid the cache computes (rather than reads), by slide file."""
    seen: dict[str, list[str]] = {"tissue_mask": [], "tile_grid": []}
    real_mask, real_grid = tile_cache.tissue_mask, tile_cache.tile_grid

    @functools.wraps(real_mask)  # keeps the signature the settings read their defaults from
    def counted_mask(slide, **kw):
        seen["tissue_mask"].append(slide.path.name)
        return real_mask(slide, **kw)

    @functools.wraps(real_grid)
    def counted_grid(slide, *args, **kw):
        seen["tile_grid"].append(slide.path.name)
        return real_grid(slide, *args, **kw)

    monkeypatch.setattr(tile_cache, "tissue_mask", counted_mask)
    monkeypatch.setattr(tile_cache, "tile_grid", counted_grid)
    return seen


def _tiles(study, fs: str, sid: str) -> pl.DataFrame:
    return pl.read_parquet(store.instance_path(study.store_path, fs, sid)).select("x", "y", "tissue_fraction")


def test_feature_sets_with_the_same_tiling_compute_it_once(tmp_path, make_study, fs_dict, calls):
    sets = [
        fs_dict("a", **FAST),
        fs_dict("b", encoder="mobilenetv3_small_050", **FAST),  # another encoder, same tiling
        # the same tiling spelt differently: a magnification for the mpp, defaults written out, an int for a float
        fs_dict("c", magnification="2.5x", tile_size=64, batch_size=8, params={"min_saturation": 0.05, "min_area_um2": 10000}),
        fs_dict("d", **{**FAST, "tile_size": 96}),  # same mask, its own grid
        fs_dict("e", **FAST, params={"min_area_um2": 50_000.0}),  # its own mask and grid
    ]
    study = make_study(tmp_path, [("s1", "p1", "CMU-1-Small-Region.svs", None), ("s2", "p2", "small.svs", None)], sets)
    result = embed(study, device="cpu", progress=False)
    assert [(r.name, r.done, r.failed) for r in result.feature_sets] == [(n, 1, 1) for n in "abcde"]  # s2: no tissue
    # per slide: two masks (a-d, e) and three grids (a-c, d, e)
    assert sorted(calls["tissue_mask"]) == ["CMU-1-Small-Region.svs"] * 2 + ["small.svs"] * 2
    assert sorted(calls["tile_grid"]) == ["CMU-1-Small-Region.svs"] * 3 + ["small.svs"] * 3
    root = store.store_dir(study.store_path) / "cache" / "tiles"
    names = [p.name for p in root.rglob("*") if p.is_file()]
    masks = sorted(p.name for p in root.iterdir())
    assert len(masks) == 2 and all(m.startswith("mask-") for m in masks)
    assert sorted(len(list(root.glob(f"{m}/grid-*"))) for m in masks) == [1, 2]
    assert [names.count(n) for n in ("s1.npz", "s2.npz", "s1.parquet", "s2.parquet", "settings.json")] == [2, 2, 3, 3, 5]
    assert len(names) == 15
    # the feature sets that share a grid embed the same tiles; another tile size gives other tiles
    a = _tiles(study, "a", "s1")
    assert a.height > 0
    assert_frame_equal(_tiles(study, "b", "s1"), a)
    assert_frame_equal(_tiles(study, "c", "s1"), a)
    assert _tiles(study, "d", "s1").height < a.height
    # each feature set still gets its own mask and thumbnail beside its instances
    for fs in "abcde":
        prefix = store.instance_path(study.store_path, fs, "s1").with_suffix("")
        assert Path(f"{prefix}.mask.png").is_file() and Path(f"{prefix}.thumb.png").is_file()


def test_a_later_feature_set_reads_the_tiling_from_disk(tmp_path, make_study, fs_dict, calls):
    study = make_study(tmp_path, [("s1", "p1", "CMU-1-Small-Region.svs", None)], [fs_dict("a", **FAST), fs_dict("b", **FAST, params={"seed": 1})])
    embed(study, feature_set="a", device="cpu", progress=False)
    assert len(calls["tissue_mask"]) == len(calls["tile_grid"]) == 1
    embed(study, feature_set="b", device="cpu", progress=False)  # a new embedder, a new cache object: the files are read
    assert len(calls["tissue_mask"]) == len(calls["tile_grid"]) == 1
    assert_frame_equal(_tiles(study, "b", "s1"), _tiles(study, "a", "s1"))


@pytest.mark.parametrize(
    "settings",
    [
        TilingSettings.of(1.0, 224),
        TilingSettings.of(0.5, 256, overlap=32, tissue_threshold=0.1, mask={"min_area_um2": 2_000.0, "mpp": 8.0}),
    ],
    ids=["defaults", "overlap-and-mask-settings"],
)
def test_a_cached_tiling_equals_a_fresh_one(tmp_path, cmu, settings):
    with wsi.open_slide(cmu) as slide:
        fresh_mask = wsi.tissue_mask(slide, **settings.mask)
        fresh_grid = wsi.tile_grid(slide, settings.mpp, settings.tile, settings.tissue_threshold, settings.overlap, mask=fresh_mask)
        spec = wsi.grid_spec(slide, settings.mpp, settings.tile, settings.overlap)
        first = tiling(slide, settings, tmp_path)
        second = tiling(slide, settings, tmp_path)
    assert (first.mask_cached, first.grid_cached, second.mask_cached, second.grid_cached) == (False, False, True, True)
    assert fresh_grid.height > 0
    for got in (first, second):
        assert_frame_equal(got.grid, fresh_grid)
        assert got.spec == spec
        np.testing.assert_array_equal(got.mask.mask, fresh_mask.mask)
        np.testing.assert_array_equal(got.mask.thumbnail, fresh_mask.thumbnail)
        assert (got.mask.downsample, got.mask.mpp, got.mask.saturation_threshold) == (
            fresh_mask.downsample, fresh_mask.mpp, fresh_mask.saturation_threshold)


def test_the_default_grid_is_the_documented_one(tmp_path, cmu):
    """Without mask settings the cache gives what ``wsi.tile_grid`` gives on its own (it makes its own mask)."""
    with wsi.open_slide(cmu) as slide:
        got = tiling(slide, TilingSettings.of(1.0, 224), tmp_path).grid
        assert_frame_equal(got, wsi.tile_grid(slide, mpp=1.0, tile=224))


def _files(folder: Path) -> tuple[Path, Path]:
    (mask,) = folder.glob("mask-*/s1.npz")
    (grid,) = folder.glob("mask-*/grid-*/s1.parquet")
    return mask, grid


def test_a_damaged_or_foreign_cache_file_is_computed_again(tmp_path, cmu, caplog):
    settings = TilingSettings.of(1.0, 224)
    with wsi.open_slide(cmu) as slide:
        fresh = tiling(slide, settings, None)
        cache = TileCache(tmp_path)
        cache.tiling(slide, settings, "fp1", "s1")
        mask_file, grid_file = _files(tmp_path)

        def again(fingerprint: str = "fp1") -> tile_cache.Tiling:
            got = cache.tiling(slide, settings, fingerprint, "s1")
            assert_frame_equal(got.grid, fresh.grid)
            np.testing.assert_array_equal(got.mask.mask, fresh.mask.mask)
            return got

        # a truncated grid file
        grid_file.write_bytes(grid_file.read_bytes()[: grid_file.stat().st_size // 2])
        with caplog.at_level(logging.WARNING, logger="cohortlab.wsi.cache"):
            got = again()
        assert (got.mask_cached, got.grid_cached) == (True, False)
        assert f"{grid_file}: unreadable" in caplog.text
        assert again().grid_cached  # replaced by a whole one

        # a grid file that reads, but whose rows are not the ones written (its metadata kept)
        table = pq.read_table(grid_file)
        fractions = table.column("tissue_fraction").to_numpy().copy()
        fractions[0] = 0.5
        pq.write_table(table.set_column(table.schema.get_field_index("tissue_fraction"), "tissue_fraction", [fractions]), grid_file)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cohortlab.wsi.cache"):
            assert not again().grid_cached
        assert "its rows are not the ones written" in caplog.text

        # a mask file with a byte changed in the middle of its compressed arrays
        raw = bytearray(mask_file.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        mask_file.write_bytes(bytes(raw))
        got = again()
        assert (got.mask_cached, got.grid_cached) == (False, True)
        assert again().mask_cached

        # the slide changed (another fingerprint): both are computed for it, and again when it changes back
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cohortlab.wsi.cache"):
            got = again("fp2")
        assert (got.mask_cached, got.grid_cached) == (False, False)
        assert "made for another version of the slide" in caplog.text
        got = again("fp1")
        assert (got.mask_cached, got.grid_cached) == (False, False)
        got = again("fp1")
        assert (got.mask_cached, got.grid_cached) == (True, True)

    # a temporary file of a killed process is removed when a cache next uses the folder
    stale = grid_file.with_name(f".{grid_file.name}.999999999.tmp")
    stale.write_bytes(b"half")
    with wsi.open_slide(cmu) as slide:
        TileCache(tmp_path).tiling(slide, settings, "fp1", "s1")
    assert not stale.exists()


def test_settings_keys():
    base = TilingSettings.of(1.0, 224)
    assert TilingSettings.of(1, 224, mask={"min_area_um2": 10_000, "saturation_threshold": None}).mask_key() == base.mask_key()
    assert TilingSettings.of(1, 224).grid_key() == base.grid_key()
    assert TilingSettings.of(1.0, 224, mask={"min_area_um2": 5_000.0}).mask_key() != base.mask_key()
    assert TilingSettings.of(2.0, 224).mask_key() == base.mask_key()  # the tile mpp is a grid setting
    for other in (TilingSettings.of(2.0, 224), TilingSettings.of(1.0, 256), TilingSettings.of(1.0, 224, overlap=16),
                  TilingSettings.of(1.0, 224, tissue_threshold=0.5)):
        assert other.grid_key() != base.grid_key()
    with pytest.raises(ValueError, match=r"unknown tissue-mask settings \['otsu'\]"):
        TilingSettings.of(1.0, 224, mask={"otsu": True})
