"""Internal-external cross-validation (IECV) of a model across its development centres.

``[validation] internal_external = true`` (Royston, Parmar & Sylvester, Stat Med 2004;23:907-926; Steyerberg &
Harrell, J Clin Epidemiol 2016;69:245-247): each development centre is left out in turn; the model's whole
procedure -- the learner as :func:`analytics.models.registry.build_learner` makes it, with its tuning, imputation,
harmonisation, scaling and knots -- is fitted on the other centres' development patients (training and internal
hold-out together) and scores the left-out centre. External centres are never read. A centre with fewer than
``iecv_min_events`` events or non-events joins one "small centres" group, left out together.

Each left-out group is one fit, written at once and atomically as
``<models>/.iecv/<model>/<key>/<group>.parquet``; ``key`` digests the model's fit key (everything its fit
depends on) and the grouping, so a rerun after an interruption fits only the groups still missing, and a changed
model starts afresh. ``current.json`` beside the key folders names the complete set and each file's sha256;
validation reads only those files (:func:`read_iecv`).

Models of other models' scores (fusion, voting, stacking) are not cross-validated this way: their input models
would have to be refitted inside every fold too; they are listed as left out.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from analytics.cohort import Cohort
from analytics.fit_plan import study_horizons, targets
from analytics.iecv_files import CURRENT, IECV_FOLDER, file_name
from analytics.models import registry
from analytics.models.data import ModelData, assemble, input_models
from analytics.models.learners import Learner
from analytics.models.persist import read_record
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


Train = Callable[[Model, ModelData, np.ndarray, int, Callable[[Model, int], Learner], str], Learner]
"""How a learner is fitted: :func:`analytics.fit.train_learner` (given by the fit stage, which calls this module)."""


def _fit_group(spec: Model, data: ModelData, train: np.ndarray, test: np.ndarray, y: np.ndarray, seed: int,
               make: Callable[[Model, int], Learner], step: str, horizons: Sequence[float],
               fit_learner: Train) -> tuple[np.ndarray, np.ndarray | None]:
    """Fit on ``train`` rows only and score the ``test`` rows (one BLAS thread: the same bytes anywhere)."""
    with threadpool_limits(limits=1):
        learner = fit_learner(spec, data.take(train), y[train], seed, make, step)
        held = data.take(test)
        scores = np.asarray(learner.predict_score(held), dtype=np.float64)
        risk = (np.asarray(learner.risk_at(held, list(horizons)), dtype=np.float64)
                if horizons and hasattr(learner, "risk_at") else None)
    return scores, risk


@dataclass(frozen=True)
class _Development:
    """One model's development patients by centre, and its left-out groups (known before any fit)."""

    data: ModelData
    y: np.ndarray  # 0/1 labels (-1: none), or (n, 2) times and events
    centers: np.ndarray  # each patient's centre, cohort order
    dev: np.ndarray  # development patients (training or internal hold-out) with an outcome and the model's inputs
    plan: IecvPlan


def _development(study: StudyConfig, spec: Model, cohort: Cohort) -> _Development:
    """The development patients of ``spec`` (a model of features, not of other models' scores) and their grouping.

    Raises
    ------
    ConfigError
        Fewer than two left-out groups (:func:`plan_groups`).
    """
    assembled = assemble(spec, cohort, {})
    data = assembled.data
    assert tuple(data.patient_ids) == tuple(cohort.patient_ids)  # every part aligned to the cohort's patients
    y_all = targets(study, spec, cohort)
    survival = y_all.ndim == 2
    labelled = np.isfinite(y_all).all(axis=1) if survival else np.isfinite(y_all)
    y = y_all if survival else np.where(labelled, y_all, -1).astype(np.int64)
    centre_of = dict(zip(cohort.frame.get_column("patient_id").to_list(), cohort.frame.get_column("center").to_list()))
    centers = np.array([str(centre_of.get(p)) for p in data.patient_ids], dtype=object)
    dev = np.isin(cohort.split, ("train", "internal")) & labelled & assembled.available
    events = (y[:, 1] if survival else y).astype(np.float64)
    names = sorted({str(c) for c in centers[dev]})
    counts = [int(events[dev & (centers == c)].sum()) for c in names]
    sizes = [int((dev & (centers == c)).sum()) for c in names]
    source = f"{study.root / 'study.toml'}: model {spec.name}"
    plan = plan_groups(names, counts, sizes, study.validation.iecv_min_events, source)
    return _Development(data, y, centers, dev, plan)


