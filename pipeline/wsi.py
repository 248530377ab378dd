"""Whole-slide images: opening and probing, tissue detection, and the tile grid.

Resolution is always asked for in microns per pixel (mpp), never as a pyramid
level: :meth:`Slide.best_level` picks the coarsest level that is still at least
as fine as the target (downsample as much as possible without upsampling) and
the reader resizes from there. Tile coordinates are level-0 pixels.

Every failure is a :class:`SlideError` whose message names the file and the
cause; a slide whose metadata has no usable mpp and that got no override from
the manifest raises the subclass :class:`MissingMppError`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import openslide
import polars as pl
from PIL import Image

log = logging.getLogger("cohortlab.wsi")

# Level-0 resolutions coarser than this are not microscope scans but the dpi
# placeholders image editors write (72 dpi = 352.8 um/px); treated as "no mpp".
MAX_PLAUSIBLE_MPP = 20.0
# A level this close to the target counts as equal (e.g. 0.499 or 0.505 for 0.5).
MPP_TOLERANCE = 0.02
# Default resolution of the tissue mask and the longest side it may have.
MASK_MPP = 4.0
MASK_MAX_SIDE = 4096
# Read the low-resolution level in blocks of at most this many pixels a side.
READ_BLOCK = 1024


class SlideError(ValueError):
    """A slide that cannot be used; the message names the file and the cause."""


class MissingMppError(SlideError):
    """A slide with no usable mpp in its metadata and no mpp override in the manifest."""


def magnification_to_mpp(magnification: str | float) -> float:
    """Objective magnification to microns per pixel ('20x' -> 0.5, '40x' -> 0.25)."""
    text = str(magnification).strip().lower().removesuffix("x")
    try:
        mag = float(text)
    except ValueError:
        raise ValueError(f"magnification {magnification!r}: write it as e.g. '20x'") from None
    if not mag > 0:
        raise ValueError(f"magnification {magnification!r} must be positive")
    return 10.0 / mag


def _metadata_mpp(osr: openslide.OpenSlide) -> tuple[float | None, str]:
    """Level-0 mpp from the slide's metadata (mean of x and y), or None and a detail for the error."""
    props = osr.properties
    vals: list[float] = []
    for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y):
        try:
            v = float(props.get(key, "nan"))
        except ValueError:
            continue
        if math.isfinite(v) and v > 0:
            vals.append(v)
    if not vals:
        return None, ""
    mpp = float(np.mean(vals))
    if mpp > MAX_PLAUSIBLE_MPP:
        return None, f"; the file states {mpp:.4g} um/px, a screen or print dpi placeholder, not a scan resolution"
    return mpp, ""


def _objective(osr: openslide.OpenSlide) -> float | None:
    raw = osr.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
    try:
        val = float(raw) if raw is not None else None
    except ValueError:
        return None
    return val if val is not None and math.isfinite(val) and val > 0 else None


def _open(path: Path) -> openslide.OpenSlide:
    if not path.exists():
        raise SlideError(f"{path}: no such file")
    if path.is_dir():
        raise SlideError(f"{path}: is a folder, not a slide file")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(f"{path}: not a slide openslide can read (unsupported or missing image format)") from None
    except openslide.OpenSlideError as exc:
        raise SlideError(f"{path}: cannot open slide: {exc}") from None
    except OSError as exc:
        raise SlideError(f"{path}: cannot open slide: {exc}") from None


def rgba_to_rgb(rgba: Image.Image) -> Image.Image:
    """Composite openslide's RGBA (transparent outside the scanned area) onto white."""
    if rgba.getchannel("A").getextrema() == (255, 255):
        return rgba.convert("RGB")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


