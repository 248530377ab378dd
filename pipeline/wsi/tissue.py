"""Finding tissue on a slide: Otsu's threshold on HSV saturation of a low-resolution thumbnail."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.wsi.slide import Slide

# Default resolution of the tissue mask and the longest side it may have.
MASK_MPP = 4.0
MASK_MAX_SIDE = 4096
# Read the low-resolution level in blocks of at most this many pixels a side.
READ_BLOCK = 1024


@dataclass(frozen=True)
class TissueMask:
    """A tissue mask at low resolution, with the thumbnail it was computed on.

    ``np.asarray(mask)`` gives the boolean array; mask pixel (r, c) covers level-0
    pixels ``[c * downsample, (c + 1) * downsample)`` x ``[r * downsample, ...)``.
    """

    mask: np.ndarray  # bool (h, w)
    thumbnail: np.ndarray  # RGB uint8 (h, w, 3)
    downsample: float  # level-0 pixels per mask pixel
    mpp: float  # microns per mask pixel
    saturation_threshold: float  # the (Otsu or given) threshold on HSV saturation

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.mask if dtype is None else self.mask.astype(dtype)

    @property
    def tissue_area_um2(self) -> float:
        return float(self.mask.sum()) * self.mpp**2


def thumbnail(slide: Slide, mpp: float) -> tuple[np.ndarray, float]:
    """RGB image of the whole slide at about ``mpp`` (at most 5 % finer) and its exact level-0 downsample.

    Reads the best level in blocks and shrinks by an integer box average, so
    memory stays bounded even for a slide with no low-resolution level.
    """
    level = slide.best_level(mpp)
    # the integer shrink that reaches ``mpp`` or slightly coarser (5 % finer allowed), so the size stays bounded
    factor = max(1, math.ceil(mpp / slide.level_mpp(level) - 0.05))
    w, h = slide.level_dimensions[level]
    ds = slide.level_downsamples[level]
    out_w, out_h = max(1, math.ceil(w / factor)), max(1, math.ceil(h / factor))
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    block = max(factor, READ_BLOCK // factor * factor)
    for y in range(0, out_h * factor, block):
        for x in range(0, out_w * factor, block):
            bw, bh = min(block, out_w * factor - x), min(block, out_h * factor - y)
            img = slide.read_image((round(x * ds), round(y * ds)), level, (bw, bh))
            # box average over factor x factor blocks (blocks never straddle two reads)
            out[y // factor : (y + bh) // factor, x // factor : (x + bw) // factor] = np.asarray(img.reduce(factor) if factor > 1 else img)
    return out, ds * factor


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation, (max - min) / max, in [0, 1] (0 where the pixel is black)."""
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)  # uint8: no float copy of the whole thumbnail
    return np.divide((hi - lo).astype(np.float32), hi, out=np.zeros(hi.shape, np.float32), where=hi > 0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (Otsu 1979, IEEE Trans. Syst. Man Cybern. 9:62-66) on a histogram of ``values``.

    Maximises the between-class variance; returns the centre of the last bin of
    the lower class, as scikit-image's ``threshold_otsu`` does.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = np.cumsum(counts[::-1])[::-1]
    m0 = np.cumsum(counts * centres) / np.maximum(w0, 1)
    m1 = (np.cumsum((counts * centres)[::-1]) / np.maximum(np.cumsum(counts[::-1]), 1))[::-1]
    between = w0[:-1] * w1[1:] * (m0[:-1] - m1[1:]) ** 2
    return float(centres[int(np.argmax(between))])


def _clean(mask: np.ndarray, min_area_px: int, max_hole_px: int) -> np.ndarray:
    """Drop objects smaller than ``min_area_px``; fill enclosed holes smaller than ``max_hole_px``."""
    from scipy import ndimage

    if max_hole_px > 0:
        holes, n = ndimage.label(~mask)
        if n:
            sizes = np.bincount(holes.ravel())
            border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
            small = sizes < max_hole_px
            small[0] = False
            small[border] = False
            mask = mask | small[holes]
    if min_area_px > 1:
        objects, n = ndimage.label(mask)
        if n:
            sizes = np.bincount(objects.ravel())
            keep = sizes >= min_area_px
            keep[0] = False
            mask = keep[objects]
    return mask


def tissue_mask(
    slide: Slide,
    mpp: float | None = None,
    saturation_threshold: float | None = None,
    min_saturation: float = 0.05,
    min_area_um2: float = 10_000.0,
    max_hole_um2: float = 10_000.0,
) -> TissueMask:
    """Tissue versus background by Otsu's threshold on HSV saturation at low resolution.

    Stained tissue is coloured and glass is grey or white, so saturation
    separates them better than brightness does; Otsu's method (Otsu 1979, IEEE
    Trans. Syst. Man Cybern. 9:62-66) picks the threshold, as in CLAM (Lu et
    al. 2021, Nat. Biomed. Eng. 5:555-570). Enclosed holes smaller than
    ``max_hole_um2`` are filled and pieces smaller than ``min_area_um2`` dropped.

    Parameters
    ----------
    slide
        An open slide.
    mpp
        Mask resolution; default 4 um/px, coarser when needed to keep the longest
        side within 4096 pixels (memory stays bounded whatever the slide size).
    saturation_threshold
        A fixed threshold in [0, 1] instead of Otsu's.
    min_saturation
        Floor under Otsu's threshold, so a blank slide does not turn noise into tissue.
    """
    if mpp is None:
        extent_um = max(slide.dimensions) * slide.mpp
        mpp = max(MASK_MPP, extent_um / MASK_MAX_SIDE, slide.mpp)
    thumb, downsample = thumbnail(slide, mpp)
    sat = saturation(thumb)
    if saturation_threshold is None:
        thr = otsu_threshold(sat) if np.ptp(sat) > 0 else 1.0
        thr = max(thr, min_saturation)
    else:
        thr = float(saturation_threshold)
    mask_mpp = slide.mpp * downsample
    px = mask_mpp**2
    mask = _clean(sat > thr, int(round(min_area_um2 / px)), int(round(max_hole_um2 / px)))
    return TissueMask(mask=mask, thumbnail=thumb, downsample=downsample, mpp=mask_mpp, saturation_threshold=thr)
