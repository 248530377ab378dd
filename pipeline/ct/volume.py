"""CT volumes: reading, probing, mask geometry, and preprocessing for the encoders.

Images and masks are read with SimpleITK: NIfTI, NRRD, MHA, any other format
it knows, and DICOM series (a folder of slices, ordered by patient position
through GDCM, never by file name). A mask is matched to its image in
*physical space*: when both cover the same region (within half a voxel) but
on a different grid or orientation, the mask is resampled onto the image grid
with nearest-neighbour interpolation instead of comparing arrays.

Preprocessing for the deep encoders (:func:`crop_roi`) orients the volume to a
common frame (``LPS``), resamples a box around the ROI (plus ``margin_mm``) to
the target spacing (B-spline for the image, nearest neighbour for the mask),
and :func:`apply_window` maps an HU window to [0, 1]. The default window is
the soft-tissue window, level 40 HU / width 400 HU, i.e. [-160, 240] HU.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline.errors import CohortlabError
from pipeline.files import file_kind, irregular_entry

log = logging.getLogger("cohortlab.ct")

DEFAULT_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
DEFAULT_WINDOW: tuple[float, float] = (-160.0, 240.0)  # soft tissue: level 40, width 400 HU
DEFAULT_MARGIN_MM = 10.0
ORIENTATION = "LPS"  # DICOM patient frame: x to the left, y to posterior, z to superior
AIR_HU = -1024.0


class ScanError(CohortlabError, ValueError):
    """A scan or mask that cannot be used; the message names the file and the cause."""


# --- reading ------------------------------------------------------------------------


def _cause(exc: Exception) -> str:
    """The informative part of a SimpleITK exception (they start with a source location)."""
    text = str(exc)
    if "sitk::ERROR:" in text:
        return text.split("sitk::ERROR:", 1)[1].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _nifti_complete(path: Path) -> None:
    """Raise when a NIfTI file holds fewer voxel bytes than its header promises.

    ITK's NIfTI reader fills a truncated file (an interrupted copy) with zeros
    instead of failing, so the sizes are checked here: header ``vox_offset``
    plus voxels x ``bitpix`` / 8 against the (decompressed) file length.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(540)
            for order in ("<", ">"):
                (hdr_size,) = struct.unpack(order + "i", head[:4])
                if hdr_size in (348, 540):
                    break
            else:
                return  # not a NIfTI header: leave it to the reader
            if hdr_size == 348:
                dim = struct.unpack(order + "8h", head[40:56])
                (bitpix,) = struct.unpack(order + "h", head[72:74])
                offset = int(struct.unpack(order + "f", head[108:112])[0])
            else:
                (bitpix,) = struct.unpack(order + "h", head[14:16])
                dim = struct.unpack(order + "8q", head[16:80])
                (offset,) = struct.unpack(order + "q", head[168:176])
            n = int(np.prod([max(int(d), 1) for d in dim[1 : max(1, min(int(dim[0]), 7)) + 1]]))
            expected = max(offset, hdr_size) + n * bitpix // 8
            length = len(head)
            while chunk := fh.read(1 << 22):
                length += len(chunk)
    except (EOFError, OSError, gzip.BadGzipFile, struct.error) as exc:
        raise ScanError(f"{path}: cannot read: the file is damaged or truncated ({exc})") from None
    if length < expected:
        raise ScanError(f"{path}: cannot read: truncated file ({length} bytes, the header needs {expected})")


def _position(reader: sitk.ImageFileReader, file: str) -> tuple[np.ndarray, np.ndarray]:
    """ImagePositionPatient and the slice normal of one DICOM file (header only)."""
    reader.SetFileName(file)
    reader.ReadImageInformation()
    try:
        ipp = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        iop = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
    except (RuntimeError, ValueError):
        raise ScanError(f"{file}: DICOM slice without a readable ImagePositionPatient/ImageOrientationPatient") from None
    return ipp, np.cross(iop[:3], iop[3:])


