"""The whole-slide :class:`~pipeline.source.Embedder`: tiling (cached), batched reading, encoder.

One embedder serves every slide of a feature set, so the model is loaded once.
A slide's tissue mask and tile grid come from :mod:`pipeline.wsi.cache`, so
feature sets with the same tiling settings compute them once; tiles are read
by :mod:`pipeline.wsi.tiles` in worker processes (see :func:`reader_workers`
for how many) while the encoder runs.
With ``stain_norm`` set, tile batches are stain-normalised on the encoder's
device before the encoder's own normalisation (:mod:`pipeline.wsi.stain`),
to a reference the runner prepares first (:meth:`WsiEmbedder.prepare_stain`);
tiles the method is undefined on go in as read, and each slide's count of
them is written to ``<source>.stain.json`` beside its instances.
A slide with no tissue tile (blank, or smaller than one tile) raises
:class:`NoTissueError`, so the runner records it as failed with the reason
"no tissue tiles"; such a slide adds nothing to its patient's pooled features.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image
from tqdm.auto import tqdm

from pipeline import atomic
from pipeline.config import FeatureSet
from pipeline.image_encoders import OWN_PARAMS, Encoder, EncoderError, load_encoder
from pipeline.source import Source
from pipeline.store import FeatureSetRecord
from pipeline.wsi.cache import TileCache, TilingSettings
from pipeline.wsi.slide import Slide, SlideError, open_slide
from pipeline.wsi.stain import StainError, StainNormalizer
from pipeline.wsi.stain_reference import StainReference, prepare_reference
from pipeline.wsi.tiles import TileDataset, iter_tiles
from pipeline.wsi.tissue import tissue_mask

log = logging.getLogger("cohortlab.wsi.embedder")

# Keys of ``params`` that tune tissue detection (the rest go to timm).
MASK_PARAMS = frozenset({"mask_mpp", "saturation_threshold", "min_saturation", "min_area_um2", "max_hole_um2"})


class NoTissueError(SlideError):
    """A slide on which no tile reaches the tissue threshold."""


def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic.staged(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


class WsiEmbedder:
    """Embeds slides tile by tile with one encoder; see :func:`make_embedder`."""

    def __init__(self, fs: FeatureSet, encoder: Encoder) -> None:
        if fs.modality != "wsi":
            raise ValueError(f"feature set '{fs.name}' is modality {fs.modality!r}, not 'wsi'")
        self.fs = fs
        self.encoder = encoder
        self.mpp = fs.target_mpp()
        self.tile = int(fs.tile_size or encoder.input_size)
        if not 0 <= fs.overlap < self.tile:
            raise ValueError(f"feature set '{fs.name}': overlap {fs.overlap} must be smaller than the tile size {self.tile}")
        self.mask_options = {k: v for k, v in fs.params.items() if k in MASK_PARAMS}
        if "mask_mpp" in self.mask_options:
            self.mask_options["mpp"] = self.mask_options.pop("mask_mpp")
        self.tiling_settings = TilingSettings.of(self.mpp, self.tile, fs.overlap, fs.tissue_threshold, self.mask_options)
        self._tile_cache = TileCache(None)
        self.stain_reference: StainReference | None = None
        self._stain: StainNormalizer | None = None
        if self.tile != encoder.input_size:
            try:
                encoder.embed(np.zeros((1, self.tile, self.tile, 3), dtype=np.uint8))
            except Exception as exc:
                raise EncoderError(
                    f"feature set '{fs.name}': encoder {fs.encoder!r} does not take {self.tile}-pixel tiles "
                    f"(its input is {encoder.input_size}); leave tile_size out or pass a size the model accepts "
                    f"(e.g. params img_size or dynamic_img_size for ViTs): {exc}"
                ) from None

    def record(self) -> FeatureSetRecord:
        fs, enc = self.fs, self.encoder
        timm_kwargs = {k: v for k, v in fs.params.items() if k not in OWN_PARAMS | MASK_PARAMS}
        params: dict[str, Any] = {
            "mpp": self.mpp,
            "magnification": fs.magnification,
            "tile_size": self.tile,
            "overlap": fs.overlap,
            "tissue_threshold": fs.tissue_threshold,
            "tissue_detection": self.tissue_settings(),
            "weights_spec": fs.weights,
            "init_seed": int(fs.params.get("seed", 0)) if fs.weights == "random" else None,
            "preprocessing": enc.preprocessing(),
            "timm_kwargs": timm_kwargs,
            "pooling": list(fs.pooling),
        }
        if fs.stain_norm != "none":  # absent when off, so feature sets from before stain_norm keep their identity
            params["stain_norm"] = self._reference().provenance()
        return FeatureSetRecord(fs.name, "wsi", fs.encoder, enc.weights_id, params, enc.dim)

    def prepare_stain(
        self, candidates: list[Source], seed: int, external_centers: list[str], folder: Path, cache: Path | None = None
    ) -> StainReference | None:
        """Fit (or reuse) the stain reference before embedding; see :mod:`pipeline.wsi.stain_reference`.

        ``candidates`` are the development-centre slides; ``folder`` the feature set's instance folder.
        Nothing to do (``None``) when the feature set's ``stain_norm`` is ``"none"``.
        """
        if self.fs.stain_norm == "none":
            return None
        ref = prepare_reference(self, candidates, seed, external_centers, folder, cache)
        self.stain_reference, self._stain = ref, ref.normalizer(self.encoder.device)
        return ref

    def _reference(self) -> StainReference:
        if self.stain_reference is None:
            raise StainError(
                f"feature set '{self.fs.name}': stain_norm = {self.fs.stain_norm!r} needs its stain reference, which "
                "the embedding run fits before any slide (call prepare_stain first)"
            )
        return self.stain_reference

    def tissue_settings(self) -> dict[str, Any]:
        """Every tissue-detection setting in effect (the defaults of :func:`tissue_mask` plus overrides)."""
        defaults = {
            name: p.default
            for name, p in inspect.signature(tissue_mask).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        settings = {**defaults, **self.mask_options}
        method = "otsu-saturation" if settings.get("saturation_threshold") is None else "fixed-saturation"
        return {"method": method, **{("mask_mpp" if k == "mpp" else k): v for k, v in sorted(settings.items())}}

    def slide_for(self, source: Source) -> Slide:
        row = source.row
        override = row.get("mpp") if row.get("mpp_source") == "manifest" else None
        return open_slide(row["path"], mpp=override)

    def embed(
        self, source: Source, artifacts: Path | None = None, progress: bool = False, cache: Path | None = None
    ) -> pl.DataFrame:
        """Instance rows for one slide.

        With ``artifacts`` (a path prefix) also ``<prefix>.mask.png`` (tissue
        mask) and ``<prefix>.thumb.png`` (thumbnail); with ``cache`` (a folder
        shared by the feature sets of a store) the mask and grid are kept in
        ``<cache>/tiles`` and taken from there when another feature set made them.
        """
        t0 = time.perf_counter()
        if self.fs.stain_norm != "none":
            self._reference()
        folder = None if cache is None else Path(cache) / "tiles"
        if self._tile_cache.folder != folder:
            self._tile_cache = TileCache(folder)
        with self.slide_for(source) as slide:
            tiled = self._tile_cache.tiling(slide, self.tiling_settings, source.fingerprint, source.source_id)
            slide_mpp, dims = slide.mpp, slide.dimensions
        mask, spec, grid = tiled.mask, tiled.spec, tiled.grid
        if artifacts is not None:
            _write_png(Path(f"{artifacts}.mask.png"), (mask.mask.astype(np.uint8) * 255))
            _write_png(Path(f"{artifacts}.thumb.png"), mask.thumbnail)
        if grid.height == 0:
            raise NoTissueError(
                f"{source.row['path']}: no tissue tiles ({dims[0]}x{dims[1]} px at {slide_mpp:.4g} um/px; "
                f"tiles of {self.tile} px at {self.mpp:.4g} um/px with tissue fraction >= {self.fs.tissue_threshold})"
            )
        t_grid = time.perf_counter() - t0
        dataset = TileDataset(
            source.row["path"], slide_mpp, grid["x"].to_numpy(), grid["y"].to_numpy(), spec.level, spec.read_size,
            self.tile, self.fs.batch_size, self.encoder.resample, spec.downsample,
        )
        workers = reader_workers(self.fs, self.encoder.device.type, len(dataset))
        emb = np.empty((grid.height, self.encoder.dim), dtype=np.float32)
        unnormalised: list[int] = []  # tiles the stain normalisation could not handle, embedded as read
        bar = tqdm(total=grid.height, desc=source.source_id, unit="tile", disable=not progress, leave=False)
        for batch, idx in iter_tiles(dataset, workers, pin_memory=self.encoder.device.type == "cuda"):
            if self._stain is not None:  # on the encoder's device, before its own mean/std normalisation
                batch, failed = self._stain(batch)
                unnormalised += idx[failed.cpu()].tolist()
            emb[idx.numpy()] = self.encoder.embed(batch)
            bar.update(len(idx))
        bar.close()
        if self._stain is not None:
            if unnormalised:
                log.warning("%s: %d of %d tiles left without stain normalisation (%s undefined on them)",
                            source.source_id, len(unnormalised), grid.height, self.fs.stain_norm)
            if artifacts is not None:
                atomic.write_json(Path(f"{artifacts}.stain.json"), {
                    "method": self.fs.stain_norm, "reference_sha256": self._reference().digest, "tiles": grid.height,
                    "unnormalised": len(unnormalised), "unnormalised_instances": sorted(unnormalised),
                }, end="\n")
        if not np.isfinite(emb).all():
            raise ValueError(f"{source.row['path']}: the encoder produced non-finite features")
        log.info(
            "%s: %d tiles (level %d, read %d px -> %d px, %d reader workers) in %.1f s (mask and grid %.1f s%s)",
            source.source_id, grid.height, spec.level, spec.read_size, self.tile, workers, time.perf_counter() - t0, t_grid,
            ", cached" if tiled.grid_cached else "",
        )
        return pl.DataFrame(
            {
                "source_id": pl.Series([source.source_id] * grid.height, dtype=pl.String),
                "instance": pl.Series(np.arange(grid.height, dtype=np.int32)),
                "x": grid["x"],
                "y": grid["y"],
                "z": pl.Series([None] * grid.height, dtype=pl.Int64),
                "level": grid["level"],
                "tissue_fraction": grid["tissue_fraction"],
                "embedding": pl.Series(emb).cast(pl.List(pl.Float32)),
            }
        )

    def close(self) -> None:
        # Release the model (and its device memory) when the run moves on.
        self.encoder.model = None  # type: ignore[assignment]
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover
            pass


def reader_workers(fs: FeatureSet, device_type: str, n_batches: int) -> int:
    """Worker processes for reading one slide.

    A slide of one batch is read in process (a worker would only add its start-up).
    On CPU the default leaves the cores to the encoder's threads: workers there
    compete with the model for the same cores (measured slower end to end on two
    cores), while reading in process costs a few ms per tile next to a CNN's tens
    of ms. ``num_workers`` set explicitly in the study is used as given.
    """
    workers = fs.num_workers
    if device_type == "cpu" and "num_workers" not in fs.model_fields_set:
        import torch

        workers = min(workers, max(0, (os.cpu_count() or 1) - torch.get_num_threads()))
    return max(0, min(workers, n_batches - 1))


def encoder_options(fs: FeatureSet) -> dict[str, Any]:
    """``load_encoder`` keyword arguments from a feature set's ``params``."""
    own = {k: fs.params[k] for k in ("compile", "seed", "channels_last") if k in fs.params}
    timm_kwargs = {k: v for k, v in fs.params.items() if k not in OWN_PARAMS | MASK_PARAMS}
    return {**own, **timm_kwargs}


def make_embedder(fs: FeatureSet, device: str = "auto") -> WsiEmbedder:
    """The WSI embedder of a feature set: its encoder loaded once on ``device``."""
    encoder = load_encoder(fs.encoder, fs.weights_source(), device, **encoder_options(fs))
    return WsiEmbedder(fs, encoder)
