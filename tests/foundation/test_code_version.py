"""``store.code_version()`` marks ``.dirty`` when any code of the distribution differs from the commit.

Checked on a throw-away git repository laid out like the project (the module's ``__file__`` is pointed
into it), so the real working tree is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

import pipeline
from pipeline import store
from pipeline.store import version as store_version

ROOT = Path(pipeline.__file__).resolve().parents[1]  # the source tree under test
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
FILES = {
    "pipeline/store/version.py": "x = 1\n",
    "analytics/stats/roc.py": "x = 1\n",
    "cohortlab/__init__.py": "x = 1\n",
    "sql/schema.sql": "SELECT 1;\n",
    "tests/test_x.py": "x = 1\n",
    "bench/b.py": "x = 1\n",
    "README.md": "readme\n",
    ".gitignore": "__pycache__/\n",
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false",
         "commit", "-q", "-m", "init")
    # code_version finds the source tree from its module's file (pipeline/store/version.py): point that into
    # the throw-away repository
    monkeypatch.setattr(store_version, "__file__", str(tmp_path / "pipeline" / "store" / "version.py"))
    return tmp_path


@needs_git
def test_a_clean_tree_is_stamped_with_its_commit(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "--short=12", "HEAD").strip()
    assert store.code_version().endswith(f"+g{sha}")


@needs_git
@pytest.mark.parametrize("name", ["analytics/stats/roc.py", "cohortlab/__init__.py", "pipeline/store/version.py",
                                  "sql/schema.sql"])
def test_an_uncommitted_edit_to_any_package_is_dirty(repo: Path, name: str) -> None:
    (repo / name).write_text("x = 2\n")
    assert store.code_version().endswith(".dirty")


@needs_git
def test_a_new_module_is_dirty_and_an_ignored_file_is_not(repo: Path) -> None:
    (repo / "analytics" / "__pycache__").mkdir()
    (repo / "analytics" / "__pycache__" / "roc.cpython-311.pyc").write_bytes(b"\0")
    assert not store.code_version().endswith(".dirty")
    (repo / "analytics" / "stats" / "new_measure.py").write_text("x = 1\n")
    assert store.code_version().endswith(".dirty")


@needs_git
def test_edits_outside_the_code_are_not_dirty(repo: Path) -> None:
    for name in ("tests/test_x.py", "bench/b.py", "README.md"):
        (repo / name).write_text("changed\n")
    (repo / "tests" / "test_new.py").write_text("x = 1\n")
    assert not store.code_version().endswith(".dirty")


def test_the_checked_folders_are_the_distributions() -> None:
    # a package added to the wheel must be added to the folders code_version checks
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(store.SOURCE_DIRS) == set(wheel["packages"]) | set(wheel["force-include"])
