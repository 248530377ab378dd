"""Tiling as a step of its own: a slide's tissue mask and tile grid, computed once per settings and kept on disk.

Feature sets that share the tissue settings share the mask, and those that
also share mpp, tile size, overlap and tissue threshold share the grid,
whatever their encoders. The files live in the store's folder::

    cache/tiles/mask-<key>/settings.json               the tissue settings the key stands for
    cache/tiles/mask-<key>/<slide>.npz                 mask, thumbnail and how they were made
    cache/tiles/mask-<key>/grid-<key>/settings.json    the grid settings
    cache/tiles/mask-<key>/grid-<key>/<slide>.parquet  the grid, one row per kept tile

A key is a digest of the settings with every default filled in (``mpp = 1``
and ``mpp = 1.0``, or a default spelt out, give the same key). Each file
records the slide's fingerprint (its content and manifest mpp, see
:func:`pipeline.store.file_fingerprint`) and its key, and the grid a digest
of its rows; a file is used only when all of them match and it reads back
whole. A slide whose content changed, or a damaged or half-copied cache file,
is computed again and the file replaced (atomically, with
:mod:`pipeline.atomic`). :data:`FORMAT` is part of every key: raise it when
the mask or grid algorithm changes, so that old files are no longer used.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline import atomic, store
from pipeline.wsi.grid import GridSpec, grid_spec, tile_grid
from pipeline.wsi.slide import Slide
from pipeline.wsi.tissue import TissueMask, tissue_mask

log = logging.getLogger("cohortlab.wsi.cache")

FORMAT = 1
META = b"cohortlab.tiling"  # key of the grid Parquet's metadata
SETTINGS = "settings.json"


def _number(value: Any) -> Any:
    """Numbers as floats (TOML's ``1`` and ``1.0`` are one setting); anything else as it is."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class TilingSettings:
    """Everything a slide's mask and grid depend on besides the slide itself.

    ``mask`` holds every keyword of :func:`pipeline.wsi.tissue_mask` (defaults
    filled in); build one with :meth:`of`.
    """

    mpp: float
    tile: int
    overlap: int = 0
    tissue_threshold: float = 0.25
    mask: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, mpp: float = 0.5, tile: int = 224, overlap: int = 0, tissue_threshold: float = 0.25,
        mask: Mapping[str, Any] | None = None,
    ) -> TilingSettings:
        """Settings for tiles of ``tile`` pixels at ``mpp``; ``mask`` holds :func:`tissue_mask` keywords to override."""
        params = inspect.signature(tissue_mask).parameters
        known = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
        given = dict(mask or {})
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"unknown tissue-mask settings {unknown} (known: {sorted(known)})")
        full = {k: _number(v) for k, v in sorted({**known, **given}.items())}
        return cls(float(mpp), int(tile), int(overlap), float(tissue_threshold), full)

    def mask_key(self) -> str:
        return store.json_digest({"format": FORMAT, "tissue_mask": self.mask})[:16]

    def grid_key(self) -> str:
        grid = {"mpp": self.mpp, "tile": self.tile, "overlap": self.overlap, "tissue_threshold": self.tissue_threshold}
        return store.json_digest({"format": FORMAT, "grid": grid})[:16]


@dataclass(frozen=True)
class Tiling:
    """A slide's tissue mask, tile grid (see :func:`pipeline.wsi.tile_grid`) and grid geometry."""

    mask: TissueMask
    grid: pl.DataFrame
    spec: GridSpec
    mask_cached: bool = False  # read from the cache rather than computed
    grid_cached: bool = False


