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

Inflated 3D: ``i3d:<timm name>`` (``i3d:xception41``, ``i3d:resnet50``,
``i3d:densenet121``): a 2D timm CNN inflated to 3D (:mod:`pipeline.ct.inflate`);
the crop is replicated to three channels and normalised with the 2D network's
own mean and std (timm's pretrained config); ``weights`` are the 2D network's.

MONAI 3D networks: ``monai:resnet10`` / ``18`` / ``34`` / ``50`` (MedicalNet's
layout: one input channel, 7x7x7 stem with stride 2, its shortcut types),
``monai:densenet121`` and ``monai:seresnet50``, single-channel; each crop is
z-scored over its own voxels (MedicalNet's intensity normalisation). Weights:
``"random"`` or a local MedicalNet-style file (a state dict, possibly under
``state_dict`` with ``module.`` prefixes) loaded non-strictly; the counts of
missing, unexpected and shape-mismatched keys go into the feature set's
provenance (``params.weights_load``). ``"pretrained"`` asks MONAI to download
MedicalNet's weights (resnets only).

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
MONAI_MODELS = ("resnet10", "resnet18", "resnet34", "resnet50", "densenet121", "seresnet50")
MONAI_PREFIX = "monai:"
I3D_PREFIX = "i3d:"
DEFAULT_INPUT_3D = (64, 112, 112)  # (z, y, x): 112 is the frame size the video weights were trained on

_NO_DOWNLOAD_HINT = (
    "pretrained weights could not be loaded, most likely because this machine cannot reach download.pytorch.org "
    "and the torch hub cache ($TORCH_HOME/hub/checkpoints) has no copy; use weights = \"random\" for randomly "
    "initialised weights (tests and demos only), or weights = \"/path/to/weights.pth\" for a local file"
)


def _state_dict(path: Path, drop_fc: bool = True) -> dict[str, torch.Tensor]:
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
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not (drop_fc and k.startswith("fc."))}


def is_volume_encoder(name: str) -> bool:
    """Whether ``name`` is a 3D encoder (video ResNet, ``i3d:`` or ``monai:``)."""
    return name in VIDEO_MODELS or name.startswith((I3D_PREFIX, MONAI_PREFIX))


def _monai_network(arch: str, pretrained: bool) -> torch.nn.Module:
    from monai.networks import nets
    from monai.networks.nets.resnet import resnet_params

    if arch.startswith("resnet"):
        _, _, shortcut, bias_downsample, _ = resnet_params[arch]
        # MedicalNet's layout, so its weight files fit: one channel, stride-2 7x7x7 stem, no classifier.
        return getattr(nets, arch)(
            pretrained=pretrained, spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2,
            shortcut_type=shortcut, bias_downsample=bias_downsample, feed_forward=False,
        )
    if arch == "densenet121":
        model = nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=1)
        model.class_layers.out = torch.nn.Identity()  # keep the pooled features
        return model
    model = nets.SEResNet50(spatial_dims=3, in_channels=1, num_classes=1)
    model.last_linear = torch.nn.Identity()
    return model


