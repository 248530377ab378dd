"""Internal-external cross-validation (IECV) of a model across its development centres.

``[validation] internal_external = true`` (Royston, Parmar & Sylvester, Stat Med 2004;23:907-926; Steyerberg &
Harrell, J Clin Epidemiol 2016;69:245-247): each development centre is left out in turn; the model's whole
procedure -- the learner as :func:`analytics.models.registry.build_learner` makes it, with its tuning, imputation,
harmonisation, scaling and knots -- is fitted on the other centres' development patients (training and internal
hold-out together) and scores the left-out centre. External centres are never read. A centre with fewer than
``iecv_min_events`` events or non-events joins one "small centres" group, left out together.

The fits run where ``cohortlab fit`` runs a model's fits (:class:`analytics.fit_engine.Engine`): in this
process, on ``[compute] n_jobs`` local processes, or as Ray tasks (``[compute] ray`` / ``--ray``), each with one
BLAS thread, so the left-out scores are the same bytes wherever they ran. The development patients are assembled
once, by the check made before any fit (:func:`check_iecv`), and reused by the fits.

Each left-out group is one fit, written at once and atomically as
``<models>/.iecv/<model>/<key>/<group>.parquet``; ``key`` digests the model's fit key (everything its fit
depends on) and the grouping, so a rerun after an interruption fits only the groups still missing, and a changed
model starts afresh. ``current.json`` beside the key folders names the complete set and each file's sha256;
validation reads only those files (:func:`read_iecv`).

A model of other models' scores (fusion, stacking, voting) is cross-validated with its input models refitted
inside every fold (:class:`analytics.crossfit.CrossFitter` on the fold's development patients): the second stage
is fitted on its inputs' out-of-fold scores by folds of those patients (nested cross-fitting, recursively), and
the left-out centre is scored with the input models fitted on all of them. Binary endpoints only; a survival
model of other models' scores is listed as left out.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from analytics.cohort import Cohort
from analytics.crossfit import CrossFitter, FitCache
from analytics.fit_engine import Engine, train_learner
from analytics.fit_plan import labels, study_horizons, targets
from analytics.iecv_files import CURRENT, IECV_FOLDER, file_name
from analytics.models import imputed, registry
from analytics.models.data import ModelData, assemble, input_models
from analytics.models.learners import Learner
from analytics.models.persist import read_record
from analytics.outer_folds import OuterFolds, fold_rule
from pipeline import atomic
from pipeline.config import ConfigError, Model, StudyConfig

log = logging.getLogger("cohortlab.iecv")

SMALL = "small centres"
VERSION = "iecv-1"


@dataclass(frozen=True)
class IecvPlan:
    """The left-out groups: each a list of centres (one, or the small centres pooled)."""

    groups: dict[str, tuple[str, ...]]

    def group_of(self, center: str) -> str | None:
        for g, members in self.groups.items():
            if center in members:
                return g
        return None


def plan_groups(centers: Sequence[str], events: Sequence[int], n: Sequence[int], min_events: int,
                source: str) -> IecvPlan:
    """Left-out groups: each centre with at least ``min_events`` events and non-events alone, the others
    pooled as :data:`SMALL`.

    Raises
    ------
    ConfigError
        Fewer than two groups (the message names the centres and their events).
    """
    groups: dict[str, tuple[str, ...]] = {}
    small = tuple(c for c, e, k in zip(centers, events, n) if e < min_events or k - e < min_events)
    for c in centers:
        if c not in small:
            groups[c] = (c,)
    if small:
        groups[SMALL] = small
    if len(groups) < 2:
        listed = ", ".join(f"{c} ({e} events of {k})" for c, e, k in zip(centers, events, n)) or "none"
        raise ConfigError(f"{source}: [validation] internal_external needs at least two development centres (each "
                          f"with {min_events} events and non-events, or the small ones pooled); the development "
                          f"centres are: {listed}")
    return IecvPlan(groups)


@dataclass(frozen=True)
class Development:
    """One model's development patients by centre, and its left-out groups (known before any fit)."""

    data: ModelData | None  # None for a model of other models' scores (its inputs are made inside each fold)
    y: np.ndarray  # 0/1 labels (-1: none), or (n, 2) times and events
    centers: np.ndarray  # each patient's centre, cohort order
    dev: np.ndarray  # development patients (training or internal hold-out) with an outcome and the model's inputs
    plan: IecvPlan


def _available(spec: Model, specs: dict[str, Model], cohort: Cohort) -> np.ndarray:
    """Patients with every input of ``spec`` and, recursively, of the models whose scores it reads."""
    names = input_models(spec)
    scored = {n: dict.fromkeys(cohort.patient_ids, 0.5) for n in names}  # any score: only who has one matters
    ok = imputed.with_auxiliary(spec, cohort.frame, assemble(spec, cohort, scored), str(cohort.file)).available
    for n in names:
        ok = ok & _available(specs[n], specs, cohort)
    return ok


