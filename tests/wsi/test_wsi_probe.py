"""Opening and probing real slides; the expected values are what openslide and the data README report."""

from __future__ import annotations

import pytest

from pipeline import wsi
from pipeline.config import FeatureSet


def test_probe_real_aperio_slide(cmu):
    info = wsi.probe_slide(cmu)
    assert info == {
        "vendor": "aperio",
        "width": 2220,
        "height": 2967,
        "mpp": pytest.approx(0.499),
        "mpp_source": "metadata",
        "objective": 20.0,
        "levels": 1,
        "downsamples": [1.0],
    }


def test_manifest_mpp_wins_over_metadata(cmu):
    info = wsi.probe_slide(cmu, mpp=0.25)
    assert info["mpp"] == 0.25 and info["mpp_source"] == "manifest"
    with wsi.open_slide(cmu, mpp=0.25) as slide:
        assert slide.mpp == 0.25 and slide.dimensions == (2220, 2967)


@pytest.mark.parametrize(
    "name, cause",
    [
        ("does-not-exist.svs", "no such file"),
        ("not-a-tiff.svs", "not a slide"),
        ("unopenable.tiff", "Unsupported TIFF compression"),
        ("unreadable.svs", "Bogus marker length"),
    ],
)
def test_broken_slides_raise_slide_error_naming_file_and_cause(wsi_data, name, cause):
    with pytest.raises(wsi.SlideError) as err:
        wsi.probe_slide(wsi_data / name)
    assert isinstance(err.value, ValueError)
    assert not isinstance(err.value, wsi.MissingMppError)
    assert str(wsi_data / name) in str(err.value)
    assert cause in str(err.value)


def test_missing_mpp_is_its_own_error(wsi_data):
    # boxes.tiff states 72 dpi (352.8 um/px): an image editor's placeholder, not a scan resolution
    with pytest.raises(wsi.MissingMppError) as err:
        wsi.probe_slide(wsi_data / "boxes.tiff")
    text = str(err.value)
    assert "boxes.tiff" in text and "no mpp in metadata" in text and "no mpp override in the manifest" in text


def test_missing_mpp_with_override_works_and_lists_levels(wsi_data):
    info = wsi.probe_slide(wsi_data / "boxes.tiff", mpp=2.0)
    assert info["mpp_source"] == "manifest" and info["mpp"] == 2.0
    assert info["vendor"] == "generic-tiff" and (info["width"], info["height"]) == (300, 250)
    assert info["levels"] == 4
    assert info["downsamples"] == pytest.approx([1.0, 2.0, 4.016129, 8.086312])


@pytest.mark.parametrize(
    "target, level",
    [
        (2.0, 0),  # level 0 is exactly the target
        (3.9, 0),  # level 1 (4.0) would upsample
        (4.0, 1),
        (7.8, 1),  # level 2 (8.03) is more than 2 % coarser than 7.8
        (8.0, 2),  # level 2 (8.03) is within 2 %: taken as equal
        (15.8, 2),  # level 3 (16.17) is more than 2 % coarser than 15.8
        (16.0, 3),  # ... and within 2 % of 16
        (100.0, 3),
        (1.0, 0),  # finer than level 0: read level 0 (upsampling, logged)
    ],
)
def test_best_level_is_coarsest_without_upsampling(wsi_data, target, level):
    with wsi.open_slide(wsi_data / "boxes.tiff", mpp=2.0) as slide:
        mpps = [slide.level_mpp(i) for i in range(4)]
        assert mpps == pytest.approx([2.0, 4.0, 8.0323, 16.1726], rel=1e-4)
        assert slide.best_level(target) == level


def test_magnification_to_mpp():
    assert wsi.magnification_to_mpp("20x") == 0.5
    assert wsi.magnification_to_mpp("40X") == 0.25
    assert wsi.magnification_to_mpp(10) == 1.0
    fs = FeatureSet(name="a", modality="wsi", encoder="resnet18", magnification="40x")
    assert fs.target_mpp() == 0.25
    with pytest.raises(ValueError, match="20x"):
        wsi.magnification_to_mpp("twenty")
