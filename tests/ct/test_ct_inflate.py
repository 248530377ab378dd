"""Inflated 3D encoders (``i3d:<timm name>``): the identical-slice property, refusals, the CT embedder.

The I3D property (Carreira and Zisserman 2017): with each 2D kernel spread evenly over
depth, a volume whose slices are all the same image gives the 2D network's activations
in every slice. Depth padding here repeats the edge slices (replicate), so the property
holds in every slice, the interior ones and the edges; it is checked layer by layer in
float64 with random weights and random batch-norm statistics (random initialisation
alone leaves batch norms as the identity and zeroes timm's last residual norm, which
would hide whole branches from the comparison).
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from pipeline.config import FeatureSet
from pipeline.ct.embedder import infer_mode, make_embedder
from pipeline.ct.encoders import load_volume_encoder
from pipeline.ct.inflate import DepthPadConv3d, inflate
from pipeline.image_encoders import EncoderError
from pipeline.source import Source

from ct_data import LIVER, TS_IMAGE, TS_SEG


def _random_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen, dtype=torch.float64) * 0.1)
    return model


# xception41's layer types (separable convolutions, entry / middle / exit blocks) in three blocks, for speed
SMALL_XCEPTION = [
    dict(in_chs=64, out_chs=128, stride=2),
    dict(in_chs=128, out_chs=128, stride=1),
    dict(in_chs=128, out_chs=(128, 192, 256), stride=1, no_skip=True, start_with_relu=False),
]


def _model2d(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    if name == "xception_small":
        from timm.models.xception_aligned import XceptionAligned

        model = XceptionAligned(block_cfg=SMALL_XCEPTION, num_classes=0)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kw)
    return _random_norms(model.double().eval())


def _outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output of every conv, norm and pooling layer, by module name."""
    out: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=name: out.setdefault(n, o))
        for name, m in model.named_modules()
        if next(m.children(), None) is None  # leaves: conv, norm, pooling, activation
    ]
    with torch.no_grad():
        model.forward_features(x)
    for h in hooks:
        h.remove()
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize(
    ("name", "kw", "size", "depth"),
    [
        ("resnet18", {}, 32, 6),  # the stride-2 stem leaves 3 slices
        ("densenet121", {}, 32, 6),  # tiny input: the 3D DenseNet is large
        ("xception_small", {}, 32, 6),
    ],
)
def test_identical_slices_give_the_2d_activations_in_every_slice(name, kw, size, depth):
    m2 = _model2d(name, **kw)
    m3 = inflate(m2, name).eval()
    s = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = s.unsqueeze(2).expand(-1, -1, depth, -1, -1).contiguous()
    out2 = _outputs(m2, s)
    out3 = {k.removeprefix("body."): o for k, o in _outputs(m3, v).items()}
    assert len(out2) > 20 and set(out2) <= set(out3)
    deep = 0
    for key, o2 in out2.items():
        o3 = out3[key]
        assert o3.ndim == o2.ndim + 1, key
        assert o3.shape[:2] == o2.shape[:2] and o3.shape[3:] == o2.shape[2:], key
        deep = max(deep, o3.shape[2])
        for z in range(o3.shape[2]):  # every slice, interior and edge
            torch.testing.assert_close(o3[:, :, z], o2, rtol=1e-5, atol=1e-5, msg=f"{name} layer {key} slice {z}")
    assert deep >= 3  # some layers keep three or more slices, so interior slices were compared
    # pooled features: the mean over (z, y, x) of identical slices is the 2D mean over (y, x)
    with torch.no_grad():
        torch.testing.assert_close(m3(v), m2.forward_features(s).mean((2, 3)), rtol=1e-5, atol=1e-5)


def test_kernels_are_spread_over_depth():
    m2 = timm.create_model("resnet18", pretrained=False, num_classes=0)
    m3 = inflate(m2, "resnet18")
    stem = m3.body.conv1
    assert isinstance(stem, DepthPadConv3d)
    assert (stem.kernel_size, stem.stride, stem.padding, stem.depth_pad) == ((7, 7, 7), (2, 2, 2), (0, 3, 3), (3, 3))
    torch.testing.assert_close(stem.weight.sum(dim=2), m2.conv1.weight)  # depth taps sum back to the 2D kernel
    torch.testing.assert_close(stem.weight[:, :, 0], m2.conv1.weight / 7)
    down = m3.body.layer2[0].downsample[0]  # a 1x1 stride-2 projection stays 1 deep
    assert (down.kernel_size, down.stride, down.depth_pad) == ((1, 1, 1), (2, 2, 2), (0, 0))
    assert isinstance(m3.body.bn1, nn.BatchNorm3d) and isinstance(m3.body.maxpool, nn.MaxPool3d)
    assert isinstance(m2.conv1, nn.Conv2d) and not isinstance(m2.conv1, nn.Conv3d)  # the 2D network is untouched


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("vit_tiny_patch16_224", "'patch_embed' (timm.layers.patch_embed.PatchEmbed)"),
        ("convnext_atto", "'stem.1' (timm.layers.norm.LayerNorm2d)"),
        ("tf_efficientnet_b0", "'conv_stem' (timm.layers.conv2d_same.Conv2dSame)"),
        ("seresnet18", "'layer1.0.se.fc1'"),  # squeeze-excitation averages over fixed axes (2, 3) in its code
    ],
)
def test_families_that_cannot_be_inflated_are_refused_naming_the_layer(name, layer):
    with pytest.raises(EncoderError) as err:
        load_volume_encoder(f"i3d:{name}", "random", "cpu")
    msg = str(err.value)
    assert f"i3d:{name}" in msg and layer in msg and "cannot be inflated" in msg and "\n" not in msg


def test_unknown_2d_name_is_refused():
    with pytest.raises(EncoderError, match="not a timm model"):
        load_volume_encoder("i3d:resnet_does_not_exist", "random", "cpu")


def test_inflated_encoder_on_a_real_ct():
    fs = FeatureSet(name="ct_i3d", modality="ct", encoder="i3d:resnet18", weights="random",
                    spacing=[3, 3, 3], input_size=[16, 32, 32])
    assert infer_mode(fs) == "3d"
    emb = make_embedder(fs, "cpu")
    rec = emb.record()
    assert (rec.encoder, rec.weights, rec.dim) == ("i3d:resnet18", "random", 512)  # random stays flagged
    pre = rec.params["preprocessing"]
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert pre["mean_std_from"] == "timm pretrained config resnet18.a1_in1k"
    assert pre["inflation"]["depth_padding"].startswith("replicate")
    frame = emb.embed(Source("CT1", "P1", "fp", {"image_path": str(TS_IMAGE), "mask_path": str(TS_SEG), "mask_label": LIVER}))
    e = np.asarray(frame["embedding"].to_list(), dtype=np.float32)
    assert e.shape == (1, 512) and np.isfinite(e).all() and e.std() > 0
    emb.close()


def test_i3d_weights_follow_the_2d_seed():
    a = load_volume_encoder("i3d:resnet18", "random", "cpu", seed=0)
    b = load_volume_encoder("i3d:resnet18", "random", "cpu", seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m2 = timm.create_model("resnet18", pretrained=False, num_classes=0)
    w = a.model.body.layer1[0].conv1.weight
    torch.testing.assert_close(w.sum(dim=2), m2.layer1[0].conv1.weight)
    assert not torch.equal(w, b.model.body.layer1[0].conv1.weight)
