"""Manifests are read strictly in their declared encoding: a byte that does not fit is an error naming the
file, line, column and encoding; ``[manifests] encoding`` reads a cp1252 (Excel) CSV correctly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import store
from pipeline.config import ConfigError, load_config
from pipeline.ingest import IngestError, ingest

ROWS = [("P1", "A", "Féminin", "0"), ("P2", "A", "Masculin", "1"), ("P3", "B", "Féminin", "1")]


def _write(root: Path, encoding_key: str = "") -> Path:
    """A three-patient study whose CSV was saved as cp1252 ("é" is the single byte 0xE9)."""
    text = "patient_id,center,sexe,label\n" + "".join(",".join(r) + "\n" for r in ROWS)
    (root / "patients.csv").write_bytes(text.encode("cp1252"))
    (root / "study.toml").write_text(
        f'[study]\nname = "enc"\n[manifests]\npatients = "patients.csv"\n{encoding_key}', encoding="utf-8")
    return root / "study.toml"


def test_cp1252_manifest_is_an_error_in_utf8(tmp_path: Path) -> None:
    toml = _write(tmp_path)
    raw = (tmp_path / "patients.csv").read_bytes()
    with pytest.raises(IngestError) as info:
        ingest(load_config(toml), progress=False)
    msg = str(info.value)
    # the first bad byte: line 2 (the header is line 1), field 'sexe', the 2nd character of "Féminin"
    offset = raw.index(b"\xe9")
    character = ",".join(ROWS[0]).index("é") + 1
    assert str(tmp_path / "patients.csv") in msg
    assert re.search(rf"line 2, column 'sexe': byte 0xe9 \(character {character} of the line, byte offset "
                     rf"{offset} of the file\) is not valid utf-8", msg), msg
    assert '[manifests] encoding = "cp1252"' in msg
    assert not (tmp_path / "store.duckdb").exists() or not _patients(tmp_path)


def test_declared_cp1252_reads_the_accents(tmp_path: Path) -> None:
    toml = _write(tmp_path, 'encoding = "cp1252"\n')
    ingest(load_config(toml), progress=False)
    con = store.connect(tmp_path / "store.duckdb", read_only=True)
    try:
        got = con.execute("SELECT patient_id, sexe FROM clinical ORDER BY patient_id").fetchall()
    finally:
        con.close()
    assert got == [(r[0], r[2]) for r in ROWS]
    assert "\ufffd" not in "".join(v for _, v in got)


def test_utf8_with_byte_order_mark_and_unknown_encoding(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark: it is not part of the first column's name."""
    toml = _write(tmp_path)
    text = "patient_id,center,sexe,label\n" + "".join(",".join(r) + "\n" for r in ROWS)
    (tmp_path / "patients.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    ingest(load_config(toml), progress=False)
    assert _patients(tmp_path) == ["P1", "P2", "P3"]
    _write(tmp_path, 'encoding = "klingon"\n')
    with pytest.raises(ConfigError, match=r"key 'manifests\.encoding': unknown text encoding 'klingon'"):
        load_config(toml)


def _patients(root: Path) -> list[str]:
    con = store.connect(root / "store.duckdb", read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT patient_id FROM patients ORDER BY patient_id").fetchall()]
    finally:
        con.close()
