"""SQL injection at ingest: a manifest column name goes into SQL text only as one quoted identifier.

The header of the issue's reproduction closes the quoted name, reads a file outside the study and writes
another. Through ``cohortlab ingest`` and the notebook API it is refused (one message, no traceback) or stored
as a literal name, and in either case neither file is touched; below the manifest checks, the table writer
itself stores it as one odd column name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import polars as pl
import pytest

import cohortlab
from analytics.cli import main
from pipeline import store
from pipeline.errors import CohortlabError
from pipeline.ingest import PatientTables, _replace_clinical
from pipeline.manifest import TypedColumn


def attack_header(outside: Path, exfil: Path) -> str:
    """The issue's header: closes the quoted column name, copies ``outside`` to ``exfil``, reopens a name."""
    return (f"x\" INTEGER); COPY (SELECT content FROM read_text('{outside}')) TO '{exfil}'; "
            "CREATE TEMP TABLE t2 (\"y")


@pytest.fixture()
def attack(tmp_path: Path) -> dict[str, Path]:
    """A study whose patient manifest has the attack header; a secret outside it; where the copy would go."""
    outside = tmp_path / "outside.txt"
    outside.write_text("secret-outside-the-study\n")
    exfil = tmp_path / "exfil.csv"
    root = tmp_path / "study"
    root.mkdir()
    header = attack_header(outside, exfil)
    quoted = '"' + header.replace('"', '""') + '"'  # a CSV field holding quotes
    (root / "patients.csv").write_text(f"patient_id,center,age,{quoted}\nP1,A,50,1\nP2,B,61,2\n")
    (root / "study.toml").write_text('[study]\nname = "inject"\n\n[manifests]\npatients = "patients.csv"\n')
    return {"root": root, "outside": outside, "exfil": exfil, "header": Path(header)}


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "logs" not in p.relative_to(root).parts}


def _clinical_columns(store_path: Path) -> list[str]:
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'clinical' ORDER BY ordinal_position").fetchall()]
    finally:
        con.close()


def _stored_literally_or_refused(attack: dict[str, Path], refused: bool) -> None:
    assert not attack["exfil"].exists(), "the header's COPY ran: a file outside the study was written"
    assert attack["outside"].read_text() == "secret-outside-the-study\n"
    store_path = attack["root"] / "store.duckdb"
    if not refused:
        assert str(attack["header"]) in _clinical_columns(store_path)


def test_attack_header_through_the_cli(attack, capsys):
    manifest = attack["root"] / "patients.csv"
    before = manifest.read_bytes()
    code = main(["ingest", str(attack["root"] / "study.toml")])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code in (0, 1)
    if code == 1:  # refused: one error message naming the manifest
        assert captured.err.startswith("error: ") and str(manifest) in captured.err
    _stored_literally_or_refused(attack, refused=code == 1)
    assert manifest.read_bytes() == before


def test_attack_header_through_the_notebook_api(attack):
    study = cohortlab.load_study(attack["root"])
    tree = _tree(attack["root"])
    try:
        study.ingest(progress=False)
        refused = False
    except CohortlabError as exc:
        refused = True
        assert "patients.csv" in str(exc)
        assert _tree(attack["root"]) == tree  # nothing written half-way
    _stored_literally_or_refused(attack, refused)


def test_clinical_table_writer_stores_any_name_as_one_column(tmp_path):
    """Below the manifest checks: the CREATE TABLE and INSERT built from names quote them, whatever they hold."""
    outside, exfil = tmp_path / "outside.txt", tmp_path / "exfil.csv"
    outside.write_text("secret-outside-the-study\n")
    names = [attack_header(outside, exfil), 'a"b', "select", "x; DROP TABLE patients; --", "ünï code"]
    ids = pl.Series("patient_id", ["P1", "P2"], dtype=pl.String)
    columns = [TypedColumn(n, "integer", pl.Series(n, [i, i + 1], dtype=pl.Int64), None) for i, n in enumerate(names)]
    tables = PatientTables(pl.DataFrame(), pl.DataFrame([ids] + [c.values for c in columns]), pl.DataFrame(), columns)
    path = tmp_path / "store.duckdb"
    con = store.connect(path)
    try:
        with store.transaction(con):
            _replace_clinical(con, tables)
        assert "patients" in {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        rows = con.execute("SELECT * FROM clinical ORDER BY patient_id").fetchall()
    finally:
        con.close()
    assert not exfil.exists()
    assert _clinical_columns(path) == ["patient_id", *names]
    assert rows == [("P1", 0, 1, 2, 3, 4), ("P2", 1, 2, 3, 4, 5)]


@pytest.mark.parametrize(("name", "quoted"), [
    ("age", '"age"'), ('a"b', '"a""b"'), ('x" INTEGER); --', '"x"" INTEGER); --"'), ("ünï", '"ünï"'),
])
def test_quote_ident_makes_one_identifier(name, quoted):
    assert store.quote_ident(name) == quoted
    con = duckdb.connect()
    try:
        assert con.execute(f"SELECT 1 AS {store.quote_ident(name)}").description[0][0] == name
    finally:
        con.close()


@pytest.mark.parametrize("name", ["", "a\x00b", "tab\there", "line\nbreak", "del\x7f"])
def test_quote_ident_refuses_empty_and_control_characters(name):
    with pytest.raises(store.StoreError, match="control character|empty name") as info:
        store.quote_ident(name)
    assert isinstance(info.value, CohortlabError) and "\n" not in str(info.value)
