"""Opening a whole-slide image: its level-0 mpp, pyramid levels and pixels.

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
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import openslide
from PIL import Image

from pipeline.errors import CohortlabError
from pipeline.files import file_kind

log = logging.getLogger("cohortlab.wsi")

# Level-0 resolutions coarser than this are not microscope scans but the dpi
# placeholders image editors write (72 dpi = 352.8 um/px); treated as "no mpp".
MAX_PLAUSIBLE_MPP = 20.0
# A level this close to the target counts as equal (e.g. 0.499 or 0.505 for 0.5).
MPP_TOLERANCE = 0.02


class SlideError(CohortlabError, ValueError):
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
    kind = file_kind(path)
    if kind == "a folder":
        raise SlideError(f"{path}: is a folder, not a slide file")
    if kind is not None:  # a FIFO or a device: opening it would block or read without end
        raise SlideError(f"{path}: is {kind}, not a slide file")
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
    def __enter__(self) -> Slide:
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
