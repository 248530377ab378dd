"""Nested cross-fitting: honest out-of-fold scores for models fitted on other models' out-of-fold scores.

A second-stage model (stacking, a fusion model with ``scores``, any model that
fits something on other models' scores) is trained on its input models'
out-of-fold (OOF) scores. Its own OOF prediction of outer fold k is honest only
when nothing that produced it saw fold k's labels, and the input models' OOF
scores of the *other* folds came from models trained on fold k. So, for outer
fold k (:meth:`CrossFitter.fold_inputs`):

1. the input models' OOF scores of the training patients outside fold k are
   recomputed by inner folds of those patients only (the same stratified,
   seeded assignment as the outer folds, drawn on them);
2. the second stage of fold k is fitted on those scores;
3. fold k is scored with the input models refitted on all training patients
   outside fold k (an input model's own outer-fold-k model).

An input that is itself a second-stage model is cross-fitted the same way,
recursively. The final model (for internal and external patients) is as
without nesting: input models fitted on all training patients, the second stage
on their ordinary OOF scores. Soft voting fits nothing on its members' scores,
so it needs no nesting: its OOF score of fold k is its members' OOF scores of
fold k.

Cost: every input model is fitted K times more per outer fold (K² more fits in
all, K the number of folds). A fit is identified by the model (its config, the
digest of its cohort inputs, the seed, K, library versions and its input models'
identities) and its training patients with their labels, and its scores of the
labelled training patients it did not see are cached: in memory within a run,
shared by sibling second-stage models and by the models' own outer-fold fits,
and on disk under ``<study>/models/.crossfit/<model>.parquet`` for later runs.
An input model's fits on the folds of one training set are independent of one
another: they run together on the fit stage's engine (``[compute] n_jobs`` local
processes or Ray tasks, :meth:`analytics.fit_engine.Engine.fit_all`), with the
same scores, to the byte, as one after the other.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from analytics.cohort import Cohort
from analytics.models import imputed
from analytics.models.data import Assembled, ModelData, assemble, input_models, mil_feature_set, pooled_refs
from analytics.models.learners import Learner
from pipeline import atomic, store
from pipeline.config import Model

log = logging.getLogger("cohortlab.crossfit")

CACHE_FOLDER = ".crossfit"

# fits a fresh learner of a model on some rows (the caller's checks and errors); the last argument names the step
Train = Callable[[Model, ModelData, np.ndarray, str], Learner]
# fits fresh learners of one model: jobs of (step, rows, inputs) and the target of every patient; the learners in
# job order, each as ``Train`` fits it (:meth:`analytics.fit_engine.Engine.fit_all` runs them on the fit's engine)
FitMany = Callable[[Model, Sequence[tuple[str, np.ndarray, ModelData]], np.ndarray], list[Learner]]
# the fold of every patient of a training set, given its patient ids and 0/1 labels
Folds = Callable[[Sequence[str], np.ndarray], Mapping[str, int]]


def needs_nesting(spec: Model) -> bool:
    """Whether a model fits something on other models' scores (soft voting fits nothing)."""
    return bool(input_models(spec)) and spec.traits.trainable


def is_nested(spec: Model) -> bool:
    """Whether ``cohortlab fit`` cross-fits the model's inputs inside each outer fold."""
    return needs_nesting(spec) and spec.nested


def optimistic(spec: Model, specs: Mapping[str, Model]) -> bool:
    """Whether a model's training OOF estimate may have seen the labels it predicts.

    A second-stage model with ``nested = false`` was trained on input scores made
    with its own fold's labels; soft voting passes its members' OOF scores through,
    so it is optimistic when one of them is. A nested model is never: its fold-k
    model and inputs are all fitted without fold k.
    """
    if not spec.traits.trainable:
        return any(optimistic(specs[m], specs) for m in input_models(spec))
    return needs_nesting(spec) and not spec.nested


