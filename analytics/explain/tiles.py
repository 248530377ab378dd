"""The tiles a MIL model attends to most and least, read back from the slide as they were embedded.

A tile is read exactly as the embedding stage read it
(:mod:`pipeline.wsi.embedder`): :func:`pipeline.wsi.grid_spec` gives the pyramid
level and the number of level pixels that make one tile at the feature set's
mpp; that square is read at the tile's level-0 corner and resized to the tile
size with the encoder's interpolation (:func:`pipeline.wsi.resize_tile`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from analytics.explain.plots import FONT, save
from analytics.figures import new_figure
from pipeline import wsi

# PIL filters by the interpolation names timm configs use (as the embedder maps them).
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class TileGeometry:
    """How one feature set's tiles were cut from a slide."""

    mpp: float  # target microns per pixel
    tile: int  # output pixels per side
    overlap: int
    resample: int  # PIL filter

    @classmethod
    def from_params(cls, params: dict) -> TileGeometry:
        """From a ``feature_sets.params`` record (``mpp``, ``tile_size``, ``overlap``, ``preprocessing``)."""
        try:
            mpp, tile = float(params["mpp"]), int(params["tile_size"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"feature set params lack mpp / tile_size: {sorted(params)}") from None
        interp = str((params.get("preprocessing") or {}).get("interpolation", "bilinear"))
        return cls(mpp, tile, int(params.get("overlap") or 0), int(RESAMPLE.get(interp, Image.Resampling.BILINEAR)))

    def spec(self, slide: wsi.Slide) -> wsi.GridSpec:
        return wsi.grid_spec(slide, self.mpp, self.tile, self.overlap)

    def extent0(self, slide: wsi.Slide) -> float:
        """Side of one tile in level-0 pixels."""
        s = self.spec(slide)
        return s.read_size * s.downsample


def read_tiles(slide: wsi.Slide, xs: Sequence[int], ys: Sequence[int], geometry: TileGeometry) -> np.ndarray:
    """Tiles at level-0 corners ``(xs[i], ys[i])`` as uint8 ``(k, tile, tile, 3)``, as they were embedded."""
    spec = geometry.spec(slide)
    out = np.empty((len(xs), geometry.tile, geometry.tile, 3), dtype=np.uint8)
    for i, (x, y) in enumerate(zip(xs, ys)):
        rgb = slide.read_region((int(x), int(y)), spec.level, (spec.read_size, spec.read_size))
        out[i] = wsi.resize_tile(rgb, geometry.tile, geometry.resample)
    return out


def top_bottom(attention: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` highest and ``k`` lowest attention weights (ties: earlier instance first).

    With fewer than ``2k`` instances the two lists share none: the top takes
    ``ceil(n/2)`` at most and the bottom the rest.
    """
    a = np.asarray(attention, dtype=np.float64)
    n = len(a)
    k_top = min(k, (n + 1) // 2)
    k_bot = min(k, n - k_top)
    desc = np.lexsort((np.arange(n), -a))
    asc = np.lexsort((np.arange(n), a))
    top = desc[:k_top]
    taken = set(top.tolist())
    bottom = np.array([i for i in asc if i not in taken][:k_bot], dtype=np.int64)
    return top.astype(np.int64), bottom


def gallery(top: np.ndarray, top_att: Sequence[float], bottom: np.ndarray, bottom_att: Sequence[float],
            path: Path, title: str, top_xy: Sequence[tuple[int, int]] = (),
            bottom_xy: Sequence[tuple[int, int]] = ()) -> Path:
    """Two rows of tiles: the highest-attention ones, then the lowest, each titled with its weight."""
    cols = max(len(top), len(bottom), 1)
    fig = new_figure(1.55 * cols + 0.4, 3.9)
    rows = [("highest attention", top, top_att, top_xy), ("lowest attention", bottom, bottom_att, bottom_xy)]
    for r, (name, tiles, att, xy) in enumerate(rows):
        for c in range(cols):
            ax = fig.add_subplot(2, cols, r * cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(tiles):
                ax.imshow(tiles[c], interpolation="nearest")
                where = f"\n({xy[c][0]}, {xy[c][1]})" if c < len(xy) else ""
                ax.set_title(f"{att[c]:.3g}{where}", fontsize=FONT - 2)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(name, fontsize=FONT - 1)
    fig.suptitle(title, fontsize=FONT + 1)
    return save(fig, path)
