"""The CT :class:`~pipeline.source.Embedder`: one scan in, instance rows out.

A CT feature set has one of three modes (``FeatureSet.mode``; inferred from
the encoder when left out: ``radiomics`` -> radiomics, ``r3d_18`` / ``mc3_18``
/ ``r2plus1d_18`` / ``i3d:<timm name>`` / ``monai:<network>`` -> 3d, any other
name -> a timm backbone in 2.5d):

- ``3d``: the ROI crop (oriented to LPS, resampled to ``spacing``, windowed,
  fitted to ``input_size`` (z, y, x)) goes through a 3D network; one instance
  per scan, at the crop's first voxel (x, y, z on the preprocessed grid);
- ``2.5d``: every axial slice of the crop that holds ROI, with its neighbours
  as the other two channels, goes through a timm backbone; one instance per
  slice (z = slice index on the preprocessed grid), so MIL pools slices the way
  it pools tiles;
- ``radiomics``: pyradiomics-compatible first-order, shape and GLCM features
  on the image's own grid (or resampled to ``spacing`` when given); one
  instance per scan whose embedding is the feature vector, in the order of
  ``params.feature_names`` (x, y, z: the ROI's bounding-box corner on the grid
  the features were computed on).

``tissue_fraction`` holds the share of the instance's voxels inside the ROI
(empty for radiomics).

Defaults: spacing 1 x 1 x 1 mm, window [-160, 240] HU (soft tissue, level 40
width 400), margin 10 mm, 3D input (64, 112, 112), 2.5D input the backbone's
own size, bin width 25, voxel array shift 0.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from pipeline.config import FeatureSet
from pipeline.ct import radiomics_features as rad
from pipeline.ct import volume
from pipeline.ct.encoders import (
    DEFAULT_INPUT_3D,
    VIDEO_MODELS,
    is_volume_encoder,
    load_volume_encoder,
    slice_stack,
)
from pipeline.image_encoders import OWN_PARAMS, Encoder, EncoderError, load_encoder
from pipeline.source import Source
from pipeline.store import FeatureSetRecord

log = logging.getLogger("cohortlab.ct.embedder")

MODES = ("3d", "2.5d", "radiomics")
FIT_MODES = ("resize", "pad")
# ``params`` keys this module reads; for 2.5d every other key goes to timm.
PARAMS_3D = frozenset({"seed", "fit"})
PARAMS_25D = frozenset({"fit", "channels"})
PARAMS_RADIOMICS = frozenset({"voxel_array_shift"})


def infer_mode(fs: FeatureSet) -> str:
    """The feature set's mode, from ``fs.mode`` or, when absent, from its encoder name."""
    if fs.mode is not None:
        return fs.mode
    if fs.encoder == "radiomics":
        return "radiomics"
    if is_volume_encoder(fs.encoder):
        return "3d"
    return "2.5d"


def _frame(source_id: str, xyz: np.ndarray, fraction: list[float | None], emb: np.ndarray) -> pl.DataFrame:
    n = len(emb)
    return pl.DataFrame(
        {
            "source_id": pl.Series([source_id] * n, dtype=pl.String),
            "instance": pl.Series(np.arange(n, dtype=np.int32)),
            "x": pl.Series(xyz[:, 0].astype(np.int64)),
            "y": pl.Series(xyz[:, 1].astype(np.int64)),
            "z": pl.Series(xyz[:, 2].astype(np.int64)),
            "level": pl.Series(np.zeros(n, dtype=np.int32)),
            "tissue_fraction": pl.Series(fraction, dtype=pl.Float64),
            "embedding": pl.Series(np.ascontiguousarray(emb, dtype=np.float32)).cast(pl.List(pl.Float32)),
        }
    )


def _load(source: Source) -> volume.Volume:
    row = source.row
    label = row.get("mask_label")
    return volume.load(row["image_path"], row.get("mask_path"), None if label is None else int(label))