class FitCache:
    """Scores of fitted models keyed by (model, identity, training set): in memory, and on disk when given a folder.

    Parameters
    ----------
    folder
        ``<study>/models/.crossfit``; one Parquet file per model holding the fits
        of its current identity (those of an older identity are dropped when the
        file is rewritten). None: memory only.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[str, dict[str, dict[str, float]]] = {}  # model -> subset -> patient -> score
        self._identity: dict[str, str] = {}
        self._dirty: set[str] = set()
        self.hits = 0
        self.misses = 0

    def _load(self, model: str, identity: str) -> dict[str, dict[str, float]]:
        if self._identity.get(model) == identity:
            return self._memory[model]
        entries: dict[str, dict[str, float]] = {}
        path = None if self.folder is None else self.folder / f"{model}.parquet"
        if path is not None and path.exists():
            try:
                frame = pl.read_parquet(path).filter(pl.col("identity") == identity)
            except (OSError, pl.exceptions.PolarsError) as exc:  # unreadable: refit what it held
                log.info("ignoring the cross-fitting cache %s: %s", path, exc)
            else:
                for (subset,), part in frame.group_by("subset", maintain_order=True):
                    entries[str(subset)] = dict(zip(part["patient_id"].to_list(), part["score"].to_list()))
        self._memory[model], self._identity[model] = entries, identity
        self._dirty.discard(model)
        return entries

    def get(self, model: str, identity: str, subset: str) -> dict[str, float] | None:
        """The cached scores of one fit, or None."""
        got = self._load(model, identity).get(subset)
        if got is None:
            self.misses += 1
        else:
            self.hits += 1
        return got

    def put(self, model: str, identity: str, subset: str, scores: Mapping[str, float]) -> None:
        """Remember one fit's scores (written to disk by :meth:`flush`)."""
        entries = self._load(model, identity)
        if subset not in entries:
            entries[subset] = dict(scores)
            self._dirty.add(model)

    def flush(self) -> None:
        """Write every model's file that gained fits (each file replaced whole, atomically)."""
        if self.folder is None:
            return
        for model in sorted(self._dirty):
            rows = [(s, p, v) for s, scores in self._memory[model].items() for p, v in scores.items()]
            frame = pl.DataFrame({"identity": [self._identity[model]] * len(rows), "subset": [r[0] for r in rows],
                                  "patient_id": [r[1] for r in rows], "score": [r[2] for r in rows]},
                                 schema={"identity": pl.String, "subset": pl.String, "patient_id": pl.String,
                                         "score": pl.Float64})
            with atomic.staged(self.folder / f"{model}.parquet") as tmp:
                frame.write_parquet(tmp)
        self._dirty.clear()


