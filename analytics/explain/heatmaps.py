"""Attention heatmaps of MIL models over the slide thumbnail, in level-0 coordinates.

Each tile's attention weight is rank-normalised within its slide (0 for the
lowest-attended tile, 1 for the highest; ties share their mean rank), so
slides with a few or many tiles read on the same scale, as in CLAM (Lu et
al., Nat. Biomed. Eng. 2021). The weight paints the tile's footprint
(``read_size x downsample`` level-0 pixels from its corner) on a raster
aligned to the thumbnail; where tiles overlap the larger weight wins. The
raster is blended over the thumbnail with the ``inferno`` colour map (high
attention bright yellow, low dark purple), the tissue outline drawn on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from analytics.explain.plots import FONT, save
from analytics.figures import DPI, literal, new_figure
from pipeline import wsi

CMAP = "inferno"
ALPHA = 0.6
DISPLAY_SIDE = 1024  # longest side of the thumbnail drawn, in pixels


def rank_normalise(attention: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (mean rank for ties); a single tile gets 1."""
    a = np.asarray(attention, dtype=np.float64)
    if a.size == 0:
        return a
    if a.size == 1:
        return np.ones(1)
    return (rankdata(a, method="average") - 1.0) / (a.size - 1.0)


def attention_raster(shape: tuple[int, int], downsample: float, xs: np.ndarray, ys: np.ndarray, extent0: float,
                     values: np.ndarray) -> np.ndarray:
    """``(h, w)`` float raster (NaN off the tiles) of ``values`` painted on tiles at level-0 corners ``xs, ys``.

    ``downsample`` is level-0 pixels per raster pixel and ``extent0`` a tile's
    side in level-0 pixels.
    """
    h, w = shape
    out = np.full((h, w), np.nan)
    x0 = np.clip(np.floor(np.asarray(xs, dtype=np.float64) / downsample).astype(np.int64), 0, w)
    y0 = np.clip(np.floor(np.asarray(ys, dtype=np.float64) / downsample).astype(np.int64), 0, h)
    x1 = np.clip(np.ceil((np.asarray(xs, dtype=np.float64) + extent0) / downsample).astype(np.int64), 0, w)
    y1 = np.clip(np.ceil((np.asarray(ys, dtype=np.float64) + extent0) / downsample).astype(np.int64), 0, h)
    for a, b, c, d, v in zip(y0, y1, x0, x1, np.asarray(values, dtype=np.float64)):
        patch = out[a:b, c:d]
        np.fmax(patch, v, out=patch)
    return out


def blend(thumbnail: np.ndarray, raster: np.ndarray, alpha: float = ALPHA, cmap: str = CMAP) -> np.ndarray:
    """RGB uint8: the raster's colours over the thumbnail where it is defined, the thumbnail elsewhere."""
    from matplotlib import colormaps

    rgb = thumbnail.astype(np.float64) / 255.0
    on = np.isfinite(raster)
    colours = colormaps[cmap](np.nan_to_num(raster, nan=0.0))[..., :3]
    rgb[on] = (1 - alpha) * rgb[on] + alpha * colours[on]
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Heatmap:
    """A written heatmap and where its image lies in the PNG (pixels: left, top, width, height)."""

    path: Path
    image_box: tuple[int, int, int, int]
    overlay: np.ndarray


def plot_heatmap(overlay: np.ndarray, path: Path, title: str, mask: np.ndarray | None = None,
                 cmap: str = CMAP) -> Heatmap:
    """Save the blended image with a colour bar and the tissue outline (when ``mask`` is given).

    The axes are laid out by hand (no tight bounding box), so the image's
    place in the PNG is known exactly and returned.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    h, w = overlay.shape[:2]
    img_w_in = 6.0 if w >= h else 6.0 * w / h
    img_h_in = img_w_in * h / w
    margin, bar_w, top, bottom = 0.15, 1.1, 0.45, 0.15
    fig_w, fig_h = margin + img_w_in + bar_w, bottom + img_h_in + top
    fig = new_figure(fig_w, fig_h)
    ax = fig.add_axes((margin / fig_w, bottom / fig_h, img_w_in / fig_w, img_h_in / fig_h))
    ax.imshow(overlay, interpolation="nearest", extent=(0, w, h, 0))
    if mask is not None and mask.any() and not mask.all():
        ax.contour(np.arange(mask.shape[1]) + 0.5, np.arange(mask.shape[0]) + 0.5, mask.astype(float),
                   levels=[0.5], colors="#2ecc71", linewidths=0.6)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(literal(title), fontsize=FONT)
    cax = fig.add_axes(((margin + img_w_in + 0.2) / fig_w, bottom / fig_h, 0.15 / fig_w, img_h_in / fig_h))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[cmap]), cax=cax, ticks=[0, 0.5, 1])
    bar.ax.set_yticklabels(["lowest", "median", "highest"], fontsize=FONT - 1)
    bar.set_label("attention (rank within slide)", fontsize=FONT - 1)
    save(fig, path, tight=False)
    px_w, px_h = round(fig_w * DPI), round(fig_h * DPI)
    box = (round(margin / fig_w * px_w), round((top / fig_h) * px_h), round(img_w_in / fig_w * px_w),
           round(img_h_in / fig_h * px_h))
    return Heatmap(Path(path), box, overlay)


def display_mpp(slide_mpp: float, dimensions: tuple[int, int], side: int = DISPLAY_SIDE) -> float:
    """A whole multiple of the level-0 mpp at which the slide's longest side is at most ``side`` pixels."""
    return slide_mpp * max(1, math.ceil(max(dimensions) / side))


def slide_heatmap(slide: wsi.Slide, xs: np.ndarray, ys: np.ndarray, attention: np.ndarray, extent0: float,
                  path: Path, title: str, mask_options: dict | None = None) -> Heatmap:
    """Heatmap of one slide: thumbnail and tissue mask at :func:`display_mpp`, rank-normalised attention."""
    tissue = wsi.tissue_mask(slide, mpp=display_mpp(slide.mpp, slide.dimensions), **(mask_options or {}))
    raster = attention_raster(tissue.mask.shape, tissue.downsample, xs, ys, extent0, rank_normalise(attention))
    return plot_heatmap(blend(tissue.thumbnail, raster), path, title, tissue.mask)
