"""Internal validation, compute side: refit a model's whole procedure on B resamples of its training patients.

``[validation] internal = "bootstrap"`` (or ``".632+"``, the same resamples) refits the model's learner, as
:func:`analytics.models.registry.build_learner` makes it (tuning grid, ComBat, imputation, scaling, dropped
columns, knots: everything the learner fits), on each bootstrap resample of the n training patients the
final model was fitted on, as ``rms::validate`` does in ``predab.resample`` (Harrell, Lee & Mark 1996,
Stat Med 15:361; Efron & Tibshirani 1997, JASA 92:548 for .632+). ``"cv"`` refits it on the training rows of
each fold of ``repeats`` seeded k-fold splits. Each replicate's scores of its own rows (apparent) and of all n
patients (test) are one :class:`analytics.stats.resampling.Replicate`; :mod:`analytics.stats.internal` turns
them into optimism-corrected measures.

Draws. Replicate ``b`` of the bootstrap uses ``np.random.default_rng([seed, b]).integers(0, n, n)`` (not
stratified, as rms); repeat ``r`` of "cv" shuffles with ``np.random.default_rng([seed, r, k]).permutation(n)``
and cuts the order into k near-equal folds (``np.array_split``); replicate ``r * k + j`` is fitted on every row
but fold j's (``index``; the left-out rows are the complement of ``index``). ``"ncv"`` (binary models only) is
nested cross-validation (Bates, Hastie & Tibshirani 2024): the plan is
:func:`analytics.stats.nested_cv.nested_cv_plan` ``(y, folds, repeats, seed)`` of the n training labels, replicate
``i`` is fitted on ``plan.train_rows(i)`` and scores all n patients; a survival model gets no replicates, only a
record saying why. The learner of replicate ``b``
is seeded by :func:`learner_seed` ``(seed, b)``. Each replicate depends on its number only, so the results are
the same bytes whichever engine runs them and with how many workers.

Engines: local processes (joblib's loky, ``[compute] n_jobs``; 1 runs in this process) or Ray tasks
(``[compute] ray`` / ``--ray``). One BLAS thread per worker (as ``fit``). A resample with one class only (no
event for a survival model), or a learner that fails on it, is a failed replicate with its reason, not an error.

Cache: each finished replicate is written at once, atomically, as
``<models>/.internal/<model>/<key>/rep_<b>.npz`` (:mod:`analytics.models.replicates`); ``key`` digests the
model's fit key, the resampling family, the seed, k for "cv" and the horizons. A rerun after Ctrl-C or a kill
fits only the missing replicates; a changed model gets a new key and the old folder is removed. ``B`` is not
part of the key: replicate b does not depend on it, so raising B fits only the new ones.

Simplification (recorded in the manifest): a second-stage model (taking other models' scores) is refitted on
its input models' out-of-fold training scores, as its outer folds are; the input models are not refitted
inside each replicate.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from analytics.models.data import ModelData
from analytics.models.learners import Learner
from analytics.models.replicates import (
    INTERNAL_FOLDER,
    Apparent,
    ReplicateError,
    apparent_current,
    decode,
    files_digest,
    read_blobs,
    replicate_folder,
    replicate_name,
    write_apparent,
    write_replicate,
)
from analytics.stats.nested_cv import NestedCVPlan, nested_cv_plan
from analytics.stats.resampling import Replicate
from pipeline import atomic, store
from pipeline.config import Model, StudyConfig
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.fit")

NCV_SURVIVAL_NOTE = "nested cross-validation is for binary endpoints"
CACHE_FORMAT = 1  # part of the key: a change of what a replicate file holds refits them

Make = Callable[[Model, int], Learner]


class InternalFitError(CohortlabError, RuntimeError):
    """The replicates cannot run (a Ray cluster that cannot be reached); names the model or the address."""


# --- the resampling plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resampling:
    """How a model's training patients are resampled: ``[validation] internal``, ``B``, ``repeats``, ``folds``."""

    method: str  # bootstrap | .632+ | cv | ncv
    B: int
    repeats: int
    folds: int
    seed: int
    # "ncv": the nested cross-validation plan of the training labels (with_labels); None for the other methods
    nested: NestedCVPlan | None = field(default=None, compare=False, repr=False)

    @property
    def family(self) -> str:
        """``bootstrap`` (also for .632+, which reads the same resamples), ``cv`` or ``ncv``."""
        return self.method if self.method in ("cv", "ncv") else "bootstrap"

    @property
    def count(self) -> int:
        """How many replicates: B, repeats x folds, or for "ncv" repeats x (k outer + k(k-1)/2 inner fits)."""
        if self.family == "ncv":
            return self.repeats * self.folds * (self.folds + 1) // 2
        return self.repeats * self.folds if self.family == "cv" else self.B

    def with_labels(self, y: np.ndarray) -> Resampling:
        """The plan with its nested cross-validation folds drawn from the 0/1 training labels ("ncv"; else itself)."""
        if self.family != "ncv":
            return self
        return replace(self, nested=nested_cv_plan(y, self.folds, self.repeats, self.seed))

    def rows(self, b: int, n: int) -> np.ndarray:
        """The rows (0..n-1) replicate ``b`` is fitted on (see the module notes for the draws)."""
        if self.family == "ncv":
            if self.nested is None:
                raise ValueError("nested cross-validation rows need the training labels (Resampling.with_labels)")
            return self.nested.train_rows(b).astype(np.int64)
        if self.family == "bootstrap":
            return np.random.default_rng([self.seed, b]).integers(0, n, n).astype(np.int64)
        r, j = divmod(b, self.folds)
        order = np.random.default_rng([self.seed, r, self.folds]).permutation(n)
        left_out = np.array_split(order, self.folds)[j]
        keep = np.ones(n, dtype=bool)
        keep[left_out] = False
        return np.flatnonzero(keep).astype(np.int64)

    def key(self, fit_key: str, horizons: Sequence[float]) -> str:
        """The cache key of the replicates: what each one depends on (not B, not repeats: see the module notes)."""
        payload = {"format": CACHE_FORMAT, "fit_key": fit_key, "family": self.family, "seed": self.seed,
                   "folds": self.folds if self.family in ("cv", "ncv") else None, "horizons": [float(t) for t in horizons]}
        if self.family == "ncv":  # the plan's folds depend on the repeats only per repeat, but keep it simple
            payload["repeats"] = self.repeats
        return store.json_digest(payload)[:16]

    def settings(self) -> dict[str, Any]:
        """What the manifest records of the plan (compared to decide whether a saved model is current)."""
        if self.family in ("cv", "ncv"):
            return {"method": self.method, "repeats": self.repeats, "folds": self.folds}
        return {"method": self.method, "B": self.B}


