"""``cohortlab demo DIR --fresh`` replaces only a synthetic study that cohortlab wrote (issue 21, item 5 of Why).

The demo's stages are replaced by stubs: these tests are about which folders
the synthetic study may be written over, not about the stages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import analytics.demo as demo_module
from analytics.cli import main
from pipeline import synth
from pipeline.synth import study as synth_study


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and link under ``folder`` with its bytes' sha256 (links: their target)."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        key = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[key] = "link:" + str(p.readlink())
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def _real_study(root: Path) -> Path:
    """A study a user wrote: study.toml, manifests, a slide, a scan and a store."""
    (root / "manifests").mkdir(parents=True)
    (root / "slides").mkdir()
    (root / "scans").mkdir()
    (root / "study.toml").write_text('[study]\nname = "mine"\n[manifests]\npatients = "manifests/patients.csv"\n')
    (root / "manifests" / "patients.csv").write_text("patient_id,center,label\nP1,A,1\nP2,A,0\n")
    (root / "slides" / "P1-S1.svs").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    (root / "scans" / "P1-CT.nii.gz").write_bytes(b"\x1f\x8b" + bytes(100))
    (root / "store.duckdb").write_bytes(b"not touched")
    return root


@pytest.fixture()
def stages(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stub out the demo's stages; a tiny synthetic study is written; returns the folders written to."""
    written: list[Path] = []

    def small_study(folder: Path, **kwargs: Any) -> Path:
        written.append(Path(folder))
        return synth.make_study(folder, n_patients=10, seed=0, small=True, **kwargs)

    def no_run(study: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(ok=True)

    monkeypatch.setattr(demo_module, "make_study", small_study)
    monkeypatch.setattr(demo_module, "run", no_run)
    monkeypatch.setattr(demo_module, "load_config", lambda toml: toml)
    return written


@pytest.fixture()
def refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to write the synthetic study fails the test before a byte is written (guards /, home ...)."""

    def forbidden(folder: Path, **kwargs: Any) -> Path:
        raise AssertionError(f"the synthetic study would have been written over {folder}")

    monkeypatch.setattr(demo_module, "make_study", forbidden)
    monkeypatch.setattr(demo_module, "run", lambda *a, **k: pytest.fail("the demo ran"))


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_fresh_refuses_a_real_study_and_leaves_it_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: list[Path]
) -> None:
    study = _real_study(tmp_path / "mine")
    before = _snapshot(study)
    assert main(["demo", str(study), "--fresh"]) == 1
    line = _one_error_line(capsys)
    assert str(study) in line and ".cohortlab-demo" in line and "study.toml" in line
    assert _snapshot(study) == before
    assert stages == []  # nothing was synthesised


def test_demo_without_study_toml_does_not_replace_a_real_manifests_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: list[Path]
) -> None:
    study = _real_study(tmp_path / "mine")
    (study / "study.toml").unlink()  # e.g. named otherwise: `demo DIR` would write the demo over its manifests
    before = _snapshot(study)
    assert main(["demo", str(study)]) == 1
    assert str(study) in _one_error_line(capsys)
    assert _snapshot(study) == before


def test_the_library_refuses_too(tmp_path: Path) -> None:
    study = _real_study(tmp_path / "mine")
    before = _snapshot(study)
    with pytest.raises(synth.SynthFolderError, match="no valid .cohortlab-demo marker"):
        synth.make_study(study, n_patients=10, small=True, overwrite=True)
    assert _snapshot(study) == before
    assert not [p for p in study.iterdir() if p.name.startswith(".synth-")]


def test_a_second_fresh_on_a_demo_folder_works_and_keeps_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: list[Path]
) -> None:
    folder = tmp_path / "demo"
    assert main(["demo", str(folder), "--fresh"]) == 0  # a missing folder
    marker = json.loads((folder / synth.MARKER).read_text())
    assert marker["written_by"] == synth_study.MARKER_TAG and marker["seed"] == 0
    (folder / "store.duckdb").write_bytes(b"the demo's store")
    (folder / "manifests" / "extra.csv").write_text("replaced with the manifests\n")
    assert main(["demo", str(folder), "--fresh"]) == 0
    assert (folder / "store.duckdb").read_bytes() == b"the demo's store"
    assert not (folder / "manifests" / "extra.csv").exists()
    assert synth.is_synthetic(folder)
    assert len(stages) == 2
    empty = tmp_path / "empty"
    (empty / ".synth-99999999.tmp" / "slides").mkdir(parents=True)  # what a killed first run leaves
    assert main(["demo", str(empty), "--fresh"]) == 0
    assert synth.is_synthetic(empty)


def test_a_symlinked_folder_is_refused_and_its_target_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: list[Path]
) -> None:
    target = tmp_path / "demo"
    synth.make_study(target, n_patients=10, small=True)
    before = _snapshot(target)
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    capsys.readouterr()
    assert main(["demo", str(link), "--fresh"]) == 1
    assert "symbolic link" in _one_error_line(capsys)
    assert _snapshot(target) == before and stages == []


def test_a_linked_subfolder_of_a_demo_is_unlinked_not_emptied(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    synth.make_study(folder, n_patients=10, small=True)
    mine = _real_study(tmp_path / "mine")
    before = _snapshot(mine)
    shutil.rmtree(folder / "slides")
    (folder / "slides").symlink_to(mine / "slides", target_is_directory=True)
    synth.make_study(folder, n_patients=10, small=True, overwrite=True)
    assert _snapshot(mine) == before
    assert not (folder / "slides").is_symlink() and any((folder / "slides").iterdir())


def test_a_copied_marker_that_is_a_link_or_not_ours_does_not_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: list[Path]
) -> None:
    demo = tmp_path / "demo"
    synth.make_study(demo, n_patients=10, small=True)
    study = _real_study(tmp_path / "mine")
    (study / synth.MARKER).symlink_to(demo / synth.MARKER)
    before = _snapshot(study)
    capsys.readouterr()
    assert main(["demo", str(study), "--fresh"]) == 1
    _one_error_line(capsys)
    (study / synth.MARKER).unlink()
    (study / synth.MARKER).write_text('{"written_by": "someone else"}')
    before = _snapshot(study)
    assert main(["demo", str(study), "--fresh"]) == 1
    _one_error_line(capsys)
    assert _snapshot(study) == before and stages == []


@pytest.mark.parametrize("where", ["root", "home", "above home", "above cwd"])
def test_root_home_and_parents_of_the_current_folder_are_refused(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    refuse_writes: None,
) -> None:
    home = tmp_path / "users" / "me"
    work = tmp_path / "projects" / "p" / "src"
    home.mkdir(parents=True)
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    folder = {"root": Path("/"), "home": home, "above home": tmp_path / "users",
              "above cwd": tmp_path / "projects"}[where]
    # even a marker (copied there) does not make these folders replaceable
    if where != "root":
        (folder / synth.MARKER).write_text(json.dumps({"written_by": synth_study.MARKER_TAG, "seed": 0}))
    assert main(["demo", str(folder), "--fresh"]) == 1
    line = _one_error_line(capsys)
    assert str(folder) in line
    with pytest.raises(synth.SynthFolderError):
        synth.check_replaceable(folder)


def test_an_old_marker_folder_keeps_working_without_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: list[Path]
) -> None:
    """A demo folder with its study.toml is reused as before (nothing is written, so nothing is checked)."""
    folder = tmp_path / "demo"
    synth.make_study(folder, n_patients=10, small=True)
    (folder / synth.MARKER).unlink()  # a demo written before the marker existed
    before = _snapshot(folder)
    assert main(["demo", str(folder)]) == 0
    assert _snapshot(folder) == before and stages == []