def check_iecv(study: StudyConfig, cohort: Cohort, specs: Sequence[Model]) -> None:
    """Refuse ``[validation] internal_external = true`` before any model is fitted when a model would have fewer
    than two left-out groups: the grouping depends only on the cohort, the outcome and which patients have the
    model's inputs, all known before fitting. Models of other models' scores are not cross-validated (skipped).

    Raises
    ------
    ConfigError
        Fewer than two development centres (or groups) for a model; the message names the model, the centres and
        their events.
    """
    if not study.validation.internal_external:
        return
    for spec in specs:
        if not input_models(spec):
            _development(study, spec, cohort)


def _model_key(fit_key: str, plan: IecvPlan, seed: int, horizons: Sequence[float]) -> str:
    text = json.dumps([VERSION, fit_key, {g: list(m) for g, m in plan.groups.items()}, seed, list(horizons)],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def iecv_model(study: StudyConfig, spec: Model, cohort: Cohort, fit_learner: Train, *, n_jobs: int = 1,
               progress: bool = False, make: Callable[[Model, int], Learner] | None = None) -> str | None:
    """Cross-validate one model across the development centres (see the module notes); the reason when it is
    not, else None. ``fit_learner``: :func:`analytics.fit.train_learner`; ``make``: builds a fresh learner
    (default :func:`analytics.models.registry.build_learner`).

    Raises
    ------
    ConfigError
        Fewer than two development centres (or groups).
    FitError
        A fold's fit failed (as ``cohortlab fit``'s).
    """
    if input_models(spec):
        return (f"model {spec.name}: no internal-external cross-validation of a model of other models' scores "
                "(its input models would be refitted inside every fold)")
    record = read_record(study.models_dir / spec.name, study.store_path)
    if record is None or record.fit_key is None:
        return f"model {spec.name}: not fitted"
    make = make or registry.build_learner
    dv = _development(study, spec, cohort)
    data, y, centers, dev, plan = dv.data, dv.y, dv.centers, dv.dev, dv.plan
    survival = y.ndim == 2
    horizons = study_horizons(study, cohort) if survival else []
    key = _model_key(record.fit_key, plan, study.study.seed, horizons)
    base = study.models_dir / IECV_FOLDER / spec.name
    folder = base / key
    group = np.array([plan.group_of(str(c)) or "" for c in centers], dtype=object)
    todo = [g for g in plan.groups if not (folder / file_name(g)).exists()]
    jobs = []
    for g in todo:
        train, test = np.flatnonzero(dev & (group != g)), np.flatnonzero(dev & (group == g))
        jobs.append((g, train, test))
    fitted: Any
    if n_jobs != 1 and len(jobs) > 1 and not spec.traits.bags:
        from joblib import Parallel, delayed

        fitted = Parallel(n_jobs=min(n_jobs if n_jobs > 0 else len(jobs), len(jobs)), backend="loky",
                          return_as="generator")(
            delayed(_fit_group)(spec, data, tr, te, y, study.study.seed, make,
                                f"internal-external cross-validation without {g}", horizons, fit_learner)
            for g, tr, te in jobs)
    else:
        fitted = (_fit_group(spec, data, tr, te, y, study.study.seed, make,
                             f"internal-external cross-validation without {g}", horizons, fit_learner)
                   for g, tr, te in jobs)
    for (g, _, test), (scores, risk) in zip(jobs, fitted):
        frame = pl.DataFrame({"patient_id": [data.patient_ids[i] for i in test],
                              "center": [str(centers[i]) for i in test], "group": [g] * len(test), "score": scores})
        if risk is not None:
            frame = frame.with_columns([pl.Series(f"risk_{j}", risk[:, j]) for j in range(len(horizons))])
        buf = io.BytesIO()
        frame.write_parquet(buf)
        _write(folder / file_name(g), buf.getvalue())
        log.info("model %s: IECV without %s: %d patients scored", spec.name, g, len(test))
    shas = {g: hashlib.sha256((folder / file_name(g)).read_bytes()).hexdigest() for g in plan.groups}
    atomic.write_json(base / CURRENT, {"key": key, "fit_key": record.fit_key, "horizons": list(horizons),
                                       "groups": {g: list(m) for g, m in plan.groups.items()}, "sha256": shas})
    for old in base.iterdir():  # folders of an earlier model or grouping
        if old.is_dir() and old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    return None


def _write(path: Path, data: bytes) -> None:
    with atomic.staged(path) as tmp:
        tmp.write_bytes(data)


def run_iecv(study: StudyConfig, cohort: Cohort, specs: Sequence[Model], fit_learner: Train,
             progress: bool = False) -> list[str]:
    """:func:`iecv_model` of every model in ``specs``; the reasons some were not cross-validated."""
    notes = []
    for spec in specs:
        why = iecv_model(study, spec, cohort, fit_learner, n_jobs=study.compute.n_jobs, progress=progress)
        if why is not None:
            log.warning("%s", why)
            notes.append(why)
    return notes
