"""The pipeline's sub-packages: the documented names resolve, and light imports stay light (no torch)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# the names the README and the design document promise, and where they are defined now
DOCUMENTED = {
    "pipeline.wsi": {"open_slide": "slide", "tile_grid": "grid", "tissue_mask": "tissue", "Slide": "slide",
                     "SlideError": "slide", "MissingMppError": "slide", "probe_slide": "slide"},
    "pipeline.ct": {"load": "volume", "radiomics": "volume", "Volume": "volume", "ScanError": "volume",
                    "probe_scan": "volume"},
    "pipeline.synth": {"make_study": "study", "make_patients": "study"},
}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=300)


def test_slide_and_ct_readers_and_explain_helpers_do_not_load_torch() -> None:
    code = (
        "import sys\n"
        "import analytics.explain.grouping, analytics.explain.manifest, analytics.models\n"
        "import pipeline.wsi, pipeline.ct, pipeline.synth\n"
        "from pipeline import wsi, ct\n"
        "wsi.open_slide, wsi.tile_grid, wsi.tissue_mask, wsi.TilingSettings, ct.load, ct.radiomics, ct.ScanError\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'shap', 'xgboost') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('light')\n"
    )
    done = _run(code)
    assert done.returncode == 0 and done.stdout.strip() == "light", done.stderr


def test_the_embedders_are_one_attribute_away() -> None:
    """The lazy names that need torch load it when asked for, and only then."""
    done = _run(
        "import sys\n"
        "from pipeline import wsi\n"
        "assert 'torch' not in sys.modules\n"
        "wsi.TileDataset\n"
        "assert 'torch' in sys.modules\n"
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("package", sorted(DOCUMENTED))
def test_documented_names_resolve_to_their_module(package: str) -> None:
    pkg = importlib.import_module(package)
    for name, module in DOCUMENTED[package].items():
        assert getattr(pkg, name) is getattr(importlib.import_module(f"{package}.{module}"), name)
        assert name in pkg.__all__ and name in dir(pkg)
    for name in pkg.__all__:  # every listed name exists
        assert getattr(pkg, name) is not None
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        pkg.no_such_name  # noqa: B018


def test_ct_radiomics_stays_a_function_after_its_module_is_imported() -> None:
    """``pipeline.ct.radiomics`` is the documented function; the features module has its own name."""
    import pipeline.ct.radiomics_features
    from pipeline import ct

    assert callable(ct.radiomics) and ct.radiomics.__module__ == "pipeline.ct.volume"
    assert pipeline.ct.radiomics_features.FEATURE_NAMES[0].startswith("original_")


def test_one_device_resolver() -> None:
    import torch

    from analytics.models import mil
    from pipeline import device, image_encoders
    from pipeline.ct import encoders as ct_encoders

    assert mil.resolve_device is image_encoders.resolve_device is ct_encoders.resolve_device is device.resolve_device
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert device.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(device.DeviceError, match="'tpu': use auto, cpu, cuda or cuda:N"):
        device.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(device.DeviceError, match="'cuda:1' asked for, but no CUDA GPU is available here"):
            mil.MILClassifier(device="cuda:1").fit([[[0.0, 1.0]], [[1.0, 0.0]]], [0, 1])
