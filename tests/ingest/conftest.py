"""A small real study: patients CSV, two real slides, two real CT scans."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"

PATIENTS = """patient_id,center,age,sex,esr,anti_ssa,igg,label,time,event
P1,A,54.2,F,12,positive,15.1,1,30.5,1
P2,A,61.0,F,,negative,11.0,0,48.0,0
P3,A,47.5,M,30,positive,,1,12.0,1
P4,B,70.1,F,8,negative,9.8,0,60.0,0
P5,B,39.9,F,22,positive,17.2,0,24.0,0
"""

SLIDES = """slide_id,patient_id,path,mpp
S1,P1,images/CMU-1-Small-Region.svs,
S2,P2,images/boxes.tiff,0.25
"""

SCANS = """scan_id,patient_id,image_path,mask_path,mask_label
C1,P3,images/example_ct_sm.nii.gz,images/example_seg.nii.gz,5
C2,P4,images/example_ct_sm.nii.gz,images/example_seg.nii.gz,2
"""

TOML = """
[study]
name = "ingest_test"

[manifests]
patients = "manifests/patients.csv"
slides = "manifests/slides.csv"
scans = "manifests/scans.csv"

[variables]
esr = { unit = "mm/h" }
igg = { unit = "g/L", label = "IgG" }
"""


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name in ["CMU-1-Small-Region.svs", "boxes.tiff", "unopenable.tiff", "not-a-tiff.svs", "unreadable.svs"]:
        shutil.copy(DATA / "wsi" / name, images / name)
    for name in ["example_ct_sm.nii.gz", "example_seg.nii.gz"]:
        shutil.copy(DATA / "ct" / name, images / name)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "patients.csv").write_text(PATIENTS)
    (tmp_path / "manifests" / "slides.csv").write_text(SLIDES)
    (tmp_path / "manifests" / "scans.csv").write_text(SCANS)
    (tmp_path / "study.toml").write_text(TOML)
    return tmp_path