def check_slice_spacing(files: list[str], rtol: float = 0.01) -> float:
    """Check that DICOM slices (in series order) are evenly spaced; return the spacing in mm.

    The position of each slice is ImagePositionPatient projected on the slice
    normal (the cross product of the ImageOrientationPatient row and column
    cosines). Gaps that differ from the median gap by more than ``rtol`` of it
    (a missing slice, a change of slice thickness) or repeated positions raise.
    """
    if len(files) < 2:
        return 0.0
    reader = sitk.ImageFileReader()
    reader.LoadPrivateTagsOff()
    pos = []
    normal = None
    for f in files:
        ipp, n = _position(reader, f)
        normal = n if normal is None else normal
        pos.append(float(ipp @ normal))
    gaps = np.abs(np.diff(pos))
    folder = Path(files[0]).parent
    if np.any(gaps < 1e-4):
        k = int(np.argmin(gaps))
        raise ScanError(
            f"{folder}: two DICOM slices at the same position ({Path(files[k]).name}, {Path(files[k + 1]).name}); "
            "the folder may hold two series or duplicated files"
        )
    step = float(np.median(gaps))
    bad = np.abs(gaps - step) > rtol * step + 1e-4
    if np.any(bad):
        k = int(np.argmax(np.abs(gaps - step)))
        raise ScanError(
            f"{folder}: non-uniform slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
            f"(median {step:.4g} mm; {gaps[k]:.4g} mm between {Path(files[k]).name} and {Path(files[k + 1]).name}); "
            "a slice is missing or the series mixes slice thicknesses"
        )
    return step


