"""Per-slice attention strips for 2.5D CT MIL, on the real lung CT crop in tests/data/ct."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from analytics.explain.attention import mil_outputs
from analytics.explain.ct_slices import roi_box, shown_slices, slice_strip
from pipeline import ct
from pipeline.ct.encoders import slice_stack

from explain_helpers import DATA

IMAGE, LABEL = DATA / "ct" / "lung1_image_roi.nrrd", DATA / "ct" / "lung1_label_roi.nrrd"
PARAMS = {"mode": "2.5d", "spacing": [1.0, 1.0, 2.0], "margin_mm": 4.0, "window": [-1000.0, 400.0]}


def test_shown_slices_keep_order_and_the_most_attended() -> None:
    a = np.zeros(20)
    a[13] = 1.0
    s = shown_slices(a, 6)
    assert 13 in s and np.all(np.diff(s) > 0) and len(s) <= 6
    np.testing.assert_array_equal(shown_slices(a[:5], 6), np.arange(5))


def test_roi_box_is_the_in_plane_bounding_box_plus_margin() -> None:
    m = np.zeros((3, 20, 30), bool)
    m[1, 5:8, 10:15] = True
    assert roi_box(m, margin=2) == (slice(3, 10), slice(8, 17))


def test_slice_strip_rejects_slices_outside_the_crop(tmp_path: Path) -> None:
    img = np.zeros((4, 10, 10), np.float32)
    with pytest.raises(ValueError, match="outside"):
        slice_strip(img, img > 0, [0, 5], np.array([0.5, 0.5]), tmp_path / "s.png", "t")


def _instances(scan: str) -> tuple[pl.DataFrame, np.ndarray]:
    """The 2.5D instances the embedder makes of the lung scan (x, y = crop start, z = crop start + slice)."""
    crop = ct.crop_roi(ct.load(IMAGE, LABEL, 1), PARAMS["spacing"], PARAMS["margin_mm"])
    _, z, _ = slice_stack(ct.apply_window(crop.image, PARAMS["window"]), crop.mask)
    x0, y0, z0 = crop.start
    att = np.linspace(0.1, 1.0, len(z))[::-1].copy()
    frame = pl.DataFrame({"patient_id": ["L1"] * len(z), "source_id": [scan] * len(z),
                          "instance": np.arange(len(z)), "x": [x0] * len(z), "y": [y0] * len(z), "z": z0 + z,
                          "split": ["external"] * len(z), "attention": att})
    return frame, z


def test_real_ct_strip_through_the_mil_outputs(tmp_path: Path) -> None:
    frame, z = _instances("L1-CT")
    sources = {"L1-CT": {"image_path": str(IMAGE), "mask_path": str(LABEL), "mask_label": 1}}
    run = mil_outputs("ctmil", frame, {"L1": "chosen"}, sources, "ct", PARAMS, tmp_path)
    assert run.notes == []
    [fig] = run.outputs.figures
    assert fig.kind == "ct_slice_attention" and fig.patient_id == "L1"
    assert fig.path == "ctmil/ct_slice_attention_L1_L1-CT.png"
    assert Image.open(tmp_path / "ct_slice_attention_L1_L1-CT.png").size[0] > 300
    saved = pl.read_parquet(tmp_path / "attention.parquet")
    assert saved.height == len(z)
    # the rank column follows the attention: the first slice was given the most attention
    assert saved.sort("instance")["rank"][0] == 1.0


def test_scan_changed_since_embedding_is_reported_not_drawn(tmp_path: Path) -> None:
    frame, _ = _instances("L1-CT")
    frame = frame.with_columns(pl.col("x") + 3)
    sources = {"L1-CT": {"image_path": str(IMAGE), "mask_path": str(LABEL), "mask_label": 1}}
    run = mil_outputs("ctmil", frame, {"L1": "chosen"}, sources, "ct", PARAMS, tmp_path)
    assert run.outputs.figures == [] and "changed since embedding" in run.notes[0]


def test_3d_features_have_no_slices_to_draw(tmp_path: Path) -> None:
    frame, _ = _instances("L1-CT")
    run = mil_outputs("ctmil", frame, {"L1": "chosen"}, {}, "ct", {**PARAMS, "mode": "3d"}, tmp_path)
    assert run.outputs.figures == [] and "no per-slice attention" in run.notes[0]