class Slide:
    """An open whole-slide image with a known level-0 mpp (use as a context manager).

    Parameters
    ----------
    path
        The slide file (any format openslide reads).
    mpp
        Level-0 microns per pixel from the manifest; wins over the metadata.
    """

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        self.path = Path(path)
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise SlideError(f"{self.path}: mpp override {mpp!r} is not a positive number")
        self._osr = _open(self.path)
        meta, why = _metadata_mpp(self._osr)
        if mpp is not None:
            self.mpp, self.mpp_source = float(mpp), "manifest"
        elif meta is not None:
            self.mpp, self.mpp_source = meta, "metadata"
        else:
            self._osr.close()
            raise MissingMppError(
                f"{self.path}: no mpp in metadata and no mpp override in the manifest (add an 'mpp' column{why})"
            )
        self.vendor: str = self._osr.properties.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"
        self.objective = _objective(self._osr)
        self.dimensions: tuple[int, int] = tuple(self._osr.dimensions)  # type: ignore[assignment]
        self.level_count: int = self._osr.level_count
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in self._osr.level_downsamples)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(tuple(d) for d in self._osr.level_dimensions)  # type: ignore[misc]

    # --- context manager ---------------------------------------------------
    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._osr.close()

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, {self.dimensions[0]}x{self.dimensions[1]}, mpp={self.mpp:.4g} [{self.mpp_source}], levels={self.level_count})"

    # --- resolution --------------------------------------------------------
    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[level]

    def best_level(self, mpp: float, tolerance: float = MPP_TOLERANCE) -> int:
        """The coarsest level whose mpp is at most ``mpp`` (within ``tolerance``), else level 0.

        Reading from it and shrinking gives the target without upsampling (level 0
        of a slide scanned coarser than the target is the one exception: logged).
        """
        ok = [lv for lv in range(self.level_count) if self.level_mpp(lv) <= mpp * (1 + tolerance)]
        if not ok:
            log.warning("%s: level 0 is %.3g um/px, coarser than the %.3g asked for; upsampling", self.path, self.mpp, mpp)
            return 0
        return max(ok, key=lambda lv: self.level_downsamples[lv])

    # --- pixels ------------------------------------------------------------
    def read_image(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGB image of ``size`` at ``level``, ``location`` in level-0 pixels; outside the slide is white."""
        try:
            img = self._osr.read_region((int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1])))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{self.path}: cannot read pixels at level {level}, {location}: {exc}") from None
        return rgba_to_rgb(img)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Like :meth:`read_image`, as a uint8 (h, w, 3) array."""
        return np.asarray(self.read_image(location, level, size))

    def properties(self) -> dict[str, str]:
        return dict(self._osr.properties)


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a slide; ``mpp`` (from the manifest) overrides the metadata.

    Raises
    ------
    SlideError
        Missing file, not a slide, or a slide openslide cannot open.
    MissingMppError
        No usable mpp in the metadata and no override.
    """
    return Slide(path, mpp)


def probe_slide(path: str | Path, mpp: float | None = None) -> dict[str, Any]:
    """Check that a slide opens and its pixels decode; return what ingest stores.

    A small region of the lowest-resolution level is decoded, so a slide that
    opens but whose tiles are corrupt fails here rather than mid-embedding.

    Returns
    -------
    dict
        ``vendor, width, height, mpp, mpp_source ('metadata'|'manifest'),
        objective (float|None), levels, downsamples (list[float])``.
    """
    with open_slide(path, mpp) as slide:
        low = slide.level_count - 1
        w, h = slide.level_dimensions[low]
        ds = slide.level_downsamples[low]
        size = (min(w, 64), min(h, 64))
        centre = (int((w - size[0]) // 2 * ds), int((h - size[1]) // 2 * ds))
        for loc in {(0, 0), centre}:
            slide.read_region(loc, low, size)
        return {
            "vendor": slide.vendor,
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "mpp": slide.mpp,
            "mpp_source": slide.mpp_source,
            "objective": slide.objective,
            "levels": slide.level_count,
            "downsamples": list(slide.level_downsamples),
        }


# --- tissue detection -----------------------------------------------------------


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


# --- tile grid ------------------------------------------------------------------


@dataclass(frozen=True)
class GridSpec:
    """How a tile at the target mpp maps onto one pyramid level."""

    level: int
    downsample: float  # of that level
    read_size: int  # level pixels read per tile (then resized to ``tile``)
    stride: int  # level pixels between tile origins
    tile: int  # output pixels per tile side
    mpp: float  # target mpp


def grid_spec(slide: Slide, mpp: float = 0.5, tile: int = 224, overlap: int = 0) -> GridSpec:
    """Level, read size and stride for ``tile`` pixels at ``mpp`` with ``overlap`` pixels shared."""
    if tile < 1:
        raise ValueError(f"tile size must be positive, not {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile size {tile}), not {overlap}")
    level = slide.best_level(mpp)
    scale = mpp / slide.level_mpp(level)
    return GridSpec(
        level=level,
        downsample=slide.level_downsamples[level],
        read_size=max(1, round(tile * scale)),
        stride=max(1, round((tile - overlap) * scale)),
        tile=tile,
        mpp=mpp,
    )


def _fractions(mask: TissueMask, x0: np.ndarray, y0: np.ndarray, extent0: float) -> np.ndarray:
    """Tissue fraction of level-0 squares [x0, x0 + extent0) by an integral image of the mask."""
    m = mask.mask
    integral = np.zeros((m.shape[0] + 1, m.shape[1] + 1), dtype=np.int32)  # <= 4096^2 counts fit
    integral[1:, 1:] = m.cumsum(0).cumsum(1)
    d = mask.downsample

    def edges(a: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        lo = np.clip(np.rint(a / d), 0, limit).astype(np.int64)
        hi = np.clip(np.rint((a + extent0) / d), 0, limit).astype(np.int64)
        return lo, np.maximum(hi, np.minimum(lo + 1, limit))

    c0, c1 = edges(x0.astype(np.float64), m.shape[1])
    r0, r1 = edges(y0.astype(np.float64), m.shape[0])
    inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    area = (r1 - r0) * (c1 - c0)
    return np.divide(inside, area, out=np.zeros(len(area)), where=area > 0)


def tile_grid(
    slide: Slide,
    mpp: float = 0.5,
    tile: int = 224,
    tissue_threshold: float = 0.25,
    overlap: int = 0,
    mask: TissueMask | None = None,
) -> pl.DataFrame:
    """Tiles of ``tile`` pixels at ``mpp`` whose tissue fraction is at least ``tissue_threshold``.

    Only whole tiles inside the slide are listed (a slide smaller than one tile
    has none). Rows are in row-major order.

    Returns
    -------
    polars.DataFrame
        One row per kept tile: ``x, y`` (level-0 pixels of the top-left corner),
        ``tissue_fraction``, ``row, col`` (grid position), ``level`` and
        ``read_size`` (level pixels read, then resized to ``tile``).
    """
    spec = grid_spec(slide, mpp, tile, overlap)
    if mask is None:
        mask = tissue_mask(slide)
    w, h = slide.level_dimensions[spec.level]
    n_cols = (w - spec.read_size) // spec.stride + 1 if w >= spec.read_size else 0
    n_rows = (h - spec.read_size) // spec.stride + 1 if h >= spec.read_size else 0
    rows, cols = np.divmod(np.arange(n_rows * n_cols, dtype=np.int64), max(n_cols, 1))
    x0 = np.rint(cols * spec.stride * spec.downsample).astype(np.int64)
    y0 = np.rint(rows * spec.stride * spec.downsample).astype(np.int64)
    frac = _fractions(mask, x0, y0, spec.read_size * spec.downsample)
    keep = frac >= tissue_threshold
    return pl.DataFrame(
        {
            "x": x0[keep],
            "y": y0[keep],
            "tissue_fraction": frac[keep],
            "row": rows[keep].astype(np.int32),
            "col": cols[keep].astype(np.int32),
            "level": np.full(int(keep.sum()), spec.level, dtype=np.int32),
            "read_size": np.full(int(keep.sum()), spec.read_size, dtype=np.int32),
        },
        schema={"x": pl.Int64, "y": pl.Int64, "tissue_fraction": pl.Float64, "row": pl.Int32, "col": pl.Int32, "level": pl.Int32, "read_size": pl.Int32},
    )
