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


# --- internal-external cross-validation (issue 29): the left-out groups' fits as Ray tasks, on the workers above

def _iecv_study(root: Path) -> Any:
    """Three development centres with enough patients for the fits to leave this process."""
    from multicentre.iecv_helpers import GLM, centre_patients, iecv_settings
    from study_builders import build_study, study_toml

    from analytics.fit_engine import PARALLEL_MIN_ROWS

    patients = centre_patients(dict.fromkeys(("A", "B", "C"), PARALLEL_MIN_ROWS // 2 + 100), seed=5, width=4)
    split = 'external_centers = []\ninternal_fraction = 0.2\nseed = 1'
    return build_study(root, patients, "c.label, c.age, c.marker", study_toml("ray", 1, GLM + iecv_settings(),
                                                                                split=split))


def test_iecv_on_ray_gives_the_bytes_of_this_process(local_ray: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """IECV's fits as Ray tasks on the engine of ``cohortlab fit`` (``--ray``): the left-out groups' files are
    the bytes of the run in this process."""
    import shutil

    from analytics.cohort import load_cohort
    from analytics.fit import fit
    from analytics.fit_engine import Engine
    from analytics.iecv import iecv_model
    from analytics.iecv_files import IECV_FOLDER

    study = _iecv_study(tmp_path)
    fit(study, progress=False)  # IECV in this process ([compute] n_jobs = 1)
    folder = study.models_dir / IECV_FOLDER / "glm"
    here = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert len(here) == 4  # current.json and the three left-out groups
    on_ray: list[int] = []
    real = Engine._on_ray

    def counted(self: Engine, args: Any) -> Any:
        on_ray.append(len(args))
        return real(self, args)

    monkeypatch.setattr(Engine, "_on_ray", counted)
    shutil.rmtree(folder)
    assert iecv_model(study, study.model("glm"), load_cohort(study), ray="local") is None
    assert on_ray == [3]  # the three fits went to Ray together
    assert {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == here
    assert local_ray.is_initialized()  # the open session was used, not stopped
