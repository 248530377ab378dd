"""Bad manifests, slides, scans, masks and stores: one line naming the file and the line, row, column or key,
exit 1, and nothing written to the store; through ``cohortlab ingest`` and the notebook API."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pytest
import SimpleITK as sitk

import cohortlab
from analytics.cli import main
from pipeline import store
from pipeline.errors import CohortlabError

DATA = Path(__file__).resolve().parents[1] / "data"

PATIENTS = "patient_id,center,age,label\nP1,A,54,1\nP2,A,61,0\nP3,B,47,1\nP4,B,70,0\n"


def _toml(extra: str = "", manifests: str = "") -> str:
    return (f'[study]\nname = "bad"\n[manifests]\npatients = "patients.csv"\n{manifests}{extra}')


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    """A four-patient study, ingested once: the store every bad input must leave as it is."""
    (tmp_path / "patients.csv").write_text(PATIENTS, encoding="utf-8")
    (tmp_path / "study.toml").write_text(_toml(), encoding="utf-8")
    assert main(["ingest", str(tmp_path / "study.toml")]) == 0
    return tmp_path


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _cli(root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``cohortlab ingest`` fails with exit 1 and one ``error:`` line, no traceback; returns that line."""
    capsys.readouterr()
    code = main(["ingest", str(root / "study.toml")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err, err
    assert err.count("error: ") == 1, err  # one message (a progress bar may precede it on stderr)
    return err[err.index("error: "):]


def _api(root: Path) -> str:
    """The notebook API raises a CohortlabError; returns its message."""
    with pytest.raises(CohortlabError) as info:
        cohortlab.load_study(root / "study.toml").ingest(progress=False)
    return str(info.value)


SURFACES: dict[str, Callable[..., str]] = {"cli": _cli, "api": lambda root, capsys: _api(root)}


# --- headers ------------------------------------------------------------------------------


HEADERS = {
    # name: (header line, what the message must say)
    "spaced_twin": ("patient_id,center, age,age", "columns 3 (' age') and 4 ('age') have the same name once spaces "
                    "around names are removed"),
    "duplicate": ("patient_id,center,age,age", "columns 3 ('age') and 4 ('age') have the same name"),
    "case_twin": ("patient_id,center,Age,age", "columns 3 ('Age') and 4 ('age') have names that differ only in "
                  "letter case"),
    "empty_quoted": ('patient_id,center,"",age', "column 3 of the header has no name ('')"),
    "quote_inside": ('patient_id,center,"a""ge",age', "column 3 of the header is named 'a\"ge': a column name may "
                     "not hold a quote"),
}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("case", HEADERS)
def test_header_is_refused_naming_the_columns(study: Path, case: str, surface: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    header, expected = HEADERS[case]
    rows = ["P1,A,54,1", "P2,A,61,0", "P3,B,47,1"]
    (study / "patients.csv").write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    before = _digest(study / "store.duckdb")
    message = SURFACES[surface](study, capsys)
    assert f"{study / 'patients.csv'}, line 1: {expected}" in message, message
    assert _digest(study / "store.duckdb") == before


def test_surrounding_spaces_alone_are_removed(study: Path) -> None:
    """Decision: spaces around a name are not part of it (' age ' is column 'age'), unless that makes two equal."""
    (study / "patients.csv").write_text(PATIENTS.replace("age", " age "), encoding="utf-8")
    cohortlab.load_study(study / "study.toml").ingest(progress=False)
    con = store.connect(study / "store.duckdb", read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM variables ORDER BY name").fetchall()]
    finally:
        con.close()
    assert names == ["age", "label"]


# --- files that are not CSV manifests ---------------------------------------------------------


FILES = {
    "xlsx": ("patients.xlsx", b"PK\x03\x04" + bytes(range(256)) * 4, "is a spreadsheet workbook (.xlsx); save the "
             "sheet as CSV UTF-8"),
    "random_parquet": ("patients.parquet", bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)),
                       "cannot be read as Parquet"),
    "empty_csv": ("patients.csv", b"", "the file is empty; a manifest starts with a header line"),
    "xlsx_named_csv": ("patients.csv", b"PK\x03\x04" + bytes(range(256)) * 4, "is a zip archive (an Excel .xlsx"),
}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("case", FILES)
def test_not_a_manifest_is_one_line(study: Path, case: str, surface: str, capsys: pytest.CaptureFixture[str]) -> None:
    name, content, expected = FILES[case]
    (study / name).write_bytes(content)
    (study / "study.toml").write_text(_toml().replace("patients.csv", name), encoding="utf-8")
    before = _digest(study / "store.duckdb")
    message = SURFACES[surface](study, capsys)
    assert f"{study / name}: {expected}" in message, message
    assert _digest(study / "store.duckdb") == before


@pytest.mark.parametrize("surface", SURFACES)
def test_multi_line_cell_keeps_physical_line_numbers(study: Path, surface: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A quoted cell spanning two lines: the bad cell after it is reported at the line it is really on."""
    text = ('patient_id,center,note,age,label\n'
            'P1,A,"first line\nsecond line",54,1\n'     # lines 2-3
            'P2,A,ok,61,0\n'                            # line 4
            'P3,B,ok,high,1\n'                          # line 5: the bad cell
            'P4,B,ok,70,0\n')
    (study / "patients.csv").write_text(text, encoding="utf-8")
    before = _digest(study / "store.duckdb")
    message = SURFACES[surface](study, capsys)
    assert f"{study / 'patients.csv'}, line 5, column 'age': 'high' is not a number" in message, message
    assert _digest(study / "store.duckdb") == before
    # the rows stored after a fix keep the line they start on
    (study / "patients.csv").write_text(text.replace("high", "47"), encoding="utf-8")
    assert main(["ingest", str(study / "study.toml")]) == 0
    con = store.connect(study / "store.duckdb", read_only=True)
    try:
        rows = con.execute("SELECT patient_id, source_row FROM patients ORDER BY patient_id").fetchall()
    finally:
        con.close()
    assert rows == [("P1", 2), ("P2", 4), ("P3", 5), ("P4", 6)]


# --- slides and scans ------------------------------------------------------------------------------


def _slides(root: Path, rows: list[str]) -> None:
    (root / "slides.csv").write_text("slide_id,patient_id,path,mpp\n" + "".join(r + "\n" for r in rows),
                                     encoding="utf-8")
    (root / "study.toml").write_text(_toml(manifests='slides = "slides.csv"\n'), encoding="utf-8")


@pytest.mark.parametrize("surface", SURFACES)
def test_overlong_slide_id_is_refused_at_ingest(study: Path, surface: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A 300-character id cannot name its instance file: refused at ingest (row and column), not at every embed."""
    shutil.copy(DATA / "wsi" / "boxes.tiff", study / "boxes.tiff")
    long_id = "S" * 300
    _slides(study, ["S1,P1,boxes.tiff,0.25", f"{long_id},P2,boxes.tiff,0.25"])
    before = _digest(study / "store.duckdb")
    message = SURFACES[surface](study, capsys)
    assert f"{study / 'slides.csv'}, line 3, column 'slide_id': id of 300 characters (300 bytes) is too long to name " \
           "its files" in message, message
    assert "line 2" not in message
    assert _digest(study / "store.duckdb") == before


def test_longest_id_that_fits_is_accepted(study: Path) -> None:
    """The limit is the file system's: the longest id it admits still ingests (and names a file that can exist)."""
    shutil.copy(DATA / "wsi" / "boxes.tiff", study / "boxes.tiff")
    fits = "S" * 232
    assert store.file_name_problem(fits) is None and store.file_name_problem(fits + "S") is not None
    _slides(study, [f"{fits},P1,boxes.tiff,0.25"])
    cohortlab.load_study(study / "study.toml").ingest(progress=False)
    longest = study / f".{fits}.thumb.png.9999999.tmp"
    longest.write_bytes(b"")  # the longest name embed gives this source's files
    assert longest.exists()


# the notebook API in a child process: the error's message on stderr, exit 1
_API_CHILD = """import sys
import cohortlab
from pipeline.errors import CohortlabError
try:
    cohortlab.load_study({toml!r}).ingest(progress=False)
except CohortlabError as exc:
    sys.exit(f"error: {{exc}}")
"""


def _run_subprocess(toml: Path, surface: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``cohortlab ingest`` (or the notebook API's ``ingest``) in a child process, so that a reader blocked on a
    FIFO fails the test instead of hanging it.

    It runs in the study folder: the working directory comes first on the child's import path.
    """
    code = (f"import sys\nfrom analytics.cli import main\nsys.exit(main(['ingest', {str(toml)!r}]))\n"
            if surface == "cli" else _API_CHILD.format(toml=str(toml)))
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                              cwd=toml.parent, timeout=timeout, check=False,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"cohortlab ingest {toml} still ran after {timeout} s (blocked on a FIFO?)")


def _volume(path: Path, values: np.ndarray) -> None:
    img = sitk.GetImageFromArray(values)
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(path))


def _ct(root: Path) -> None:
    """A small CT image (HU, air -1000 around soft tissue) beside a 0/1 mask of its centre."""
    hu = np.full((6, 8, 8), -1000, dtype=np.int16)
    hu[1:5, 2:6, 2:6] = 40
    _volume(root / "ct.nii.gz", hu)
    mask = np.zeros((6, 8, 8), dtype=np.uint8)
    mask[2:4, 3:5, 3:5] = 1
    _volume(root / "roi.nii.gz", mask)


def _scans(root: Path, rows: list[str]) -> None:
    head = "scan_id,patient_id,image_path,mask_path"
    (root / "scans.csv").write_text(head + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    (root / "study.toml").write_text(_toml(manifests='scans = "scans.csv"\n'), encoding="utf-8")


@pytest.mark.parametrize("what, surface", [("slide", "cli"), ("slide", "api"), ("scan", "cli"), ("scan", "api"),
                                           ("dicom_folder", "cli")])
def test_fifo_source_is_refused_before_it_is_opened(study: Path, what: str, surface: str) -> None:
    """A named pipe as a slide, a scan, or inside a DICOM folder: refused at once, never opened (it would block)."""
    if what == "slide":
        os.mkfifo(study / "slide.svs")
        _slides(study, ["S1,P1,slide.svs,0.25"])
        where = f"{study / 'slides.csv'}, line 2, column 'path': {study / 'slide.svs'} is a named pipe (FIFO)"
    elif what == "scan":
        _ct(study)
        os.mkfifo(study / "pipe.nii.gz")
        _scans(study, ["C1,P1,pipe.nii.gz,roi.nii.gz"])
        where = f"{study / 'scans.csv'}, line 2, column 'image_path': {study / 'pipe.nii.gz'} is a named pipe (FIFO)"
    else:
        _ct(study)
        (study / "dicom").mkdir()
        os.mkfifo(study / "dicom" / "IM0001.dcm")
        _scans(study, ["C1,P1,dicom,"])
        where = (f"{study / 'scans.csv'}, line 2, column 'image_path': {study / 'dicom'}: the DICOM folder holds "
                 "IM0001.dcm, which is a named pipe (FIFO)")
    before = _digest(study / "store.duckdb")
    proc = _run_subprocess(study / "study.toml", surface)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert where in proc.stderr, proc.stderr
    assert _digest(study / "store.duckdb") == before


MASKS = {
    # name: (rows of scans.csv, the column and message expected)
    "float_half": (["C1,P1,ct.nii.gz,half.nii.gz"],
                   ("mask_path", "the mask holds values that are not whole numbers (0.5)")),
    "image_as_mask": (["C1,P1,ct.nii.gz,ct.nii.gz"], ("mask_path", "the mask is the image itself")),
    "image_copy_as_mask": (["C1,P1,ct.nii.gz,copy.nii.gz"],
                           ("mask_path", "the mask holds negative values (down to -1000)")),
    "label_1_absent": (["C1,P1,ct.nii.gz,two.nii.gz"],
                       ("mask_path", "empty ROI: label 1 has no voxel (values present: 0, 2); with no mask_label "
                        "the ROI is label 1: give the mask's label in a mask_label column")),
}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("case", MASKS)
def test_mask_must_hold_the_label_used(study: Path, case: str, surface: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Masks hold integer labels and the one embed will use (mask_label, default 1); a mask is not its image."""
    _ct(study)
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(study / "roi.nii.gz")))
    _volume(study / "half.nii.gz", roi.astype(np.float32) * 0.5)
    _volume(study / "two.nii.gz", roi * 2)
    shutil.copy(study / "ct.nii.gz", study / "copy.nii.gz")
    rows, (column, expected) = MASKS[case]
    _scans(study, rows)
    before = _digest(study / "store.duckdb")
    message = SURFACES[surface](study, capsys)
    assert f"{study / 'scans.csv'}, line 2, column '{column}': " in message, message
    assert expected in message, message
    assert _digest(study / "store.duckdb") == before


def test_whole_float_mask_is_accepted(study: Path) -> None:
    """A float mask whose values are whole numbers (0.0 and 1.0, as many tools save them) holds labels."""
    _ct(study)
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(study / "roi.nii.gz")))
    _volume(study / "float.nii.gz", roi.astype(np.float32))
    _scans(study, ["C1,P1,ct.nii.gz,float.nii.gz"])
    cohortlab.load_study(study / "study.toml").ingest(progress=False)
    con = store.connect(study / "store.duckdb", read_only=True)
    try:
        assert con.execute("SELECT mask_label, roi_voxels FROM scans").fetchall() == [(1, int(roi.sum()))]
    finally:
        con.close()


# --- the store ------------------------------------------------------------------------------------


def _foreign(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE orders (id INTEGER, total DOUBLE)")
    con.execute("INSERT INTO orders VALUES (1, 9.5), (2, 3.25)")
    con.close()


@pytest.mark.parametrize("surface", SURFACES)
def test_unrelated_duckdb_is_refused(tmp_path: Path, surface: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``[study] store`` naming another program's DuckDB file: refused, naming it; not one table added."""
    (tmp_path / "patients.csv").write_text(PATIENTS, encoding="utf-8")
    (tmp_path / "study.toml").write_text(_toml().replace('name = "bad"', 'name = "bad"\nstore = "shop.duckdb"'),
                                         encoding="utf-8")
    _foreign(tmp_path / "shop.duckdb")
    before = _digest(tmp_path / "shop.duckdb")
    message = SURFACES[surface](tmp_path, capsys)
    assert f"{tmp_path / 'shop.duckdb'}: is a DuckDB database but not a cohortlab store (it holds orders" in message, \
        message
    assert _digest(tmp_path / "shop.duckdb") == before
    con = duckdb.connect(str(tmp_path / "shop.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT table_name FROM information_schema.tables").fetchall() == [("orders",)]
    finally:
        con.close()


def test_foreign_meta_table_is_refused(tmp_path: Path) -> None:
    """A database whose own table happens to be called ``meta`` is no store either (read-only or not)."""
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (k VARCHAR)")
    con.close()
    for read_only in (True, False):
        with pytest.raises(CohortlabError, match="not a cohortlab store"):
            store.connect(path, read_only=read_only)


# --- what ingest says it wrote ------------------------------------------------------------------


@pytest.mark.parametrize("surface", ["cli", "api"])
def test_changed_variable_label_is_reported_and_written(study: Path, surface: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Changing only a ``[variables]`` label: the summary says the variables changed, and the store has it."""
    (study / "study.toml").write_text(_toml('[variables]\nage = { label = "Age (years)" }\n'), encoding="utf-8")
    capsys.readouterr()
    if surface == "cli":
        assert main(["ingest", str(study / "study.toml")]) == 0
        out = capsys.readouterr().out
    else:
        out = str(cohortlab.load_study(study / "study.toml").ingest(progress=False))
    assert "nothing written" not in out, out
    assert "variables 0 new, 1 updated, 1 unchanged, 0 removed" in out, out
    con = store.connect(study / "store.duckdb", read_only=True)
    try:
        assert con.execute("SELECT label FROM variables WHERE name = 'age'").fetchone() == ("Age (years)",)
    finally:
        con.close()
    again = str(cohortlab.load_study(study / "study.toml").ingest(progress=False))
    assert "nothing written" in again and "variables 0 new, 0 updated, 2 unchanged" in again