def _frame_digest(frame: pl.DataFrame) -> str:
    h = hashlib.sha256()
    for name in frame.columns:
        values = frame[name].to_numpy()
        h.update(f"{name}:{values.dtype.str}:{len(values)}\0".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def slide_fingerprint(slide: Slide) -> str:
    """The fingerprint ingest gives this slide (its content plus the manifest mpp, when there is one)."""
    return store.file_fingerprint(slide.path, slide.mpp if slide.mpp_source == "manifest" else None)


class TileCache:
    """Masks and grids under ``folder`` (``None``: computed every time, nothing kept).

    Parameters
    ----------
    folder
        The cache's root, e.g. ``<store folder>/cache/tiles``.
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._ready: set[Path] = set()  # key folders whose settings are written and temporaries removed

    def _prepare(self, folder: Path, settings: dict[str, Any]) -> Path:
        if folder not in self._ready:
            folder.mkdir(parents=True, exist_ok=True)
            atomic.remove_stale_temporaries(folder)  # what a killed run left
            if not (folder / SETTINGS).is_file():
                atomic.write_json(folder / SETTINGS, {"format": FORMAT, **settings}, indent=1, end="\n")
            self._ready.add(folder)
        return folder

    def tiling(self, slide: Slide, settings: TilingSettings, fingerprint: str | None = None, name: str | None = None) -> Tiling:
        """The mask and grid of ``slide`` under ``settings``: from the cache when there, else computed and kept.

        Parameters
        ----------
        slide
            The open slide.
        settings
            Mask and grid settings.
        fingerprint
            The slide's fingerprint as ingest stored it (default: computed from the file).
        name
            The slide's id, which names its cache files (default: the file's stem).
        """
        spec = grid_spec(slide, settings.mpp, settings.tile, settings.overlap)
        if self.folder is None:
            made = tissue_mask(slide, **settings.mask)
            return Tiling(made, tile_grid(slide, settings.mpp, settings.tile, settings.tissue_threshold, settings.overlap, mask=made), spec)
        fingerprint = fingerprint or slide_fingerprint(slide)
        stem = store.safe_name(name if name is not None else slide.path.stem)
        mask_key, grid_key = settings.mask_key(), settings.grid_key()
        mask_dir = self._prepare(self.folder / f"mask-{mask_key}", {"tissue_mask": settings.mask})
        grid_dir = self._prepare(
            mask_dir / f"grid-{grid_key}",
            {"mpp": settings.mpp, "tile": settings.tile, "overlap": settings.overlap,
             "tissue_threshold": settings.tissue_threshold},
        )
        mask_file, grid_file = mask_dir / f"{stem}.npz", grid_dir / f"{stem}.parquet"
        mask = _read_mask(mask_file, fingerprint, mask_key)
        mask_cached = mask is not None
        if mask is None:
            mask = tissue_mask(slide, **settings.mask)
            _write_mask(mask_file, mask, fingerprint, mask_key)
        grid = _read_grid(grid_file, fingerprint, grid_key)
        grid_cached = grid is not None
        if grid is None:
            grid = tile_grid(slide, settings.mpp, settings.tile, settings.tissue_threshold, settings.overlap, mask=mask)
            _write_grid(grid_file, grid, fingerprint, grid_key)
        return Tiling(mask, grid, spec, mask_cached, grid_cached)


def tiling(
    slide: Slide,
    settings: TilingSettings,
    folder: str | Path | None = None,
    fingerprint: str | None = None,
    name: str | None = None,
) -> Tiling:
    """One slide's mask and grid, kept under ``folder`` when given; see :meth:`TileCache.tiling`."""
    return TileCache(folder).tiling(slide, settings, fingerprint, name)


# --- the files ---------------------------------------------------------------------------


def _stale(path: Path, what: str) -> None:
    log.warning("%s: %s; computed again", path, what)


def _write_mask(path: Path, mask: TissueMask, fingerprint: str, key: str) -> None:
    meta = {"format": FORMAT, "fingerprint": fingerprint, "key": key, "downsample": mask.downsample, "mpp": mask.mpp,
            "saturation_threshold": mask.saturation_threshold}
    with atomic.staged(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, mask=mask.mask, thumbnail=mask.thumbnail, meta=np.array(json.dumps(meta, sort_keys=True)))


def _read_mask(path: Path, fingerprint: str, key: str) -> TissueMask | None:
    """The cached mask, or ``None`` when there is none that fits (a damaged one is logged)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:  # reading a member checks its CRC
            meta = json.loads(str(z["meta"]))
            mask, thumb = z["mask"], z["thumbnail"]
    except Exception as exc:  # any failure to read a cache file means: compute it again
        _stale(path, f"unreadable ({type(exc).__name__}: {exc})")
        return None
    if (meta.get("format"), meta.get("fingerprint"), meta.get("key")) != (FORMAT, fingerprint, key):
        _stale(path, "made for another version of the slide or other settings")
        return None
    if mask.dtype != np.bool_ or thumb.dtype != np.uint8 or thumb.shape != (*mask.shape, 3):
        _stale(path, f"unexpected arrays (mask {mask.dtype} {mask.shape}, thumbnail {thumb.dtype} {thumb.shape})")
        return None
    return TissueMask(mask=mask, thumbnail=thumb, downsample=float(meta["downsample"]), mpp=float(meta["mpp"]),
                      saturation_threshold=float(meta["saturation_threshold"]))


def _write_grid(path: Path, grid: pl.DataFrame, fingerprint: str, key: str) -> None:
    meta = {"format": FORMAT, "fingerprint": fingerprint, "key": key, "rows": grid.height, "digest": _frame_digest(grid)}
    table = grid.to_arrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META: json.dumps(meta, sort_keys=True).encode()})
    with atomic.staged(path) as tmp:
        pq.write_table(table, tmp)


def _read_grid(path: Path, fingerprint: str, key: str) -> pl.DataFrame | None:
    """The cached grid, or ``None`` when there is none that fits (a damaged one is logged)."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[META])
        grid = pl.from_arrow(table)
        assert isinstance(grid, pl.DataFrame)
        digest = _frame_digest(grid)
    except Exception as exc:  # any failure to read a cache file means: compute it again
        _stale(path, f"unreadable ({type(exc).__name__}: {exc})")
        return None
    if (meta.get("format"), meta.get("fingerprint"), meta.get("key")) != (FORMAT, fingerprint, key):
        _stale(path, "made for another version of the slide or other settings")
        return None
    if (meta.get("rows"), meta.get("digest")) != (grid.height, digest):
        _stale(path, "its rows are not the ones written")
        return None
    return grid