def resampling_of(study: StudyConfig) -> Resampling | None:
    """The study's resampling plan, or None for ``[validation] internal = "none"``."""
    v = study.validation
    if v.internal == "none":
        return None
    return Resampling(v.internal, v.B, v.repeats, v.folds, study.study.seed)


def is_current(recorded: dict[str, Any] | None, wanted: Resampling | None, models_dir: Path) -> bool:
    """Whether a saved model's internal-validation record is the one the study asks for now, its replicate
    files all there and the ones recorded (a file removed or changed since: the replicates are made again)."""
    if wanted is None:
        return recorded is None
    if recorded is None or any(recorded.get(k) != v for k, v in wanted.settings().items()):
        return False
    if recorded.get("skipped"):  # "ncv" on a survival model: nothing was fitted, nothing to check
        return True
    try:
        blobs = read_blobs(Path(models_dir) / str(recorded["folder"]), int(recorded["replicates"]))
    except (ReplicateError, KeyError, TypeError, ValueError):
        return False
    return files_digest(blobs) == recorded.get("digest") and apparent_current(models_dir, recorded)


def learner_seed(seed: int, b: int) -> int:
    """The seed of replicate ``b``'s learner (its inner folds, its random states), from the study seed."""
    return int(np.random.SeedSequence([seed, b]).generate_state(1)[0] >> 1)


