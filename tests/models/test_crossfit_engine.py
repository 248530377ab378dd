"""Nested cross-fitting runs an input model's independent fold fits on the fit stage's engine: with one worker
or two, every fitted file and prediction is the same bytes, and the fits did go to the workers."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.config_run import Compute

from model_helpers import make_study, write_cohort_store

MODELS = [
    {"name": "clin", "kind": "logistic", "clinical": ["age", "sex", "marker"], "grid": {"C": [1.0]}},
    {"name": "fusion", "kind": "logistic", "scores": ["clin"], "clinical": ["marker"], "grid": {"C": [1.0]}},
]


def _fit_files(root: Path, n_jobs: int) -> dict[str, str]:
    """sha256 of every file fit writes under models/ (fitted afresh, no cross-fitting cache), times left out."""
    from analytics.fit import fit

    shutil.rmtree(root / "models", ignore_errors=True)
    study = make_study(root, MODELS).model_copy(update={"compute": Compute(n_jobs=n_jobs)})
    fit(study, progress=False)
    out = {}
    for path in sorted((root / "models").rglob("*")):
        if path.is_file() and ".crossfit" not in path.parts:
            raw = path.read_bytes()
            if path.name == "manifest.json":
                record = json.loads(raw)
                record.pop("created_at")
                record["tuning"].pop("fit_seconds", None)
                (record.get("nesting") or {}).pop("seconds", None)
                raw = json.dumps(record, sort_keys=True).encode()
            out[str(path.relative_to(root))] = hashlib.sha256(raw).hexdigest()
    return out


def test_nested_fold_fits_on_two_workers_are_the_same_bytes(
        tmp_path: Path, cohort_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import analytics.fit_engine as engine_module

    monkeypatch.setattr(engine_module, "PARALLEL_MIN_ROWS", 0)  # a tiny study: still send its fits to workers
    batches: list[tuple[str, int, bool]] = []
    real_fits = engine_module.Engine.fits

    def spying(self: Any, spec: Any, jobs: Any, y: Any, seed: int, make: Any, parallel: bool) -> Any:
        batches.append((spec.name, len(jobs), parallel))
        return real_fits(self, spec, jobs, y, seed, make, parallel)

    monkeypatch.setattr(engine_module.Engine, "fits", spying)
    write_cohort_store(tmp_path, cohort_data)
    one = _fit_files(tmp_path, 1)
    sequential, batches[:] = list(batches), []
    two = _fit_files(tmp_path, 2)
    assert sorted(one) == sorted(two) and any(k.endswith("predictions.parquet") for k in one)
    assert [k for k in one if one[k] != two[k]] == []
    # clin's fits on the K inner folds of each outer fold's training patients went out together, to the workers
    nested = [b for b in batches if b[0] == "clin" and b[1] == 3]
    assert nested and all(parallel for _, _, parallel in nested), batches
    assert not any(parallel for _, _, parallel in sequential)
