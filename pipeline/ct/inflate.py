"""Inflated 3D encoders (I3D): a 2D timm CNN turned into a 3D one, ``encoder = "i3d:<timm name>"``.

Carreira and Zisserman, "Quo Vadis, Action Recognition? A New Model and the
Kinetics Dataset", CVPR 2017: every 2D layer is replaced by its 3D counterpart
and every 2D kernel ``w`` (kh x kw) is repeated ``kt`` times along depth and
divided by ``kt``, so a volume made of identical slices gives, in every slice,
the activations the 2D network gives on that slice.

Rules (depth = the volume's z axis, the first spatial axis):

- ``Conv2d`` -> ``Conv3d`` with depth kernel ``kt = min(kh, kw)`` (3x3 -> 3x3x3,
  7x7 -> 7x7x7, 1x1 and 1x7 / 7x1 -> depth 1), depth stride ``min(sh, sw)``,
  depth dilation ``min(dh, dw)``; weights ``w / kt`` repeated ``kt`` times.
- ``BatchNorm2d`` (and timm's ``BatchNormAct2d``) -> the same statistics on 5-d input.
- ``MaxPool2d`` / ``AvgPool2d`` -> ``MaxPool3d`` / ``AvgPool3d`` with the same rule for
  the depth kernel and stride; ``AdaptiveAvg/MaxPool2d`` -> 3D with depth output 1
  (or the depth kept when the 2D output is not 1 x 1); ``Upsample`` -> depth scaled
  as height (bilinear -> trilinear).
- Padding: height and width keep the 2D padding (zeros); depth is padded with
  ``kt - 1`` copies of the edge slices (replicate padding, the extra one at the end
  for even ``kt``), so depth shrinks only by the stride. With replicate padding a
  volume of identical slices stays constant along depth through every layer, so the
  2D activations are reproduced in *every* slice, the edge slices included.
- The classifier head is dropped; the features are ``forward_features`` averaged
  over (z, y, x).

A network with a layer that has no 3D counterpart (attention, ``LayerNorm``,
a patch embedding, ``Linear`` layers in the body, a TF-"same" or weight-standardised
convolution) is refused with an :class:`~pipeline.image_encoders.EncoderError` naming
the layer. Blocks that compute over fixed 2D axes in their own code (for example a
squeeze-excitation ``x.mean((2, 3))``) cannot be seen from the module types, so
:func:`check_inflation` runs the identical-slice property on a small input after
inflating and names the first layer whose 3D output departs from its 2D output.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.layers.norm_act import BatchNormAct2d
from torch import nn

from pipeline.image_encoders import EncoderError

PREFIX = "i3d:"
# Module types with no 3D counterpart: their presence means the family cannot be inflated.
_REFUSED_NAMES = ("Attention", "PatchEmbed", "LayerNorm", "Linear", "MultiheadAttention", "PosEmbed", "RmsNorm")


# How a 2D network becomes 3D, recorded with the feature set.
INFLATION = {
    "method": "I3D (Carreira and Zisserman 2017)",
    "depth_kernel": "min(kh, kw)", "depth_stride": "min(sh, sw)",
    "weights": "2D kernel / kt repeated kt times along depth",
    "depth_padding": "replicate (edge slices repeated)", "spatial_padding": "as in 2D (zeros)",
    "features": "forward_features averaged over (z, y, x)",
}


def _depth_pad(kt: int, dt: int) -> tuple[int, int]:
    total = (kt - 1) * dt
    return total // 2, total - total // 2


class _DepthPad:
    """Replicate-pads the depth axis by ``depth_pad`` (front, back) before the 3D operation."""

    depth_pad: tuple[int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth_pad[0] or self.depth_pad[1]:
            x = F.pad(x, (0, 0, 0, 0, *self.depth_pad), mode="replicate")
        return super().forward(x)  # type: ignore[misc]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, depth_pad={self.depth_pad} (replicate)"  # type: ignore[misc]


class DepthPadConv3d(_DepthPad, nn.Conv3d):
    """``Conv3d`` whose depth padding repeats the edge slices (height and width padded as in 2D)."""


class DepthPadMaxPool3d(_DepthPad, nn.MaxPool3d):
    """``MaxPool3d`` with replicate padding along depth."""


class DepthPadAvgPool3d(_DepthPad, nn.AvgPool3d):
    """``AvgPool3d`` with replicate padding along depth (so edge slices are not averaged with zeros)."""


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv(m: nn.Conv2d) -> DepthPadConv3d:
    kh, kw = m.kernel_size
    sh, sw = _pair(m.stride)
    dh, dw = _pair(m.dilation)
    if isinstance(m.padding, str):
        raise EncoderError(f"padding={m.padding!r}")  # caught and named by the caller
    ph, pw = _pair(m.padding)
    kt, st, dt = min(kh, kw), min(sh, sw), min(dh, dw)
    if m.padding_mode != "zeros":
        raise EncoderError(f"padding_mode={m.padding_mode!r}")
    conv = DepthPadConv3d(
        m.in_channels, m.out_channels, (kt, kh, kw), stride=(st, sh, sw), padding=(0, ph, pw),
        dilation=(dt, dh, dw), groups=m.groups, bias=m.bias is not None,
        device=m.weight.device, dtype=m.weight.dtype,
    )
    conv.depth_pad = _depth_pad(kt, dt)
    with torch.no_grad():
        # Spread the 2D kernel evenly over depth: on identical slices the depth taps sum back to it.
        conv.weight.copy_(m.weight.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt)
        if m.bias is not None:
            conv.bias.copy_(m.bias)  # type: ignore[union-attr]
    conv.train(m.training)
    return conv


def _maxpool(m: nn.MaxPool2d) -> DepthPadMaxPool3d:
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = _pair(m.padding)
    dh, dw = _pair(m.dilation)
    kt, st, dt = min(kh, kw), min(sh, sw), min(dh, dw)
    pool = DepthPadMaxPool3d((kt, kh, kw), (st, sh, sw), (0, ph, pw), (dt, dh, dw), m.return_indices, m.ceil_mode)
    pool.depth_pad = _depth_pad(kt, dt)
    return pool


def _avgpool(m: nn.AvgPool2d) -> DepthPadAvgPool3d:
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = _pair(m.padding)
    kt, st = min(kh, kw), min(sh, sw)
    if m.divisor_override is not None:
        raise EncoderError(f"divisor_override={m.divisor_override}")
    pool = DepthPadAvgPool3d((kt, kh, kw), (st, sh, sw), (0, ph, pw), m.ceil_mode, m.count_include_pad)
    pool.depth_pad = _depth_pad(kt, 1)
    return pool


def _adaptive(m: nn.Module, cls: type[nn.Module]) -> nn.Module:
    size = m.output_size  # type: ignore[attr-defined]
    oh, ow = (size, size) if isinstance(size, int) or size is None else size
    # A global pool stays global; a pool to a grid keeps the depth (None = input size).
    return cls((1 if (oh, ow) == (1, 1) else None, oh, ow))


def _upsample(m: nn.Upsample) -> nn.Upsample:
    mode = {"bilinear": "trilinear", "bicubic": "trilinear"}.get(m.mode, m.mode)
    if m.mode == "bicubic":
        raise EncoderError("mode='bicubic' (no 3D bicubic interpolation)")
    size = m.size
    if size is not None:
        h, w = _pair(size)
        raise EncoderError(f"a fixed output size {(h, w)} (no depth counterpart)")
    scale = m.scale_factor
    sh, sw = (scale, scale) if isinstance(scale, (int, float)) else scale  # type: ignore[misc]
    return nn.Upsample(scale_factor=(float(min(sh, sw)), float(sh), float(sw)), mode=mode,
                       align_corners=m.align_corners if mode != "nearest" else None)


class BatchNormAct3d(BatchNormAct2d):
    """timm's ``BatchNormAct2d`` (batch norm, dropout, activation) on 5-d input; it refuses 5-d itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        x = F.batch_norm(
            x, self.running_mean if keep else None, self.running_var if keep else None, self.weight, self.bias,
            use_batch, 0.0 if self.momentum is None else self.momentum, self.eps,
        )
        return self.act(self.drop(x))


