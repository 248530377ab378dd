"""A bad study.toml: one line naming the file and the key, line or byte, exit 1, nothing written; through the
command line and the notebook API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import cohortlab
from analytics.cli import main
from pipeline.config import ConfigError, check_name, load_config
from pipeline.errors import CohortlabError

PATIENTS = "patient_id,center,age,label\nP1,A,54,1\nP2,A,61,0\nP3,B,47,1\nP4,B,70,0\n"
TOML = '[study]\nname = "conf"\ndescription = "Sjogren"\n[manifests]\npatients = "patients.csv"\n'


def _write(root: Path, data: bytes) -> Path:
    (root / "patients.csv").write_text(PATIENTS, encoding="utf-8")
    (root / "study.toml").write_bytes(data)
    return root / "study.toml"


def _cli(toml: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``cohortlab ingest`` fails with exit 1 and one ``error:`` message, no traceback; returns it."""
    capsys.readouterr()
    code = main(["ingest", str(toml)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err, err
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    return err


def _api(toml: Path, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(CohortlabError) as info:
        cohortlab.load_study(toml).ingest(progress=False)
    return str(info.value)


SURFACES: dict[str, Callable[[Path, pytest.CaptureFixture[str]], str]] = {"cli": _cli, "api": _api}


def _nothing_written(root: Path) -> None:
    assert not (root / "store.duckdb").exists()
    assert not (root / "reports").exists()


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("bom, name", [("utf-16", "UTF-16 (byte-order mark 0xfffe)"),
                                       ("utf-16-be", "UTF-16 (byte-order mark 0xfeff)"),
                                       ("utf-32", "UTF-32 (byte-order mark 0xfffe0000)")])
def test_study_file_with_a_utf16_or_utf32_bom(tmp_path: Path, surface: str, bom: str, name: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = ("\ufeff" + TOML).encode(bom)
    toml = _write(tmp_path, data)
    message = SURFACES[surface](toml, capsys)
    assert message.removeprefix("error: ").startswith(f"{toml}: saved as {name}; a study file must be UTF-8"), message
    _nothing_written(tmp_path)


@pytest.mark.parametrize("surface", SURFACES)
def test_study_file_not_utf8_names_line_and_byte(tmp_path: Path, surface: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A cp1252 "ö" (0xf6) on line 3: the file, the line and the byte offset, not a UnicodeDecodeError."""
    data = TOML.replace("Sjogren", "Sjögren").encode("cp1252")
    toml = _write(tmp_path, data)
    message = SURFACES[surface](toml, capsys)
    offset = data.index(b"\xf6")
    assert f"{toml}: line 3: byte 0xf6 (byte offset {offset}) is not valid UTF-8" in message, message
    _nothing_written(tmp_path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """Notepad's UTF-8 byte-order mark is no reason to refuse a UTF-8 file."""
    toml = _write(tmp_path, b"\xef\xbb\xbf" + TOML.encode("utf-8"))
    assert load_config(toml).study.name == "conf"


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("encoding", ["rot13", "base64", "zlib", "hex"])
def test_encoding_that_is_not_a_text_encoding(tmp_path: Path, surface: str, encoding: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Codecs Python knows that do not turn bytes into text are refused at the key, before any manifest is read."""
    toml = _write(tmp_path, (TOML + f'encoding = "{encoding}"\n').encode())
    message = SURFACES[surface](toml, capsys)
    assert f"{toml}: key 'manifests.encoding': '{encoding}' is not a text encoding" in message, message
    _nothing_written(tmp_path)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("where", ["study", "feature_set", "model"])
def test_name_with_a_trailing_line_break(tmp_path: Path, surface: str, where: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``name = "t\\n"`` passed a ``$``-anchored rule and named a folder ``reports/t⏎``: refused at the key."""
    text = TOML
    if where == "study":
        text, key = text.replace('name = "conf"', 'name = "t\\n"'), "study.name"
    elif where == "feature_set":
        text += '[[feature_sets]]\nname = "f\\n"\nmodality = "wsi"\nencoder = "resnet50"\n'
        key = "feature_sets[0].name"
    else:
        text += '[[models]]\nname = "m\\n"\nkind = "logistic"\nclinical = ["age"]\n'
        key = "models[0].name"
    toml = _write(tmp_path, text.encode())
    message = SURFACES[surface](toml, capsys)
    assert f"{toml}: key '{key}': must start with a letter and hold only letters" in message, message
    _nothing_written(tmp_path)
    assert not [p for p in tmp_path.rglob("*") if "\n" in p.name]


def test_name_rule_is_anchored_at_the_very_end() -> None:
    for name in ["t\n", "t\n\n", "t\r", "\nt", "t\x00", ""]:
        with pytest.raises(ValueError, match="must start with a letter"):
            check_name(name)
    assert check_name("t-1_x") == "t-1_x"


def test_study_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    """A named pipe as study.toml is refused before it is read (reading it would wait for a writer for ever)."""
    (tmp_path / "patients.csv").write_text(PATIENTS, encoding="utf-8")
    os.mkfifo(tmp_path / "study.toml")
    code = f"import sys\nfrom analytics.cli import main\nsys.exit(main(['ingest', {str(tmp_path / 'study.toml')!r}]))\n"
    try:  # the study folder as working directory: it comes first on the child's import path
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                              cwd=tmp_path, timeout=30, check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("cohortlab ingest still read the FIFO study.toml after 30 s")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {tmp_path / 'study.toml'}: not a regular file" in proc.stderr, proc.stderr
    with pytest.raises(ConfigError, match="not a regular file"):
        cohortlab.load_study(tmp_path)
