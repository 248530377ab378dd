"""CT volumes, in the order they are used: volume, encoders, radiomics features, embedder.

* :mod:`~pipeline.ct.volume`: reading a scan and its mask, probing, cropping and windowing
  (:func:`load`, :func:`probe_scan`, :func:`crop_roi`), and :func:`radiomics` for one ROI;
* :mod:`~pipeline.ct.encoders`: 3D encoders (video ResNets, ``i3d:``, ``monai:``) and the 2.5D slice stack;
* :mod:`~pipeline.ct.inflate`: 2D timm CNNs inflated to 3D (I3D);
* :mod:`~pipeline.ct.radiomics_features`: first-order, shape and GLCM features with pyradiomics' definitions;
* :mod:`~pipeline.ct.embedder`: the CT embedder the runner (:mod:`pipeline.embed`) calls.

Names are loaded from their module on first use, so ``from pipeline import ct``
costs SimpleITK at most, never torch (only the encoders and the embedder need it).
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

# public name -> the submodule that defines it
_EXPORTS = {
    "DEFAULT_MARGIN_MM": "volume", "DEFAULT_SPACING": "volume", "DEFAULT_WINDOW": "volume", "ORIENTATION": "volume",
    "Crop": "volume", "ScanError": "volume", "Volume": "volume", "apply_window": "volume", "crop_roi": "volume",
    "fit_to": "volume", "load": "volume", "orient": "volume", "probe_scan": "volume", "radiomics": "volume",
    "read_image": "volume",
    "VolumeEncoder": "encoders", "build_video_model": "encoders", "load_volume_encoder": "encoders",
    "slice_stack": "encoders", "build_monai_model": "encoders", "is_volume_encoder": "encoders",
    "build_inflated": "inflate",
    "FEATURE_NAMES": "radiomics_features", "RadiomicsError": "radiomics_features",
    "CtEmbedder": "embedder", "infer_mode": "embedder", "make_embedder": "embedder",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
