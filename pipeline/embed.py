"""The embedding runner behind ``cohortlab embed``: resumable, shardable, modality-agnostic.

For each feature set the runner lists the sources (``slides`` for WSI,
``scans`` for CT), skips those whose ``embed_items`` row is ``done`` with the
source's current fingerprint, takes its shard, and embeds the rest with the
modality's embedder (``pipeline.wsi.embedder`` / ``pipeline.ct.embedder``), whose
model is loaded once per feature set. A source that fails is recorded with its
reason and the run goes on.

No store connection is held while embedding, so ``--shard i/n`` processes can
run side by side (DuckDB lets one process write a file at a time). Each source
ends in two atomic writes beside its instance file::

    instances/feature_set=<fs>/<source>.parquet      instances (done only)
    instances/feature_set=<fs>/<source>.status.json  outcome, until folded

and the status file is then folded into ``embed_items`` in a short
transaction and removed. Work that feature sets share (a slide's tissue mask
and tile grid, :mod:`pipeline.wsi.cache`) is kept in ``cache/`` beside
``instances/``. A WSI feature set with ``stain_norm`` first fits its stain
reference (:func:`prepare_stain_reference`), kept beside its instances.
A run killed at any point leaves either nothing that
counts, or a status file that the next run folds in; temporary files never count.
When every source of a feature set has been tried (in any shard), the
process that finishes last pools the instances per patient.

Each done item records the sha256, size and modification time of its instance
file. On every run the done items of this shard are checked by content (the
sha256 of every file, whatever its modification time, and the ``source_id`` it
holds), and a source whose file is missing, unreadable, another source's or not
the one written is embedded again.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from tqdm.auto import tqdm

from pipeline import atomic, store
from pipeline.config import ConfigError, FeatureSet, StudyConfig
from pipeline.device import resolve_device
from pipeline.pooling import pool_feature_set
from pipeline.source import Embedder, Source

log = logging.getLogger("cohortlab.embed")

STATUS_SUFFIX = ".status.json"


# --- results ----------------------------------------------------------------------


@dataclass
class FeatureSetRun:
    """What one ``embed`` call did for one feature set."""

    name: str
    modality: str
    shard: tuple[int, int] | None = None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    instances: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    redone: list[tuple[str, str]] = field(default_factory=list)  # done sources embedded again: their file was bad
    pooled: dict[str, int] = field(default_factory=dict)
    waiting: int = 0  # sources not yet tried by other shards (pooling deferred)
    placed: dict[str, int] = field(default_factory=dict)  # "node (device)" -> sources embedded there (Ray runs)

    def __str__(self) -> str:
        where = f", shard {self.shard[0]}/{self.shard[1]}" if self.shard else ""
        head = (
            f"{self.name} ({self.modality}{where}): {self.done} done, {self.failed} failed, "
            f"{self.skipped} skipped; {self.instances} instances; {self.seconds:.1f} s"
        )
        lines = [head]
        if self.pooled:
            lines.append("  pooled per patient: " + ", ".join(f"{k} ({v} patients)" for k, v in self.pooled.items()))
        elif self.waiting:
            lines.append(f"  pooling waits for {self.waiting} source(s) of other shards")
        else:
            lines.append("  pooled per patient: up to date")
        if self.placed:
            lines.append("  embedded on: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.placed.items())))
        lines += [f"  warning: {sid} embedded again (instance file {why})" for sid, why in self.redone]
        lines += [f"  failed {sid}: {why}" for sid, why in self.failures]
        return "\n".join(lines)


@dataclass
class EmbedResult:
    """Per feature set: done / failed / skipped counts, instances, seconds and failures."""

    feature_sets: list[FeatureSetRun] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.feature_sets)

    def __str__(self) -> str:
        if not self.feature_sets:
            return "no feature sets to embed"
        return "\n".join(str(r) for r in self.feature_sets)


# --- sources, shards, connections -----------------------------------------------


def list_sources(con: duckdb.DuckDBPyConnection, study: StudyConfig, modality: str) -> list[Source]:
    """Sources of a modality from the store, sorted by id, with paths made absolute (:func:`store.source_rows`)."""
    return [Source(sid, str(row["patient_id"]), str(row["fingerprint"]), row)
            for sid, row in store.source_rows(con, modality, study.root).items()]


def shard_of(sources: Sequence[Source], shard: tuple[int, int] | None) -> list[Source]:
    """The i-th of n deterministic shards: round-robin over sources sorted by id."""
    ordered = sorted(sources, key=lambda s: s.source_id)
    if shard is None:
        return ordered
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
    return ordered[i::n]


@contextmanager
def _store(study: StudyConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    con = store.connect(study.store_path, wait_s=300.0)
    try:
        yield con
    finally:
        con.close()


def make_embedder(fs: FeatureSet, device: str) -> Embedder:
    """The modality's embedder (imported lazily: CT and WSI need different libraries)."""
    if fs.modality == "wsi":
        from pipeline.wsi.embedder import make_embedder as make
    elif fs.modality == "ct":
        from pipeline.ct.embedder import make_embedder as make  # type: ignore[no-redef]
    else:
        raise ValueError(f"feature set '{fs.name}': unknown modality {fs.modality!r}")
    return make(fs, device)


