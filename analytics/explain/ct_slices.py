"""Per-slice attention of a 2.5D CT MIL model: the ROI's axial slices with their attention.

In 2.5D mode (:mod:`pipeline.ct.embedder`) every axial slice of the ROI crop
(oriented to LPS, resampled to the feature set's spacing) is one instance,
``z`` its index on that grid. The crop is made again here with the same
parameters, each slice is windowed as the encoder saw it and shown cut to the
ROI's in-plane bounding box with the ROI outlined; the frame and the bar
below it carry the slice's rank-normalised attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analytics.explain.heatmaps import CMAP, rank_normalise
from analytics.explain.plots import FONT, save
from analytics.figures import literal, new_figure

MAX_SLICES = 12


def shown_slices(attention: np.ndarray, max_slices: int = MAX_SLICES) -> np.ndarray:
    """Indices of the slices drawn, in slice order: all when few, else evenly spaced plus the most attended."""
    n = len(attention)
    if n <= max_slices:
        return np.arange(n)
    pick = set(np.unique(np.round(np.linspace(0, n - 1, max_slices - 1)).astype(np.int64)).tolist())
    pick.add(int(np.argmax(attention)))
    return np.array(sorted(pick), dtype=np.int64)


def roi_box(mask: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    """In-plane bounding box (rows, columns) of a (z, y, x) mask over all slices, plus ``margin`` voxels."""
    yx = np.argwhere(mask.any(axis=0))
    if len(yx) == 0:
        return slice(0, mask.shape[1]), slice(0, mask.shape[2])
    lo = np.maximum(yx.min(axis=0) - margin, 0)
    hi = np.minimum(yx.max(axis=0) + margin + 1, mask.shape[1:])
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def slice_strip(image: np.ndarray, mask: np.ndarray, z: Sequence[int], attention: np.ndarray, path: Path,
                title: str, max_slices: int = MAX_SLICES) -> tuple[Path, np.ndarray]:
    """Draw the slices ``z`` of a windowed (z, y, x) ``image`` in [0, 1] with the ROI ``mask`` outlined.

    Returns the file and the indices (into ``z``) of the slices drawn.
    """
    from matplotlib import colormaps

    z = np.asarray(z, dtype=np.int64)
    att = np.asarray(attention, dtype=np.float64)
    if len(z) != len(att) or len(z) == 0:
        raise ValueError(f"{len(z)} slices but {len(att)} attention weights")
    if z.min() < 0 or z.max() >= image.shape[0]:
        raise ValueError(f"slice indices {z.min()}..{z.max()} outside the crop's {image.shape[0]} slices")
    ranks = rank_normalise(att)
    show = shown_slices(att, max_slices)
    rows, cols = roi_box(mask)
    cmap = colormaps[CMAP]
    n = len(show)
    fig = new_figure(max(1.5 * n, 4.0), 3.6)
    grid = fig.add_gridspec(2, n, height_ratios=[2.2, 1.0], hspace=0.45)
    for c, i in enumerate(show):
        ax = fig.add_subplot(grid[0, c])
        ax.imshow(image[z[i], rows, cols], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        m = mask[z[i], rows, cols]
        if m.any() and not m.all():
            ax.contour(m.astype(float), levels=[0.5], colors="#2ecc71", linewidths=0.7)
        ax.set_xticks([])
        ax.set_yticks([])
        colour = cmap(ranks[i])
        for side in ax.spines.values():
            side.set_edgecolor(colour)
            side.set_linewidth(4)
        ax.set_title(f"z={int(z[i])}\n{att[i]:.3g}", fontsize=FONT - 2)
    bar_ax = fig.add_subplot(grid[1, :])
    order = np.argsort(z, kind="stable")
    bar_ax.bar(z[order], att[order], color=[cmap(r) for r in ranks[order]], width=0.85)
    bar_ax.set_xlabel("slice (z on the resampled grid)", fontsize=FONT - 1)
    bar_ax.set_ylabel("attention", fontsize=FONT - 1)
    bar_ax.tick_params(labelsize=FONT - 2)
    for side in ("top", "right"):
        bar_ax.spines[side].set_visible(False)
    fig.suptitle(literal(title), fontsize=FONT + 1)
    return save(fig, path), show
