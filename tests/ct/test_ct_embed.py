"""Preprocessing and the CT embedder on a real CT (TotalSegmentator's example, liver = label 5).

Weights are random (no model hub here): these tests check shapes, geometry,
provenance and determinism, never feature quality.
"""

from __future__ import annotations

import hashlib
import urllib.error

import numpy as np
import polars as pl
import pytest
import SimpleITK as sitk
import torch

from pipeline import ct
from pipeline.config import FeatureSet
from pipeline.ct import radiomics_features as rad
from pipeline.ct.embedder import infer_mode, make_embedder
from pipeline.ct.encoders import build_video_model, slice_stack
from pipeline.image_encoders import EncoderError
from pipeline.source import Source
from pipeline.store import INSTANCE_COLUMNS

from ct_data import LIVER, TS_IMAGE, TS_SEG

SOURCE = Source("CT1", "P1", "fp", {"image_path": str(TS_IMAGE), "mask_path": str(TS_SEG), "mask_label": LIVER})


def _fs(**kw) -> FeatureSet:
    return FeatureSet(name="ct_test", modality="ct", **kw)


@pytest.fixture(scope="module")
def liver() -> ct.Volume:
    return ct.load(TS_IMAGE, TS_SEG, LIVER)


@pytest.fixture(scope="module")
def crop(liver) -> ct.Crop:
    return ct.crop_roi(liver, (1.0, 1.0, 1.0), 10.0)


@pytest.fixture(scope="module")
def embedder_3d():
    return make_embedder(_fs(encoder="r3d_18", weights="random", spacing=[3, 3, 3], input_size=[16, 32, 32]), "cpu")


@pytest.fixture(scope="module")
def embedder_25d():
    return make_embedder(_fs(encoder="resnet18", weights="random", spacing=[3, 3, 3], input_size=[32]), "cpu")


# --- preprocessing ---------------------------------------------------------------


def test_crop_holds_the_liver(liver, crop):
    native = np.count_nonzero(sitk.GetArrayViewFromImage(liver.mask)) * np.prod(liver.image.GetSpacing())
    # nearest-neighbour resampling 3 mm -> 1 mm keeps the volume to a few percent
    assert crop.mask.sum() * 1.0 == pytest.approx(native, rel=0.03)
    # 10 mm margin in-plane: the ROI stays >= 8 voxels (10 mm less half a 3 mm voxel) from the box edges
    idx = np.argwhere(crop.mask)
    lo, hi = idx.min(axis=0), np.array(crop.mask.shape) - 1 - idx.max(axis=0)
    assert (lo[1:] >= 8).all() and (hi[1:] >= 8).all()
    # the liver fills every slice of this small scan, so the box spans all of z: 29 gaps of 3 mm -> 88 slices
    assert crop.mask.shape[0] == 88 and crop.start[2] == 0


def test_crop_mean_hu_is_soft_tissue(liver, crop):
    # The data README gives about 45 HU for this liver. 5 HU allows for the
    # partial-volume blending at the boundary when 3 mm voxels are resampled
    # to 1 mm, and still excludes fat (about -100 HU) or enhanced vessels (> 100 HU).
    native = sitk.GetArrayViewFromImage(liver.image)[sitk.GetArrayViewFromImage(liver.mask).astype(bool)].mean()
    assert abs(native - 45) < 2
    assert abs(crop.image[crop.mask].mean() - 45) < 5


def test_crop_is_oriented_to_lps(crop, liver):
    # The NIfTI is stored RAS-like (direction -1, -1, 1); in LPS the first voxel is the right-anterior-inferior corner.
    oriented = ct.orient(liver)
    assert oriented.image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(oriented.image), sitk.GetArrayViewFromImage(liver.image)[:, ::-1, ::-1]
    )


def test_window_maps_hu_to_unit_range():
    out = ct.apply_window(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]), ct.DEFAULT_WINDOW)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert ct.DEFAULT_WINDOW == (-160.0, 240.0)  # level 40, width 400


