"""The embedding runner on a Ray cluster: ``cohortlab embed --ray ADDRESS``.

One unit of work is one source (a slide or a scan) of one feature set. The
driver plans each feature set exactly as the local runner does
(:func:`pipeline.embed.plan_feature_set`: done sources are skipped), and
connects to Ray only when some source is left (a finished study never starts
it); it then hands the sources to a pool of Ray actors that each load the encoder once and
call :func:`pipeline.embed.embed_source`, which writes the source's instance
Parquet and status file atomically in the study's instances folder. That
folder must be on storage every node sees; a probe task on every node checks
it before any work. Workers never open the DuckDB store: the driver folds the
status files, registers the feature set and pools patient features once every
source has ended (:func:`pipeline.embed.finish_feature_set`), so the outputs
are those of the local runner, and a run begun on one engine can be finished
on the other. Each status records the node and device that embedded the
source, kept in ``embed_items`` and shown by ``cohortlab features``.

A worker process lost mid-source (killed, out of memory, a node gone) is
restarted by Ray and the source tried again, up to ``retries`` times; a source
that fails on its own is recorded as failed by the embedder after one try.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pipeline import atomic, store
from pipeline.config import ConfigError, FeatureSet, StudyConfig
from pipeline.device import resolve_device
from pipeline.embed import (
    EmbedResult,
    FeatureSetPlan,
    FeatureSetRun,
    cache_dir,
    development_sources,
    embed_source,
    finish_feature_set,
    make_embedder,
    plan_feature_set,
    status_path,
    tally,
)
from pipeline.errors import CohortlabError
from pipeline.ray_probe import probe_write
from pipeline.source import Embedder, Source

log = logging.getLogger("cohortlab.embed")

MAX_CPU_ACTORS_PER_DEFAULT = 8  # each holds a copy of the encoder
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2  # small: sources travel as rows and instances go to files; a model's inputs once


class EmbedError(CohortlabError, RuntimeError):
    """The cluster cannot run the embedding (unreachable, or a node that cannot write the instances folder)."""


EmbedderFactory = Callable[[FeatureSet, str], Embedder]


def _ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        raise EmbedError("--ray needs the 'ray' package (pip install ray)") from None
    return ray


@contextmanager
def connected(address: str, error: type[CohortlabError] = EmbedError) -> Iterator[Any]:
    """Ray connected to ``address`` (``local`` starts one here and stops it after); a session already open is
    reused and kept. A failed connection raises ``error`` (the calling stage's) with one line."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address == "local":
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                     log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise error(f"--ray {address}: cannot connect to a Ray cluster: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# --- probe --------------------------------------------------------------------------


def check_nodes_can_write(ray: Any, folder: Path) -> list[str]:
    """Run a probe task on every alive node; the node addresses, or :class:`EmbedError` naming node and path."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(probe_write)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(folder))
            for n in nodes]
    out = []
    for node, problem in ray.get(refs):
        if problem is not None:
            raise EmbedError(f"node {node} cannot write the instances folder {folder} ({problem}); "
                             "put the study on storage every Ray node mounts at the same path")
        out.append(node)
    return out


# --- actors -------------------------------------------------------------------------


class _EmbedWorker:
    """Holds one feature set's encoder, loaded once, and embeds sources with it."""

    def __init__(self, fs: FeatureSet, device: str, store_path: str, threads: int, factory: EmbedderFactory,
                 stain: tuple[Any, ...] | None = None) -> None:
        import ray
        import torch

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.fs_name = fs.name
        self.store_path = Path(store_path)
        self.device = str(resolve_device(device))
        self.node = ray.util.get_node_ip_address()
        self.embedder = factory(fs, device)
        prepare = getattr(self.embedder, "prepare_stain", None)
        if stain is not None and prepare is not None:
            # the first actor fits the stain reference into the shared instances folder; the others, and any
            # actor Ray restarts, find it there and reuse it
            prepare(*stain)

    def record(self) -> store.FeatureSetRecord:
        return self.embedder.record()

    def where(self) -> tuple[str, int]:
        return self.node, os.getpid()

    def embed(self, source: Source) -> dict[str, Any]:
        return embed_source(self.embedder, source, self.fs_name, self.store_path,
                            extra={"node": self.node, "device": self.device})


def _cluster_plan(ray: Any, device: str, workers: int | None) -> tuple[str, int, dict[str, float]]:
    """Device for the actors, how many, and each actor's resources."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    if device.startswith("cuda") and not gpus:
        raise EmbedError(f"--device {device}: the Ray cluster has no GPU")
    if gpus and device != "cpu":
        n = workers or gpus
        return "cuda", n, {"num_gpus": 1, "num_cpus": max(1, cpus // n)}
    # single-threaded actors side by side keep the cores busier than one actor's threads (tile reading,
    # tissue masks and Parquet writes are serial): 2 actors on 2 cores embed 1.47x the sources/s of one
    n = workers or min(cpus, MAX_CPU_ACTORS_PER_DEFAULT)
    return "cpu", n, {"num_cpus": max(1, cpus // n)}


def _failed_status(src: Source, fs_name: str, store_path: Path, why: str) -> dict[str, Any]:
    status = {"feature_set": fs_name, "source_id": src.source_id, "patient_id": src.patient_id,
              "fingerprint": src.fingerprint, "status": "failed", "n_instances": 0, "error": why, "path": None,
              "seconds": None}
    atomic.write_json(status_path(store_path, fs_name, src.source_id), status, fsync=True)
    return status


@dataclass
class RayEmbedResult(EmbedResult):
    """What a Ray run did per feature set, and whether it needed Ray (not when every source was done)."""

    ray_started: bool = True

    def __str__(self) -> str:
        text = super().__str__()
        if not self.ray_started and self.feature_sets:
            text += "\nall sources done: nothing to embed, Ray not started"
        return text


def _embed_feature_set(ray: Any, study: StudyConfig, fs: FeatureSet, plan: FeatureSetPlan, device: str, workers: int | None,
                       retries: int, progress: bool, factory: EmbedderFactory) -> FeatureSetRun:
    """Embed a planned feature set's sources on Ray (``ray`` may be ``None`` when none is left), then finish it."""
    t0 = time.perf_counter()
    run, todo = plan.run, plan.todo
    if todo:
        assert ray is not None  # connected whenever a plan has work
        folder = store.instance_path(study.store_path, fs.name, "x").parent
        check_nodes_can_write(ray, folder)
        atomic.remove_stale_temporaries(folder)
        dev, n, resources = _cluster_plan(ray, device, workers)
        n = min(n, len(todo))
        actor_cls = ray.remote(_EmbedWorker).options(max_restarts=retries, max_task_retries=retries, **resources)
        threads = int(resources["num_cpus"])

        stain = _stain_arguments(study, fs, plan, folder)
        # an actor's first task tells where it runs, so that a killed actor's temporaries can be found
        places: dict[Any, Any] = {}

        def spawn() -> Any:
            actor = actor_cls.remote(fs, dev, str(study.store_path), threads, factory, stain)
            places[actor] = actor.where.remote()
            return actor

        actors = [spawn()]
        try:
            try:
                record = ray.get(actors[0].record.remote())  # the first actor is up (its stain reference fitted)
            except ray.exceptions.RayError as exc:
                raise ConfigError(f"{study.root / 'study.toml'}: feature set '{fs.name}': {_cause(exc)}") from None
            actors += [spawn() for _ in range(n - 1)]
            queue = list(todo)
            running: dict[Any, tuple[Any, Source]] = {}
            bar = tqdm(total=len(todo), desc=f"embed {fs.name} (ray)", unit="source", disable=not progress)
            try:
                for a in actors:
                    if queue:
                        src = queue.pop(0)
                        running[a.embed.remote(src)] = (a, src)
                while running:
                    ready, _ = ray.wait(list(running), num_returns=1)
                    actor, src = running.pop(ready[0])
                    try:
                        st = ray.get(ready[0])
                    except ray.exceptions.RayActorError as exc:  # lost more often than retries allow
                        st = _failed_status(src, fs.name, study.store_path,
                                            f"worker lost {retries + 1} time(s): {_cause(exc)}")
                        if queue:  # a new actor (another model load) only for work still waiting
                            actor = spawn()
                            actors.append(actor)
                    tally(run, st)
                    if st.get("node") is not None:
                        where = f"{st['node']} ({st['device']})"
                        run.placed[where] = run.placed.get(where, 0) + 1
                    bar.update(1)
                    bar.set_postfix(tiles_s=f"{run.instances / max(time.perf_counter() - t0, 1e-9):.1f}",
                                    failed=run.failed, refresh=False)
                    if queue:
                        nxt = queue.pop(0)
                        running[actor.embed.remote(nxt)] = (actor, nxt)
            finally:
                bar.close()
        finally:
            _stop_actors(ray, actors, places, folder)
        # only now, with every source ended, does the store change
        con = store.connect(study.store_path, wait_s=300.0)
        try:
            with store.transaction(con):
                store.register_feature_set(con, record)
        finally:
            con.close()
    finish_feature_set(study, fs, plan)
    run.seconds += time.perf_counter() - t0
    log.info("%s", run)
    return run


def _stain_arguments(study: StudyConfig, fs: FeatureSet, plan: FeatureSetPlan, folder: Path) -> tuple[Any, ...] | None:
    """What an actor's embedder needs to fit or reuse the stain reference (as the local runner's
    :func:`pipeline.embed.prepare_stain_reference`), or ``None`` when the feature set does not normalise."""
    if fs.modality != "wsi" or fs.stain_norm == "none":
        return None
    return (development_sources(study, plan.sources), study.study.seed, list(study.split.external_centers), folder,
            cache_dir(study.store_path))


def _stop_actors(ray: Any, actors: list[Any], places: dict[Any, Any], folder: Path, wait_s: float = 30.0) -> None:
    """Kill the actors and, once their processes on this node have ended, delete what they left half-written.

    An actor killed mid-source (Ctrl-C on the driver) leaves its ``.<file>.<pid>.tmp``; only a dead
    process's temporaries are removed, and a process's liveness can only be seen on its own node,
    so temporaries on other nodes are left to the next run there.
    """
    here = ray.util.get_node_ip_address()
    pids: list[int] = []
    for a in actors:
        ref = places.get(a)
        if ref is not None:
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    node, pid = ray.get(ready[0])
                except ray.exceptions.RayError:
                    node, pid = None, None
                if node == here and pid is not None:
                    pids.append(int(pid))
        ray.kill(a, no_restart=True)
    deadline = time.monotonic() + wait_s
    while any(atomic.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    atomic.remove_stale_temporaries(folder)


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def embed(
    study: StudyConfig,
    feature_set: str | None = None,
    device: str = "auto",
    ray_address: str = "local",
    retries: int = 2,
    progress: bool = True,
    workers: int | None = None,
    embedder_factory: EmbedderFactory = make_embedder,
) -> EmbedResult:
    """Embed every feature set of a study (or one) on a Ray cluster, resumably; see the module docstring.

    Parameters
    ----------
    study
        The validated study; its folder must be on storage every Ray node mounts at the same path.
    feature_set
        Only this feature set.
    device
        ``auto`` (a GPU per actor where the cluster has GPUs), ``cpu`` or ``cuda``.
    ray_address
        ``local`` starts Ray on this machine and stops it at the end; ``auto`` or ``ray://host:port``
        joins a running cluster. A Ray session already open in this process is used as it is. When every
        source of the chosen feature sets is done, Ray is neither started nor joined (the result says so).
    retries
        How many times a source is tried again when its worker process is lost.
    progress
        Show a progress bar over sources, with tiles/s and failures.
    workers
        Number of encoder actors (default: one per GPU; without GPUs, one per core, at most 8).
    embedder_factory
        Builds a feature set's embedder in each actor (default :func:`pipeline.embed.make_embedder`).
    """
    if retries < 0:
        raise ConfigError(f"retries {retries}: need 0 or more")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers {workers}: need 1 or more")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device {device!r}: use auto, cpu or cuda")
    chosen = [study.feature_set(feature_set)] if feature_set else list(study.feature_sets)
    # plan every feature set first: Ray is started (or joined) only when some source is left to embed
    plans = []
    for fs in chosen:
        t0 = time.perf_counter()
        plan = plan_feature_set(study, fs)
        plan.run.seconds = time.perf_counter() - t0
        plans.append((fs, plan))
    result = RayEmbedResult(ray_started=any(plan.todo for _, plan in plans))

    def run_all(ray: Any) -> None:
        for fs, plan in plans:
            result.feature_sets.append(
                _embed_feature_set(ray, study, fs, plan, device, workers, retries, progress, embedder_factory))

    if result.ray_started:
        with connected(ray_address) as ray:
            run_all(ray)
    else:
        run_all(None)
    return result