# --- one replicate ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Task:
    """What every replicate of one model shares: the model, its n training patients and their outcome."""

    spec: Model
    data: ModelData
    y: np.ndarray  # 0/1 labels, or (n, 2) times and events
    plan: Resampling
    horizons: tuple[float, ...] = ()
    make: Make | None = None


def _degenerate(y: np.ndarray) -> str | None:
    if y.ndim == 2:
        return None if (y[:, 1] == 1).any() else "no event in the resample"
    classes = np.unique(y)
    return None if len(classes) == 2 else f"only label {int(classes[0])} in the resample"


def fresh_learner(task: Task, b: int) -> Learner:
    """Replicate ``b``'s unfitted learner, seeded by :func:`learner_seed` (built where the replicates are sent from,
    so that a worker process needs only the learner's own modules, not every kind's)."""
    if task.make is not None:
        return task.make(task.spec, learner_seed(task.plan.seed, b))
    from analytics.models import registry

    # a replicate refits the whole procedure; with [imputation] method = "mice" it imputes m_boot times
    return registry.build_learner(task.spec, learner_seed(task.plan.seed, b), replicate=True)


def fit_replicate(task: Task, b: int, learner: Learner | None = None) -> Replicate:
    """Replicate ``b``: its learner (default :func:`fresh_learner`) fitted on its rows, scoring them (apparent)
    and all n rows (test)."""
    n = len(task.data)
    index = task.plan.rows(b, n)
    empty = np.empty(0)
    if task.plan.family == "cv" and len(index) == n:
        return Replicate(index, empty, empty, error="no left-out rows (fewer patients than folds)")
    reason = _degenerate(task.y[index])
    if reason is not None:
        return Replicate(index, empty, empty, error=reason)
    with threadpool_limits(limits=1):  # small matrices: BLAS threads only add contention and run-to-run variation
        try:
            rows = task.data.take(index)
            learner = (learner or fresh_learner(task, b)).fit(rows, task.y[index])
            apparent = np.asarray(learner.predict_score(rows), dtype=np.float64)
            test = np.asarray(learner.predict_score(task.data), dtype=np.float64)
            apparent_risk = test_risk = None
            if task.horizons and hasattr(learner, "risk_at"):
                apparent_risk = np.asarray(learner.risk_at(rows, list(task.horizons)), dtype=np.float64)
                test_risk = np.asarray(learner.risk_at(task.data, list(task.horizons)), dtype=np.float64)
        except (ValueError, RuntimeError, ArithmeticError, TypeError, np.linalg.LinAlgError) as exc:
            return Replicate(index, empty, empty, error=f"{type(exc).__name__}: {exc}".strip())
    if not (np.isfinite(apparent).all() and np.isfinite(test).all()):
        return Replicate(index, empty, empty, error="non-finite predicted scores")
    return Replicate(index, apparent, test, apparent_risk, test_risk)


def _numbered(task: Task, b: int, learner: Learner | None = None) -> tuple[int, Replicate]:
    return b, fit_replicate(task, b, learner)


# --- engines ---------------------------------------------------------------------------------------------


def _on_joblib(task: Task, todo: Sequence[int], n_jobs: int) -> Iterator[tuple[int, Replicate]]:
    """Replicates on local processes (loky), each yielded as it finishes; one worker runs them in this process."""
    workers = (os.cpu_count() or 1) if n_jobs == -1 else n_jobs
    if workers == 1 or len(todo) <= 1:
        for b in todo:
            yield _numbered(task, b)
        return
    from joblib import Parallel, delayed

    with Parallel(n_jobs=min(workers, len(todo)), backend="loky", return_as="generator_unordered") as parallel:
        yield from parallel(delayed(_numbered)(task, b, fresh_learner(task, b)) for b in todo)


def _on_ray(task: Task, todo: Sequence[int], address: str) -> Iterator[tuple[int, Replicate]]:
    """Replicates as Ray tasks (the shared inputs put once in the object store), each yielded as it finishes."""
    from pipeline.ray_runner import connected  # the embedding stage's Ray session; loaded only for Ray

    with connected(address, InternalFitError) as ray:
        shared = ray.put(task)
        remote = ray.remote(num_cpus=1)(_numbered)
        pending = [remote.remote(shared, b, fresh_learner(task, b)) for b in todo]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                if pending:  # and whatever else is ready, without waiting (one scan of the list, not one each)
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    done += more
                for ref in done:
                    yield ray.get(ref)
        finally:
            for ref in pending:  # interrupted: what is not finished is not wanted
                ray.cancel(ref, force=True)


