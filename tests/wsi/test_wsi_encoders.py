"""2D encoders: dimensions, preprocessing against torchvision's transforms, weights provenance."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import timm
import torch
from torchvision.transforms import functional as TF

from pipeline.device import DeviceError
from pipeline.image_encoders import EncoderError, default_input_size, load_encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def r18():
    return load_encoder("resnet18", "random", "cpu")


def _batch(n: int = 3, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_resnet18_random_dimensions_and_provenance(r18):
    assert (r18.dim, r18.input_size, r18.weights_id) == (512, 224, "random")
    assert r18.mean == pytest.approx(IMAGENET_MEAN) and r18.std == pytest.approx(IMAGENET_STD)
    assert r18.preprocessing()["interpolation"] == "bicubic"
    assert r18.device.type == "cpu" and not r18.amp
    out = r18.embed(_batch())
    assert out.shape == (3, 512) and out.dtype == np.float32 and np.isfinite(out).all()


def test_input_size_comes_from_the_model_config():
    # published input sizes: ResNet / ViT-B/16 224, InceptionV3 299 (Szegedy et al. 2016), timm's EfficientNet-B5 448
    sizes = {n: default_input_size(n) for n in ("resnet50", "vit_base_patch16_224", "inception_v3", "efficientnet_b5")}
    assert sizes == {"resnet50": 224, "vit_base_patch16_224": 224, "inception_v3": 299, "efficientnet_b5": 448}
    enc = load_encoder("test_vit", "random", "cpu")  # timm's tiny test ViT, defined at 160 px
    assert (enc.input_size, enc.mean) == (160, pytest.approx((0.5, 0.5, 0.5)))
    assert enc.embed(_batch(1, 160)).shape == (1, enc.dim)


def test_normalisation_matches_torchvision_transforms(r18):
    batch = _batch(2)
    ref_in = torch.stack([TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD) for img in batch])
    with torch.inference_mode():
        ref = r18.model(ref_in).numpy()
    np.testing.assert_allclose(r18.embed(batch), ref, rtol=1e-4, atol=1e-5)
    # a float (n, 3, h, w) batch in [0, 1] gives the same features
    floats = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(r18.embed(floats), ref, rtol=1e-4, atol=1e-5)


def test_random_weights_are_reproducible_and_seeded(r18):
    again = load_encoder("resnet18", "random", "cpu")
    other = load_encoder("resnet18", "random", "cpu", seed=1)
    b = _batch(1, seed=3)
    np.testing.assert_array_equal(r18.embed(b), again.embed(b))
    assert not np.allclose(r18.embed(b), other.embed(b))
    # and building one does not disturb the caller's random stream
    torch.manual_seed(5)
    expect = torch.rand(3)
    torch.manual_seed(5)
    load_encoder("resnet18", "random", "cpu")
    assert torch.equal(torch.rand(3), expect)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_is_loaded_and_recorded_by_sha256(tmp_path, suffix):
    torch.manual_seed(123)
    source = timm.create_model("resnet18", pretrained=False)  # with its classifier, as checkpoints come
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    enc = load_encoder("resnet18", str(path), "cpu")
    assert enc.weights_id == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    source.reset_classifier(0)
    source.eval()
    b = _batch(2)
    with torch.inference_mode():
        ref = source(TF.normalize(torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255, IMAGENET_MEAN, IMAGENET_STD)).numpy()
    np.testing.assert_allclose(enc.embed(b), ref, rtol=1e-4, atol=1e-5)


def test_bad_weights_and_names_give_clear_errors(tmp_path):
    with pytest.raises(EncoderError, match="unknown encoder 'not_a_net'"):
        load_encoder("not_a_net", "random", "cpu")
    with pytest.raises(EncoderError, match="no such file"):
        load_encoder("resnet18", str(tmp_path / "missing.pth"), "cpu")
    wrong = tmp_path / "w.txt"
    wrong.write_text("x")
    with pytest.raises(EncoderError, match="must end in"):
        load_encoder("resnet18", str(wrong), "cpu")
    bad = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), bad)
    with pytest.raises(EncoderError, match="other.pth: cannot load these weights into ResNet 'resnet18'.*unexpected layer1.2"):
        load_encoder("resnet18", str(bad), "cpu")
    with pytest.raises(EncoderError, match="bad timm keyword"):
        load_encoder("resnet18", "random", "cpu", no_such_option=3)


def test_pretrained_without_internet_says_what_to_do(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    # an empty cache and offline mode: the same outcome as a machine without internet, without the retries
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError) as err:
        load_encoder("resnet18", "pretrained", "cpu")
    text = str(err.value)
    assert "resnet18" in text and 'weights = "random"' in text and "local file" in text


def test_cuda_asked_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        load_encoder("resnet18", "random", "cuda")
    with pytest.raises(DeviceError, match="'gpu7': use auto, cpu, cuda or cuda:N"):
        load_encoder("resnet18", "random", "gpu7")
