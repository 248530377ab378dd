"""Whole-slide images, in the order they are used: slide, tissue, grid, cached tiling, tile reading, embedder.

* :mod:`~pipeline.wsi.slide`: opening a slide, its mpp and pixels (:func:`open_slide`, :func:`probe_slide`);
* :mod:`~pipeline.wsi.tissue`: the tissue mask (:func:`tissue_mask`);
* :mod:`~pipeline.wsi.grid`: the tile grid at a target mpp (:func:`tile_grid`);
* :mod:`~pipeline.wsi.cache`: mask and grid computed once per slide and settings, kept on disk;
* :mod:`~pipeline.wsi.tiles`: batched tile reading in worker processes;
* :mod:`~pipeline.wsi.stain`, :mod:`~pipeline.wsi.stain_reference`: stain normalisation and its fitted reference;
* :mod:`~pipeline.wsi.embedder`: the WSI embedder the runner (:mod:`pipeline.embed`) calls.

Names are loaded from their module on first use, so ``from pipeline import wsi``
costs openslide at most, never torch (only the tile reader and the embedder need it).
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

# public name -> the submodule that defines it
_EXPORTS = {
    "MissingMppError": "slide", "Slide": "slide", "SlideError": "slide", "magnification_to_mpp": "slide",
    "open_slide": "slide", "probe_slide": "slide", "rgba_to_rgb": "slide",
    "TissueMask": "tissue", "otsu_threshold": "tissue", "saturation": "tissue", "thumbnail": "tissue",
    "tissue_mask": "tissue",
    "GridSpec": "grid", "grid_spec": "grid", "tile_grid": "grid",
    "Tiling": "cache", "TilingSettings": "cache", "tiling": "cache",
    "TileDataset": "tiles", "iter_tiles": "tiles", "resize_tile": "tiles",
    "NoTissueError": "embedder", "WsiEmbedder": "embedder", "make_embedder": "embedder",
    "StainError": "stain", "StainNormalizer": "stain", "fit_reference": "stain",
    "StainReference": "stain_reference", "prepare_reference": "stain_reference",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