# --- per-source outcome files -------------------------------------------------------


def cache_dir(store_path: Path) -> Path:
    """The folder where embedders keep work that feature sets share (e.g. tissue masks and tile grids)."""
    return store.store_dir(store_path) / "cache"


def status_path(store_path: Path, feature_set: str, source_id: str) -> Path:
    p = store.instance_path(store_path, feature_set, source_id)
    return p.with_name(p.name.removesuffix(".parquet") + STATUS_SUFFIX)


def fold_status_files(con: duckdb.DuckDBPyConnection, study: StudyConfig, feature_set: str, current: dict[str, Source]) -> int:
    """Record pending status files of a feature set in ``embed_items`` (one transaction), then remove them.

    Returns how many of them change the set of done sources (a new done item,
    or a failure replacing a done one), i.e. whether pooling is out of date.
    A status file for a source that is gone, or whose fingerprint has changed
    since, is dropped; so is a ``done`` one whose instance file is missing or
    is not the file that was written.
    """
    folder = store.instance_path(study.store_path, feature_set, "x").parent
    files = sorted(folder.glob(f"*{STATUS_SUFFIX}")) if folder.exists() else []
    if not files:
        return 0
    base = store.store_dir(study.store_path)
    n = 0
    with store.transaction(con):
        for f in files:
            try:
                st = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # removed by another shard meanwhile, or unreadable: the source is simply re-tried
            src = current.get(st.get("source_id"))
            if src is None or src.fingerprint != st.get("fingerprint"):
                continue
            stamp = None
            if st["status"] == "done":
                written = _status_stamp(st)
                problem, fresh = store.verify_instance_file(base / st["path"], written, st.get("n_instances"),
                                                            st["source_id"])
                if problem is not None:
                    log.warning("%s / %s: %s: %s; the source is embedded again", feature_set, st["source_id"],
                                st["path"], problem)
                    continue
                stamp = fresh or written
            before = con.execute(
                "SELECT status FROM embed_items WHERE feature_set = ? AND source_id = ?", [feature_set, st["source_id"]]
            ).fetchone()
            n += st["status"] == "done" or (before is not None and before[0] == "done")
            store.record_item(
                con, feature_set, st["source_id"], st["patient_id"], st["status"], st.get("n_instances"),
                st.get("error"), st.get("seconds"), st.get("path"), st.get("fingerprint"), stamp,
                node=st.get("node"), device=st.get("device"),
            )
    for f in files:
        f.unlink(missing_ok=True)
    return n


def _status_stamp(st: dict[str, Any]) -> store.FileStamp | None:
    if st.get("checksum") is None:
        return None
    return store.FileStamp(st["checksum"], int(st["file_bytes"]), int(st["file_mtime_ns"]))


def check_done_outputs(con: duckdb.DuckDBPyConnection, study: StudyConfig, feature_set: str, source_ids: Sequence[str]) -> dict[str, str]:
    """Check the instance files of done items by content; ``source_id -> problem`` for those to embed again.

    Every file is hashed (in parallel threads) and its sha256 compared with
    the recorded one, whatever its modification time says (bit rot keeps
    it), and the ``source_id`` it holds with its row's; a file whose time
    alone changed (a copy without times) gets its new time recorded. Rows
    without a checksum (an older store) get one when their file reads as the
    one recorded.
    """
    if not source_ids:
        return {}
    wanted = set(source_ids)
    files = [f for f in store.done_files(con, feature_set) if f.source_id in wanted]
    base = store.store_dir(study.store_path)
    bad: dict[str, str] = {sid: "not recorded" for sid in wanted - {f.source_id for f in files}}
    fresh: dict[str, store.FileStamp] = {}
    for f, (problem, new) in zip(files, store.check_done_files(base, files, content=True)):
        if problem is not None:
            bad[f.source_id] = problem
            log.warning("%s / %s: instance file %s is %s; embedding it again", feature_set, f.source_id, f.path, problem)
        elif new is not None:
            fresh[f.source_id] = new
    if fresh:
        with store.transaction(con):
            store.record_stamps(con, feature_set, fresh)
    return bad