class CtEmbedder:
    """Embeds scans for one CT feature set; see :func:`make_embedder`."""

    def __init__(self, fs: FeatureSet, device: str = "auto") -> None:
        if fs.modality != "ct":
            raise ValueError(f"feature set '{fs.name}' is modality {fs.modality!r}, not 'ct'")
        self.fs = fs
        self.mode = infer_mode(fs)
        self._check(fs)
        self.spacing = tuple(float(v) for v in fs.spacing) if fs.spacing else None
        self.window = tuple(float(v) for v in (fs.window or volume.DEFAULT_WINDOW))
        self.margin_mm = float(fs.margin_mm if fs.margin_mm is not None else volume.DEFAULT_MARGIN_MM)
        self.fit = str(fs.params.get("fit", "resize"))
        self.volume_encoder = None
        self.encoder: Encoder | None = None
        self.input_size: tuple[int, ...] | None = None
        if self.mode == "3d":
            self.volume_encoder = load_volume_encoder(fs.encoder, fs.weights_source(), device, seed=int(fs.params.get("seed", 0)))
            size = tuple(int(v) for v in (fs.input_size or DEFAULT_INPUT_3D))
            self.input_size = size * 3 if len(size) == 1 else size
        elif self.mode == "2.5d":
            timm_kwargs = {k: v for k, v in fs.params.items() if k not in PARAMS_25D}
            self.encoder = load_encoder(fs.encoder, fs.weights_source(), device, **timm_kwargs)
            size = tuple(int(v) for v in (fs.input_size or (self.encoder.input_size,)))
            self.input_size = size * 2 if len(size) == 1 else size
            self.channels = str(fs.params.get("channels", "adjacent"))
            if self.input_size != (self.encoder.input_size,) * 2:
                try:
                    self.encoder.embed(np.zeros((1, 3, *self.input_size), dtype=np.float32))
                except Exception as exc:
                    raise EncoderError(
                        f"feature set '{fs.name}': encoder {fs.encoder!r} does not take {list(self.input_size)} "
                        f"inputs (its own is {self.encoder.input_size}): {exc}"
                    ) from None
        else:
            self.bin_width = float(fs.bin_width if fs.bin_width is not None else 25.0)
            self.shift = float(fs.params.get("voxel_array_shift", 0.0))

    # --- validation -------------------------------------------------------------

    def _check(self, fs: FeatureSet) -> None:
        where = f"feature set '{fs.name}'"
        mode, set_ = self.mode, fs.model_fields_set
        if mode not in MODES:
            raise ValueError(f"{where}: mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "radiomics":
            if fs.encoder != "radiomics":
                raise ValueError(f"{where}: mode 'radiomics' needs encoder = \"radiomics\", not {fs.encoder!r}")
            wrong = sorted({"window", "margin_mm", "input_size", "weights"} & set_)
            if wrong:
                raise ValueError(f"{where}: {wrong} do not apply to radiomics (it uses the HU values inside the ROI)")
            allowed = PARAMS_RADIOMICS
        else:
            if fs.encoder == "radiomics":
                raise ValueError(f"{where}: encoder 'radiomics' needs mode 'radiomics', not {mode!r}")
            if mode == "3d" and not is_volume_encoder(fs.encoder):
                raise ValueError(
                    f"{where}: mode '3d' needs a 3D encoder ({', '.join(VIDEO_MODELS)}, i3d:<timm name> or "
                    f"monai:<network>), not {fs.encoder!r}"
                )
            if mode == "2.5d" and is_volume_encoder(fs.encoder):
                raise ValueError(f"{where}: {fs.encoder!r} is a 3D encoder; use mode '3d' (or leave mode out)")
            if fs.bin_width is not None:
                raise ValueError(f"{where}: bin_width applies to radiomics only")
            dims = (1, 3) if mode == "3d" else (1, 2)
            if fs.input_size is not None and (len(fs.input_size) not in dims or min(fs.input_size) < 8):
                shape = "(z, y, x)" if mode == "3d" else "(y, x)"
                raise ValueError(
                    f"{where}: input_size is one size or {dims[1]} sizes {shape} of at least 8 voxels, not {fs.input_size}"
                )
            if fs.params.get("fit", "resize") not in FIT_MODES:
                raise ValueError(f"{where}: params.fit must be one of {', '.join(FIT_MODES)}")
            if fs.params.get("channels", "adjacent") not in ("adjacent", "single"):
                raise ValueError(f"{where}: params.channels must be 'adjacent' or 'single'")
            if mode == "2.5d":
                return  # other params are timm keyword arguments
            allowed = PARAMS_3D
        unknown = sorted(set(fs.params) - allowed)
        if unknown:
            raise ValueError(f"{where}: unknown params {unknown} for mode '{mode}' (known: {sorted(allowed)})")

    # --- provenance ---------------------------------------------------------------

    def record(self) -> FeatureSetRecord:
        fs = self.fs
        params: dict[str, Any] = {"mode": self.mode, "pooling": list(fs.pooling)}
        if self.mode == "radiomics":
            params.update(
                classes=["firstorder", "shape", "glcm"],
                bin_width=self.bin_width,
                voxel_array_shift=self.shift,
                spacing=list(self.spacing) if self.spacing else "original",
                resampling={"image": "bspline", "mask": "nearest"} if self.spacing else None,
                orientation=volume.ORIENTATION if self.spacing else "original",
                glcm={"distance": 1, "directions": 13, "symmetric": True, "average": "mean over directions"},
                feature_names=list(rad.FEATURE_NAMES),
            )
            return FeatureSetRecord(fs.name, "ct", fs.encoder, "none", params, len(rad.FEATURE_NAMES))
        params.update(
            spacing=list(self.spacing or volume.DEFAULT_SPACING),
            window=list(self.window),
            margin_mm=self.margin_mm,
            input_size=list(self.input_size or ()),
            orientation=volume.ORIENTATION,
            resampling={"image": "bspline", "mask": "nearest"},
            fit=self.fit,
            weights_spec=fs.weights,
        )
        if self.mode == "3d":
            enc = self.volume_encoder
            assert enc is not None
            params.update(
                init_seed=int(fs.params.get("seed", 0)) if fs.weights == "random" else None,
                preprocessing=enc.preprocessing(),
            )
            if enc.load_report is not None:
                params["weights_load"] = enc.load_report  # keys of the weights file that did not fit
            return FeatureSetRecord(fs.name, "ct", fs.encoder, enc.weights_id, params, enc.dim)
        enc2 = self.encoder
        assert enc2 is not None
        params.update(
            channels=self.channels,
            init_seed=int(fs.params.get("seed", 0)) if fs.weights == "random" else None,
            preprocessing=enc2.preprocessing(),
            timm_kwargs={k: v for k, v in fs.params.items() if k not in PARAMS_25D | OWN_PARAMS},
        )
        return FeatureSetRecord(fs.name, "ct", fs.encoder, enc2.weights_id, params, enc2.dim)

    # --- embedding ----------------------------------------------------------------

    def embed(self, source: Source, progress: bool = False) -> pl.DataFrame:
        """Instance rows for one scan (raises :class:`pipeline.ct.ScanError` on a bad scan)."""
        t0 = time.perf_counter()
        vol = _load(source)
        if self.mode == "radiomics":
            frame = self._radiomics(source, vol)
        else:
            crop = volume.crop_roi(vol, self.spacing or volume.DEFAULT_SPACING, self.margin_mm)
            frame = self._volume(source, crop) if self.mode == "3d" else self._slices(source, crop, progress)
        emb = np.asarray(frame["embedding"].to_list(), dtype=np.float32)
        if not np.isfinite(emb).all():
            raise ValueError(f"{source.row['image_path']}: non-finite features")
        log.info("%s: %d instance(s) in %.2f s", source.source_id, frame.height, time.perf_counter() - t0)
        return frame

    def _volume(self, source: Source, crop: volume.Crop) -> pl.DataFrame:
        enc = self.volume_encoder
        assert enc is not None and self.input_size is not None
        x = volume.fit_to(volume.apply_window(crop.image, self.window), self.input_size, 0.0, self.fit)
        emb = enc.embed(x[None])
        return _frame(source.source_id, np.array([crop.start]), [float(crop.mask.mean())], emb)

    def _slices(self, source: Source, crop: volume.Crop, progress: bool) -> pl.DataFrame:
        enc = self.encoder
        assert enc is not None and self.input_size is not None
        images, z, fraction = slice_stack(volume.apply_window(crop.image, self.window), crop.mask, self.channels)
        emb = np.empty((len(z), enc.dim), dtype=np.float32)
        step = self.fs.batch_size
        bar = tqdm(total=len(z), desc=source.source_id, unit="slice", disable=not progress, leave=False)
        for k in range(0, len(z), step):
            batch = volume.fit_to(images[k : k + step], self.input_size, 0.0, self.fit)
            emb[k : k + step] = enc.embed(batch)
            bar.update(len(batch))
        bar.close()
        x0, y0, z0 = crop.start
        xyz = np.stack([np.full(len(z), x0), np.full(len(z), y0), z0 + z], axis=1)
        return _frame(source.source_id, xyz, [float(f) for f in fraction], emb)

    def _radiomics(self, source: Source, vol: volume.Volume) -> pl.DataFrame:
        import SimpleITK as sitk

        if vol.mask is None:
            raise volume.ScanError(f"{source.row['image_path']}: radiomics needs an ROI mask (mask_path is empty)")
        if self.spacing is not None:
            # Resample a box around the ROI (two voxels of margin) rather than the whole scan.
            crop = volume.crop_roi(vol, self.spacing, 2 * max(self.spacing))
            image, mask, spacing_zyx = crop.image, crop.mask, crop.spacing[::-1]
            start = crop.start
        else:
            image = sitk.GetArrayViewFromImage(vol.image)
            mask = sitk.GetArrayViewFromImage(vol.mask)
            spacing_zyx = vol.image.GetSpacing()[::-1]
            start = tuple(int(v) for v in np.argwhere(mask).min(axis=0)[::-1])
        try:
            values = rad.features(image, mask, spacing_zyx, bin_width=self.bin_width, voxel_array_shift=self.shift)
        except rad.RadiomicsError as exc:
            raise volume.ScanError(f"{source.row.get('mask_path')}: {exc}") from None
        emb = np.array([[values[n] for n in rad.FEATURE_NAMES]], dtype=np.float64)
        bad = [n for n, v in zip(rad.FEATURE_NAMES, emb[0]) if not np.isfinite(v)]
        if bad:
            raise volume.ScanError(f"{source.row.get('mask_path')}: radiomics features not finite on this ROI: {bad}")
        return _frame(source.source_id, np.array([start]), [None], emb.astype(np.float32))

    def close(self) -> None:
        # Release the models (and their device memory) when the run moves on.
        self.volume_encoder = None
        self.encoder = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover
            pass


def make_embedder(fs: FeatureSet, device: str = "auto") -> CtEmbedder:
    """The CT embedder of a feature set, its encoder (if any) loaded once on ``device``.

    Raises ``ValueError`` (``EncoderError``) for parameters that do not fit the mode
    or weights that cannot be loaded, before any scan is touched.
    """
    return CtEmbedder(fs, device)
