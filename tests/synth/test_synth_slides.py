"""The synthetic slides, read back with OpenSlide (and tifffile as a second reader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from scipy.stats import spearmanr
from skimage.color import rgb2hsv

from pipeline import synth
from pipeline.synth import slides as synth_slides


def _open_all(study: Path, rows: list[dict[str, str]]) -> list[openslide.OpenSlide]:
    return [openslide.OpenSlide(str(study / r["path"])) for r in rows]


def test_every_slide_is_a_generic_tiff_pyramid_with_mpp(small_study: Path, manifests: dict) -> None:
    rows = manifests["slides"]
    assert len(rows) >= len(manifests["patients"])
    for r, s in zip(rows, _open_all(small_study, rows)):
        assert s.properties["openslide.vendor"] == "generic-tiff", r["path"]
        assert s.level_count >= 2
        w0, h0 = s.level_dimensions[0]
        for k, (w, h) in enumerate(s.level_dimensions):
            assert (w, h) == (w0 >> k, h0 >> k)
            assert s.level_downsamples[k] == pytest.approx(2.0**k)
        assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        assert float(s.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)
        # the raw tags behind it: 20000 pixels per centimetre
        assert s.properties["tiff.ResolutionUnit"] == "centimeter"
        assert float(s.properties["tiff.XResolution"]) == pytest.approx(1e4 / 0.5)
        assert int(s.properties["openslide.level[0].tile-width"]) == synth_slides.TILE
        s.close()


def test_background_is_white_and_tissue_is_pink(small_study: Path, manifests: dict) -> None:
    for s in _open_all(small_study, manifests["slides"]):
        w, h = s.dimensions
        corner = np.asarray(s.read_region((0, 0), 0, (64, 64)).convert("RGB")).astype(float)
        assert corner.min() > 215 and np.ptp(corner.mean((0, 1))) < 5, "background should be near-white grey"
        centre = np.asarray(s.read_region((w // 2 - 64, h // 2 - 64), 0, (128, 128)).convert("RGB")).astype(float)
        r, g, b = (np.median(centre[..., c]) for c in range(3))
        assert r > g + 20 and b > g + 10, f"tissue should be pink/magenta, median RGB {r, g, b}"
        hue = np.median(rgb2hsv(centre.astype(np.uint8))[..., 0])
        assert hue > 0.75, f"eosin hue should lie between magenta and red, got {hue:.2f}"
        s.close()


def test_openslide_and_tifffile_decode_the_same_pixels(small_study: Path, manifests: dict) -> None:
    path = small_study / manifests["slides"][0]["path"]
    s = openslide.OpenSlide(str(path))
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == s.level_count
        for k in range(s.level_count):
            ref = tif.pages[k].asarray()
            got = np.asarray(s.read_region((0, 0), k, s.level_dimensions[k]).convert("RGB"))
            assert got.shape == ref.shape
            assert np.abs(got.astype(int) - ref).mean() < 1.0
    s.close()


def test_levels_are_downsamples_of_level_zero(small_study: Path, manifests: dict) -> None:
    s = openslide.OpenSlide(str(small_study / manifests["slides"][0]["path"]))
    l0 = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB")).astype(float)
    l1 = np.asarray(s.read_region((0, 0), 1, s.level_dimensions[1]).convert("RGB")).astype(float)
    h, w = l1.shape[:2]
    box = l0[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean((1, 3))
    assert np.abs(box - l1).mean() < 3.0  # JPEG error only
    s.close()


def _nuclear_fraction(s: openslide.OpenSlide) -> float:
    """Share of level-1 pixels dark enough to be haematoxylin-stained lymphocyte nuclei."""
    img = np.asarray(s.read_region((0, 0), 1, s.level_dimensions[1]).convert("RGB")).astype(float)
    return float((img.mean(2) < 110).mean())


def test_lymphocytic_infiltrate_follows_the_latent_signal_and_the_outcome(
    small_study: Path, manifests: dict, small_truth: dict
) -> None:
    rows = manifests["slides"]
    dark = np.array([_nuclear_fraction(s) for s in _open_all(small_study, rows)])
    infiltration = np.array([small_truth[r["patient_id"]].infiltration for r in rows])
    high = np.array([small_truth[r["patient_id"]].high_risk for r in rows])
    assert spearmanr(dark, infiltration)[0] > 0.6
    assert dark[high == 1].mean() > 1.5 * dark[high == 0].mean()


def test_rendered_lymphocytes_grow_with_infiltration() -> None:
    """Expected lymphocytes (diffuse ~ exp(0.6 s), foci ~ exp(0.8 s)) rise about 18-fold from s = -2 to +2."""
    spec = synth_slides.SlideSpec(768, 768)
    truth = {
        s: [synth_slides.render_slide(np.random.default_rng(i), s, spec=spec)[1] for i in range(8)] for s in (-2.0, 2.0)
    }
    low, high = ([t.n_lymphocytes for t in truth[s]] for s in (-2.0, 2.0))
    assert np.sum(high) > 5 * np.sum(low)
    assert sum(t.n_foci for t in truth[2.0]) > 2 * sum(t.n_foci for t in truth[-2.0])


def test_centre_b_scanner_white_is_darker(small_study: Path, manifests: dict) -> None:
    """Background grey is 255 * white: about 243.5 for centre A (0.955), 239.7 for centre B (0.94)."""
    centre = {r["patient_id"]: r["center"] for r in manifests["patients"]}
    white: dict[str, list[float]] = {"A": [], "B": []}
    for r, s in zip(manifests["slides"], _open_all(small_study, manifests["slides"])):
        corner = np.asarray(s.read_region((0, 0), 0, (64, 64)).convert("RGB")).astype(float)
        white[centre[r["patient_id"]]].append(float(np.median(corner)))
    assert all(abs(v - 243.5) <= 1.0 for v in white["A"]), white["A"]
    assert all(abs(v - 239.7) <= 1.0 for v in white["B"]), white["B"]


def test_centre_b_stains_stronger() -> None:
    """Beer-Lambert: the same slide under centre B's stain has 1.06 times the tissue optical density."""
    spec = synth_slides.SlideSpec(512, 512)
    od = {}
    for c in ("A", "B"):
        stain = synth.CENTRES[c].stain
        rgb, _ = synth_slides.render_slide(np.random.default_rng(3), 0.5, stain, spec)
        px = rgb[192:320, 192:320].astype(float)  # always tissue
        od[c] = -np.log(np.clip(px, 1, None) / (255 * stain.white)).mean()
    assert od["B"] / od["A"] == pytest.approx(1.06, abs=0.01)


def test_writer_output_is_openslide_readable(tmp_path: Path) -> None:
    """A hand-made image through pyramid() and write_slide() reads back as written."""
    rgb = np.zeros((512, 768, 3), np.uint8)
    rgb[:, :384] = (250, 250, 250)
    rgb[:, 384:] = (200, 80, 150)
    levels = synth_slides.pyramid(rgb, min_side=128)
    assert [lv.shape[:2] for lv in levels] == [(512, 768), (256, 384), (128, 192)]
    path = synth_slides.write_slide(tmp_path / "x.tiff", levels, mpp=0.25)
    s = openslide.OpenSlide(str(path))
    assert s.level_count == 3
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    px = np.asarray(s.read_region((600, 200), 0, (8, 8)).convert("RGB")).astype(int)
    assert np.abs(px - (200, 80, 150)).max() <= 4
    px = np.asarray(s.read_region((40, 40), 2, (8, 8)).convert("RGB")).astype(int)
    assert np.abs(px - 250).max() <= 4
    s.close()