def _development(study: StudyConfig, spec: Model, cohort: Cohort) -> Development:
    """The development patients of ``spec`` and their grouping.

    Raises
    ------
    ConfigError
        Fewer than two left-out groups (:func:`plan_groups`).
    """
    data: ModelData | None = None
    if input_models(spec):
        available = _available(spec, {m.name: m for m in study.models}, cohort)
    else:
        assembled = imputed.with_auxiliary(spec, cohort.frame, assemble(spec, cohort, {}), str(cohort.file))
        data, available = assembled.data, assembled.available
        assert tuple(data.patient_ids) == tuple(cohort.patient_ids)  # every part aligned to the cohort's patients
    y_all = targets(study, spec, cohort)
    survival = y_all.ndim == 2
    labelled = np.isfinite(y_all).all(axis=1) if survival else np.isfinite(y_all)
    y = y_all if survival else np.where(labelled, y_all, -1).astype(np.int64)
    centre_of = dict(zip(cohort.frame.get_column("patient_id").to_list(), cohort.frame.get_column("center").to_list()))
    centers = np.array([str(centre_of.get(p)) for p in cohort.patient_ids], dtype=object)
    dev = np.isin(cohort.split, ("train", "internal")) & labelled & available
    events = (y[:, 1] if survival else y).astype(np.float64)
    names = sorted({str(c) for c in centers[dev]})
    counts = [int(events[dev & (centers == c)].sum()) for c in names]
    sizes = [int((dev & (centers == c)).sum()) for c in names]
    source = f"{study.root / 'study.toml'}: model {spec.name}"
    plan = plan_groups(names, counts, sizes, study.validation.iecv_min_events, source)
    return Development(data, y, centers, dev, plan)


def check_iecv(study: StudyConfig, cohort: Cohort, specs: Sequence[Model]) -> dict[str, Development]:
    """Refuse ``[validation] internal_external = true`` before any model is fitted when a model would have fewer
    than two left-out groups: the grouping depends only on the cohort, the outcome and which patients have the
    model's inputs, all known before fitting. Returns each checked model's development patients (by name), which :func:`run_iecv` fits on without
    assembling its inputs (and reading its bags) again.

    Raises
    ------
    ConfigError
        Fewer than two development centres (or groups) for a model; the message names the model, the centres and
        their events.
    """
    if not study.validation.internal_external:
        return {}
    return {spec.name: _development(study, spec, cohort) for spec in specs}


