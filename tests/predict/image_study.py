"""A tiny image study for scoring new patients' slides: synthetic H&E slides (a few 64-pixel tiles each),
embedded by a small CNN whose (random) weights are a local file, a pooled-feature SVM, a MIL model and a
ComBat-harmonised logistic on the pooled features and a clinical column; centres A and C develop, B validates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from study_builders import study_toml, write_study

from pipeline.synth.slides import SlideSpec, pyramid, render_slide, write_slide

N = 24
SPEC = SlideSpec(width=384, height=320, mpp=0.5, min_level_side=64)
FEATURE_SET = """[[feature_sets]]
name = "tiny"
modality = "wsi"
encoder = "test_resnet"
weights = "tiny.pth"
mpp = 1.0
tile_size = 64
pooling = ["mean"]
num_workers = 0
batch_size = 32
"""
MODELS = """[[models]]
name = "img_svm"
kind = "svm"
features = ["tiny:mean"]
grid = {{ C = [1.0] }}
params = {{ pca = 4 }}
[[models]]
name = "img_mil"
kind = "mil"
features = ["tiny"]
params = {{ hidden = 8, attention_dim = 4, max_epochs = 3, lr = 0.01 }}
[[models]]
name = "img_combat"
kind = "logistic"
features = ["tiny:mean"]
clinical = ["age"]
harmonize = "combat"
grid = {{ C = [0.1] }}
params = {{ pca = 3 }}
[validation]
folds = 2
n_boot = 0
[explain]
enabled = false
"""
CENTRES = ("B", "C", "A", "A")  # patient i is of centre CENTRES[i % 4]


def write_slides(folder: Path, ids: list[str], seed: int = 5) -> pl.DataFrame:
    """One small synthetic slide per patient in ``folder``; the slides manifest (paths relative to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, pid in enumerate(ids):
        rgb, _ = render_slide(np.random.default_rng([seed, i]), float(i % 5 - 2) / 2, spec=SPEC)
        write_slide(folder / f"{pid}.tif", pyramid(rgb, SPEC.min_level_side), SPEC.mpp)
        rows.append({"slide_id": f"{pid}-S1", "patient_id": pid, "path": f"{folder.name}/{pid}.tif"})
    return pl.DataFrame(rows)


def patients(n: int = N, seed: int = 11) -> pl.DataFrame:
    """Patients of centres A (development) and B (external): age and a 0/1 label."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(n)], "center": [CENTRES[i % 4] for i in range(n)],
        "age": np.round(rng.normal(60, 10, n), 1), "label": [int(i % 5 > 1) ^ int(i % 7 == 0) for i in range(n)],
    })


def write_weights(path: Path, seed: int = 0) -> Path:
    """A state dict of the feature set's encoder (random weights from ``seed``), as a local weights file."""
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    torch.save(model.state_dict(), path)
    return path


def write(root: Path) -> Path:
    """The study's files under ``root``: patients, slides, weights, ``study.toml``; its path."""
    write_weights(root / "tiny.pth")
    frame = patients()
    write_slides(root / "slides", frame["patient_id"].to_list()).write_csv(root / "slides.csv")
    sections = 'slides = "slides.csv"\n[variables]\nage = { type = "numeric", unit = "years" }\n' + \
        FEATURE_SET
    toml = study_toml("imagetest", 3, MODELS.format(), sections=sections)
    return write_study(root, frame, "c.label, c.age", toml)
