"""2D image encoders from timm, shared by every modality that embeds 2D images.

``load_encoder`` builds any timm model (``resnet50``, ``inception_v3``,
``efficientnet_b5``, ``vit_base_patch16_224``, ``hrnet_w18``, ``hf-hub:`` names
such as UNI or Virchow) without its classifier (``num_classes=0``), so it
returns pooled features. Weights are one of:

- ``"pretrained"``: timm's default pretrained tag (downloaded, or from the local cache);
- ``"random"``: random initialisation from a fixed seed (for tests and demos only);
- ``"hf-hub:org/name"``: weights and config from the Hugging Face hub;
- a local ``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors`` file (recorded by its sha256).

Preprocessing comes from the model's own pretrained config (``timm.data.resolve_data_config``),
also when the weights are random or a local file: the input size (224, InceptionV3's 299,
EfficientNet-B5's 448 or 456 for ``tf_efficientnet_b5``), mean, std and interpolation,
applied tensor-side on the device and recorded with the config they came from
(:func:`pretrained_data_config` reads them without building the model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.device import resolve_device
from pipeline.errors import CohortlabError
from pipeline.store import sha256_file

log = logging.getLogger("cohortlab.image_encoders")

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# Keys of a feature set's ``params`` that are not timm keyword arguments.
OWN_PARAMS = frozenset({"compile", "seed", "channels_last"})


class EncoderError(CohortlabError, ValueError):
    """An encoder that cannot be built; the message says why and what to do."""


_NO_DOWNLOAD_HINT = (
    "pretrained weights could not be loaded, most likely because this machine cannot reach the "
    "Hugging Face hub and has no cached copy; use weights = \"random\" for randomly initialised "
    "weights (tests and demos only), or weights = \"/path/to/weights.pth\" (or .safetensors) for a local file"
)


def _create(name: str, pretrained: bool, kwargs: dict[str, Any], what: str) -> torch.nn.Module:
    import timm

    arch = name.removeprefix("hf-hub:")
    if not name.startswith("hf-hub:") and not timm.is_model(arch.split(".")[0]):
        raise EncoderError(f"unknown encoder {name!r}: not a timm model name (see timm.list_models()) nor an hf-hub: name")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as exc:
        raise EncoderError(f"encoder {name!r}: bad timm keyword argument in params: {exc}") from None
    except (OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError) or "hub" in str(exc).lower() or "connect" in str(exc).lower() or "internet" in str(exc).lower():
            raise EncoderError(f"encoder {name!r} ({what}): {_NO_DOWNLOAD_HINT}. Cause: {exc}") from None
        raise EncoderError(f"encoder {name!r} ({what}): {exc}") from None
    except Exception as exc:  # hub client errors do not share one base class
        raise EncoderError(f"encoder {name!r} ({what}): {_NO_DOWNLOAD_HINT}. Cause: {type(exc).__name__}: {exc}") from None


def build_model(name: str, weights: str = "pretrained", seed: int = 0, **timm_kwargs: Any) -> tuple[torch.nn.Module, str]:
    """A timm model without classifier and the provenance of its weights.

    Returns
    -------
    (model, weights_id)
        ``weights_id`` is ``timm:<arch>.<tag>``, ``hf-hub:<org/name>``,
        ``file:<sha256>`` or ``random``.
    """
    if weights == "random":
        # A fixed seed makes every process (shards, re-runs) build the same weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _create(name, False, timm_kwargs, "random weights")
        return model, "random"
    if weights == "pretrained":
        model = _create(name, True, timm_kwargs, "pretrained weights")
        if name.startswith("hf-hub:"):
            return model, name
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        arch = cfg.get("architecture") or name.split(".")[0]
        return model, f"timm:{arch}.{cfg['tag']}" if cfg.get("tag") else f"timm:{arch}"
    if weights.startswith("hf-hub:"):
        model = _create(weights, True, timm_kwargs, f"weights {weights}")
        return model, weights
    path = weights_file(weights, "'pretrained', 'random', an hf-hub: name")
    digest = sha256_file(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _create(name, False, timm_kwargs, f"weights {path}")
    load_weights_file(model, path)
    return model, f"file:{digest}"


def weights_file(weights: str, choices: str) -> Path:
    """The local weights file that ``weights`` names; a clear error when it names none.

    ``choices`` lists the other accepted values, for the message.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EncoderError(
            f"weights {weights!r}: no such file (weights is {choices}, or a local {'/'.join(WEIGHT_SUFFIXES)} file)"
        )
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise EncoderError(f"{path}: weights file must end in one of {', '.join(WEIGHT_SUFFIXES)}")
    return path


def load_weights_file(model: torch.nn.Module, path: Path) -> None:
    """Load a local checkpoint strictly (every backbone weight must match); classifier weights are dropped.

    Accepts timm's checkpoint layouts (plain state dict, or under ``state_dict`` /
    ``model``; ``module.`` prefixes removed) and ``.safetensors``.
    """
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as exc:
        raise EncoderError(f"{path}: cannot read weights: {type(exc).__name__}: {exc}") from None
    heads = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise EncoderError(
            f"{path}: cannot load these weights into {type(model).__name__} "
            f"'{(getattr(model, 'pretrained_cfg', {}) or {}).get('architecture', '?')}': "
            f"missing {few(result.missing_keys) or 'none'}; unexpected {few(result.unexpected_keys) or 'none'}"
        )


