"""Internal-validation replicates as Ray tasks (local Ray, 2 CPUs): the same bytes as local processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "internal_fit"))
from internal_helpers import make, replicate_files  # noqa: E402


def _raylets() -> list[str]:
    out = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", "ray/core/src/ray/raylet/raylet"],
                         capture_output=True, text=True, encoding="utf-8")
    return out.stdout.split()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray with 2 CPUs and a small object store (or the session's, left running), stopped at the end."""
    if ray.is_initialized():
        yield ray
        return
    before = set(_raylets())
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
    assert not ray.is_initialized()
    for _ in range(50):  # the raylet exits shortly after shutdown
        if not set(_raylets()) - before:
            break
        time.sleep(0.2)
    assert not set(_raylets()) - before, "a raylet outlived the tests"


def test_ray_local_gives_the_bytes_of_one_local_process(local_ray: Any, tmp_path: Path) -> None:
    from analytics.fit import fit

    here = make(tmp_path / "joblib", n_jobs=1)
    fit(here, progress=False)
    on_ray = make(tmp_path / "ray", n_jobs=1)
    result = fit(on_ray, progress=False, ray="local")  # the open session is used, not a new one
    assert result.model("clin").status == "fitted" and local_ray.is_initialized()
    files = replicate_files(on_ray)
    assert len(files) == 6 and files == replicate_files(here)