# --- a model's replicates, cached ------------------------------------------------------------------------


def _cached(folder: Path, count: int) -> list[int]:
    """The replicates still to fit: those without a readable file (a file that does not decode is refitted)."""
    todo = []
    for b in range(count):
        path = folder / replicate_name(b)
        if path.is_file():
            try:
                decode(path.read_bytes(), path)
                continue
            except ReplicateError:
                path.unlink()
        todo.append(b)
    return todo


def run_replicates(
    spec: Model,
    data: ModelData,
    y: np.ndarray,
    plan: Resampling,
    *,
    fit_key: str,
    models_dir: Path,
    horizons: Sequence[float] = (),
    n_jobs: int = 1,
    ray: str | None = None,
    progress: bool = False,
    make: Make | None = None,
    on_done: Callable[[int], None] | None = None,
    input_scores: str | None = None,
) -> dict[str, Any]:
    """Fit a model's missing replicates, write each as it finishes, and return the manifest's record of all.

    Parameters
    ----------
    spec
        The model.
    data, y
        Its n training patients (those its final model was fitted on, in their order) and their outcome:
        0/1 labels, or ``(n, 2)`` times and events.
    plan
        The resampling (:func:`resampling_of`).
    fit_key
        The model's fit key (part of the cache key).
    models_dir
        The study's models folder; replicates go to ``.internal/<model>/<key>/`` in it.
    horizons
        Survival models: the horizons of the replicates' absolute risks.
    n_jobs
        Local worker processes (-1: every core; 1: this process), when ``ray`` is None.
    ray
        A Ray address (``local``, ``auto``, ``ray://host:port``): the replicates run as Ray tasks.
    progress
        A progress bar (replicates done, ETA).
    make
        Builds a fresh learner (default :func:`analytics.models.registry.build_learner`); sent to the workers.
    on_done
        Called with each replicate's number once its file is written.
    input_scores
        How a second-stage model's input scores were made (recorded); None for a first-stage model.

    Returns
    -------
    dict
        ``method``, ``B`` or ``repeats`` and ``folds``, ``replicates``, ``done``, ``failed``, ``failures``
        (reason: count), ``n``, ``seed``, ``test_rows``, ``key``, ``folder`` (relative to ``models_dir``),
        ``digest`` (sha256 of the files, :func:`analytics.models.replicates.files_digest`), ``input_scores``.
    """
    key = plan.key(fit_key, horizons)
    folder = replicate_folder(models_dir, spec.name, key)
    if folder.parent.is_dir():  # other keys are replicates of a changed model
        for old in folder.parent.iterdir():
            if old.name != key and old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temporaries(folder)
    count = plan.count
    todo = _cached(folder, count)
    task = Task(spec, data, np.asarray(y), plan, tuple(float(t) for t in horizons), make)
    if todo:
        log.info("model %s: %d of %d %s replicates to fit (%s)", spec.name, len(todo), count, plan.method,
                 f"Ray {ray}" if ray else f"n_jobs {n_jobs}")
    engine: Iterable[tuple[int, Replicate]] = _on_ray(task, todo, ray) if ray else _on_joblib(task, todo, n_jobs)
    bar = tqdm(total=count, initial=count - len(todo), desc=f"{spec.name} {plan.method} replicates",
               unit="replicate", leave=False, disable=not progress)
    try:
        for b, rep in engine:
            write_replicate(folder, b, rep)
            bar.update(1)
            if on_done is not None:
                on_done(b)
    finally:
        bar.close()
        close = getattr(engine, "close", None)
        if close is not None:  # stops the workers of an interrupted run
            close()
    blobs = read_blobs(folder, count)
    reps = [decode(data_, folder / replicate_name(b)) for b, data_ in enumerate(blobs)]
    failures = Counter(r.error for r in reps if r.error is not None)
    if failures:
        log.warning("model %s: %d of %d %s replicates failed: %s", spec.name, sum(failures.values()), count,
                    plan.method, "; ".join(f"{why} ({k})" for why, k in failures.most_common()))
    return {
        **plan.settings(), "replicates": count, "done": count - sum(failures.values()),
        "failed": sum(failures.values()), "failures": dict(sorted(failures.items())), "n": len(data),
        "seed": plan.seed, "test_rows": "complement of index" if plan.family == "cv" else "all",
        "key": key, "folder": f"{INTERNAL_FOLDER}/{spec.name}/{key}", "digest": files_digest(blobs),
        "input_scores": input_scores,
    }


