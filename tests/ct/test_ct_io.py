"""Reading scans and masks: DICOM series order, physical-space mask alignment, probing, errors."""

from __future__ import annotations

import gzip
import locale
import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline import ct

from ct_data import LIVER, TS_IMAGE, TS_SEG


def _write_dicom_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float], z_positions: list[float]) -> list[Path]:
    """One CT file per slice with its own ImagePositionPatient; names and instance numbers shuffled.

    GDCM's writer leaves the process in the C locale (Python's default text encoding then becomes ASCII): it is put back.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_series(folder, volume, spacing, z_positions)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float], z_positions: list[float]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(len(z_positions)))
    random.Random(7).shuffle(order)
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k, z in enumerate(z_positions):
        sl = sitk.GetImageFromArray(volume[k].astype(np.int16))
        sl.SetSpacing(spacing)
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(order[k] + 1),  # instance numbers in shuffled order too
            "0020|0032": f"-100.0\\-80.0\\{z:.4f}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": "2.5",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        path = folder / f"IMG{order[k]:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        files.append(path)
    return files


@pytest.fixture()
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1000, 1500, size=(9, 12, 10)).astype(np.int16)


def test_dicom_series_is_ordered_by_position_not_file_name(tmp_path, volume):
    z = [10.0 + 2.5 * k for k in range(volume.shape[0])]
    files = _write_dicom_series(tmp_path / "series", volume, (0.8, 0.7), z)
    # file names sort differently from positions, or the test proves nothing
    assert sorted(files, key=lambda p: p.name) != files
    img = ct.read_image(tmp_path / "series")
    assert img.GetSize() == (10, 12, 9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), volume)
    assert img.GetSpacing() == pytest.approx((0.8, 0.7, 2.5))
    assert img.GetOrigin() == pytest.approx((-100.0, -80.0, 10.0))
    info = ct.probe_scan(tmp_path / "series")
    assert info["size"] == [10, 12, 9] and info["roi_voxels"] is None


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, volume):
    z = [10.0 + 2.5 * k for k in range(volume.shape[0])]
    z[5:] = [v + 2.5 for v in z[5:]]  # one slice position skipped
    _write_dicom_series(tmp_path / "gap", volume, (0.8, 0.7), z)
    with pytest.raises(ct.ScanError, match="non-uniform slice spacing") as info:
        ct.probe_scan(tmp_path / "gap")
    assert str(tmp_path / "gap") in str(info.value)


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(ct.ScanError, match="no DICOM series"):
        ct.read_image(tmp_path / "empty")


def test_probe_real_ct_with_multilabel_mask():
    info = ct.probe_scan(TS_IMAGE, TS_SEG, LIVER)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(TS_SEG)))
    img = sitk.ReadImage(str(TS_IMAGE))
    assert info == {
        "size": [122, 101, 30],
        "spacing": [3.0, 3.0, 3.0],
        "origin": pytest.approx(list(img.GetOrigin())),
        "direction": pytest.approx([-1, 0, 0, 0, -1, 0, 0, 0, 1]),
        "roi_voxels": int(np.count_nonzero(seg == LIVER)),
    }
    assert ct.probe_scan(TS_IMAGE, TS_SEG)["roi_voxels"] == int(np.count_nonzero(seg))


def test_mask_with_flipped_axis_is_aligned_in_physical_space(tmp_path):
    seg = sitk.ReadImage(str(TS_SEG))
    arr = sitk.GetArrayFromImage(seg)
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(arr[:, :, ::-1]))  # reverse x
    flipped.SetSpacing(seg.GetSpacing())
    d = np.array(seg.GetDirection()).reshape(3, 3)
    d[:, 0] *= -1  # the x axis now points the other way...
    flipped.SetDirection(d.ravel().tolist())
    # ...from the voxel that used to be the last one along x
    flipped.SetOrigin(seg.TransformIndexToPhysicalPoint((seg.GetSize()[0] - 1, 0, 0)))
    path = tmp_path / "flipped_seg.nrrd"
    sitk.WriteImage(flipped, str(path))
    assert not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), arr)  # arrays differ
    vol = ct.load(TS_IMAGE, path, LIVER)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(vol.mask), (arr == LIVER).astype(np.uint8))
    assert vol.mask.GetOrigin() == pytest.approx(vol.image.GetOrigin())


def test_mask_on_a_coarser_grid_is_resampled_onto_the_image(tmp_path):
    seg = sitk.ReadImage(str(TS_SEG))
    liver = sitk.BinaryThreshold(seg, LIVER, LIVER, 1, 0)
    # Same physical extent, voxels twice as wide in x (122 -> 61).
    ref = sitk.Image([61, 101, 30], sitk.sitkUInt8)
    ref.SetSpacing((6.0, 3.0, 3.0))
    ref.SetDirection(seg.GetDirection())
    ref.SetOrigin(seg.TransformContinuousIndexToPhysicalPoint((0.5, 0.0, 0.0)))
    coarse = sitk.Resample(liver, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    sitk.WriteImage(coarse, str(tmp_path / "coarse.nii.gz"))
    vol = ct.load(TS_IMAGE, tmp_path / "coarse.nii.gz")
    got = sitk.GetArrayFromImage(vol.mask).astype(bool)
    want = sitk.GetArrayFromImage(liver).astype(bool)
    assert got.shape == want.shape
    dice = 2 * np.sum(got & want) / (got.sum() + want.sum())
    assert dice > 0.95


def test_empty_roi_names_the_file_and_label():
    with pytest.raises(ct.ScanError) as info:
        ct.probe_scan(TS_IMAGE, TS_SEG, 200)
    msg = str(info.value)
    assert "empty ROI" in msg and "label 200" in msg and str(TS_SEG) in msg


def test_all_zero_mask_is_an_empty_roi(tmp_path):
    seg = sitk.ReadImage(str(TS_SEG))
    zero = sitk.Image(seg.GetSize(), sitk.sitkUInt8)
    zero.CopyInformation(seg)
    sitk.WriteImage(zero, str(tmp_path / "zero.nii.gz"))
    with pytest.raises(ct.ScanError, match="empty ROI"):
        ct.probe_scan(TS_IMAGE, tmp_path / "zero.nii.gz")


def test_mask_outside_the_image(tmp_path):
    seg = sitk.ReadImage(str(TS_SEG))
    seg.SetOrigin(tuple(o + 1000.0 for o in seg.GetOrigin()))
    sitk.WriteImage(seg, str(tmp_path / "far.nii.gz"))
    with pytest.raises(ct.ScanError) as info:
        ct.probe_scan(TS_IMAGE, tmp_path / "far.nii.gz", LIVER)
    assert "mask outside the image" in str(info.value) and "far.nii.gz" in str(info.value)


def test_mask_covering_another_region_is_refused(tmp_path):
    seg = sitk.ReadImage(str(TS_SEG))
    sitk.WriteImage(seg[20:, :, :], str(tmp_path / "part.nii.gz"))  # same grid, 20 voxels shorter in x
    with pytest.raises(ct.ScanError, match="mask geometry differs from its image"):
        ct.probe_scan(TS_IMAGE, tmp_path / "part.nii.gz", LIVER)
    # within half a voxel is the same region: a 1 mm shift of 3 mm voxels is resampled, not refused
    shifted = sitk.ReadImage(str(TS_SEG))
    shifted.SetOrigin(tuple(np.array(shifted.GetOrigin()) + [1.0, 0.0, 0.0]))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    assert ct.probe_scan(TS_IMAGE, tmp_path / "shifted.nii.gz", LIVER)["roi_voxels"] > 0


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ct.ScanError, match="no such file or folder") as info:
        ct.probe_scan(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(info.value)
    with pytest.raises(ct.ScanError, match=r"no such file or folder \(mask\)") as info:
        ct.probe_scan(TS_IMAGE, tmp_path / "nomask.nrrd", 1)
    assert "nomask.nrrd" in str(info.value)


def test_unreadable_and_truncated_images(tmp_path):
    bad = tmp_path / "text.nrrd"
    bad.write_text("this is not an image\n")
    with pytest.raises(ct.ScanError, match="cannot read image") as info:
        ct.probe_scan(bad)
    assert "text.nrrd" in str(info.value)
    # A cut-off gzip NIfTI: SimpleITK alone would fill the missing voxels with zeros.
    raw = TS_IMAGE.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ct.ScanError, match="damaged or truncated"):
        ct.probe_scan(cut)
    # An uncompressed NIfTI missing its last third of voxel bytes.
    plain = gzip.decompress(raw)
    short = tmp_path / "short.nii"
    short.write_bytes(plain[: 2 * len(plain) // 3])
    with pytest.raises(ct.ScanError, match="truncated file"):
        ct.probe_scan(short)


def test_label_without_mask_is_an_error():
    with pytest.raises(ct.ScanError, match="without a mask"):
        ct.load(TS_IMAGE, None, 5)


def test_reading_dicom_keeps_the_process_locale(tmp_path, volume):
    # GDCM's writer leaves the C locale behind (see _write_dicom_series); reading must not, or Python's
    # default text encoding becomes ASCII for the rest of the process
    z = [10.0 + 2.5 * k for k in range(volume.shape[0])]
    _write_dicom_series(tmp_path / "series", volume, (0.8, 0.7), z)
    locale.setlocale(locale.LC_ALL, "")  # the environment's locale, whatever earlier code left
    before = (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False))
    ct.read_image(tmp_path / "series")
    ct.probe_scan(tmp_path / "series")
    assert (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False)) == before