def load_state_report(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Load the keys of ``state`` that fit ``model``; counts of what did not, for provenance.

    Returns ``{"missing": n, "unexpected": n, "mismatched": n, "loaded": n}`` plus the
    first few names of each. Raises :class:`EncoderError` when no key fits.
    """
    own = model.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape))
    fitting = {k: v for k, v in state.items() if k in own and k not in mismatched}
    result = model.load_state_dict(fitting, strict=False)
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(result.missing_keys)
    if not fitting:
        raise EncoderError(
            f"{path}: no weight in this file fits the model ({len(unexpected)} unexpected keys, e.g. "
            f"{', '.join(unexpected[:3]) or 'none'}; {len(mismatched)} of the wrong shape)"
        )
    return {
        "loaded": len(fitting), "missing": len(missing), "unexpected": len(unexpected), "mismatched": len(mismatched),
        "missing_keys": missing[:10], "unexpected_keys": unexpected[:10], "mismatched_keys": mismatched[:10],
    }


def build_monai_model(name: str, weights: str = "random", seed: int = 0) -> tuple[torch.nn.Module, str, dict[str, Any] | None]:
    """A MONAI 3D network without classifier, its weights' provenance and the load report of a weights file.

    Returns
    -------
    (model, weights_id, load_report)
        ``weights_id`` is ``random``, ``monai:medicalnet_<arch>`` or ``file:<sha256>``;
        ``load_report`` (see :func:`load_state_report`) is None unless a file was loaded.
    """
    arch = name.removeprefix(MONAI_PREFIX)
    if arch not in MONAI_MODELS:
        raise EncoderError(f"unknown MONAI encoder {name!r}: use monai:<{' | '.join(MONAI_MODELS)}>")
    if weights == "pretrained":
        if not arch.startswith("resnet"):
            raise EncoderError(
                f"encoder {name!r}: MONAI has no 3D pretrained weights for {arch}; use weights = \"random\" "
                f"or a local weights file"
            )
        try:
            model = _monai_network(arch, True)
        except Exception as exc:  # download errors of several kinds: all mean "no usable copy here"
            raise EncoderError(
                f"encoder {name!r} (MedicalNet weights): could not be downloaded ({type(exc).__name__}: {exc}); use "
                f"weights = \"random\" (tests and demos only) or weights = \"/path/to/resnet_xx.pth\" for a local file"
            ) from None
        return model, f"monai:medicalnet_{arch}", None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _monai_network(arch, False)
    if weights == "random":
        return model, "random", None
    path = weights_file(weights, "'pretrained', 'random'")
    report = load_state_report(model, _state_dict(path, drop_fc=False), path)
    log.info("%s: loaded %d tensors from %s (%d missing, %d unexpected, %d mismatched)", name, report["loaded"],
             path, report["missing"], report["unexpected"], report["mismatched"])
    return model, f"file:{sha256_file(path)}", report


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
    in_channels: int = 3  # 3: the crop replicated and normalised with mean/std; 1: z-scored per crop
    load_report: dict[str, Any] | None = None  # counts of missing / unexpected keys of a weights file
    source: str = "torchvision Kinetics-400 transforms"  # where mean and std come from
    inflation: dict[str, Any] | None = None  # the I3D rule, for inflated 2D networks
    _scale: torch.Tensor = field(init=False, repr=False)
    _shift: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self._scale = (1.0 / std).to(self.device)
        self._shift = (-mean / std).to(self.device)

    def preprocessing(self) -> dict[str, Any]:
        if self.in_channels == 1:
            return {"normalisation": "z-score per crop (MedicalNet)", "channels": 1, "axes": "(n, 1, z, y, x)"}
        out = {"mean": list(self.mean), "std": list(self.std), "mean_std_from": self.source,
               "channels": "replicated x3", "axes": "(n, 3, z, y, x)"}
        return out if self.inflation is None else {**out, "inflation": self.inflation}

    @torch.inference_mode()
    def embed(self, volumes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features (n, dim) of windowed volumes (n, z, y, x) with values in [0, 1]."""
        x = torch.as_tensor(volumes, dtype=torch.float32)
        if x.ndim != 4:
            raise ValueError(f"expected volumes (n, z, y, x), got shape {tuple(x.shape)}")
        if self.in_channels == 1:
            x = x.to(self.device)[:, None]
            dims = (1, 2, 3, 4)
            x = (x - x.mean(dim=dims, keepdim=True)) / x.std(dim=dims, keepdim=True).clamp_min(1e-6)
        else:
            x = x.to(self.device)[:, None].expand(-1, 3, -1, -1, -1)
            x = x * self._scale + self._shift
        # cuDNN picks kernels by timing unless told otherwise; fixed kernels keep re-runs identical.
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.model(x)
        return out.float().flatten(1).cpu().numpy()


def load_volume_encoder(
    name: str, weights: str = "pretrained", device: str = "auto", seed: int = 0, probe_size: tuple[int, int, int] = (32, 32, 32)
) -> VolumeEncoder:
    """Build a 3D encoder on ``device`` (bfloat16 autocast on CUDA, float32 on CPU).

    ``name`` is a torchvision video ResNet (``r3d_18`` ...), ``i3d:<timm name>`` or
    ``monai:<network>``; see the module's description for their inputs and weights.
    """
    dev = resolve_device(device)
    extra: dict[str, Any] = {}
    if name.startswith(I3D_PREFIX):
        from pipeline.ct.inflate import INFLATION, build_inflated

        model, weights_id, cfg = build_inflated(name, weights, seed)
        extra = {"mean": tuple(float(v) for v in cfg["mean"]), "std": tuple(float(v) for v in cfg["std"]),
                 "source": str(cfg["config_source"]), "inflation": dict(INFLATION)}
    elif name.startswith(MONAI_PREFIX):
        model, weights_id, report = build_monai_model(name, weights, seed)
        extra = {"in_channels": 1, "load_report": report, "source": "z-score per crop"}
    else:
        model, weights_id = build_video_model(name, weights, seed)
    model = model.eval().requires_grad_(False).to(dev)
    enc = VolumeEncoder(model, name, weights_id, 0, dev, amp=dev.type == "cuda", **extra)
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
