"""Paths of the real CT fixtures (see tests/data/SOURCES.md): pyradiomics' lung1 and brain1
with their reference feature tables, and TotalSegmentator's small CT with its segmentation."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "ct"

CASES = {
    "lung1": (DATA / "lung1_image_roi.nrrd", DATA / "lung1_label_roi.nrrd"),
    "brain1": (DATA / "brain1_image.nrrd", DATA / "brain1_label.nrrd"),
}
TS_IMAGE = DATA / "example_ct_sm.nii.gz"
TS_SEG = DATA / "example_seg.nii.gz"
LIVER = 5