def default_input_size(name: str) -> int:
    """Input side of a timm model's default pretrained config, without building it (224, 299, 448 ...)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name.removeprefix("hf-hub:"))
    if cfg is None:
        raise EncoderError(f"unknown encoder {name!r}: no timm pretrained config")
    return int(cfg.input_size[-1])


def pretrained_data_config(name: str) -> dict[str, Any]:
    """Input size, mean, std and interpolation of a timm model's pretrained config, without building it.

    ``name`` is ``arch`` (its default pretrained tag) or ``arch.tag``; the values are
    those :func:`load_encoder` applies, whatever the weights (``random`` and local files
    use the config of the tag named, or of the default tag). ``config_source`` names the tag.
    """
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name.removeprefix("hf-hub:"))
    if cfg is None:
        raise EncoderError(f"unknown encoder {name!r}: no timm pretrained config")
    out = dict(resolve_data_config(pretrained_cfg=cfg.to_dict()))
    out["config_source"] = _config_source(cfg.to_dict(), name)
    return out


def _config_source(cfg: dict[str, Any], name: str) -> str:
    arch = cfg.get("architecture") or name.split(".")[0]
    if cfg.get("hf_hub_id") and name.startswith("hf-hub:"):
        return f"hf-hub config {cfg['hf_hub_id']}"
    return f"timm pretrained config {arch}.{cfg['tag']}" if cfg.get("tag") else f"timm config {arch}"


_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


@dataclass
class Encoder:
    """A loaded 2D encoder: ``embed`` turns image batches into float32 feature rows."""

    model: torch.nn.Module
    name: str
    weights_id: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    device: torch.device
    amp: bool = False  # bfloat16 autocast (CUDA)
    channels_last: bool = False
    config_source: str = ""  # the pretrained config that input size, mean and std come from
    _scale: torch.Tensor = field(init=False, repr=False)
    _shift: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add on the device
        self._scale = (1.0 / (255.0 * std)).to(self.device)
        self._shift = (-mean / std).to(self.device)

    @property
    def resample(self) -> int:
        """PIL resampling filter matching the model's interpolation."""
        return _RESAMPLE.get(self.interpolation, 2)

    def preprocessing(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "input_size": self.input_size,
            "config_source": self.config_source,
        }

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """Features of a batch, float32 (n, dim).

        ``batch`` is uint8 RGB (n, h, w, 3), or float (n, 3, h, w) already in
        [0, 1]; both are normalised with the model's mean and std here.
        """
        x = torch.as_tensor(batch)
        if x.ndim != 4:
            raise ValueError(f"expected a 4-d batch, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            if x.shape[-1] != 3:
                raise ValueError(f"uint8 batches are (n, h, w, 3) RGB, got shape {tuple(x.shape)}")
            x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = x * self._scale + self._shift
        else:
            if x.shape[1] != 3:
                raise ValueError(f"float batches are (n, 3, h, w) in [0, 1], got shape {tuple(x.shape)}")
            x = x.to(self.device, dtype=torch.float32, non_blocking=True)
            x = x * (self._scale * 255.0) + self._shift
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x)
        return out.float().flatten(1).cpu().numpy()


def load_encoder(
    name: str,
    weights: str = "pretrained",
    device: str = "auto",
    compile: bool = False,
    seed: int = 0,
    channels_last: bool | None = None,
    **timm_kwargs: Any,
) -> Encoder:
    """Build a timm encoder with its preprocessing, ready for inference.

    Parameters
    ----------
    name
        A timm model name (optionally with a tag, ``resnet50.tv_in1k``) or ``hf-hub:org/name``.
    weights
        ``pretrained``, ``random``, ``hf-hub:org/name`` or a local weights file.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. On CUDA the model runs in
        bfloat16 autocast with channels-last memory; on CPU in float32.
    compile
        Wrap the model in ``torch.compile`` (CUDA only; ignored on CPU).
    seed
        Seed of the random initialisation when ``weights == "random"``.
    timm_kwargs
        Passed to ``timm.create_model`` (e.g. UNI needs ``init_values=1e-5, dynamic_img_size=True``).
    """
    from timm.data import resolve_data_config

    dev = resolve_device(device)
    model, weights_id = build_model(name, weights, seed=seed, **timm_kwargs)
    model.eval().requires_grad_(False)
    cfg = resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    cuda = dev.type == "cuda"
    cl = cuda if channels_last is None else channels_last
    if cl:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(dev)
    enc = Encoder(
        model=model,
        name=name,
        weights_id=weights_id,
        dim=0,
        input_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        interpolation=str(cfg.get("interpolation", "bilinear")),
        device=dev,
        amp=cuda,
        channels_last=cl,
        config_source=_config_source(dict(getattr(model, "pretrained_cfg", {}) or {}), name),
    )
    # One forward pass gives the true feature width (num_features is not always it).
    enc.dim = int(enc.embed(torch.zeros((1, size, size, 3), dtype=torch.uint8)).shape[1])
    if compile and cuda:
        enc.model = torch.compile(model)  # type: ignore[assignment]
    log.info("encoder %s (%s) on %s: dim %d, input %d, %s", name, weights_id, dev, enc.dim, size, cfg.get("interpolation"))
    return enc