def test_fit_keeps_aspect_and_pad_keeps_scale():
    a = np.zeros((10, 20), dtype=np.float32)
    a[:, 5:15] = 1.0  # a 10 x 10 square in a 10 x 20 box
    out = ct.fit_to(a, (40, 40), 0.0, "resize")
    rows = np.flatnonzero(out.max(axis=1) > 0.5)
    cols = np.flatnonzero(out.max(axis=0) > 0.5)
    assert out.shape == (40, 40)
    assert rows.size == pytest.approx(cols.size, abs=1)  # still square, not stretched
    padded = ct.fit_to(a, (16, 16), -1.0, "pad")
    assert padded.shape == (16, 16) and padded[0, 0] == -1.0 and padded[3:13, 3:13].sum() == a[:, 2:18].sum()
    # leading axes are a batch: each item is fitted as if alone
    stack = np.random.default_rng(1).random((2, 3, 10, 20)).astype(np.float32)
    batched = ct.fit_to(stack, (24, 24), 0.0, "resize")
    assert batched.shape == (2, 3, 24, 24)
    np.testing.assert_allclose(batched[1, 2], ct.fit_to(stack[1, 2], (24, 24), 0.0, "resize"), rtol=1e-6)
    vol = np.random.default_rng(2).random((5, 6, 7)).astype(np.float32)
    assert ct.fit_to(vol, (8, 8, 8)).shape == (8, 8, 8)


def test_slice_stack_puts_neighbours_in_channels():
    vol = np.broadcast_to(np.arange(6, dtype=np.float32)[:, None, None], (6, 4, 4)).copy()
    roi = np.zeros(vol.shape, dtype=bool)
    roi[0, 1, 1] = roi[3, 2, 2] = True
    images, z, frac = slice_stack(vol, roi, "adjacent")
    assert z.tolist() == [0, 3]
    assert images[:, :, 0, 0].tolist() == [[0, 0, 1], [2, 3, 4]]  # edge slice repeated at z = 0
    assert frac.tolist() == [1 / 16, 1 / 16]
    single, _, _ = slice_stack(vol, roi, "single")
    assert single[:, :, 0, 0].tolist() == [[0, 0, 0], [3, 3, 3]]


# --- embeddings ------------------------------------------------------------------------


def test_3d_embedding_one_instance_at_the_crop(embedder_3d):
    frame = embedder_3d.embed(SOURCE)
    crop3 = ct.crop_roi(ct.load(TS_IMAGE, TS_SEG, LIVER), (3.0, 3.0, 3.0), 10.0)
    assert frame.columns == list(INSTANCE_COLUMNS)
    assert frame.height == 1
    emb = np.array(frame["embedding"][0])
    assert emb.shape == (512,) and np.isfinite(emb).all() and emb.std() > 0
    assert (frame["x"][0], frame["y"][0], frame["z"][0]) == crop3.start
    assert frame["tissue_fraction"][0] == pytest.approx(crop3.mask.mean())
    rec = embedder_3d.record()
    assert (rec.modality, rec.encoder, rec.weights, rec.dim) == ("ct", "r3d_18", "random", 512)
    assert rec.params["mode"] == "3d" and rec.params["window"] == [-160.0, 240.0]
    assert rec.params["input_size"] == [16, 32, 32] and rec.params["orientation"] == "LPS"


def test_25d_embedding_one_instance_per_roi_slice(embedder_25d):
    frame = embedder_25d.embed(SOURCE)
    crop3 = ct.crop_roi(ct.load(TS_IMAGE, TS_SEG, LIVER), (3.0, 3.0, 3.0), 10.0)
    roi_slices = np.flatnonzero(crop3.mask.any(axis=(1, 2)))
    assert frame.height == roi_slices.size == 30
    assert frame["z"].to_list() == (crop3.start[2] + roi_slices).tolist()
    emb = np.stack(frame["embedding"].to_list())
    assert emb.shape == (30, 512) and np.isfinite(emb).all()
    assert frame["instance"].to_list() == list(range(30))
    rec = embedder_25d.record()
    assert rec.params["mode"] == "2.5d" and rec.params["channels"] == "adjacent" and rec.params["input_size"] == [32, 32]


