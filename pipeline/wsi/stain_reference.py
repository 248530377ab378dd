"""The stain reference of a feature set: which tiles it is fitted on, the fit, and its file beside the instances.

Rule (no label is read): the candidates are the slides of the development
centres, i.e. of patients whose centre is not in ``[split] external_centers``
(all centres when none is listed). They are put in a random order drawn from
``numpy.random.default_rng([seed, STREAM])`` (``seed`` is ``[study] seed``),
and the first :data:`REFERENCE_SLIDES` that can be tiled give
``ceil(REFERENCE_TILES / slides)`` tiles each, drawn from
``default_rng([seed, STREAM, crc32(slide_id)])`` among the slide's grid tiles
with a tissue fraction of at least :data:`MIN_TISSUE` (all grid tiles when too
few reach it). Tiles are cut and resized exactly as the embedder cuts them.
A slide's draw depends only on the seed and the slide, and the same store
and seed give the same reference.

The reference is written to ``instances/feature_set=<fs>/stain_reference.json``:
method, fitted values, the settings of the rule, and every tile used (slide
id, slide fingerprint, level-0 x and y). Its digest (:attr:`StainReference.digest`)
is part of the feature set's provenance, so another reference is another
feature set. A later run reuses the file when its settings are those asked
for and every slide it used is unchanged (same fingerprint); slides added to
the store since do not refit it.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from pipeline import atomic, store
from pipeline.config import FeatureSet
from pipeline.source import Source
from pipeline.wsi.cache import TileCache, TilingSettings
from pipeline.wsi.slide import Slide
from pipeline.wsi.stain import ALPHA, BETA, IO, StainError, StainNormalizer, fit_reference
from pipeline.wsi.tiles import TileDataset

if TYPE_CHECKING:
    from pipeline.image_encoders import Encoder

log = logging.getLogger("cohortlab.wsi.stain")

REFERENCE_FILE = "stain_reference.json"
FORMAT = 1  # raise when the rule or the fit changes, so that old references are refitted
REFERENCE_SLIDES = 8
REFERENCE_TILES = 32
MIN_TISSUE = 0.75
STREAM = 0x5741  # the reference's random stream, apart from every other use of the seed


class TileCutter(Protocol):
    """What the reference needs of a WSI embedder, so that this module never imports the embedder's.

    :class:`pipeline.wsi.embedder.WsiEmbedder` is one: the reference tiles are cut exactly as it cuts them.
    """

    fs: FeatureSet  # its stain_norm (the method) and name
    tiling_settings: TilingSettings
    tile: int  # tile size in pixels, after resizing
    encoder: Encoder  # its resample

    def slide_for(self, source: Source) -> Slide: ...


@dataclass(frozen=True)
class StainReference:
    """A fitted stain reference: ``values`` as :func:`pipeline.wsi.stain.fit_reference` returns them."""

    method: str
    values: dict[str, Any]
    settings: dict[str, Any]
    tiles: list[dict[str, Any]] = field(default_factory=list)  # slide_id, fingerprint, x, y (level 0)
    fitted_with: str = ""

    def payload(self) -> dict[str, Any]:
        return {"format": FORMAT, "method": self.method, "values": self.values, "settings": self.settings,
                "tiles": self.tiles, "fitted_with": self.fitted_with}

    @property
    def digest(self) -> str:
        """sha256 of the reference's content (key order and formatting aside)."""
        return store.json_digest(self.payload())

    def provenance(self) -> dict[str, Any]:
        """What the feature set records of its reference (its identity: the digest)."""
        return {"method": self.method, "reference": REFERENCE_FILE, "reference_sha256": self.digest,
                "tiles": len(self.tiles), "slides": len({t["slide_id"] for t in self.tiles}),
                "io": IO, "alpha": ALPHA, "beta": BETA}

    def normalizer(self, device: Any = "cpu") -> StainNormalizer:
        return StainNormalizer(self.method, self.values, device)

    @classmethod
    def read(cls, path: Path) -> StainReference | None:
        """The reference stored at ``path``; ``None`` when there is none or it does not read as one."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                return None
            return cls(data["method"], data["values"], data["settings"], data["tiles"], data.get("fitted_with", ""))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write(self, path: Path) -> None:
        atomic.write_json(path, self.payload(), indent=1, end="\n", fsync=True)


def reference_settings(embedder: TileCutter, seed: int, external_centers: Sequence[str]) -> dict[str, Any]:
    """Everything the reference depends on besides the slides: method, rule, seed, tiling and reading."""
    tiling = embedder.tiling_settings
    return {
        "method": embedder.fs.stain_norm,
        "rule": "development-centre slides, seeded",
        "external_centers": sorted(external_centers),
        "seed": int(seed),
        "slides": REFERENCE_SLIDES,
        "tiles": REFERENCE_TILES,
        "min_tissue": MIN_TISSUE,
        "tiling": {"mask": tiling.mask_key(), "grid": tiling.grid_key()},
        "tile_size": embedder.tile,
        "resample": embedder.encoder.resample,
        "io": IO, "alpha": ALPHA, "beta": BETA,
    }


def slide_order(sources: Sequence[Source], seed: int) -> list[Source]:
    """The candidate slides in the rule's seeded random order (independent of the order given)."""
    ordered = sorted(sources, key=lambda s: s.source_id)
    perm = np.random.default_rng([int(seed), STREAM]).permutation(len(ordered))
    return [ordered[i] for i in perm]


