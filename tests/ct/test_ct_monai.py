"""MONAI 3D networks (``monai:<network>``): dimensions, per-crop normalisation, MedicalNet-style weight files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from pipeline.config import FeatureSet
from pipeline.ct.embedder import infer_mode, make_embedder
from pipeline.ct.encoders import build_monai_model, load_volume_encoder
from pipeline.image_encoders import EncoderError


def _volumes(n: int = 2, shape: tuple[int, int, int] = (32, 32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


@pytest.fixture(scope="module")
def resnet10():
    return load_volume_encoder("monai:resnet10", "random", "cpu")


def test_resnet10_dimension_finite_and_flagged_random(resnet10):
    # MedicalNet's ResNet-10: BasicBlock, 512 channels in the last stage
    assert (resnet10.dim, resnet10.weights_id, resnet10.load_report) == (512, "random", None)
    out = resnet10.embed(_volumes())
    assert out.shape == (2, 512) and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])


def test_each_crop_is_z_scored(resnet10):
    # MedicalNet normalises each volume by its own mean and std: features ignore a gain and offset
    x = _volumes(1)
    np.testing.assert_allclose(resnet10.embed(x * 0.3 + 0.2), resnet10.embed(x), rtol=1e-4, atol=1e-5)
    assert resnet10.preprocessing()["channels"] == 1


@pytest.mark.parametrize(("name", "dim"), [("monai:densenet121", 1024), ("monai:seresnet50", 2048)])
def test_other_networks_dimension_and_finite(name, dim):
    enc = load_volume_encoder(name, "random", "cpu")
    out = enc.embed(_volumes(1))
    assert enc.dim == dim and out.shape == (1, dim) and np.isfinite(out).all()


def _medicalnet_file(tmp_path, seed: int = 1):
    """A MedicalNet-style checkpoint of a randomly initialised ResNet-10: one key removed, one renamed."""
    model, _, _ = build_monai_model("monai:resnet10", "random", seed=seed)
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    del state["module.layer4.0.conv2.weight"]  # missing from the file
    state["module.conv1.weight_renamed"] = state.pop("module.conv1.weight")  # missing and unexpected
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    return path, model


def test_medicalnet_weights_file_loads_and_counts_go_into_provenance(tmp_path):
    path, source_model = _medicalnet_file(tmp_path)
    fs = FeatureSet(name="ct_mednet", modality="ct", encoder="monai:resnet10", weights=str(path),
                    spacing=[3, 3, 3], input_size=[32, 32, 32])
    assert infer_mode(fs) == "3d"
    emb = make_embedder(fs, "cpu")
    rec = emb.record()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (rec.weights, rec.dim) == (f"file:{digest}", 512)
    load = rec.params["weights_load"]
    assert (load["missing"], load["unexpected"], load["mismatched"]) == (2, 1, 0)
    assert load["missing_keys"] == ["conv1.weight", "layer4.0.conv2.weight"]
    assert load["unexpected_keys"] == ["conv1.weight_renamed"]
    assert load["loaded"] == len(source_model.state_dict()) - 2
    # the loaded tensors are the file's, those not in it keep the seeded initialisation
    loaded = emb.volume_encoder.model.state_dict()
    torch.testing.assert_close(loaded["layer2.0.conv1.weight"], source_model.state_dict()["layer2.0.conv1.weight"])
    assert not torch.equal(loaded["conv1.weight"], source_model.state_dict()["conv1.weight"])


def test_a_file_for_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(EncoderError, match=r"other\.pt: no weight in this file fits the model \(1 unexpected"):
        load_volume_encoder("monai:resnet10", str(path), "cpu")


def test_unknown_network_and_unavailable_pretrained_weights_are_clear_errors():
    with pytest.raises(EncoderError, match=r"unknown MONAI encoder 'monai:resnet11'.*resnet10"):
        load_volume_encoder("monai:resnet11", "random", "cpu")
    with pytest.raises(EncoderError, match="MONAI has no 3D pretrained weights for densenet121"):
        load_volume_encoder("monai:densenet121", "pretrained", "cpu")
