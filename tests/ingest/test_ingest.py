"""Ingest: validated manifests -> store, all-or-nothing, idempotent."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import SimpleITK as sitk

from pipeline import store
from pipeline.config import load_config
from pipeline.ingest import IngestError, ingest

TABLES = ["patients", "clinical", "variables", "slides", "scans", "meta"]


def _run(study_dir: Path):
    return ingest(load_config(study_dir), progress=False)


def _snapshot(study_dir: Path) -> dict[str, list[tuple]]:
    con = store.connect(study_dir / "store.duckdb", read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    finally:
        con.close()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _expect_error(study_dir: Path, *patterns: str) -> str:
    with pytest.raises(IngestError) as info:
        _run(study_dir)
    msg = str(info.value)
    for pat in patterns:
        assert re.search(pat, msg), f"{pat!r} not in:\n{msg}"
    return msg


def test_ingest_loads_typed_tables(study_dir: Path) -> None:
    result = _run(study_dir)
    assert result.changes["patients"].inserted == 5
    con = store.connect(study_dir / "store.duckdb", read_only=True)
    try:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'clinical'").fetchall())
        assert types == {
            "patient_id": "VARCHAR", "age": "DOUBLE", "sex": "VARCHAR", "esr": "BIGINT", "anti_ssa": "VARCHAR",
            "igg": "DOUBLE", "label": "INTEGER", "time": "DOUBLE", "event": "INTEGER",
        }
        var = {r[0]: r[1:] for r in con.execute("SELECT name, type, role, unit, label, n_missing, levels FROM variables").fetchall()}
        assert var["label"][:2] == ("binary", "outcome")
        assert var["time"][:2] == ("numeric", "time")
        assert var["event"][:2] == ("binary", "event")
        assert var["esr"] == ("integer", "predictor", "mm/h", "esr", 1, None)
        assert var["igg"][3:5] == ("IgG", 1)
        assert var["sex"] == ("categorical", "predictor", None, "sex", 0, ["F", "M"])
        # missing cells are NULL, not zero or empty strings
        assert con.execute("SELECT esr FROM clinical WHERE patient_id = 'P2'").fetchone() == (None,)
        assert con.execute("SELECT center FROM patients WHERE patient_id = 'P4'").fetchone() == ("B",)
        slides = {r[0]: r for r in con.execute("SELECT slide_id, vendor, width, height, mpp, mpp_source, levels FROM slides").fetchall()}
        # values openslide reports for these real files (see tests/data/SOURCES.md)
        assert slides["S1"][1:4] == ("aperio", 2220, 2967)
        assert slides["S1"][4] == pytest.approx(0.499, abs=1e-3) and slides["S1"][5] == "metadata"
        assert slides["S2"][1] == "generic-tiff" and slides["S2"][4:7] == (0.25, "manifest", 4)
        scans = {r[0]: r for r in con.execute("SELECT scan_id, size, spacing, mask_label, roi_voxels FROM scans").fetchall()}
        img = sitk.ReadImage(str(study_dir / "images/example_seg.nii.gz"))
        seg = sitk.GetArrayFromImage(img)
        assert scans["C1"][1] == list(img.GetSize())
        assert scans["C1"][2] == pytest.approx(list(img.GetSpacing()))
        assert scans["C1"][3] == 5 and scans["C1"][4] == int((seg == 5).sum())
        assert scans["C2"][4] == int((seg == 2).sum())
    finally:
        con.close()


def test_reingest_is_a_noop_and_changes_update(study_dir: Path) -> None:
    _run(study_dir)
    before = _snapshot(study_dir)
    again = _run(study_dir)
    assert not again.changed
    assert all(c.unchanged == c.inserted + c.unchanged for c in again.changes.values())
    assert _snapshot(study_dir) == before

    _edit(study_dir / "manifests/patients.csv", "P2,A,61.0", "P2,A,62.5")
    changed = _run(study_dir)
    assert changed.changes["clinical"].updated == 1 and changed.changes["clinical"].unchanged == 4
    after = _snapshot(study_dir)
    assert len(after["clinical"]) == 5 and len(after["patients"]) == 5
    con = store.connect(study_dir / "store.duckdb", read_only=True)
    assert con.execute("SELECT age FROM clinical WHERE patient_id = 'P2'").fetchone() == (62.5,)
    con.close()


BAD_CASES = {
    "missing_file": (
        "manifests/slides.csv", "images/boxes.tiff,0.25", "images/nowhere.tiff,0.25",
        [r"slides\.csv, line 3, column 'path': file not found: .*nowhere\.tiff"],
    ),
    "unopenable_slide": (
        "manifests/slides.csv", "images/boxes.tiff,0.25", "images/unopenable.tiff,0.25",
        [r"slides\.csv, line 3, column 'path': .*unopenable\.tiff"],
    ),
    "not_a_slide": (
        "manifests/slides.csv", "images/boxes.tiff,0.25", "images/not-a-tiff.svs,",
        [r"slides\.csv, line 3, column 'path': .*not-a-tiff\.svs"],
    ),
    "unreadable_pixels": (
        "manifests/slides.csv", "images/boxes.tiff,0.25", "images/unreadable.svs,",
        [r"slides\.csv, line 3, column 'path': .*unreadable\.svs"],
    ),
    "no_mpp": (
        "manifests/slides.csv", "images/boxes.tiff,0.25", "images/boxes.tiff,",
        [r"slides\.csv, line 3, column 'mpp': .*boxes\.tiff.*mpp"],
    ),
    "duplicate_patient": (
        "manifests/patients.csv", "P5,B", "P4,B",
        [r"patients\.csv, line 6, column 'patient_id': duplicate id 'P4' \(first seen at line 5\)"],
    ),
    "duplicate_slide": (
        "manifests/slides.csv", "S2,P2", "S1,P2",
        [r"slides\.csv, line 3, column 'slide_id': duplicate id 'S1'"],
    ),
    "unknown_patient": (
        "manifests/scans.csv", "C2,P4", "C2,P9",
        [r"scans\.csv, line 3, column 'patient_id': patient 'P9' is not in the patient manifest"],
    ),
    "label_not_binary": (
        "manifests/patients.csv", "15.1,1,30.5,1", "15.1,2,30.5,1",
        [r"patients\.csv, line 2, column 'label': label must be 0 or 1, not '2'"],
    ),
    "label_word": (
        "manifests/patients.csv", "15.1,1,30.5,1", "15.1,yes,30.5,1",
        [r"patients\.csv, line 2, column 'label': .*'yes'"],
    ),
    "event_not_binary": (
        "manifests/patients.csv", "9.8,0,60.0,0", "9.8,0,60.0,3",
        [r"patients\.csv, line 5, column 'event': event must be 0 or 1, not '3'"],
    ),
    "time_negative": (
        "manifests/patients.csv", "9.8,0,60.0,0", "9.8,0,-2,0",
        [r"patients\.csv, line 5, column 'time': time must not be negative, not '-2'"],
    ),
    "centre_missing": (
        "manifests/patients.csv", "P3,A,", "P3,,",
        [r"patients\.csv, line 4, column 'center': centre is missing"],
    ),
    "inconsistent_type": (
        "manifests/patients.csv", "P4,B,70.1,F,8,", "P4,B,70.1,F,high,",
        [r"patients\.csv, line 5, column 'esr': 'high' is not a number, but 3 of 4 values"],
    ),
    "mask_label_empty": (
        "manifests/scans.csv", "example_seg.nii.gz,2", "example_seg.nii.gz,12",  # label 12 is absent
        [r"scans\.csv, line 3, column 'mask_label': .*empty ROI"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_manifest_is_refused_and_store_unchanged(study_dir: Path, case: str) -> None:
    _run(study_dir)
    before = _snapshot(study_dir)
    file, old, new, patterns = BAD_CASES[case]
    _edit(study_dir / file, old, new)
    _expect_error(study_dir, r"the store was not changed", *patterns)
    assert _snapshot(study_dir) == before


def test_bad_manifest_on_fresh_study_writes_no_store(study_dir: Path) -> None:
    _edit(study_dir / "manifests/patients.csv", "P3,A,", "P3,,")
    _expect_error(study_dir, "centre is missing")
    assert not (study_dir / "store.duckdb").exists()


def test_every_problem_is_reported_at_once(study_dir: Path) -> None:
    _edit(study_dir / "manifests/patients.csv", "P3,A,", "P3,,")
    _edit(study_dir / "manifests/scans.csv", "C2,P4", "C2,P9")
    msg = _expect_error(study_dir, "centre is missing", "'P9' is not in the patient manifest")
    assert msg.startswith("2 problems")


def test_mask_geometry_differs(study_dir: Path) -> None:
    seg = sitk.ReadImage(str(study_dir / "images/example_seg.nii.gz"))
    shifted = sitk.Image(seg)
    shifted.SetOrigin(tuple(o + 60.0 for o in seg.GetOrigin()))
    sitk.WriteImage(shifted, str(study_dir / "images/shifted_seg.nii.gz"))
    _run(study_dir)
    before = _snapshot(study_dir)
    _edit(study_dir / "manifests/scans.csv", "example_seg.nii.gz,2", "shifted_seg.nii.gz,2")
    _expect_error(study_dir, r"scans\.csv, line 3, column 'mask_path': .*shifted_seg\.nii\.gz")
    assert _snapshot(study_dir) == before


def test_flipped_mask_is_accepted(study_dir: Path) -> None:
    """A mask on a flipped grid covering the same physical space is fine (resampled later)."""
    seg = sitk.ReadImage(str(study_dir / "images/example_seg.nii.gz"))
    arr = sitk.GetArrayFromImage(seg)[:, :, ::-1].copy()
    flipped = sitk.GetImageFromArray(arr)
    flipped.SetSpacing(seg.GetSpacing())
    d = np.array(seg.GetDirection()).reshape(3, 3)
    far = seg.TransformIndexToPhysicalPoint((seg.GetSize()[0] - 1, 0, 0))
    d[:, 0] *= -1
    flipped.SetDirection(tuple(d.ravel()))
    flipped.SetOrigin(far)
    sitk.WriteImage(flipped, str(study_dir / "images/flipped_seg.nii.gz"))
    _edit(study_dir / "manifests/scans.csv", "example_seg.nii.gz,2", "flipped_seg.nii.gz,2")
    _run(study_dir)
    snap = _snapshot(study_dir)
    assert len(snap["scans"]) == 2


def test_parquet_manifest(study_dir: Path) -> None:
    frame = pl.read_csv(study_dir / "manifests/patients.csv")
    frame.write_parquet(study_dir / "manifests/patients.parquet")
    _edit(study_dir / "study.toml", "patients.csv", "patients.parquet")
    _run(study_dir)
    con = store.connect(study_dir / "store.duckdb", read_only=True)
    try:
        assert con.execute("SELECT count(*), sum(label) FROM clinical").fetchone() == (5, 2)
        assert con.execute("SELECT type FROM variables WHERE name = 'label'").fetchone() == ("binary",)
    finally:
        con.close()


def test_variables_key_for_unknown_column(study_dir: Path) -> None:
    _edit(study_dir / "study.toml", "esr = {", "crp = {")
    _expect_error(study_dir, r"study\.toml, column 'variables\.crp': no column 'crp'")