def _model_key(fit_key: str, plan: IecvPlan, seed: int, horizons: Sequence[float]) -> str:
    text = json.dumps([VERSION, fit_key, {g: list(m) for g, m in plan.groups.items()}, seed, list(horizons)],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def iecv_model(study: StudyConfig, spec: Model, cohort: Cohort, *, n_jobs: int = 1, ray: str | None = None,
               make: Callable[[Model, int], Learner] | None = None, engine: Engine | None = None,
               development: Development | None = None) -> str | None:
    """Cross-validate one model across the development centres (see the module notes); the reason when it is
    not, else None.

    Parameters
    ----------
    n_jobs, ray
        Where the fits run when no ``engine`` is given (:class:`analytics.fit_engine.Engine`).
    make
        Builds a fresh learner (default :func:`analytics.models.registry.build_learner`).
    engine
        The fit stage's engine (its Ray session is reused; the caller closes it).
    development
        The model's development patients from :func:`check_iecv` (default: assembled here).

    Raises
    ------
    ConfigError
        Fewer than two development centres (or groups).
    FitError
        A fold's fit failed (as ``cohortlab fit``'s).
    """
    if input_models(spec) and study.endpoint(spec) != "binary":
        return (f"model {spec.name}: no internal-external cross-validation of a survival model of other models' "
                "scores")
    record = read_record(study.models_dir / spec.name, study.store_path)
    if record is None or record.fit_key is None:
        return f"model {spec.name}: not fitted"
    make = make or registry.build_learner
    dv = development or _development(study, spec, cohort)
    data, y, centers, dev, plan = dv.data, dv.y, dv.centers, dv.dev, dv.plan
    horizons = study_horizons(study, cohort) if y.ndim == 2 else []
    key = _model_key(record.fit_key, plan, study.study.seed, horizons)
    base = study.models_dir / IECV_FOLDER / spec.name
    folder = base / key
    group = np.array([plan.group_of(str(c)) or "" for c in centers], dtype=object)
    jobs = [(g, np.flatnonzero(dev & (group != g)), np.flatnonzero(dev & (group == g)))
            for g in plan.groups if not (folder / file_name(g)).exists()]
    own = engine is None
    runner = Engine(n_jobs, ray) if engine is None else engine
    try:
        if data is None:  # a second stage: its inputs refitted inside every fold
            for (g, _, test), scores in zip(jobs, _second_stage(study, spec, cohort, dv, jobs, runner, make)):
                _write_group(spec, cohort.patient_ids, centers, g, test, scores, None, horizons, folder)
        else:
            learners = runner.fits(spec, [(f"internal-external cross-validation without {g}", tr, data)
                                          for g, tr, _ in jobs], y, study.study.seed, make,
                                   runner.parallel(spec, int(dev.sum())) and len(jobs) > 1)
            with threadpool_limits(limits=1):  # scored here, one BLAS thread: the same bytes wherever it was fitted
                for (g, _, test), learner in zip(jobs, learners):
                    held = data.take(test)
                    risk = (np.asarray(learner.risk_at(held, list(horizons)), dtype=np.float64)
                            if horizons and hasattr(learner, "risk_at") else None)
                    _write_group(spec, data.patient_ids, centers, g, test,
                                 np.asarray(learner.predict_score(held), dtype=np.float64), risk, horizons, folder)
    finally:
        if own:
            runner.close()
    shas = {g: hashlib.sha256((folder / file_name(g)).read_bytes()).hexdigest() for g in plan.groups}
    atomic.write_json(base / CURRENT, {"key": key, "fit_key": record.fit_key, "horizons": list(horizons),
                                       "groups": {g: list(m) for g, m in plan.groups.items()}, "sha256": shas})
    for old in base.iterdir():  # folders of an earlier model or grouping
        if old.is_dir() and old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    return None


def _second_stage(study: StudyConfig, spec: Model, cohort: Cohort, dv: Development,
                  jobs: Sequence[tuple[str, np.ndarray, np.ndarray]], engine: Engine,
                  make: Callable[[Model, int], Learner]) -> list[np.ndarray]:
    """Each job's left-out scores of a model of other models' scores (see the module notes): a cross-fitter whose
    training patients are the development patients; a job's fit is its scores of those outside its own."""
    seed, folds = study.study.seed, study.validation.folds

    def fit_many(s: Model, todo: Sequence[tuple[str, np.ndarray, ModelData]], target: np.ndarray) -> list[Learner]:
        return list(engine.fits(s, todo, target, seed, make, engine.parallel(s, max((len(r) for _, r, _ in todo), default=0))))

    cf = CrossFitter({m.name: m for m in study.models}, cohort, labels(cohort), np.where(dv.dev, "train", "other"),
                     fold_rule(OuterFolds((), (), folds, seed), folds, seed),  # folds drawn on each training set
                     lambda s, d, y, step: train_learner(s, d, y, seed, make, step), FitCache(None),
                     {"seed": seed, "folds": folds, "iecv": VERSION}, fit_many=fit_many)
    with threadpool_limits(limits=1):  # one BLAS thread: the same bytes wherever the fits ran
        return [cf.fit_scores(spec.name, np.isin(np.arange(len(dv.dev)), train))[test] for _, train, test in jobs]


def _write_group(spec: Model, ids: Sequence[str], centers: np.ndarray, group: str, test: np.ndarray,
                 scores: np.ndarray, risk: np.ndarray | None, horizons: Sequence[float], folder: Path) -> None:
    """A left-out group's scores (and risks at the horizons), from fits without it; its file, written atomically."""
    frame = pl.DataFrame({"patient_id": [ids[i] for i in test], "center": [str(centers[i]) for i in test],
                          "group": [group] * len(test), "score": scores})
    if risk is not None:
        frame = frame.with_columns([pl.Series(f"risk_{j}", risk[:, j]) for j in range(len(horizons))])
    buf = io.BytesIO()
    frame.write_parquet(buf)
    _write(folder / file_name(group), buf.getvalue())
    log.info("model %s: IECV without %s: %d patients scored", spec.name, group, len(test))


def _write(path: Path, data: bytes) -> None:
    with atomic.staged(path) as tmp:
        tmp.write_bytes(data)


def run_iecv(study: StudyConfig, cohort: Cohort, specs: Sequence[Model], *, ray: str | None = None,
             developed: Mapping[str, Development] | None = None) -> list[str]:
    """:func:`iecv_model` of every model in ``specs`` on one engine (``[compute] n_jobs`` local processes, or Ray
    at ``ray``); ``developed``: :func:`check_iecv`'s development patients. Returns the reasons some were not
    cross-validated."""
    notes = []
    with Engine(study.compute.n_jobs, ray) as engine:
        for spec in specs:
            why = iecv_model(study, spec, cohort, engine=engine, development=(developed or {}).get(spec.name))
            if why is not None:
                log.warning("%s", why)
                notes.append(why)
    return notes