def test_embeddings_are_deterministic_on_cpu(embedder_3d, embedder_25d):
    for emb in (embedder_3d, embedder_25d):
        a, b = emb.embed(SOURCE), emb.embed(SOURCE)
        assert a.equals(b)


def test_radiomics_feature_set_stores_named_vector():
    emb = make_embedder(_fs(encoder="radiomics"), "cpu")
    frame = emb.embed(SOURCE)
    rec = emb.record()
    assert rec.params["feature_names"] == list(rad.FEATURE_NAMES) and rec.dim == len(rad.FEATURE_NAMES)
    direct = ct.radiomics(TS_IMAGE, TS_SEG, LIVER)
    stored = frame["embedding"][0].to_list()
    np.testing.assert_allclose(stored, np.float32([direct[n] for n in rad.FEATURE_NAMES]), rtol=1e-7)
    assert frame.height == 1 and frame["tissue_fraction"][0] is None


def test_mode_is_inferred_from_the_encoder():
    assert infer_mode(_fs(encoder="radiomics")) == "radiomics"
    assert infer_mode(_fs(encoder="r2plus1d_18")) == "3d"
    assert infer_mode(_fs(encoder="hrnet_w18")) == "2.5d"
    assert infer_mode(_fs(encoder="resnet50", mode="2.5d")) == "2.5d"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"encoder": "resnet18", "mode": "3d"}, "needs a 3D encoder"),
        ({"encoder": "radiomics", "window": [-100, 100]}, "do not apply to radiomics"),
        ({"encoder": "r3d_18", "bin_width": 10}, "bin_width applies to radiomics only"),
        ({"encoder": "r3d_18", "input_size": [16, 32]}, "input_size"),
        ({"encoder": "mc3_18", "params": {"colour": 1}}, "unknown params"),
    ],
)
def test_bad_feature_sets_are_refused_before_any_scan(kw, message):
    with pytest.raises(ValueError, match=message):
        make_embedder(_fs(**kw), "cpu")


def test_pretrained_weights_unreachable_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(EncoderError, match="MC3_18_Weights.KINETICS400_V1.*weights = \"random\""):
        build_video_model("mc3_18", "pretrained")


def test_local_weights_file_is_loaded_and_hashed(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        from torchvision.models.video import mc3_18

        source = mc3_18(weights=None, num_classes=7).eval()  # a fine-tuned head is ignored
    path = tmp_path / "mc3.pth"
    torch.save(source.state_dict(), path)
    model, weights_id = build_video_model("mc3_18", str(path))
    assert weights_id == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    source.fc = torch.nn.Identity()
    x = torch.rand(1, 3, 8, 32, 32)
    with torch.inference_mode():
        np.testing.assert_array_equal(model.eval()(x).numpy(), source(x).numpy())


def test_bad_scan_raises_with_the_file_name(embedder_3d, tmp_path):
    bad = Source("CT2", "P2", "fp", {"image_path": str(tmp_path / "gone.nii.gz"), "mask_path": None, "mask_label": None})
    with pytest.raises(ct.ScanError, match="gone.nii.gz"):
        embedder_3d.embed(bad)
    assert isinstance(embedder_3d.embed(SOURCE), pl.DataFrame)


def test_radiomics_resampled_to_the_native_spacing_reproduces_native_values():
    # Resampling 3 mm voxels onto the same 3 mm lattice (after the lossless LPS
    # flip) must give back the same ROI and, B-spline being interpolating, the same
    # HU to ~1e-8. (Binned features are left out: a value of exactly 50 HU that comes
    # back as 49.99999999 moves to the bin below, as with any interpolated image.)
    emb = make_embedder(_fs(encoder="radiomics", spacing=[3.0, 3.0, 3.0]), "cpu")
    stored = dict(zip(rad.FEATURE_NAMES, emb.embed(SOURCE)["embedding"][0].to_list()))
    native = ct.radiomics(TS_IMAGE, TS_SEG, LIVER)
    assert emb.record().params["spacing"] == [3.0, 3.0, 3.0]
    for name in ("original_shape_VoxelVolume", "original_shape_SurfaceArea", "original_firstorder_Mean", "original_firstorder_Variance"):
        assert stored[name] == pytest.approx(native[name], rel=1e-4), name