def clean_error(exc: BaseException) -> str:
    """One line for a failure (errors re-raised from DataLoader workers carry a whole traceback)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[-1] if lines else text
        m = re.match(r"^[\w.]+(?:Error|Exception): (.*)$", text)
        return m.group(1) if m and isinstance(exc, ValueError) else text
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def embed_source(
    embedder: Embedder, source: Source, feature_set: str, store_path: Path, progress: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed one source, write its instances and status file atomically; never raises for a bad source.

    ``extra`` fields (e.g. the ``node`` and ``device`` that embedded it) are added to the status.
    """
    out = store.instance_path(store_path, feature_set, source.source_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = str(out.relative_to(store.store_dir(store_path)))
    t0 = time.perf_counter()
    status: dict[str, Any] = {
        "feature_set": feature_set, "source_id": source.source_id, "patient_id": source.patient_id,
        "fingerprint": source.fingerprint,
    }
    try:
        kwargs: dict[str, Any] = {}
        params = inspect.signature(embedder.embed).parameters
        if "artifacts" in params:
            kwargs["artifacts"] = out.with_name(out.name.removesuffix(".parquet"))
        if "progress" in params:
            kwargs["progress"] = progress
        if "cache" in params:
            kwargs["cache"] = cache_dir(store_path)
        frame = embedder.embed(source, **kwargs)
        if frame.height and (frame["source_id"] != source.source_id).any():
            raise ValueError(f"embedder returned rows of another source for {source.source_id}")
        store.write_instances(out, frame)
        stamp = store.stamp_file(out)
        status.update(status="done", n_instances=frame.height, error=None, path=rel, checksum=stamp.checksum,
                      file_bytes=stamp.bytes, file_mtime_ns=stamp.mtime_ns)
    except Exception as exc:  # one broken source must not stop the run
        log.warning("%s / %s failed: %s", feature_set, source.source_id, exc)
        status.update(status="failed", n_instances=0, error=clean_error(exc), path=None)
    status["seconds"] = round(time.perf_counter() - t0, 3)
    status.update(extra or {})
    atomic.write_json(status_path(store_path, feature_set, source.source_id), status, fsync=True)
    return status


# --- the run ------------------------------------------------------------------------


def _attempted(con: duckdb.DuckDBPyConnection, feature_set: str) -> dict[str, tuple[str, str | None]]:
    rows = con.execute("SELECT source_id, status, fingerprint FROM embed_items WHERE feature_set = ?", [feature_set]).fetchall()
    return {sid: (st, fp) for sid, st, fp in rows}


def _has_pooled(con: duckdb.DuckDBPyConnection, feature_set: str, poolings: Sequence[str]) -> bool:
    have = {r[0] for r in con.execute("SELECT DISTINCT pooling FROM patient_features WHERE feature_set = ?", [feature_set]).fetchall()}
    return set(poolings) <= have


@dataclass
class FeatureSetPlan:
    """What is left to embed of one feature set, and what the run knew before it began."""

    run: FeatureSetRun
    sources: list[Source]
    current: dict[str, Source]
    attempted_before: dict[str, tuple[str, str | None]]
    todo: list[Source]
    folded: int


def plan_feature_set(study: StudyConfig, fs: FeatureSet, shard: tuple[int, int] | None = None) -> FeatureSetPlan:
    """Fold pending status files, check done outputs and list this shard's sources still to embed."""
    run = FeatureSetRun(fs.name, fs.modality, shard)
    with _store(study) as con:
        sources = list_sources(con, study, fs.modality)
        current = {s.source_id: s for s in sources}
        folded = fold_status_files(con, study, fs.name, current)
        attempted_before = _attempted(con, fs.name)
        mine = shard_of(sources, shard)
        done = [s.source_id for s in mine if attempted_before.get(s.source_id) == ("done", s.fingerprint)]
        broken = check_done_outputs(con, study, fs.name, done)
    run.redone = sorted(broken.items())
    todo = [s for s in mine if attempted_before.get(s.source_id) != ("done", s.fingerprint) or s.source_id in broken]
    run.skipped = len(mine) - len(todo)
    return FeatureSetPlan(run, sources, current, attempted_before, todo, folded)


def development_sources(study: StudyConfig, sources: Sequence[Source]) -> list[Source]:
    """The sources of patients at development centres (every centre not in ``[split] external_centers``).

    The stain reference is fitted on these; no label or split column is read.
    """
    external = set(study.split.external_centers)
    with _store(study) as con:
        centres = dict(con.execute("SELECT patient_id, center FROM patients").fetchall())
    return [s for s in sources if s.patient_id in centres and centres[s.patient_id] not in external]


def prepare_stain_reference(study: StudyConfig, fs: FeatureSet, embedder: Embedder, sources: Sequence[Source]) -> None:
    """Fit a WSI feature set's stain reference (or reuse the stored one) before any slide is embedded.

    Every shard fits the same reference (same slides, same seed), so shards may run side by side.
    """
    prepare = getattr(embedder, "prepare_stain", None)
    if fs.modality != "wsi" or fs.stain_norm == "none" or prepare is None:
        return
    folder = store.instance_path(study.store_path, fs.name, "x").parent
    try:
        prepare(development_sources(study, sources), study.study.seed, list(study.split.external_centers), folder,
                cache_dir(study.store_path))
    except ValueError as exc:  # no development slide, or none with tissue: every source would fail alike
        raise ConfigError(f"{study.root / 'study.toml'}: feature set '{fs.name}': stain reference: {exc}") from None


def tally(run: FeatureSetRun, status: dict[str, Any]) -> None:
    """Count one source's outcome (a status written by :func:`embed_source`) in the run."""
    if status["status"] == "done":
        run.done += 1
        run.instances += status["n_instances"]
    else:
        run.failed += 1
        run.failures.append((status["source_id"], status["error"]))


def finish_feature_set(study: StudyConfig, fs: FeatureSet, plan: FeatureSetPlan) -> FeatureSetRun:
    """Fold the remaining status files and pool per patient once every source has been tried (in any shard)."""
    run, sources, attempted_before = plan.run, plan.sources, plan.attempted_before
    with _store(study) as con:
        plan.folded += fold_status_files(con, study, fs.name, plan.current)
        attempted = _attempted(con, fs.name)
        untried = [s for s in sources if attempted.get(s.source_id, (None, None))[1] != s.fingerprint]
        # another shard's damaged files wait for that shard to embed them again
        damaged = {p.source_id for p in store.unreadable_instances(con, study.store_path, fs.name)}
        waiting = {s.source_id for s in untried}
        untried += [s for s in sources if s.source_id in damaged and s.source_id not in waiting]
        run.waiting = len(untried)
        # Re-pool only when the set of done instances may have changed.
        was_done = any(attempted_before.get(s.source_id, (None, None))[0] == "done" for s in plan.todo)
        changed = run.done > 0 or plan.folded > 0 or was_done
        if not untried and (changed or not _has_pooled(con, fs.name, fs.pooling)):
            valid = [s.source_id for s in sources if attempted[s.source_id] == ("done", s.fingerprint)]
            run.pooled = pool_feature_set(con, fs.name, fs.pooling, valid)
    return run


def embed_feature_set(
    study: StudyConfig, fs: FeatureSet, device: str = "auto", shard: tuple[int, int] | None = None, progress: bool = True
) -> FeatureSetRun:
    """Embed one feature set's sources (this shard's share), then pool when all are tried."""
    t0 = time.perf_counter()
    plan = plan_feature_set(study, fs, shard)
    run, todo = plan.run, plan.todo
    if todo:
        try:
            embedder = make_embedder(fs, device)
        except (ValueError, ImportError) as exc:  # encoder, parameters or stage unusable: every source would fail alike
            raise ConfigError(f"{study.root / 'study.toml'}: feature set '{fs.name}': {exc}") from None
        try:
            prepare_stain_reference(study, fs, embedder, plan.sources)
            with _store(study) as con, store.transaction(con):
                store.register_feature_set(con, embedder.record())
            atomic.remove_stale_temporaries(store.instance_path(study.store_path, fs.name, "x").parent)
            where = {"node": socket.gethostname(), "device": str(resolve_device(device))}
            for src in tqdm(todo, desc=f"embed {fs.name}", unit="source", disable=not progress):
                tally(run, embed_source(embedder, src, fs.name, study.store_path, progress=progress, extra=where))
                try:
                    with _store(study) as con:
                        plan.folded += fold_status_files(con, study, fs.name, plan.current)
                except store.StoreError as exc:  # folded by the next run (or another shard) instead
                    log.warning("could not record %s now: %s", src.source_id, exc)
        finally:
            embedder.close()
    finish_feature_set(study, fs, plan)
    run.seconds = time.perf_counter() - t0
    log.info("%s", run)
    return run


def embed(
    study: StudyConfig,
    feature_set: str | None = None,
    device: str = "auto",
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> EmbedResult:
    """Embed every feature set of a study (or one), resumably; see the module docstring.

    Parameters
    ----------
    study
        The validated study.
    feature_set
        Only this feature set.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    shard
        ``(i, n)``: embed only the i-th of n round-robin shards of the sources sorted by id.
    progress
        Show progress bars.
    """
    try:
        resolve_device(device)  # fail before any work when CUDA is asked for and absent
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    chosen = [study.feature_set(feature_set)] if feature_set else list(study.feature_sets)
    result = EmbedResult()
    for fs in chosen:
        result.feature_sets.append(embed_feature_set(study, fs, device, shard, progress))
    return result
