"""CT encoders: 3D video ResNets on the ROI crop, and the 2.5D slice path for 2D backbones.

3D: torchvision's video ResNets, ``r3d_18`` (3D convolutions throughout),
``mc3_18`` (mixed convolutions: 3D early, 2D late) and ``r2plus1d_18``
((2+1)D factorised convolutions), from Tran et al., "A Closer Look at
Spatiotemporal Convolutions for Action Recognition", CVPR 2018. The CT crop
(windowed to [0, 1]) is replicated to three channels, normalised with the
Kinetics-400 mean and std the weights were trained with, and fed with the
z axis as the clip's time axis, (n, 3, z, y, x); the classifier (``fc``) is
replaced by the identity, so each crop gives the 512-d pooled feature.

2.5D: each axial slice that holds ROI becomes one image whose three channels
are the slices ``z - 1``, ``z`` and ``z + 1`` (the neighbours repeat the edge
slice at the border of the crop), so a 2D ImageNet backbone sees some
through-plane context; with ``channels = "single"`` the slice is repeated in
all three channels instead.

Weights: ``"pretrained"`` (the torchvision Kinetics-400 weights enum, downloaded
or from the torch hub cache), ``"random"`` (seeded, recorded as ``random``), or
a local state-dict file (``.pth``/``.pt``/``.bin``/``.safetensors``, recorded as
``file:<sha256>``; classifier keys are ignored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.device import resolve_device
from pipeline.image_encoders import EncoderError, weights_file
from pipeline.store import sha256_file

log = logging.getLogger("cohortlab.ct.encoders")

# name -> (torchvision.models.video builder, weights enum class)
VIDEO_MODELS: dict[str, tuple[str, str]] = {
    "r3d_18": ("r3d_18", "R3D_18_Weights"),
    "mc3_18": ("mc3_18", "MC3_18_Weights"),
    "r2plus1d_18": ("r2plus1d_18", "R2Plus1D_18_Weights"),
}
# Normalisation of torchvision's Kinetics-400 video weights (their transforms' mean and std).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
DEFAULT_INPUT_3D = (64, 112, 112)  # (z, y, x): 112 is the frame size the video weights were trained on

_NO_DOWNLOAD_HINT = (
    "pretrained weights could not be loaded, most likely because this machine cannot reach download.pytorch.org "
    "and the torch hub cache ($TORCH_HOME/hub/checkpoints) has no copy; use weights = \"random\" for randomly "
    "initialised weights (tests and demos only), or weights = \"/path/to/weights.pth\" for a local file"
)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a checkpoint file (unwrapping ``state_dict``/``model`` and ``module.``)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EncoderError(f"{path}: cannot read weights: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise EncoderError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items() if not k.removeprefix("module.").startswith("fc.")}


def build_video_model(name: str, weights: str = "pretrained", seed: int = 0) -> tuple[torch.nn.Module, str]:
    """A torchvision video ResNet without classifier and the provenance of its weights.

    Returns
    -------
    (model, weights_id)
        ``weights_id`` is ``torchvision:<Enum>.<member>``, ``file:<sha256>`` or ``random``.
    """
    from torchvision.models import video

    if name not in VIDEO_MODELS:
        raise EncoderError(f"unknown 3D encoder {name!r}: use one of {', '.join(VIDEO_MODELS)}")
    builder_name, enum_name = VIDEO_MODELS[name]
    builder = getattr(video, builder_name)
    enum = getattr(video, enum_name)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(weights=None)
        weights_id = "random"
    elif weights == "pretrained" or weights in enum.__members__:
        member = enum.DEFAULT if weights == "pretrained" else enum[weights]
        try:
            model = builder(weights=member)
        except Exception as exc:  # URLError, OSError, hash mismatch: all mean "no usable copy here"
            raise EncoderError(
                f"encoder {name!r} ({enum_name}.{member.name}): {_NO_DOWNLOAD_HINT}. Cause: {type(exc).__name__}: {exc}"
            ) from None
        weights_id = f"torchvision:{enum_name}.{member.name}"
    else:
        path = weights_file(weights, f"'pretrained', 'random', one of {', '.join(enum.__members__)}")
        model = builder(weights=None)
        model.fc = torch.nn.Identity()
        try:
            model.load_state_dict(_state_dict(path), strict=True)
        except RuntimeError as exc:
            raise EncoderError(f"{path}: these weights do not fit {name!r}: {exc}") from None
        weights_id = f"file:{sha256_file(path)}"
    model.fc = torch.nn.Identity()
    return model, weights_id


@dataclass
class VolumeEncoder:
    """A loaded 3D encoder: ``embed`` turns (n, z, y, x) volumes in [0, 1] into float32 features."""

    model: torch.nn.Module
    name: str
    weights_id: str
    dim: int
    device: torch.device
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    amp: bool = False
    _scale: torch.Tensor = field(init=False, repr=False)
    _shift: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self._scale = (1.0 / std).to(self.device)
        self._shift = (-mean / std).to(self.device)

    def preprocessing(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "channels": "replicated x3", "axes": "(n, 3, z, y, x)"}

    @torch.inference_mode()
    def embed(self, volumes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features (n, dim) of windowed volumes (n, z, y, x) with values in [0, 1]."""
        x = torch.as_tensor(volumes, dtype=torch.float32)
        if x.ndim != 4:
            raise ValueError(f"expected volumes (n, z, y, x), got shape {tuple(x.shape)}")
        x = x.to(self.device)[:, None].expand(-1, 3, -1, -1, -1)
        x = x * self._scale + self._shift
        # cuDNN picks kernels by timing unless told otherwise; fixed kernels keep re-runs identical.
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.model(x)
        return out.float().flatten(1).cpu().numpy()


