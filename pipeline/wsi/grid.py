"""The tile grid of a slide: tiles of a size at a target mpp, with their tissue fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.wsi.slide import Slide
from pipeline.wsi.tissue import TissueMask, tissue_mask


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
