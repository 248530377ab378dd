"""Where ``cohortlab fit`` runs a model's fits: in this process, on local worker processes or as Ray tasks.

A model's outer-fold fits and its final refit are independent of one another, and so are the fits of an input
model on the folds of nested cross-fitting (:meth:`Engine.fit_all`). :class:`Engine` runs them
here, on ``[compute] n_jobs`` local processes (joblib's loky) or as Ray tasks (``[compute] ray`` / ``--ray``),
each fit with one BLAS thread (and XGBoost's one thread, :class:`analytics.models.classical.EarlyStoppedXGB`),
and yields the fitted learners in the order asked: the predictions, and the saved model, are the same bytes
whichever engine ran them and with how many workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from analytics.models.data import ModelData
from analytics.models.learners import Learner
from analytics.outer_folds import FitError
from pipeline.config import Model


def train_learner(spec: Model, data: ModelData, y: np.ndarray, seed: int, make: Callable[[Model, int], Learner],
                  step: str) -> Learner:
    """A fresh learner of ``spec`` fitted on ``data`` (both classes, or an event, required); failures as :class:`FitError`.

    ``y``: 0/1 labels, or ``(n, 2)`` times and events for a survival model.
    """
    if np.ndim(y) == 2:
        if not (np.asarray(y)[:, 1] == 1).any():
            raise FitError(f"model '{spec.name}', {step}: its {len(y)} training patients with inputs hold no event")
        try:
            return make(spec, seed).fit(data, y)
        except (ValueError, RuntimeError) as exc:
            raise FitError(f"model '{spec.name}', {step}: {exc}") from exc
    classes = np.unique(y)
    if len(classes) < 2:
        raise FitError(f"model '{spec.name}', {step}: its training patients with inputs hold only label "
                       f"{classes.tolist()}; it needs both classes")
    try:
        return make(spec, seed).fit(data, y)
    except (ValueError, RuntimeError) as exc:
        raise FitError(f"model '{spec.name}', {step}: {exc}") from exc


# fewer training patients than this: a model's fits run in this process (starting workers would cost more than
# the fits); the results are the same bytes either way
PARALLEL_MIN_ROWS = 2000


def _fit_task(spec: Model, data: ModelData, rows: np.ndarray, y: np.ndarray, seed: int,
              make: Callable[[Model, int], Learner], step: str) -> Learner:
    """One fit of a model (an outer fold's, or the final refit) on ``rows`` of ``data``, with one BLAS thread,
    so it gives the same bytes in this process, a local worker process or a Ray task."""
    with threadpool_limits(limits=1):
        return train_learner(spec, data.take(rows), y, seed, make, step)


class Engine:
    """Where a model's outer-fold fits and final refit run: here, on local processes or as Ray tasks.

    Parameters
    ----------
    n_jobs
        ``[compute] n_jobs``: local worker processes (joblib's loky; -1 every core, 1 this process).
    ray
        A Ray address (``[compute] ray`` / ``--ray``): the fits run as Ray tasks; the session is opened at the
        first model that needs it and closed by :meth:`close`.
    """

    def __init__(self, n_jobs: int = 1, ray: str | None = None) -> None:
        self.n_jobs = (os.cpu_count() or 1) if n_jobs == -1 else n_jobs
        self.ray = ray
        self._stack = ExitStack()
        self._session: Any = None

    def close(self) -> None:
        self._stack.close()
        self._session = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parallel(self, spec: Model, n_rows: int) -> bool:
        """Whether a model's fits go to workers (MIL networks always train here: torch picks its own threads)."""
        return (self.ray is not None or self.n_jobs > 1) and not spec.traits.bags and n_rows >= PARALLEL_MIN_ROWS

    def fits(self, spec: Model, jobs: Sequence[tuple[str, np.ndarray, ModelData]], y: np.ndarray, seed: int,
             make: Callable[[Model, int], Learner], parallel: bool) -> Iterator[Learner]:
        """The learner of each job (step, rows, data), fitted and yielded in job order."""
        args = [(spec, data, rows, y[rows], seed, make, step) for step, rows, data in jobs]
        if not parallel:
            for a in args:
                yield _fit_task(*a)
            return
        # the largest fit first, so that it does not start last on a worker of its own
        order = sorted(range(len(args)), key=lambda i: -len(args[i][2]))
        done: dict[int, Learner] = {}
        if self.ray is not None:
            results = iter(self._on_ray([args[i] for i in order]))
        else:
            from joblib import Parallel, delayed

            workers = min(self.n_jobs, len(args))
            results = iter(Parallel(n_jobs=workers, backend="loky", return_as="generator")(
                delayed(_fit_task)(*args[i]) for i in order))
        received = 0
        for i in range(len(args)):
            while i not in done:
                done[order[received]] = next(results)
                received += 1
            yield done.pop(i)

    def fit_all(self, spec: Model, jobs: Sequence[tuple[str, np.ndarray, ModelData]], y: np.ndarray, seed: int,
                make: Callable[[Model, int], Learner]) -> list[Learner]:
        """Every learner of ``jobs`` (as :meth:`fits`), on workers when the largest fit is large enough
        (:meth:`parallel`): the cross-fitting of second-stage models' inputs (:mod:`analytics.crossfit`)."""
        rows = max((len(r) for _, r, _ in jobs), default=0)
        return list(self.fits(spec, jobs, y, seed, make, len(jobs) > 1 and self.parallel(spec, rows)))

    def _on_ray(self, args: Sequence[tuple[Any, ...]]) -> list[Learner]:
        from pipeline.ray_runner import connected  # the embedding stage's Ray session; loaded only for Ray

        if self._session is None:
            self._session = self._stack.enter_context(connected(self.ray or "local", FitError))
        ray = self._session
        remote = ray.remote(num_cpus=1)(_fit_task)
        shared: dict[int, Any] = {}  # each distinct input table put in the object store once
        refs = []
        for spec, data, rows, y, seed, make, step in args:
            if id(data) not in shared:
                shared[id(data)] = ray.put(data)
            refs.append(remote.remote(spec, shared[id(data)], rows, y, seed, make, step))
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayTaskError as exc:  # a fit that failed on its own: the fit stage's one-line error
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FitError):
                raise FitError(str(cause)) from None
            raise


__all__ = ["PARALLEL_MIN_ROWS", "Engine", "train_learner"]