def _convert(module: nn.Module, prefix: str, name: str) -> None:
    for child_name, child in list(module.named_children()):
        path = f"{prefix}{child_name}"
        kind = type(child)
        try:
            if kind is nn.Conv2d:
                new: nn.Module = _conv(child)
            elif kind is nn.BatchNorm2d:
                child.__class__ = nn.BatchNorm3d  # same parameters and statistics, 5-d input
                new = child
            elif kind is BatchNormAct2d:
                child.__class__ = BatchNormAct3d
                new = child
            elif kind is nn.MaxPool2d:
                new = _maxpool(child)
            elif kind is nn.AvgPool2d:
                new = _avgpool(child)
            elif kind is nn.AdaptiveAvgPool2d:
                new = _adaptive(child, nn.AdaptiveAvgPool3d)
            elif kind is nn.AdaptiveMaxPool2d:
                new = _adaptive(child, nn.AdaptiveMaxPool3d)
            elif kind is nn.Upsample:
                new = _upsample(child)
            elif isinstance(child, SelectAdaptivePool2d):
                new = nn.Identity()  # the head's pooling: features are pooled over (z, y, x) instead
            else:
                refused = [n for n in _REFUSED_NAMES if n.lower() in kind.__name__.lower()]
                leaf = next(child.children(), None) is None
                # Subclasses of 2D layers (TF-"same", weight-standardised convolutions ...) and other
                # 2D leaves change the computation in ways inflation cannot follow.
                if refused or isinstance(child, (nn.Conv2d, nn.BatchNorm2d)) or (leaf and "2d" in kind.__name__.lower()):
                    raise EncoderError("no 3D counterpart")
                new = child
        except EncoderError as exc:
            raise EncoderError(
                f"encoder '{PREFIX}{name}': layer '{path}' ({kind.__module__}.{kind.__name__}) cannot be inflated: "
                f"{exc}; i3d: takes CNNs built from Conv2d, BatchNorm2d and pooling (e.g. resnet50, xception41, "
                f"densenet121), not attention / LayerNorm / ViT families"
            ) from None
        if new is child and not isinstance(child, (nn.BatchNorm3d, BatchNormAct3d)):
            _convert(child, path + ".", name)  # a container: convert what it holds
        else:
            setattr(module, child_name, new)