def load_volume_encoder(
    name: str, weights: str = "pretrained", device: str = "auto", seed: int = 0, probe_size: tuple[int, int, int] = (16, 32, 32)
) -> VolumeEncoder:
    """Build a 3D video ResNet encoder on ``device`` (bfloat16 autocast on CUDA, float32 on CPU)."""
    dev = resolve_device(device)
    model, weights_id = build_video_model(name, weights, seed)
    model = model.eval().requires_grad_(False).to(dev)
    enc = VolumeEncoder(model, name, weights_id, 0, dev, amp=dev.type == "cuda")
    enc.dim = int(enc.embed(np.zeros((1, *probe_size), dtype=np.float32)).shape[1])
    log.info("3D encoder %s (%s) on %s: dim %d", name, weights_id, dev, enc.dim)
    return enc


def slice_stack(
    volume01: np.ndarray, roi: np.ndarray, channels: str = "adjacent"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axial slices that hold ROI, as 3-channel images (the 2.5D input).

    Parameters
    ----------
    volume01 : windowed crop in [0, 1], (z, y, x).
    roi : bool mask of the same shape.
    channels : ``adjacent`` (slices z-1, z, z+1; edges repeated) or ``single`` (slice z three times).

    Returns
    -------
    (images, z, roi_fraction)
        ``images`` float32 (n, 3, y, x); ``z`` the slice indices in the crop;
        ``roi_fraction`` the share of each slice's pixels inside the ROI.
    """
    if channels not in ("adjacent", "single"):
        raise ValueError(f"channels must be 'adjacent' or 'single', not {channels!r}")
    per_slice = roi.reshape(roi.shape[0], -1).mean(axis=1)
    z = np.flatnonzero(per_slice > 0)
    if channels == "adjacent":
        last = volume01.shape[0] - 1
        idx = np.stack([np.clip(z - 1, 0, last), z, np.clip(z + 1, 0, last)], axis=1)
    else:
        idx = np.stack([z, z, z], axis=1)
    return volume01[idx].astype(np.float32), z, per_slice[z]