SECOND_STAGE_NOTE = ("simplified: the input models' out-of-fold training scores, as the outer folds use; "
                     "the input models are not refitted inside each replicate")


def apparent_of(final: Learner, data: ModelData, y: np.ndarray, horizons: Sequence[float]) -> Apparent:
    """The final model's scores (and, for a survival model, absolute risks at the horizons) of the n training
    patients it was fitted on: rms's "original" column, on the rows and inputs the replicates' test scores use."""
    score = np.asarray(final.predict_score(data), dtype=np.float64)
    risk = None
    if horizons and hasattr(final, "risk_at"):
        risk = np.asarray(final.risk_at(data, list(horizons)), dtype=np.float64)
    return Apparent(np.asarray(data.patient_ids, dtype=np.str_), np.asarray(y, dtype=np.float64), score, risk,
                    np.asarray(horizons, dtype=np.float64))


def for_model(spec: Model, data: ModelData, targets: np.ndarray, training: np.ndarray, plan: Resampling, *,
              fit_key: str, models_dir: Path, horizons: Sequence[float], n_jobs: int, ray: str | None,
              progress: bool, second_stage: bool, final: Learner | None = None) -> dict[str, Any]:
    """:func:`run_replicates` on a fitted model's training rows (``training``: positions into ``data``); with the
    final model (``final``), its apparent scores of them are saved beside the replicates (:func:`apparent_of`,
    ``apparent.npz``) and their sha256 recorded as ``apparent``."""
    rows = np.asarray(training, dtype=np.int64)
    y = targets[rows] if np.ndim(targets) == 2 else np.asarray(targets[rows]).astype(np.int64)
    if plan.family == "ncv":
        if np.ndim(y) == 2:  # no replicates: validation reads the reason from the record
            return {**plan.settings(), "replicates": 0, "done": 0, "failed": 0, "failures": {}, "n": len(rows),
                    "seed": plan.seed, "skipped": NCV_SURVIVAL_NOTE}
        try:
            plan = plan.with_labels(y)
        except ValueError as exc:  # too few patients of a class for the folds: one line naming the model
            raise InternalFitError(f"model {spec.name}: [validation] internal = 'ncv': {exc}") from None
    taken = data.take(rows)
    t0 = time.perf_counter()
    record = run_replicates(spec, taken, y, plan, fit_key=fit_key, models_dir=models_dir, horizons=horizons,
                            n_jobs=n_jobs, ray=ray, progress=progress,
                            input_scores=SECOND_STAGE_NOTE if second_stage else None)
    if spec.imputation is not None and getattr(final, "imputations_", None) is not None:
        # the cost of imputing inside every replicate (bootstrap, then impute: Wahl et al. 2016)
        record["imputation"] = {"m_boot": spec.imputation.m_boot,
                                "imputations": int(record.get("done", 0)) * spec.imputation.m_boot,
                                "seconds": round(time.perf_counter() - t0, 3)}
    if final is not None:
        record["apparent"] = write_apparent(Path(models_dir) / record["folder"],
                                            apparent_of(final, taken, y, horizons))
    return record


__all__ = ["NCV_SURVIVAL_NOTE", "InternalFitError", "Resampling", "SECOND_STAGE_NOTE", "Task", "apparent_of", "fit_replicate", "for_model",
           "is_current", "learner_seed", "resampling_of", "run_replicates"]