class Inflated3d(nn.Module):
    """An inflated timm network: ``(n, 3, z, y, x)`` -> features ``(n, c)`` averaged over (z, y, x)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3, 4))


def inflate(model2d: nn.Module, name: str = "model") -> Inflated3d:
    """The 3D copy of a 2D timm network (the 2D one is left as it is).

    Raises
    ------
    EncoderError
        A layer with no 3D counterpart; the message names it.
    """
    if not hasattr(model2d, "forward_features"):
        raise EncoderError(f"encoder '{PREFIX}{name}': {type(model2d).__name__} has no forward_features (not a timm model)")
    body = copy.deepcopy(model2d)
    _convert(body, "", name)
    return Inflated3d(body)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm random affine parameters and statistics (in place; returns ``model``).

    Random initialisation leaves batch norms as the identity and timm zero-initialises the
    last one of each residual block, which would hide a residual branch from a comparison.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


@torch.inference_mode()
def check_inflation(model2d: nn.Module, name: str, size: int = 96, depth: int = 2, rtol: float = 1e-4) -> None:
    """Check the identical-slice property on a small random input; name the first layer that breaks it.

    A copy of the 2D network with random batch-norm parameters (:func:`randomize_norms`) is
    inflated; a slice ``s`` (1, 3, size, size) repeated ``depth`` times must give, in every output
    slice, the 2D copy's ``forward_features(s)``. ``rtol`` is relative to the largest 2D activation.
    """
    model2d = randomize_norms(copy.deepcopy(model2d).cpu().float().eval())
    model3d = inflate(model2d, name).eval()
    gen = torch.Generator().manual_seed(0)
    s = torch.rand((1, 3, size, size), generator=gen)
    v = s.unsqueeze(2).expand(-1, -1, depth, -1, -1).contiguous()
    out2 = model2d.forward_features(s)
    try:
        out3 = model3d.forward_features(v)
    except RuntimeError as exc:
        raise EncoderError(
            f"encoder '{PREFIX}{name}': the inflated network fails on a {tuple(v.shape)} volume of identical "
            f"slices ({str(exc).splitlines()[0]}); this family cannot be inflated"
        ) from None
    if _same(out2, out3, rtol):
        return
    # Find the first layer (in completion order) whose output departs from its 2D counterpart.
    seen2: dict[str, torch.Tensor] = {}
    order3: list[tuple[str, torch.Tensor]] = []
    hooks = []
    for mname, mod in model2d.named_modules():
        if mname:
            hooks.append(mod.register_forward_hook(lambda _m, _i, o, n=mname: seen2.setdefault(n, o)))
    for mname, mod in model3d.body.named_modules():
        if mname:
            hooks.append(mod.register_forward_hook(lambda _m, _i, o, n=mname: order3.append((n, o))))
    try:
        model2d.forward_features(s)
        model3d.forward_features(v)
    finally:
        for h in hooks:
            h.remove()
    culprit = "the network's own forward code (no single layer departs)"
    for mname, o3 in order3:
        o2 = seen2.get(mname)
        if isinstance(o2, torch.Tensor) and isinstance(o3, torch.Tensor) and not _same(o2, o3, rtol):
            culprit = f"layer '{mname}' ({type(model3d.body.get_submodule(mname)).__name__})"
            break
    raise EncoderError(
        f"encoder '{PREFIX}{name}': on a volume of identical slices the first output that departs from the 2D "
        f"network's is that of {culprit}: a block computes over fixed 2D axes in its own code (e.g. a "
        f"squeeze-excitation x.mean((2, 3))); this family cannot be inflated"
    )


def _same(out2: torch.Tensor, out3: torch.Tensor, rtol: float) -> bool:
    if out3.ndim != out2.ndim + 1 or out3.shape[:2] != out2.shape[:2] or out3.shape[3:] != out2.shape[2:]:
        return False
    ref = out2.float().unsqueeze(2).expand_as(out3)
    scale = float(ref.abs().max()) or 1.0
    return bool(((out3.float() - ref).abs().max() <= rtol * scale).item())


def build_inflated(name: str, weights: str = "pretrained", seed: int = 0, check: bool = True) -> tuple[Inflated3d, str, dict[str, Any]]:
    """An inflated timm encoder, its weights' provenance and its 2D preprocessing config.

    ``weights`` is that of the 2D network (``pretrained``, ``random``, ``hf-hub:``
    or a local 2D weights file); the 3D weights follow from it by inflation.

    Returns
    -------
    (model, weights_id, data_config)
        ``weights_id`` is the 2D network's (see :data:`INFLATION` for the rule); ``data_config`` is
        timm's resolved config (``mean``, ``std``, ``input_size``) of the 2D network,
        with ``config_source`` naming the pretrained config it comes from.
    """
    from timm.data import resolve_data_config

    from pipeline.image_encoders import build_model

    arch = name.removeprefix(PREFIX)
    if not arch:
        raise EncoderError(f"encoder {name!r}: write i3d:<timm model name>, e.g. i3d:resnet50")
    model2d, weights_id = build_model(arch, weights, seed=seed)
    model2d.eval().requires_grad_(False)
    if check:
        check_inflation(model2d, arch)
    model3d = inflate(model2d, arch).eval().requires_grad_(False)
    cfg = dict(resolve_data_config({}, model=model2d))
    pcfg = getattr(model2d, "pretrained_cfg", {}) or {}
    arch2d = pcfg.get("architecture") or arch
    cfg["config_source"] = f"timm pretrained config {arch2d}.{pcfg['tag']}" if pcfg.get("tag") else f"timm {arch2d}"
    # The weights' provenance is the 2D network's ("random" stays flagged as random); inflation is a fixed rule.
    return model3d, weights_id, cfg
