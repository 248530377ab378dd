"""`--ray local` against the local runner: same outputs, lost workers retried, resume across engines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

ray = pytest.importorskip("ray")

from pipeline import ray_runner, store  # noqa: E402
from pipeline.config import FeatureSet, StudyConfig, load_config  # noqa: E402
from pipeline.embed import embed, make_embedder  # noqa: E402
from pipeline.ingest import ingest  # noqa: E402
from pipeline.synth import make_study  # noqa: E402

# small tiles at low resolution and a tiny CT crop keep every source well under a second
FEATURE_SETS = """
[[feature_sets]]
name = "wsi_resnet18"
modality = "wsi"
encoder = "resnet18"
weights = "random"
mpp = 2.0
tile_size = 64
tissue_threshold = 0.25
batch_size = 8
num_workers = 0

[[feature_sets]]
name = "ct_r3d18"
modality = "ct"
encoder = "r3d_18"
weights = "random"
mode = "3d"
spacing = [2.0, 2.0, 2.0]
margin_mm = 2.0
input_size = [8, 16, 16]
batch_size = 4
num_workers = 0
pooling = ["mean", "max"]
"""
WSI, CT = "wsi_resnet18", "ct_r3d18"
POOLINGS = {WSI: ("mean", "max", "meanmax"), CT: ("mean", "max")}


def _raylets() -> list[str]:
    out = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", "ray/core/src/ray/raylet/raylet"],
                         capture_output=True, text=True, encoding="utf-8")
    return out.stdout.split()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Any]:
    """A local Ray with 2 CPUs and a small object store, stopped (with every process of it) at the end."""
    before = set(_raylets())
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    # the probe embedder below is defined here, not in an importable module: ship it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()
    assert not ray.is_initialized()
    import time

    for _ in range(50):  # the raylet exits shortly after shutdown
        if not set(_raylets()) - before:
            break
        time.sleep(0.2)
    assert not set(_raylets()) - before, "a raylet outlived the test session"


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """The tiny synthetic study, ingested, with two cheap feature sets and one unreadable slide."""
    folder = tmp_path_factory.mktemp("template") / "study"
    toml = make_study(folder, n_patients=10, small=True)
    text = toml.read_text()
    head, rest = text.split("[[feature_sets]]", 1)
    toml.write_text(head + FEATURE_SETS.strip() + "\n\n" + rest[rest.index("[cohort]"):].replace(
        "ct_radiomics", "ct_r3d18"))
    ingest(load_config(toml))
    slides = pl.read_csv(folder / "manifests" / "slides.csv")
    broken = folder / slides["path"][0]
    broken.write_bytes(broken.read_bytes()[:2000])  # truncated after ingest: the slide cannot be read any more
    return folder


def _copy(template: Path, dest: Path) -> StudyConfig:
    shutil.copytree(template, dest, copy_function=shutil.copy2)
    return load_config(dest / "study.toml")


def _snapshot(study: StudyConfig, fs_names: tuple[str, ...] = (WSI, CT)) -> dict[str, Any]:
    con = store.connect(study.store_path, read_only=True)
    try:
        items = store.query(con, "SELECT feature_set, source_id, patient_id, status, n_instances, error, path "
                                 "FROM embed_items ORDER BY feature_set, source_id")
        pooled = {(fs, how): store.read_patient_features(con, fs, how) for fs in fs_names for how in POOLINGS[fs]}
    finally:
        con.close()
    items = items.filter(pl.col("feature_set").is_in(list(fs_names))).with_columns(
        pl.col("error").str.replace_all(str(study.root), "<root>", literal=True))
    instances = {}
    for fs, sid in items.filter(pl.col("status") == "done").select("feature_set", "source_id").iter_rows():
        instances[fs, sid] = pl.read_parquet(store.instance_path(study.store_path, fs, sid))
    return {"items": items, "pooled": pooled, "instances": instances}


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["items"].equals(b["items"]), (a["items"], b["items"])
    assert a["instances"].keys() == b["instances"].keys()
    for key, fa in a["instances"].items():
        fb = b["instances"][key]
        assert fa.drop("embedding").equals(fb.drop("embedding")), key  # same tiles, same coordinates
        np.testing.assert_allclose(np.stack(fa["embedding"].to_numpy()), np.stack(fb["embedding"].to_numpy()),
                                   atol=1e-5, err_msg=str(key))
    for key, (ids, x) in a["pooled"].items():
        assert ids == b["pooled"][key][0], key
        np.testing.assert_allclose(x, b["pooled"][key][1], atol=1e-5, err_msg=str(key))


def _only(snapshot: dict[str, Any], fs: str) -> dict[str, Any]:
    return {"items": snapshot["items"].filter(pl.col("feature_set") == fs),
            "instances": {k: v for k, v in snapshot["instances"].items() if k[0] == fs},
            "pooled": {k: v for k, v in snapshot["pooled"].items() if k[0] == fs}}


@pytest.fixture(scope="module")
def reference_study(template, tmp_path_factory) -> StudyConfig:
    """The study embedded by the local runner, once (do not change it: copy it)."""
    study = _copy(template, tmp_path_factory.mktemp("ref") / "study")
    res = embed(study, device="cpu", progress=False)
    assert [(r.failed) for r in res.feature_sets] == [1, 0]
    return study


@pytest.fixture(scope="module")
def reference(reference_study) -> dict[str, Any]:
    return _snapshot(reference_study)


def _forget(study: StudyConfig, fs: str, source_ids: list[str]) -> StudyConfig:
    """Take back sources of a finished study, as if the run that embedded it had not reached them.

    Their ``embed_items`` rows and instance files go, and the feature set's pooled features with them
    (pooling waits until every source has been tried).
    """
    con = store.connect(study.store_path)
    try:
        with store.transaction(con):
            con.execute("DELETE FROM embed_items WHERE feature_set = ? AND source_id IN (SELECT unnest(?))",
                        [fs, source_ids])
            con.execute("DELETE FROM patient_features WHERE feature_set = ?", [fs])
    finally:
        con.close()
    for sid in source_ids:
        store.instance_path(study.store_path, fs, sid).unlink(missing_ok=True)
    return study


def _scans(study: StudyConfig) -> list[str]:
    return sorted(pl.read_csv(study.root / "manifests" / "scans.csv")["scan_id"])


def _placement(study: StudyConfig, fs: str) -> dict[str, tuple[str | None, str | None]]:
    """source_id -> (node, device) as the store records them."""
    con = store.connect(study.store_path, read_only=True)
    try:
        rows = store.embedded_items(con).filter(pl.col("feature_set") == fs)
    finally:
        con.close()
    return {sid: (node, dev) for sid, node, dev in rows.select("source_id", "node", "device").iter_rows()}


class ProbeEmbedder:
    """The real embedder, logging each call (with the store file's stat) and dying once on one source."""

    def __init__(self, fs: FeatureSet, device: str, log: str, kill: str | None) -> None:
        self.inner, self.log, self.kill, self.fs = make_embedder(fs, device), Path(log), kill, fs.name

    def record(self):
        return self.inner.record()

    def embed(self, source, artifacts=None, progress=False, cache=None):
        study_store = Path(self.log).parent / "study" / "store.duckdb"
        st = study_store.stat()
        with self.log.open("a") as f:
            f.write(f"{self.fs} {source.source_id} {st.st_mtime_ns} {st.st_size}\n")
        marker = self.log.with_name(f"killed-{self.fs}-{source.source_id}")
        if source.source_id == self.kill and not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies mid-source
        import inspect

        given = {"artifacts": artifacts, "progress": progress, "cache": cache}
        accepted = inspect.signature(self.inner.embed).parameters
        return self.inner.embed(source, **{k: v for k, v in given.items() if k in accepted})

    def close(self) -> None:
        self.inner.close()


def _probe(log: Path, kill: str | None = None):
    def factory(fs: FeatureSet, device: str) -> ProbeEmbedder:
        return ProbeEmbedder(fs, device, str(log), kill)
    return factory


def _calls(log: Path) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def ray_done(local_ray, template, tmp_path_factory) -> tuple[StudyConfig, Any, Path]:
    """The study embedded on Ray from scratch, once: (study, result, log of embedder calls); copy it to change it."""
    folder = tmp_path_factory.mktemp("ray_done")
    study = _copy(template, folder / "study")
    log = folder / "calls.log"
    res = ray_runner.embed(study, device="cpu", ray_address="local", progress=False, embedder_factory=_probe(log))
    return study, res, log


def test_ray_matches_local_runner_and_leaves_store_alone(ray_done, reference):
    study, res, log = ray_done
    assert res.ray_started
    assert [(r.name, r.done, r.failed) for r in res.feature_sets] == [(WSI, 10, 1), (CT, 10, 0)]
    # which node and device embedded the sources (one node here, CPU actors)
    node = ray.util.get_node_ip_address()
    assert [r.placed for r in res.feature_sets] == [{f"{node} (cpu)": 11}, {f"{node} (cpu)": 10}]
    assert f"embedded on: {node} (cpu): 11" in str(res)
    _assert_same(reference, _snapshot(study))
    calls = _calls(log)
    # every source tried once, the broken slide included (no retries for a source that fails on its own)
    assert sorted((c[0], c[1]) for c in calls) == sorted(set((c[0], c[1]) for c in calls))
    assert len(calls) == 21
    # while the workers embedded one feature set, the store file did not change
    for fs in (WSI, CT):
        assert len({(c[2], c[3]) for c in calls if c[0] == fs}) == 1, fs


def _features_rows(capsys, study: StudyConfig) -> dict[str, list[str]]:
    """``cohortlab features``: the cells of each row of its per-source table, by ``feature_set/source_id``."""
    from analytics.cli import main

    assert main(["features", str(study.root)]) == 0
    table = capsys.readouterr().out.split("sources (node and device", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("┆")]
        if len(cells) == 6 and cells[0] in (WSI, CT):
            rows[f"{cells[0]}/{cells[1]}"] = cells
    return rows


def test_features_shows_the_node_and_device_of_each_source(ray_done, reference_study, capsys):
    import socket

    node = ray.util.get_node_ip_address()
    for study, where in ((ray_done[0], [node, "cpu"]), (reference_study, [socket.gethostname(), "cpu"])):
        rows = _features_rows(capsys, study)
        assert len(rows) == 21  # every source of both feature sets, the failed (broken) slide included
        assert {r[2] for r in rows.values()} == {"done", "failed"}
        assert all(r[4:] == where for r in rows.values()), (study.root, rows)


def test_second_ray_run_after_a_complete_one_does_not_start_ray(ray_done, tmp_path, monkeypatch, capsys):
    from analytics.cli import main

    class Started(Exception):
        pass

    def init(*args: Any, **kwargs: Any) -> None:
        raise Started

    study = _copy(ray_done[0].root, tmp_path / "study")
    store_before = study.store_path.read_bytes()
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    monkeypatch.setattr(ray, "init", init)
    assert main(["embed", str(study.root / "study.toml"), "--ray", "local", "--feature-set", CT, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ct_r3d18 (ct): 0 done, 0 failed, 10 skipped" in out and "all sources done" in out
    assert study.store_path.read_bytes() == store_before
    # the failed (broken) slide is left to try again: that run connects
    with pytest.raises(Started):
        ray_runner.embed(study, device="cpu", ray_address="local", progress=False)


def test_lost_worker_is_retried_and_result_equals_uninterrupted(local_ray, reference_study, tmp_path, reference):
    study = _forget(_copy(reference_study.root, tmp_path / "study"), CT, _scans(reference_study)[2:5])
    log = tmp_path / "calls.log"
    victim = _scans(study)[3]
    res = ray_runner.embed(study, feature_set=CT, device="cpu", ray_address="local", progress=False, retries=1,
                           workers=1, embedder_factory=_probe(log, kill=victim))
    assert [(r.done, r.failed, r.skipped) for r in res.feature_sets] == [(3, 0, 7)]
    assert [c[1] for c in _calls(log) if c[0] == CT].count(victim) == 2  # killed once, then done
    _assert_same(_only(reference, CT), _snapshot(study, (CT,)))


def test_resume_across_engines_both_ways(local_ray, reference_study, tmp_path, reference):
    import socket

    node, host = ray.util.get_node_ip_address(), socket.gethostname()
    # ray -> local: without retries the lost source is recorded failed; the local runner redoes only it
    scans = _scans(reference_study)
    study = _forget(_copy(reference_study.root, tmp_path / "a" / "study"), CT, scans[:3])
    log = tmp_path / "a" / "calls.log"
    victim = scans[1]  # its actor is lost for good; a new one embeds the source still waiting
    res = ray_runner.embed(study, feature_set=CT, device="cpu", progress=False, retries=0, workers=1,
                           embedder_factory=_probe(log, kill=victim))
    assert [(r.done, r.failed) for r in res.feature_sets] == [(2, 1)]
    assert res.feature_sets[0].failures[0][0] == victim and "worker lost 1 time(s)" in res.feature_sets[0].failures[0][1]
    assert [c[1] for c in _calls(log)] == scans[:3]  # each tried once
    again = embed(study, feature_set=CT, device="cpu", progress=False).feature_sets[0]
    assert (again.done, again.skipped) == (1, 9)
    _assert_same(_only(reference, CT), _snapshot(study, (CT,)))
    placed = _placement(study, CT)
    assert [placed[s] for s in scans[:3]] == [(node, "cpu"), (host, "cpu"), (node, "cpu")]
    # local -> ray: the slides one machine embedded are kept; Ray embeds the rest
    slides = sorted(pl.read_csv(reference_study.root / "manifests" / "slides.csv")["slide_id"])
    broken = str(pl.read_csv(reference_study.root / "manifests" / "slides.csv")["slide_id"][0])
    left = [s for s in slides if s != broken][-3:]
    study = _forget(_copy(reference_study.root, tmp_path / "b" / "study"), WSI, left)
    rest = ray_runner.embed(study, feature_set=WSI, device="cpu", progress=False, workers=1).feature_sets[0]
    # the done slides are skipped; the failed (broken) slide is tried again, as the local runner would
    assert (rest.skipped, rest.done, rest.failed) == (len(slides) - 4, 3, 1)
    _assert_same(_only(reference, WSI), _snapshot(study, (WSI,)))
    placed = _placement(study, WSI)
    assert {s for s, where in placed.items() if where == (node, "cpu")} == {*left, broken}
    assert {s for s, where in placed.items() if where == (host, "cpu")} == set(slides) - {*left, broken}


def test_probe_refuses_a_folder_workers_cannot_write(local_ray, template, tmp_path):
    study = _copy(template, tmp_path / "study")
    folder = store.instance_path(study.store_path, CT, "x").parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("")  # a file where the folder should be: no node can write there, not even as root
    before = study.store_path.stat().st_mtime_ns, study.store_path.read_bytes()
    with pytest.raises(ray_runner.EmbedError, match=rf"node \S+ cannot write the instances folder {folder}"):
        ray_runner.embed(study, feature_set=CT, device="cpu", progress=False)
    assert (study.store_path.stat().st_mtime_ns, study.store_path.read_bytes()) == before


def test_cli_ray_option_wins_over_study_toml(local_ray, reference_study, tmp_path, reference, monkeypatch, capsys):
    from analytics.cli import main

    study = _forget(_copy(reference_study.root, tmp_path / "study"), CT, _scans(reference_study)[-1:])
    toml = study.root / "study.toml"
    toml.write_text(toml.read_text() + '\n[compute]\nray = "192.0.2.1:6379"\nray_retries = 0\n')
    addresses: list[str] = []
    connected = ray_runner.connected

    def spy(address: str):
        addresses.append(address)
        return connected(address)

    monkeypatch.setattr(ray_runner, "connected", spy)
    # through main(), the console entry point, which also closes the study log it opened
    code = main(["embed", str(toml), "--feature-set", CT, "--device", "cpu", "--ray", "local"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert addresses == ["local"]
    assert "ct_r3d18 (ct): 1 done, 0 failed, 9 skipped" in out.out
    _assert_same(_only(reference, CT), _snapshot(load_config(toml), (CT,)))


def test_compute_section_is_checked(tmp_path):
    from pipeline.config import ConfigError, parse_study

    base = {"study": {"name": "s"}, "manifests": {"patients": "p.csv"}}
    assert parse_study({**base, "compute": {"ray": "auto"}}, tmp_path).compute.ray == "auto"
    assert parse_study(base, tmp_path).compute.ray is None
    with pytest.raises(ConfigError, match="ray 'nowhere'"):
        parse_study({**base, "compute": {"ray": "nowhere"}}, tmp_path)
    with pytest.raises(ConfigError, match="ray_retries"):
        parse_study({**base, "compute": {"ray_retries": -1}}, tmp_path)


def test_ctrl_c_on_the_driver_leaves_no_partial_file_and_the_next_run_resumes(local_ray, template, tmp_path, reference):
    import signal
    import time

    study = _copy(template, tmp_path / "study")
    folder = store.instance_path(study.store_path, WSI, "x").parent
    store_before = study.store_path.read_bytes()
    # the driver joins the session's Ray (2 CPUs, a small object store), as it would join a running cluster
    cmd = [sys.executable, "-m", "analytics.cli", "embed", str(study.root / "study.toml"), "--ray",
           local_ray.get_runtime_context().gcs_address, "--feature-set", WSI, "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob("*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    written = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".png"))
    assert all(n.endswith((".parquet", ".status.json")) for n in written), written  # no temporary left
    assert study.store_path.read_bytes() == store_before  # the driver never reached the store
    import json

    ended = [json.loads((folder / n).read_text())["status"] for n in written if n.endswith(".status.json")]
    assert 1 <= len(ended) < 11
    again = embed(study, feature_set=WSI, device="cpu", progress=False).feature_sets[0]
    assert again.skipped == ended.count("done")  # what ended before Ctrl-C counts; the rest is embedded now
    _assert_same(_only(reference, WSI), _snapshot(study, (WSI,)))


class _HalfWriter:
    """Starts writing an output file and never finishes, as an actor killed mid-source does."""

    def where(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), os.getpid()

    def write_forever(self, folder: str) -> None:
        import time

        (Path(folder) / f".P009-S1.parquet.{os.getpid()}.tmp").write_bytes(b"PAR1 half")
        time.sleep(600)


def test_killed_actors_leave_no_temporary_behind(local_ray, tmp_path):
    # the CI race behind the Ctrl-C test, made certain: an actor is killed while its temporary exists
    import time

    folder = tmp_path / "instances"
    folder.mkdir()
    actor = ray.remote(_HalfWriter).remote()
    places = {actor: actor.where.remote()}
    _, pid = ray.get(places[actor])
    actor.write_forever.remote(str(folder))
    deadline = time.monotonic() + 30
    while not list(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p.name for p in folder.iterdir()] == [f".P009-S1.parquet.{pid}.tmp"]
    (folder / f".P010-S1.parquet.{os.getpid()}.tmp").write_bytes(b"a live process's")  # not ours: kept
    ray_runner._stop_actors(ray, [actor], places, folder)
    assert sorted(p.name for p in folder.iterdir()) == [f".P010-S1.parquet.{os.getpid()}.tmp"]


def test_stain_normalised_feature_set_on_ray_equals_the_local_runner(local_ray, template, tmp_path):
    # the first actor fits the stain reference into the shared folder, the second reuses it; instances, the
    # reference file and the feature set's identity are those of the local runner
    stained = "wsi_stain"
    block = FEATURE_SETS.split("[[feature_sets]]")[1].replace(f'name = "{WSI}"', f'name = "{stained}"')
    block = block.replace('pooling = ["mean", "max"]', "") + 'stain_norm = "reinhard"\npooling = ["mean"]\n'

    def with_stain(dest: Path) -> StudyConfig:
        study = _copy(template, dest)
        toml = study.root / "study.toml"
        text = toml.read_text(encoding="utf-8")
        toml.write_text(text.replace("[cohort]", "[[feature_sets]]" + block + "\n[cohort]", 1), encoding="utf-8")
        return load_config(toml)

    local = with_stain(tmp_path / "local")
    on_ray = with_stain(tmp_path / "ray")
    assert on_ray.feature_set(stained).stain_norm == "reinhard"
    embed(local, feature_set=stained, device="cpu", progress=False)
    res = ray_runner.embed(on_ray, feature_set=stained, device="cpu", ray_address="local", progress=False, workers=2)
    assert [(r.done, r.failed) for r in res.feature_sets] == [(10, 1)]
    ref_local, ref_ray = (store.instance_path(s.store_path, stained, "x").parent / "stain_reference.json"
                          for s in (local, on_ray))
    assert ref_local.read_bytes() == ref_ray.read_bytes()
    POOLINGS[stained] = ("mean",)
    try:
        _assert_same(_snapshot(local, (stained,)), _snapshot(on_ray, (stained,)))
    finally:
        del POOLINGS[stained]
    rows = []
    for s in (local, on_ray):
        con = store.connect(s.store_path, read_only=True)
        try:
            rows.append(store.query(con, f"SELECT params FROM feature_sets WHERE name = '{stained}'").item())
        finally:
            con.close()
    assert rows[0] == rows[1] and "reference_sha256" in rows[0]