def _read_dicom_series(folder: Path) -> sitk.Image:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise ScanError(f"{folder}: no DICOM series in this folder")
    if len(ids) > 1:
        raise ScanError(f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids)}); point to a folder with one series")
    # GDCM orders the files by position along the slice normal, not by name.
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    check_slice_spacing(files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ScanError(f"{folder}: cannot read the DICOM series: {_cause(exc)}") from None


def read_image(path: str | Path, what: str = "image") -> sitk.Image:
    """Read a 3D scalar image from a file or a DICOM folder.

    Parameters
    ----------
    path : a NIfTI/NRRD/MHA/... file, a single DICOM file, or a folder holding one DICOM series.
    what : ``"image"`` or ``"mask"``, for error messages.

    Raises
    ------
    ScanError
        Missing path, unreadable file, not 3D, more than one component per voxel,
        or a DICOM series with non-uniform slice spacing.
    """
    p = Path(path)
    if not p.exists():
        raise ScanError(f"{p}: no such file or folder ({what})")
    kind = file_kind(p)
    if kind == "a folder":
        # GDCM opens every entry of the folder: a FIFO there would block it for ever
        odd = irregular_entry(p)
        if odd is not None:
            raise ScanError(f"{p}: the DICOM folder holds {odd[0].name}, which is {odd[1]}, not a file; remove it")
        img = _read_dicom_series(p)
    elif kind is not None:  # a FIFO or a device: opening it would block or read without end
        raise ScanError(f"{p}: {what} is {kind}, not an image file or a DICOM folder")
    else:
        if p.name.lower().endswith((".nii", ".nii.gz")):
            _nifti_complete(p)
        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise ScanError(f"{p}: cannot read {what}: {_cause(exc)}") from None
    if img.GetDimension() != 3:
        raise ScanError(f"{p}: {what} is {img.GetDimension()}D; a 3D volume is needed")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ScanError(f"{p}: {what} has {img.GetNumberOfComponentsPerPixel()} components per voxel; one is needed")
    return img


def _as_image(obj: str | Path | sitk.Image, what: str) -> tuple[sitk.Image, str]:
    if isinstance(obj, sitk.Image):
        return obj, f"<{what}>"
    return read_image(obj, what), str(obj)


# --- geometry --------------------------------------------------------------------------


def physical_box(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (mm) of the space the voxels cover (voxel edges, not centres)."""
    size = np.array(img.GetSize())
    corners = []
    for cx in (-0.5, size[0] - 0.5):
        for cy in (-0.5, size[1] - 0.5):
            for cz in (-0.5, size[2] - 0.5):
                corners.append(img.TransformContinuousIndexToPhysicalPoint((float(cx), float(cy), float(cz))))
    c = np.array(corners)
    return c.min(axis=0), c.max(axis=0)


def _voxel_extent(img: sitk.Image) -> np.ndarray:
    """Size (mm) of one voxel along each physical axis."""
    d = np.array(img.GetDirection()).reshape(3, 3)
    return np.abs(d) @ np.array(img.GetSpacing())


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images share size, spacing, origin and direction (to float precision of file headers)."""
    if a.GetSize() != b.GetSize():
        return False
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    tol = 1e-3 * float(min(sa.min(), sb.min()))
    return (
        np.allclose(sa, sb, rtol=1e-5, atol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-4)
    )


def _box_text(lo: np.ndarray, hi: np.ndarray) -> str:
    return "[" + ", ".join(f"{a:.1f}..{b:.1f}" for a, b in zip(lo, hi)) + "] mm"


def mask_on_image_grid(image: sitk.Image, mask: sitk.Image, image_name: str = "image", mask_name: str = "mask") -> sitk.Image:
    """The mask on the image's voxel grid, matched in physical space.

    The physical bounding boxes must agree within half a voxel on every axis;
    then a mask on the same grid keeps its voxels, and one on another grid or
    orientation (say, with a flipped axis) is resampled onto the image grid
    by nearest-neighbour interpolation, so labels stay labels.

    Raises
    ------
    ScanError
        "mask outside the image" when the boxes do not overlap;
        "mask geometry differs from its image" when they overlap but differ.
    """
    ilo, ihi = physical_box(image)
    mlo, mhi = physical_box(mask)
    tol = 0.5 * np.maximum(_voxel_extent(image), _voxel_extent(mask))
    if np.any(mlo >= ihi - tol) or np.any(mhi <= ilo + tol):
        raise ScanError(
            f"{mask_name}: mask outside the image {image_name}: mask covers {_box_text(mlo, mhi)}, "
            f"image covers {_box_text(ilo, ihi)}"
        )
    if np.any(np.abs(mlo - ilo) > tol) or np.any(np.abs(mhi - ihi) > tol):
        raise ScanError(
            f"{mask_name}: mask geometry differs from its image {image_name}: mask covers {_box_text(mlo, mhi)}, "
            f"image covers {_box_text(ilo, ihi)} (x, y, z; must agree within half a voxel)"
        )
    if same_grid(image, mask):
        out = sitk.Image(mask)
        out.CopyInformation(image)
        return out
    log.info("%s: mask on another grid than %s; resampling it in physical space", mask_name, image_name)
    return sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())


def check_labels(arr: np.ndarray, mask_name: str = "mask") -> None:
    """Raise ``ScanError`` unless ``arr`` holds label values: whole numbers, none negative.

    A float mask with a value such as 0.5 (a probability map, an interpolated
    mask) has no label to select, and negative values are the mark of a CT
    image in HU (air is -1000) given where its mask belongs.
    """
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            shown = ", ".join(f"{v:g}" for v in np.unique(arr[bad])[:5])
            raise ScanError(f"{mask_name}: the mask holds values that are not whole numbers ({shown}); a mask holds "
                            "integer labels (0 = background)")
    if arr.dtype.kind in "fi" and arr.size and arr.min() < 0:
        raise ScanError(f"{mask_name}: the mask holds negative values (down to {arr.min():g}); a mask holds labels "
                        ">= 0 (0 = background): is this the image rather than its mask?")


def select_label(mask: sitk.Image, label: int | None, mask_name: str = "mask") -> sitk.Image:
    """Binary (UInt8 0/1) mask of one label; ``label=None`` takes every non-zero voxel.

    Raises ``ScanError`` when the mask does not hold labels (:func:`check_labels`)
    and ("empty ROI") when the label has no voxel.
    """
    arr = sitk.GetArrayViewFromImage(mask)
    check_labels(arr, mask_name)
    roi = arr != 0 if label is None else arr == label
    if not roi.any():
        present = np.unique(arr)
        shown = ", ".join(str(v) for v in present[:20]) + (" ..." if present.size > 20 else "")
        what = "the mask has no non-zero voxel" if label is None else f"label {label} has no voxel"
        raise ScanError(f"{mask_name}: empty ROI: {what} (values present: {shown})")
    out = sitk.GetImageFromArray(roi.astype(np.uint8))
    out.CopyInformation(mask)
    return out


# --- the volume ------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    """A CT image (HU) and an optional binary ROI mask on the image's grid."""

    image: sitk.Image
    mask: sitk.Image | None = None
    image_path: str | None = None
    mask_path: str | None = None
    label: int | None = None

    @property
    def roi_voxels(self) -> int | None:
        if self.mask is None:
            return None
        return int(np.count_nonzero(sitk.GetArrayViewFromImage(self.mask)))


def load(
    image: str | Path | sitk.Image, mask: str | Path | sitk.Image | None = None, label: int | None = None
) -> Volume:
    """Read a scan and its ROI mask.

    Parameters
    ----------
    image : a file, a DICOM folder, or a SimpleITK image. Values are HU (SimpleITK
        applies DICOM rescale slope/intercept and NIfTI scaling on read).
    mask : same kinds; binary or multi-label.
    label : the label that makes the ROI; ``None`` takes every non-zero voxel.

    Returns
    -------
    Volume
        ``.image`` as read; ``.mask`` a UInt8 0/1 image of ``label`` on ``.image``'s grid
        (resampled by nearest neighbour when the mask is on another grid of the same space).
    """
    if (mask is not None and not isinstance(image, sitk.Image) and not isinstance(mask, sitk.Image)
            and os.path.exists(image) and os.path.exists(mask) and os.path.samefile(image, mask)):
        raise ScanError(f"{mask}: the mask is the image itself ({image}); give the file of the ROI mask")
    img, iname = _as_image(image, "image")
    if mask is None:
        if label is not None:
            raise ScanError(f"{iname}: a mask label ({label}) was given without a mask")
        return Volume(img, None, None if isinstance(image, sitk.Image) else iname)
    msk, mname = _as_image(mask, "mask")
    # Select the label on the mask's own grid first so the message lists the labels it really holds.
    binary = select_label(msk, label, mname)
    on_grid = mask_on_image_grid(img, binary, iname, mname)
    if not np.any(sitk.GetArrayViewFromImage(on_grid)):
        raise ScanError(f"{mname}: empty ROI on the grid of {iname} after resampling (the ROI is smaller than a voxel)")
    return Volume(
        img,
        on_grid,
        None if isinstance(image, sitk.Image) else iname,
        None if isinstance(mask, sitk.Image) else mname,
        label,
    )


def probe_scan(image_path: str | Path, mask_path: str | Path | None = None, mask_label: int | None = None) -> dict[str, Any]:
    """Check that a scan (and its mask) can be used, and describe its geometry.

    Returns
    -------
    dict
        ``size`` (x, y, z voxels), ``spacing`` (mm), ``origin`` (mm), ``direction``
        (row-major 3x3, flattened), ``roi_voxels`` (voxels of the ROI on the image
        grid, ``None`` without a mask).

    Raises
    ------
    ScanError
        Missing file or folder, unreadable image, DICOM series with non-uniform
        slice spacing, mask outside the image or on a different physical region,
        empty ROI for ``mask_label``.
    """
    vol = load(image_path, mask_path, mask_label)
    img = vol.image
    return {
        "size": [int(v) for v in img.GetSize()],
        "spacing": [float(v) for v in img.GetSpacing()],
        "origin": [float(v) for v in img.GetOrigin()],
        "direction": [float(v) for v in img.GetDirection()],
        "roi_voxels": vol.roi_voxels,
    }



# --- preprocessing for the encoders -------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """A box around the ROI on the preprocessed grid (oriented, resampled).

    ``image`` is HU (float32) and ``mask`` the ROI (bool), both (z, y, x).
    ``start`` is the (x, y, z) index of the box's first voxel in the whole
    preprocessed volume, whose grid keeps the oriented image's first voxel
    centre, its direction, and steps of ``spacing`` mm.
    """

    image: np.ndarray
    mask: np.ndarray
    start: tuple[int, int, int]
    spacing: tuple[float, float, float]
    orientation: str


def orient(volume: Volume, orientation: str = ORIENTATION) -> Volume:
    """Reorder and flip the axes of image and mask to a common frame (``DICOMOrient``); no interpolation."""
    img = sitk.DICOMOrient(volume.image, orientation)
    msk = sitk.DICOMOrient(volume.mask, orientation) if volume.mask is not None else None
    return Volume(img, msk, volume.image_path, volume.mask_path, volume.label)


def crop_roi(
    volume: Volume,
    spacing: tuple[float, float, float] | list[float] = DEFAULT_SPACING,
    margin_mm: float = DEFAULT_MARGIN_MM,
    orientation: str = ORIENTATION,
) -> Crop:
    """Orient, then resample the ROI's bounding box plus ``margin_mm`` to ``spacing``.

    Only the box is resampled (B-spline of order 3 for the image, nearest
    neighbour for the mask), never the whole scan. The box is kept inside the
    scan; a volume without a mask is taken whole.

    Parameters
    ----------
    volume : from :func:`load`.
    spacing : target voxel size in mm (x, y, z).
    margin_mm : added on every side of the ROI's bounding box.
    orientation : DICOM orientation code of the common frame (``LPS``).
    """
    vol = orient(volume, orientation)
    img = vol.image
    sp = np.array(img.GetSpacing(), dtype=np.float64)
    target = np.array(spacing, dtype=np.float64)
    if target.shape != (3,) or np.any(target <= 0):
        raise ScanError(f"spacing must be three positive numbers in mm, not {list(spacing)}")
    size = np.array(img.GetSize())
    full = np.floor((size - 1) * sp / target + 1e-6).astype(np.int64) + 1  # voxels of the whole resampled scan
    if vol.mask is not None:
        idx = np.argwhere(sitk.GetArrayViewFromImage(vol.mask))[:, ::-1]  # (x, y, z)
        lo_mm = idx.min(axis=0) * sp - margin_mm
        hi_mm = idx.max(axis=0) * sp + margin_mm
    else:
        lo_mm, hi_mm = np.zeros(3), (size - 1) * sp
    lo = np.clip(np.floor(lo_mm / target + 1e-6).astype(np.int64), 0, full - 1)
    hi = np.clip(np.ceil(hi_mm / target - 1e-6).astype(np.int64), 0, full - 1)
    box = hi - lo + 1
    direction = np.array(img.GetDirection()).reshape(3, 3)
    ref = sitk.Image([int(v) for v in box], sitk.sitkUInt8)
    ref.SetSpacing([float(v) for v in target])
    ref.SetDirection(img.GetDirection())
    ref.SetOrigin([float(v) for v in np.array(img.GetOrigin()) + direction @ (lo * target)])
    image = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkBSpline, AIR_HU, sitk.sitkFloat32)
    if vol.mask is not None:
        mask = sitk.GetArrayFromImage(
            sitk.Resample(vol.mask, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        ).astype(bool)
        if not mask.any():
            raise ScanError(f"{vol.mask_path or '<mask>'}: empty ROI after resampling to {list(target)} mm")
    else:
        mask = np.ones(tuple(int(v) for v in box[::-1]), dtype=bool)
    return Crop(
        sitk.GetArrayFromImage(image),
        mask,
        (int(lo[0]), int(lo[1]), int(lo[2])),
        (float(target[0]), float(target[1]), float(target[2])),
        orientation,
    )


def apply_window(hu: np.ndarray, window: tuple[float, float] | list[float] = DEFAULT_WINDOW) -> np.ndarray:
    """Clip HU to ``[low, high]`` and map linearly to [0, 1] (float32)."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"window must be [low, high] with low < high, not {list(window)}")
    return ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32)


