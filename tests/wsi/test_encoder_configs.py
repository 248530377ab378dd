"""Slide encoders take input size, mean and std from their pretrained config; HRNet as a tile encoder.

Published values: ResNet-50 224 with ImageNet statistics; InceptionV3 299 (Szegedy et al.
2016) with the Inception normalisation (mean = std = 0.5); EfficientNet-B5 456 in the
original TF weights (Tan and Le 2019), 448 in timm's default ``efficientnet_b5`` tag; ViT
(AugReg) 224 with mean = std = 0.5; HRNet 224 with ImageNet statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import FeatureSet
from pipeline.image_encoders import load_encoder, pretrained_data_config
from pipeline.wsi.embedder import WsiEmbedder

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.parametrize(
    ("name", "size", "norm", "tag"),
    [
        ("resnet50", 224, IMAGENET, "a1_in1k"),
        ("inception_v3", 299, INCEPTION, "tv_in1k"),
        ("efficientnet_b5", 448, IMAGENET, "sw_in12k_ft_in1k"),
        ("tf_efficientnet_b5", 456, IMAGENET, "ns_jft_in1k"),
        ("vit_small_patch16_224", 224, INCEPTION, "augreg_in21k_ft_in1k"),
        ("vit_base_patch16_224", 224, INCEPTION, "augreg2_in21k_ft_in1k"),
        ("hrnet_w18_small", 224, IMAGENET, "gluon_in1k"),
        ("resnet50.tv_in1k", 224, IMAGENET, "tv_in1k"),  # a tag named explicitly
    ],
)
def test_resolved_config_per_family(name, size, norm, tag):
    cfg = pretrained_data_config(name)  # read from timm's registry, no model built
    assert cfg["input_size"] == (3, size, size)
    assert cfg["mean"] == pytest.approx(norm[0]) and cfg["std"] == pytest.approx(norm[1])
    assert cfg["config_source"] == f"timm pretrained config {name.split('.')[0]}.{tag}"


@pytest.mark.parametrize("name", ["inception_v3", "vit_small_patch16_224"])
def test_encoder_preprocessing_uses_the_resolved_config(name):
    enc = load_encoder(name, "random", "cpu")  # random weights still take the pretrained tag's config
    cfg = pretrained_data_config(name)
    pre = enc.preprocessing()
    assert pre["input_size"] == cfg["input_size"][-1] and pre["interpolation"] == cfg["interpolation"]
    assert pre["mean"] == pytest.approx(cfg["mean"]) and pre["std"] == pytest.approx(cfg["std"])
    assert pre["config_source"] == cfg["config_source"]
    # an image whose every pixel is the config's mean must reach the network as zeros
    size = cfg["input_size"][-1]
    at_mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size)
    with torch.inference_mode():
        ref = enc.model(torch.zeros(1, 3, size, size)).numpy()
    np.testing.assert_allclose(enc.embed(at_mean), ref, rtol=1e-4, atol=1e-5)
    # the slide embedder tiles at the encoder's own input size and records where it came from
    fs = FeatureSet(name="t", modality="wsi", encoder=name, weights="random")
    wsi = WsiEmbedder(fs, enc)
    rec = wsi.record()
    assert wsi.tile == size and rec.params["tile_size"] == size
    assert rec.params["preprocessing"]["config_source"] == cfg["config_source"]


@pytest.fixture(scope="module")
def hrnet():
    return load_encoder("hrnet_w18_small", "random", "cpu")


def test_hrnet_tile_encoder_dimension_and_finite(hrnet):
    # timm's HRNet classification head: incre modules up to 1024 channels, then a 1x1 conv to 2048
    assert (hrnet.dim, hrnet.input_size, hrnet.weights_id) == (2048, 224, "random")
    tiles = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    out = hrnet.embed(tiles)
    assert out.shape == (2, 2048) and np.isfinite(out).all() and not np.allclose(out[0], out[1])
    fs = FeatureSet(name="t", modality="wsi", encoder="hrnet_w18_small", weights="random", tile_size=64)
    assert WsiEmbedder(fs, hrnet).tile == 64  # a small tile size is accepted