class CrossFitter:
    """Fits of any model on any subset of the labelled training patients, with nested out-of-fold scores.

    Arrays are aligned to the cohort's patients; a training set is a boolean
    mask over them, always a subset of the labelled training patients.

    Parameters
    ----------
    specs
        Every model that may be fitted, by name.
    cohort
        The cohort, with every model's pooled feature blocks and bags loaded.
    labels
        float64 labels per patient (NaN = unlabelled): the outcome the folds are stratified on
        (the binary label, or the event of a survival study).
    split
        ``train`` / ``internal`` / ``external`` per patient.
    folds
        The fold assignment of a training set (the outer folds for all
        labelled training patients).
    train
        Fits a fresh learner.
    cache
        Where fits are remembered.
    salt
        Mixed into every model identity (seed, number of folds, library versions).
    survival
        ``(n, 2)`` times and events per patient (NaN rows: no survival outcome), for survival models.
    endpoints
        Model name -> ``"binary"`` / ``"survival"``: which target each model is fitted on.
    fit_many
        Fits several independent learners of one model (the folds of an input model); default: ``train``
        on each in turn. The scores are the same bytes either way.
    """

    def __init__(self, specs: Mapping[str, Model], cohort: Cohort, labels: np.ndarray, split: np.ndarray,
                 folds: Folds, train: Train, cache: FitCache, salt: Mapping[str, object],
                 survival: np.ndarray | None = None, endpoints: Mapping[str, str] | None = None,
                 fit_many: FitMany | None = None) -> None:
        self.specs = specs
        self.cohort = cohort
        self.ids = list(cohort.patient_ids)
        labelled = np.isfinite(labels)
        self.y = np.where(labelled, labels, -1).astype(np.int64)
        # survival models are fitted on (time, event) pairs; NaN rows lack them and are left out of their fits
        self.survival = None if survival is None else np.asarray(survival, dtype=np.float64)
        self.endpoints = dict(endpoints or {})
        self.training = (np.asarray(split) == "train") & labelled
        self.folds = folds
        self.train = train
        self.fit_many: FitMany = fit_many or self._fit_each
        self.cache = cache
        self.salt = dict(salt)
        self.fits = 0
        # input models of nested models: their own outer-fold fits are fits the nested folds read
        self.shared = {n for s in specs.values() if is_nested(s) for n in input_models(s)}
        self._identity: dict[str, str] = {}
        self._base: dict[str, Assembled] = {}
        self._fold_index: dict[str, np.ndarray] = {}

    # --- identities and keys

    def identity(self, name: str) -> str:
        """Digest of everything that makes a model's fit on given patients what it is, but those patients."""
        if name not in self._identity:
            spec = self.specs[name]
            bags = [mil_feature_set(spec)] if spec.traits.bags else []
            payload = {"config": spec.model_dump(mode="json"), "salt": self.salt,
                       "cohort": self.cohort.digest(features=pooled_refs(spec), bags=bags),
                       "inputs": [self.identity(n) for n in input_models(spec)]}
            self._identity[name] = store.json_digest(payload)
        return self._identity[name]

    def _subset(self, mask: np.ndarray) -> str:
        """Digest of a set of training patients and their labels."""
        idx = sorted(np.flatnonzero(mask), key=lambda i: self.ids[i])
        h = hashlib.sha256("\0".join(self.ids[i] for i in idx).encode())
        h.update(self.y[idx].astype(np.int8).tobytes())
        if self.survival is not None:
            h.update(np.ascontiguousarray(self.survival[idx]).tobytes())
        return h.hexdigest()

    def _target(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """What ``name`` is fitted on per patient (0/1 labels, or (time, event) rows) and who has it."""
        if self.endpoints.get(name) == "survival":
            if self.survival is None:
                raise ValueError(f"model '{name}' predicts a survival endpoint; the cohort has no time and event")
            return self.survival, np.isfinite(self.survival).all(axis=1)
        return self.y, np.ones(len(self.ids), dtype=bool)

    def fold_index(self, train: np.ndarray) -> np.ndarray:
        """The fold of each patient of ``train`` (-1 elsewhere)."""
        key = self._subset(train)
        if key not in self._fold_index:
            idx = np.flatnonzero(train)
            of = self.folds([self.ids[i] for i in idx], self.y[idx])
            out = np.full(len(self.ids), -1, dtype=np.int64)
            out[idx] = [of[self.ids[i]] for i in idx]
            self._fold_index[key] = out
        return self._fold_index[key]

    def outer_training(self, k: int) -> np.ndarray:
        """The labelled training patients outside outer fold ``k``."""
        return self.training & (self.fold_index(self.training) != k)

    # --- inputs

    def _base_inputs(self, name: str) -> Assembled:
        if name not in self._base:
            spec = self.specs[name]
            self._base[name] = imputed.with_auxiliary(spec, self.cohort.frame, assemble(spec, self.cohort, {}),
                                                      str(self.cohort.file))
        return self._base[name]

    def inputs(self, name: str, train: np.ndarray) -> Assembled:
        """A model's inputs as its fit on ``train`` sees them.

        An input model's score is its OOF score (by folds of ``train``) for a
        patient of ``train``, and the score of its fit on ``train`` for a labelled
        training patient outside it; other patients lack it.
        """
        spec = self.specs[name]
        names = input_models(spec)
        if not names:
            return self._base_inputs(name)
        scores = {}
        for n in names:
            s = np.where(train, self.oof(n, train), self.fit_scores(n, train))
            scores[n] = {self.ids[i]: float(s[i]) for i in np.flatnonzero(np.isfinite(s))}
        return imputed.with_auxiliary(spec, self.cohort.frame, assemble(spec, self.cohort, scores),
                                      str(self.cohort.file))

    def fold_inputs(self, name: str, k: int) -> ModelData:
        """The inputs of a nested model's outer fold ``k`` (see the module notes)."""
        return self.inputs(name, self.outer_training(k)).data

    # --- fits

    def _key_set(self, name: str, train: np.ndarray) -> np.ndarray:
        # a first-stage fit depends only on the patients it is fitted on; a second stage also on the
        # folds of ``train`` that made its input scores
        if input_models(self.specs[name]):
            return train
        return train & self._base_inputs(name).available

    def fit_scores(self, name: str, train: np.ndarray) -> np.ndarray:
        """Scores of ``name`` fitted on ``train`` for the labelled training patients outside it (NaN elsewhere)."""
        return self._fit_batch(name, [train])[0]

    def _fit_batch(self, name: str, trains: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`fit_scores` of each training set; the fits not cached are independent and run together
        (``fit_many``: on the fit stage's engine), then are scored and cached in the order of ``trains``."""
        identity = self.identity(name)
        outs = [np.full(len(self.ids), np.nan) for _ in trains]
        todo: list[tuple[int, str, Assembled, np.ndarray, np.ndarray]] = []
        target, has = self._target(name)
        for i, train in enumerate(trains):
            key = self._subset(self._key_set(name, train))
            hit = self.cache.get(name, identity, key)
            if hit is None:
                assembled = self.inputs(name, train)
                tr = np.flatnonzero(train & assembled.available & has)
                te = np.flatnonzero(self.training & ~train & assembled.available)
                todo.append((i, key, assembled, tr, te))
                continue
            for j, pid in enumerate(self.ids):
                v = hit.get(pid)
                if v is not None:
                    outs[i][j] = v
        learners = self.fit_many(self.specs[name], [(f"nested fit on {len(tr)} training patients", tr, a.data)
                                                    for _, _, a, tr, _ in todo], target) if todo else []
        for (i, key, assembled, _, te), learner in zip(todo, learners):
            self.fits += 1
            if len(te):
                outs[i][te] = learner.predict_score(assembled.data.take(te))
            self.cache.put(name, identity, key, {self.ids[j]: float(outs[i][j]) for j in te})
        return outs

    def _fit_each(self, spec: Model, jobs: Sequence[tuple[str, np.ndarray, ModelData]],
                  target: np.ndarray) -> list[Learner]:
        """The default ``fit_many``: one fit after the other, in this process."""
        return [self.train(spec, data.take(rows), target[rows], step) for step, rows, data in jobs]

    def oof(self, name: str, train: np.ndarray) -> np.ndarray:
        """Out-of-fold scores of ``name`` for the patients of ``train``, by folds of ``train`` (NaN elsewhere)."""
        spec = self.specs[name]
        fold = self.fold_index(train)
        out = np.full(len(self.ids), np.nan)
        folds = range(int(fold.max()) + 1)
        if not input_models(spec) or is_nested(spec):
            for j, s in zip(folds, self._fit_batch(name, [train & (fold != j) for j in folds])):
                sel = train & (fold == j)
                out[sel] = s[sel]
            return out
        # soft voting, or nested = false: one set of input scores for every fold
        assembled = self.inputs(name, train)
        target, has = self._target(name)
        parts = [(np.flatnonzero(train & (fold != j) & assembled.available & has),
                  np.flatnonzero(train & (fold == j) & assembled.available)) for j in folds]
        parts = [(j, tr, te) for j, (tr, te) in zip(folds, parts) if len(te)]
        learners = self.fit_many(spec, [(f"inner fold {j}", tr, assembled.data) for j, tr, _ in parts], target)
        for (_, _, te), learner in zip(parts, learners):
            self.fits += 1
            out[te] = learner.predict_score(assembled.data.take(te))
        return out

    def record(self, name: str, k: int, te: np.ndarray, scores: np.ndarray) -> None:
        """Remember the scores of a model's own outer fold ``k`` fit (``te``: the patients it scored)."""
        train = self.outer_training(k)
        self.cache.put(name, self.identity(name), self._subset(self._key_set(name, train)),
                       {self.ids[i]: float(s) for i, s in zip(te, scores)})


__all__ = ["CACHE_FOLDER", "CrossFitter", "FitCache", "is_nested", "needs_nesting", "optimistic"]