def fit_to(array: np.ndarray, size: tuple[int, ...] | list[int], fill: float = 0.0, mode: str = "resize") -> np.ndarray:
    """Bring the last ``len(size)`` axes (2 or 3) of an array to exactly ``size``; leading axes are a batch.

    ``resize``: pad (centred, with ``fill``) to the aspect ratio of ``size`` and
    resample linearly (bi/trilinear, ``align_corners=False``), so shapes are not
    distorted. ``pad``: keep the voxel size; pad or centre-crop every axis to
    ``size`` (the same physical scale for every scan).
    """
    import torch
    import torch.nn.functional as F

    a = np.asarray(array, dtype=np.float32)
    target = tuple(int(s) for s in size)
    nd = len(target)
    if nd not in (2, 3) or a.ndim < nd:
        raise ValueError(f"cannot fit an array of shape {a.shape} to {target}")
    batch, spatial = a.shape[: a.ndim - nd], a.shape[a.ndim - nd :]
    if mode == "pad":
        out = np.full(batch + target, fill, dtype=np.float32)
        src, dst = [], []
        for n, t in zip(spatial, target):
            b = abs(n - t) // 2
            src.append(slice(b, b + t) if n >= t else slice(0, n))
            dst.append(slice(0, t) if n >= t else slice(b, b + n))
        out[(Ellipsis, *dst)] = a[(Ellipsis, *src)]
        return out
    if mode != "resize":
        raise ValueError(f"fit mode must be 'resize' or 'pad', not {mode!r}")
    scale = min(t / n for t, n in zip(target, spatial))
    padded = [max(n, int(round(t / scale))) for t, n in zip(target, spatial)]
    pads = [(0, 0)] * len(batch) + [((p - n) // 2, (p - n) - (p - n) // 2) for p, n in zip(padded, spatial)]
    a = np.pad(a, pads, constant_values=fill)
    if a.shape[len(batch) :] == target:
        return a
    t = torch.from_numpy(np.ascontiguousarray(a)).reshape(-1, 1, *a.shape[len(batch) :])
    out = F.interpolate(t, size=target, mode="bilinear" if nd == 2 else "trilinear", align_corners=False)
    return out.reshape(*batch, *target).numpy()


# --- radiomics ----------------------------------------------------------------------------


def radiomics(
    image: str | Path | sitk.Image,
    mask: str | Path | sitk.Image,
    label: int | None = 1,
    bin_width: float = 25.0,
    voxel_array_shift: float = 0.0,
) -> dict[str, float]:
    """First-order, shape (3D) and GLCM features of an ROI, with pyradiomics' names and defaults.

    Parameters
    ----------
    image, mask : files, DICOM folders or SimpleITK images; the mask is matched
        to the image in physical space as in :func:`load`.
    label : the ROI's label in the mask (pyradiomics' default 1); ``None`` takes every non-zero voxel.
    bin_width : pyradiomics ``binWidth`` (default 25).
    voxel_array_shift : pyradiomics ``voxelArrayShift`` (default 0).

    Returns
    -------
    dict
        ``original_firstorder_*``, ``original_shape_*``, ``original_glcm_*`` in the
        order of :data:`pipeline.ct.radiomics_features.FEATURE_NAMES`; computed on the image's
        own grid (no resampling), see :mod:`pipeline.ct.radiomics_features` for the definitions.
    """
    from pipeline.ct import radiomics_features as rad

    vol = load(image, mask, label)
    assert vol.mask is not None
    arr = sitk.GetArrayViewFromImage(vol.image)
    roi = sitk.GetArrayViewFromImage(vol.mask)
    spacing = vol.image.GetSpacing()[::-1]  # numpy (z, y, x) order
    try:
        return rad.features(arr, roi, spacing, bin_width=bin_width, voxel_array_shift=voxel_array_shift)
    except rad.RadiomicsError as exc:
        raise ScanError(f"{vol.mask_path or '<mask>'}: {exc}") from None
