"""A study folder copied or moved elsewhere: ingest writes nothing, embed does nothing, only its own files are read."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import SimpleITK as sitk
from integrity_helpers import copy_study, pooled, tables

from analytics.cohort import load_cohort
from analytics.fit import fit
from pipeline import store
from pipeline.config import load_config
from pipeline.embed import embed, list_sources
from pipeline.ingest import ingest


def _text_cells(path: Path) -> list[str]:
    """Every text value (and text list element) in every table of a store."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        cols = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND (data_type = 'VARCHAR' OR data_type = 'VARCHAR[]' OR data_type = 'JSON')"
        ).fetchall()
        out: list[str] = []
        for table, col in cols:
            for (v,) in con.execute(f'SELECT "{col}" FROM "{table}" WHERE "{col}" IS NOT NULL').fetchall():
                out += [str(x) for x in v] if isinstance(v, list) else [str(v)]
        return out
    finally:
        con.close()


@pytest.mark.parametrize("keep_times", [True, False], ids=["copytree", "cp-r"])
def test_moved_study_does_no_work_and_reads_only_its_own_files(embedded: Path, tmp_path: Path, keep_times: bool) -> None:
    original = copy_study(embedded, tmp_path / "original")
    before = tables(original)
    moved = copy_study(original, tmp_path / "elsewhere" / "moved", keep_times=keep_times)
    shutil.rmtree(original)  # the copy must not need it

    study = load_config(moved)
    result = ingest(study, progress=False)
    assert not result.changed, str(result)
    after = tables(moved)
    for name, frame in before.items():
        assert frame.equals(after[name]), name

    runs = embed(study, device="cpu", progress=False).feature_sets
    assert [(r.done, r.failed, r.redone) for r in runs] == [(0, 0, [])] * len(runs)
    assert [r.skipped for r in runs] == [before["slides"].height, before["scans"].height]

    # no absolute path of the old place anywhere in the store, and every source path resolves inside the copy
    assert not [v for v in _text_cells(study.store_path) if str(original) in v]
    con = store.connect(study.store_path, read_only=True)
    try:
        paths = [Path(p) for m in ("wsi", "ct") for s in list_sources(con, study, m)
                 for p in (s.row.get("path"), s.row.get("image_path"), s.row.get("mask_path")) if p]
    finally:
        con.close()
    assert paths and all(p.is_relative_to(moved) and p.exists() for p in paths)

    cohort = load_cohort(study, features=["wsi_resnet18:mean", "ct_radiomics:mean"])
    assert len(cohort) == before["patients"].height and not any(cohort.missing.values())
    fitted = fit(study, progress=False)
    assert {m.name for m in fitted.models} == {"clinical", "wsi_svm", "ct_svm"}
    assert all(sum(m.counts.values()) == len(cohort) for m in fitted.models)


def test_scan_fingerprints_hold_content_not_paths(embedded: Path, tmp_path: Path) -> None:
    """Same files under another name: same fingerprint; one changed voxel file: another one, and only that scan re-embedded."""
    root = copy_study(embedded, tmp_path / "study")
    study = load_config(root)
    before = tables(root)["scans"]
    # the masks move to another folder and the manifest follows
    (root / "masks").mkdir()
    text = (root / "manifests" / "scans.csv").read_text(encoding="utf-8")
    for mask in (root / "scans").glob("*_roi.nii.gz"):
        mask.rename(root / "masks" / mask.name)
    rows = [line.split(",") for line in text.splitlines()]
    header, body = rows[0], rows[1:]
    m = header.index("mask_path")
    for r in body:
        r[m] = r[m].replace("scans/", "masks/")
    (root / "manifests" / "scans.csv").write_text("\n".join(",".join(r) for r in [header, *body]) + "\n", encoding="utf-8")
    ingest(study, progress=False)
    after = tables(root)["scans"]
    assert after["mask_path"].str.starts_with("masks/").all()
    assert after["fingerprint"].to_list() == before["fingerprint"].to_list()
    runs = {r.name: r for r in embed(study, device="cpu", progress=False).feature_sets}
    assert runs["ct_radiomics"].done == 0

    # one more voxel in P003's ROI: its content changed, so P003 (and only it) is embedded again
    victim = root / "masks" / "P003-CT_roi.nii.gz"
    mask = sitk.ReadImage(str(victim))
    voxels = sitk.GetArrayFromImage(mask)
    z, y, x = (int(v) for v in np.argwhere(voxels > 0)[0])
    grown = voxels.copy()
    grown[z, y, max(x - 1, 0)] = grown[z, y, x]
    assert (grown != voxels).any()
    edited = sitk.GetImageFromArray(grown)
    edited.CopyInformation(mask)
    sitk.WriteImage(edited, str(victim), useCompression=True)
    old = pooled(root, "ct_radiomics")
    ingest(study, progress=False)
    changed = tables(root)["scans"].filter(tables(root)["scans"]["fingerprint"] != before["fingerprint"])
    assert changed["scan_id"].to_list() == ["P003-CT"]
    runs = {r.name: r for r in embed(study, device="cpu", progress=False).feature_sets}
    assert (runs["ct_radiomics"].done, runs["wsi_resnet18"].done) == (1, 0)
    new = pooled(root, "ct_radiomics")
    i = new[0].index("P003")
    assert not np.array_equal(new[1][i], old[1][i])
    assert np.array_equal(np.delete(new[1], i, axis=0), np.delete(old[1], i, axis=0))
