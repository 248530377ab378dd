"""All-or-nothing writes: the target holds the old content or the whole new one, never a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import atomic


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = atomic.write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError):
        with atomic.staged(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_staged_dir_replaces_a_folder_whole(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    with atomic.staged_dir(folder) as tmp:
        (tmp / "x").write_text("1")
        (tmp / "y").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(folder) as tmp:
            (tmp / "x").write_text("2")
            raise RuntimeError("failed")
    assert sorted(p.name for p in folder.iterdir()) == ["x", "y"] and (folder / "x").read_text() == "1"
    with atomic.staged_dir(folder) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in folder.iterdir()) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
