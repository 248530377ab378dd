"""CT feature sets through the real runner: ingest -> embed -> instances, embed_items, pooled features, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import store
from pipeline.config import load_config
from pipeline.ct import radiomics_features as rad
from pipeline.embed import embed
from pipeline.ingest import ingest

from ct_data import TS_IMAGE, TS_SEG

TOML = """
[study]
name = "ct_store_test"

[manifests]
patients = "patients.csv"
scans = "scans.csv"

[[feature_sets]]
name = "rad"
modality = "ct"
encoder = "radiomics"
pooling = ["mean"]

[[feature_sets]]
name = "mc3"
modality = "ct"
encoder = "mc3_18"
weights = "random"
spacing = [3.0, 3.0, 3.0]
input_size = [16, 32, 32]
pooling = ["mean", "max"]
"""


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    for f in (TS_IMAGE, TS_SEG):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "patients.csv").write_text("patient_id,center,label\nP1,A,1\nP2,A,0\n")
    # liver (5) and spleen (1) of the same scan, as two patients' ROIs
    (tmp_path / "scans.csv").write_text(
        "scan_id,patient_id,image_path,mask_path,mask_label\n"
        f"C1,P1,{TS_IMAGE.name},{TS_SEG.name},5\n"
        f"C2,P2,{TS_IMAGE.name},{TS_SEG.name},1\n"
    )
    (tmp_path / "study.toml").write_text(TOML)
    return tmp_path


def test_ct_feature_sets_land_in_the_store_and_resume(study_dir: Path):
    study = load_config(study_dir)
    ingest(study, progress=False)
    first = embed(study, device="cpu", progress=False)
    assert [(r.name, r.done, r.failed) for r in first.feature_sets] == [("rad", 2, 0), ("mc3", 2, 0)]

    con = store.connect(study.store_path, read_only=True)
    try:
        fs = {r["name"]: r for r in store.feature_sets(con).to_dicts()}
        assert fs["rad"]["dim"] == len(rad.FEATURE_NAMES) and fs["rad"]["weights"] == "none"
        assert json.loads(fs["rad"]["params"])["feature_names"] == list(rad.FEATURE_NAMES)
        params = json.loads(fs["mc3"]["params"])
        assert fs["mc3"]["weights"] == "random" and fs["mc3"]["dim"] == 512
        assert params["spacing"] == [3.0, 3.0, 3.0] and params["orientation"] == "LPS" and params["margin_mm"] == 10.0
        items = store.query(con, "SELECT feature_set, source_id, status, n_instances, path FROM embed_items ORDER BY ALL")
        assert items["status"].to_list() == ["done"] * 4 and items["n_instances"].to_list() == [1] * 4
        ids, matrix = store.read_patient_features(con, "rad", "mean")
        assert ids == ["P1", "P2"] and matrix.shape == (2, len(rad.FEATURE_NAMES))
        # the stored vector is the scan's radiomics in the recorded order
        path = study.store_path.parent / items.filter((items["feature_set"] == "rad") & (items["source_id"] == "C1"))["path"][0]
        stored = store.embeddings_matrix(pq.read_table(path).column("embedding"))[0]
        np.testing.assert_array_equal(matrix[0], stored)
        names = json.loads(fs["rad"]["params"])["feature_names"]
        volume = stored[names.index("original_shape_VoxelVolume")]
        roi = store.query(con, "SELECT roi_voxels FROM scans WHERE scan_id = 'C1'")["roi_voxels"][0]
        assert volume == pytest.approx(roi * 27.0)  # 3 mm isotropic voxels
        ids3, m3 = store.read_patient_features(con, "mc3", "max")
        assert ids3 == ["P1", "P2"] and m3.shape == (2, 512) and np.isfinite(m3).all()
    finally:
        con.close()

    again = embed(study, device="cpu", progress=False)
    assert [(r.done, r.skipped) for r in again.feature_sets] == [(0, 2), (0, 2)]