def pick_tiles(grid: pl.DataFrame, k: int, seed: int, slide_id: str) -> np.ndarray:
    """Row indices (ascending) of ``k`` tiles of a slide's grid: a seeded draw among its tissue-rich tiles."""
    frac = grid["tissue_fraction"].to_numpy()
    pool = np.flatnonzero(frac >= MIN_TISSUE)
    if len(pool) < k:
        pool = np.arange(grid.height)
    rng = np.random.default_rng([int(seed), STREAM, zlib.crc32(slide_id.encode())])
    return np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False))


def collect_tiles(
    embedder: TileCutter, candidates: Sequence[Source], seed: int, cache: Path | None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The reference tiles (uint8 (k, t, t, 3)) and what they are, by the rule of the module docstring."""
    tiles: list[np.ndarray] = []
    used: list[dict[str, Any]] = []
    tile_cache = TileCache(None if cache is None else Path(cache) / "tiles")
    order = slide_order(candidates, seed)
    per_slide = math.ceil(REFERENCE_TILES / max(1, min(REFERENCE_SLIDES, len(order))))
    n_slides = 0
    for src in order:
        if n_slides == REFERENCE_SLIDES:
            break
        try:
            with embedder.slide_for(src) as slide:
                tiled = tile_cache.tiling(slide, embedder.tiling_settings, src.fingerprint, src.source_id)
                slide_mpp = slide.mpp
            if tiled.grid.height == 0:
                continue
            rows = pick_tiles(tiled.grid, per_slide, seed, src.source_id)
            xs, ys = tiled.grid["x"].to_numpy()[rows], tiled.grid["y"].to_numpy()[rows]
            spec = tiled.spec
            data = TileDataset(src.row["path"], slide_mpp, xs, ys, spec.level, spec.read_size, embedder.tile,
                               len(rows), embedder.encoder.resample, spec.downsample)
            try:
                tiles.append(data.read_batch(0, len(rows)))
            finally:
                data.close()
        except Exception as exc:  # a broken slide is skipped: the next one in the seeded order stands in
            log.warning("stain reference: slide %s skipped: %s", src.source_id, exc)
            continue
        used += [{"slide_id": src.source_id, "fingerprint": src.fingerprint, "x": int(x), "y": int(y)}
                 for x, y in zip(xs, ys)]
        n_slides += 1
    if not tiles:
        raise StainError(f"no tissue tile on any of the {len(candidates)} development-centre slide(s) "
                         "to fit the stain reference on")
    return np.concatenate(tiles), used


def prepare_reference(
    embedder: TileCutter, candidates: Sequence[Source], seed: int, external_centers: Sequence[str],
    folder: Path, cache: Path | None = None,
) -> StainReference:
    """The feature set's stain reference: the one in ``folder`` when still valid, else fitted and written there.

    Parameters
    ----------
    embedder
        The feature set's WSI embedder (its tiling, tile size and resampling cut the tiles).
    candidates
        The development-centre slides (every slide of the store outside the external centres).
    seed
        The study's seed.
    external_centers
        ``[split] external_centers`` (recorded in the settings).
    folder
        The feature set's instance folder.
    cache
        The store's cache folder (tissue masks and grids are shared with the embedding).
    """
    import torchstain

    method = embedder.fs.stain_norm
    settings = reference_settings(embedder, seed, external_centers)
    path = Path(folder) / REFERENCE_FILE
    old = StainReference.read(path)
    if old is not None and old.settings == settings:
        current = {s.source_id: s.fingerprint for s in candidates}
        if all(current.get(t["slide_id"]) == t["fingerprint"] for t in old.tiles):
            log.info("stain reference of %s reused from %s (%s)", embedder.fs.name, path, old.digest[:12])
            return old
        log.info("stain reference of %s: a slide it used has changed or gone; fitting it again", embedder.fs.name)
    if not candidates:
        raise StainError("no development-centre slide to fit the stain reference on "
                         f"(every slide's patient is at an external centre: {sorted(external_centers)})")
    tiles, used = collect_tiles(embedder, candidates, seed, cache)
    values = fit_reference(method, tiles)
    ref = StainReference(method, values, settings, used, f"torchstain {torchstain.__version__}")
    ref.write(path)
    log.info("stain reference of %s (%s) fitted on %d tiles of %d slides: %s", embedder.fs.name, method,
             len(used), len({t["slide_id"] for t in used}), path)
    return ref
