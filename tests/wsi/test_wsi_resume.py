"""Resume after SIGKILL and sharding: both must end exactly where one uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from pipeline import store
from pipeline.embed import embed

# four copies of the real slide (distinct files) and one broken slide, over three patients
SLIDES = [
    ("a1", "p1", "CMU-1-Small-Region.svs", None),
    ("a2", "p1", "CMU-1-Small-Region.svs", None),
    ("b1", "p2", "CMU-1-Small-Region.svs", None),
    ("c1", "p3", "CMU-1-Small-Region.svs", None),
    ("c2", "p3", "unreadable.svs", None),
]
# small tiles at low resolution keep each slide quick (resnet18 takes any input size)
FAST = {"mpp": 4.0, "tile_size": 64, "batch_size": 4}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # see conftest: shared cores
TOML = """
[study]
name = "resume"

[manifests]
patients = "patients.csv"

[[feature_sets]]
name = "r18"
modality = "wsi"
encoder = "resnet18"
weights = "random"
num_workers = 0
mpp = 4.0
tile_size = 64
batch_size = 4
"""


def _snapshot(study) -> dict[str, object]:
    """Everything a run leaves that counts: item rows, instance values, pooled features."""
    con = store.connect(study.store_path, read_only=True)
    try:
        items = store.query(
            con, "SELECT source_id, patient_id, status, n_instances, error, path FROM embed_items ORDER BY source_id"
        ).with_columns(pl.col("error").str.replace_all(str(study.root), "<root>", literal=True))
        pooled = {how: store.read_patient_features(con, "r18", how) for how in ("mean", "max", "meanmax")}
    finally:
        con.close()
    instances = {}
    for sid in items.filter(pl.col("status") == "done")["source_id"]:
        instances[sid] = pl.read_parquet(store.instance_path(study.store_path, "r18", sid))
    return {"items": items, "pooled": pooled, "instances": instances}


def _assert_same(a: dict, b: dict) -> None:
    assert a["items"].equals(b["items"]), (a["items"], b["items"])
    assert a["instances"].keys() == b["instances"].keys()
    for sid in a["instances"]:
        assert a["instances"][sid].equals(b["instances"][sid]), sid
    for how in a["pooled"]:
        assert a["pooled"][how][0] == b["pooled"][how][0]
        np.testing.assert_array_equal(a["pooled"][how][1], b["pooled"][how][1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, make_study, fs_dict):
    study = make_study(tmp_path_factory.mktemp("ref"), SLIDES, [fs_dict(**FAST)], copy=True)
    run = embed(study, device="cpu", progress=False).feature_sets[0]
    assert (run.done, run.failed) == (4, 1)
    snap = _snapshot(study)
    assert snap["pooled"]["mean"][0] == ["p1", "p2", "p3"]
    return snap


def test_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path, make_study):
    study = make_study(tmp_path, SLIDES, [], copy=True)
    (tmp_path / "study.toml").write_text(TOML)
    first = store.instance_path(study.store_path, "r18", "a1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "analytics.cli", "embed", str(tmp_path), "--device", "cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    partial = _snapshot(study)
    done = partial["items"].filter(pl.col("status") == "done").height
    assert done < 4 and not partial["pooled"]["mean"][0]  # killed mid-run, nothing pooled yet
    from pipeline.config import load_config

    resumed = embed(load_config(tmp_path), device="cpu", progress=False).feature_sets[0]
    # a status file written just before the kill is folded in rather than embedded again
    assert resumed.skipped >= done and resumed.skipped + resumed.done == 4 and resumed.failed == 1
    _assert_same(_snapshot(study), reference)
    leftovers = [p.name for p in first.parent.iterdir() if p.name.endswith((".tmp", ".status.json"))]
    assert leftovers == []


def test_two_shards_equal_one_run(reference, tmp_path, make_study, fs_dict):
    study = make_study(tmp_path, SLIDES, [fs_dict(**FAST)], copy=True)
    first = embed(study, device="cpu", shard=(0, 2), progress=False).feature_sets[0]
    # sorted ids a1 a2 b1 c1 c2: shard 0 takes a1 b1 c2, shard 1 takes a2 c1
    assert (first.done, first.failed, first.waiting, first.pooled) == (2, 1, 2, {})
    assert "pooling waits for 2 source(s)" in str(first)
    second = embed(study, device="cpu", shard=(1, 2), progress=False).feature_sets[0]
    assert (second.done, second.failed, second.waiting) == (2, 0, 0)
    assert second.pooled == {"mean": 3, "max": 3, "meanmax": 3}
    _assert_same(_snapshot(study), reference)


def test_concurrent_shards_do_not_clash(reference, tmp_path, make_study, fs_dict):
    study = make_study(tmp_path, SLIDES, [], copy=True)
    (tmp_path / "study.toml").write_text(TOML)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "analytics.cli", "embed", str(tmp_path), "--device", "cpu", "--shard", f"{i}/2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", env=ENV,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    _assert_same(_snapshot(study), reference)
