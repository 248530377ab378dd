"""Multiple imputation by chained equations (van Buuren & Groothuis-Oudshoorn, J Stat Softw 2011;45(3)), as
``mice::mice``.

Each of the ``m`` chains starts from random draws of each incomplete variable's observed values, then for
``maxit`` iterations visits the incomplete variables left to right and replaces each one's missing values by
draws from its imputation model (:mod:`analytics.impute.linear`, :mod:`~analytics.impute.logistic`,
:mod:`~analytics.impute.categorical`) given the current values of its predictors (every other column unless
told otherwise; near-constant and collinear predictors removed as mice's ``remove.lindep``). The last
iteration's values are the imputation.

Rows marked ``ignore`` are imputed but never used to fit a model (mice's ``ignore``): new patients imputed by the
models of the development data (Hoogland et al., Stat Med 2020;39:3591-3607).

Chain ``i`` draws from its own generator, seeded from ``(seed, stream, i)``, and runs with one BLAS thread, so
the imputations are byte-identical whatever the number of workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from .categorical import polr, polyreg
from .design import dummies, remove_lindep
from .draws import RowDraws
from .linear import norm, pmm
from .logistic import logreg
from .spec import ImputationError, Variable, decode, describe, encode, methods_for


@dataclass(frozen=True)
class Settings:
    """How to impute.

    Attributes
    ----------
    m : int
        Number of imputations (mice's default is 5; the study default is 20).
    maxit : int
        Iterations per chain.
    seed : int
    methods : dict
        Column → method, overriding the default of its kind (``pmm``, ``norm``, ``logreg``, ``polyreg``,
        ``polr``).
    predictors : dict
        Column → the columns that predict it (default: every other column that is a predictor).
    not_predictors : tuple of str
        Columns never used as a predictor (e.g. a raw survival time).
    donors : int
        Donors of predictive mean matching.
    levels : dict
        Text column → its levels in order (``[variables] levels``); otherwise sorted.
    n_jobs : int
        Worker processes for the chains (results do not depend on it).
    """

    m: int = 20
    maxit: int = 10
    seed: int = 0
    methods: dict[str, str] = field(default_factory=dict)
    predictors: dict[str, list[str]] = field(default_factory=dict)
    not_predictors: tuple[str, ...] = ()
    donors: int = 5
    levels: dict[str, list[str]] = field(default_factory=dict)
    n_jobs: int = 1

    def check(self, columns: Sequence[str]) -> None:
        """Refuse what cannot run, naming the key."""
        if self.m < 2:
            raise ImputationError(f"m = {self.m}: multiple imputation needs m >= 2 imputations")
        if self.maxit < 1:
            raise ImputationError(f"maxit = {self.maxit}: at least one iteration is needed")
        if self.donors < 1:
            raise ImputationError(f"donors = {self.donors}: predictive mean matching needs at least one donor")
        known = set(columns)
        named = (set(self.predictors) | {c for cols in self.predictors.values() for c in cols} | set(self.not_predictors)
                 | set(self.levels))
        unknown = sorted(named - known)
        if unknown:
            raise ImputationError(f"imputation settings name unknown column(s) {unknown}; columns are {sorted(known)}")


@dataclass(frozen=True)
class Imputations:
    """The result of a run: the incomplete data, the m sets of imputed values and the chains' traces.

    Attributes
    ----------
    variables : list of Variable
    data : ndarray (n, k)
        The coded input (NaN where missing).
    imputed : ndarray (m, n, k)
        The completed coded values of each imputation.
    methods : dict
        Column → method (``""`` for a complete column).
    chain_mean, chain_sd : ndarray (k, maxit, m)
        Mean and SD of each column's imputed values after each iteration of each chain (NaN for a complete
        column), mice's ``chainMean`` and the square root of its ``chainVar``.
    rows : ndarray of int
        The rows of the input these imputations are of (all, or the new patients of :func:`impute_new`).
    ids : list or None
        A patient id per row, when known.
    """

    variables: list[Variable]
    data: np.ndarray
    imputed: np.ndarray
    methods: dict[str, str]
    chain_mean: np.ndarray
    chain_sd: np.ndarray
    rows: np.ndarray
    ids: list[object] | None = None

    @property
    def m(self) -> int:
        return int(self.imputed.shape[0])

    @property
    def columns(self) -> list[str]:
        return [v.name for v in self.variables]

    def complete(self, i: int) -> pl.DataFrame:
        """The ``i``-th completed data set (1-based, as ``mice::complete(imp, i)``), its input dtypes kept."""
        if not 1 <= i <= self.m:
            raise ImputationError(f"imputation {i} does not exist; there are {self.m} (1..{self.m})")
        return decode(self.imputed[i - 1][self.rows], self.variables)

    def long(self, id_column: str = "patient_id") -> pl.DataFrame:
        """All completed sets in ``mice::complete(imp, "long")`` order: ``.imp`` (1..m), then the id, then columns."""
        # without ids, rows are numbered 1..n as mice's .id
        ids = self.ids if self.ids is not None else list(range(1, len(self.rows) + 1))
        parts = []
        for i in range(1, self.m + 1):
            frame = self.complete(i)
            parts.append(pl.concat([pl.DataFrame({".imp": pl.Series([i] * frame.height, dtype=pl.Int32),
                                                  id_column: ids}), frame], how="horizontal"))
        return pl.concat(parts)


Method = Callable[..., np.ndarray]


def _univariate(method: str, variable: Variable, donors: int) -> Method:
    if method == "pmm":
        return lambda y, ry, x, wy, rng: pmm(y, ry, x, wy, rng, donors)
    if method == "norm":
        return norm
    if method == "logreg":
        return logreg
    if method == "polyreg":
        return lambda y, ry, x, wy, rng: polyreg(y, ry, x, wy, rng, len(variable.levels))
    if method == "polr":
        return lambda y, ry, x, wy, rng: polr(y, ry, x, wy, rng, len(variable.levels))
    raise ImputationError(f"column {variable.name!r}: unknown method {method!r}")


@dataclass(frozen=True)
class _Plan:
    variables: list[Variable]
    data: np.ndarray
    fit_rows: np.ndarray
    visit: list[int]
    predictors: dict[int, list[int]]
    methods: dict[str, str]
    donors: int
    maxit: int
    row_keys: tuple[int, ...] = ()  # per ignored row, the key of its own random stream (from its patient id)


def _child(seed: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """A stream derived from a chain's seed and ``key``, independent of every other row and draw."""
    return np.random.SeedSequence(entropy=seed.entropy, spawn_key=(*seed.spawn_key, *key))


def row_key(patient: object) -> int:
    """A patient's stream key: the first 8 bytes of the sha256 of its id, as an integer."""
    return int.from_bytes(hashlib.sha256(str(patient).encode("utf-8")).digest()[:8], "big")


Progress = Callable[[int], None]


def _chain(plan: _Plan, seed: np.random.SeedSequence, progress: Progress | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chain: the completed values and the per-iteration mean and SD of each imputed column."""
    rng = np.random.default_rng(seed)
    values = plan.data.copy()
    miss = np.isnan(plan.data)
    k = values.shape[1]
    mean = np.full((k, plan.maxit), np.nan)
    sd = np.full((k, plan.maxit), np.nan)
    # ignored (new) rows draw from generators of their own, so that one new patient's values never depend on who
    # else is imputed with it; the development rows' draws are those of `impute`
    ignored = ~plan.fit_rows
    own = {int(r): np.random.default_rng(_child(seed, 1, key)) for r, key in zip(np.flatnonzero(ignored), plan.row_keys)}
    with threadpool_limits(1):
        for j in plan.visit:
            donors = values[~miss[:, j] & plan.fit_rows, j]
            dev = miss[:, j] & plan.fit_rows
            values[dev, j] = rng.choice(donors, size=int(dev.sum()), replace=True)
            for r in np.flatnonzero(miss[:, j] & ignored):
                values[r, j] = donors[own[int(r)].integers(0, donors.size)]
        for it in range(plan.maxit):
            for j in plan.visit:
                v = plan.variables[j]
                method = _univariate(plan.methods[v.name], v, plan.donors)
                x = dummies(values, plan.variables, plan.predictors[j])
                y = np.where(miss[:, j], np.nan, values[:, j])
                ry = ~miss[:, j] & plan.fit_rows
                wy = miss[:, j]
                x = x[:, remove_lindep(x, np.nan_to_num(y), ry)]
                dev = wy & plan.fit_rows
                if dev.any():
                    values[dev, j] = method(y, ry, x, dev, rng)
                new = wy & ignored
                if new.any():  # parameters drawn per chain, iteration and variable; one draw per row from its own
                    shared = np.random.default_rng(_child(seed, 2, it, j))
                    values[new, j] = method(y, ry, x, new, RowDraws(shared, [own[int(r)] for r in np.flatnonzero(new)]))
                imp = values[wy, j]
                mean[j, it] = imp.mean()
                sd[j, it] = imp.std(ddof=1) if imp.size > 1 else np.nan
            if progress is not None:
                progress(1)
    return values, mean, sd


def _plan(frame: pl.DataFrame, settings: Settings, fit_rows: np.ndarray) -> _Plan:
    settings.check(frame.columns)
    variables = describe(frame, settings.levels)
    data = encode(frame, variables)
    miss = np.isnan(data)
    methods = methods_for(variables, miss, settings.methods)
    index = {v.name: j for j, v in enumerate(variables)}
    for j, v in enumerate(variables):
        if methods[v.name] and not (~miss[:, j] & fit_rows).any():
            raise ImputationError(f"column {v.name!r}: no observed value among the rows the models are fitted on")
    visit = [j for j, v in enumerate(variables) if methods[v.name]]
    predictors: dict[int, list[int]] = {}
    for j in visit:
        name = variables[j].name
        chosen = settings.predictors.get(name)
        cols = chosen if chosen is not None else [c for c in frame.columns if c != name]
        predictors[j] = [index[c] for c in cols if c != name and c not in settings.not_predictors]
    return _Plan(variables, data, fit_rows, visit, predictors, methods, settings.donors, settings.maxit)


def _run(plan: _Plan, settings: Settings, stream: int, rows: np.ndarray, ids: list[object] | None,
         progress: Progress | None = None) -> Imputations:
    seeds = [np.random.SeedSequence(entropy=settings.seed, spawn_key=(stream, i)) for i in range(settings.m)]
    if settings.n_jobs == 1:
        results = [_chain(plan, s, progress) for s in seeds]
    else:
        # chains come back in order; a finished chain counts its maxit iterations at once
        results = []
        for r in Parallel(n_jobs=settings.n_jobs, return_as="generator")(delayed(_chain)(plan, s) for s in seeds):
            results.append(r)
            if progress is not None:
                progress(plan.maxit)
    imputed = np.stack([r[0] for r in results])
    return Imputations(plan.variables, plan.data, imputed, plan.methods, np.stack([r[1] for r in results], axis=2),
                       np.stack([r[2] for r in results], axis=2), rows, ids)


def impute(frame: pl.DataFrame, settings: Settings, ids: Sequence[object] | None = None,
           progress: Progress | None = None) -> Imputations:
    """Impute every incomplete column of ``frame`` ``settings.m`` times by chained equations.

    Put the outcome in ``frame`` (the label; for a survival outcome the event indicator and
    :func:`analytics.impute.outcome.nelson_aalen`, never the raw time) so that the imputation models include it
    (Moons et al., J Clin Epidemiol 2006;59:1092-1101; White & Royston, Stat Med 2009;28:1982-1998).

    Parameters
    ----------
    frame : polars DataFrame
        The columns to impute and those that predict them (auxiliary columns included).
    settings : Settings
    ids : sequence, optional
        A patient id per row, carried to :meth:`Imputations.long`.
    progress : callable, optional
        Called with the number of chain iterations just finished (``m · maxit`` in all).

    Returns
    -------
    Imputations
    """
    if ids is not None and len(ids) != frame.height:
        raise ImputationError(f"{len(ids)} ids for {frame.height} rows")
    plan = _plan(frame, settings, np.ones(frame.height, dtype=bool))
    return _run(plan, settings, 0, np.arange(frame.height), None if ids is None else list(ids), progress)


def impute_new(development: pl.DataFrame, new: pl.DataFrame, settings: Settings, outcome: Sequence[str] = (),
               ids: Sequence[object] | None = None) -> Imputations:
    """Impute ``new`` patients with models fitted on the development data only, without the outcome.

    Hoogland et al. (Stat Med 2020): patients scored at prediction time have no outcome, so a second set of
    chained equations, fitted on the development patients without the outcome columns, imputes them. The
    development rows fit every model; the new rows are imputed and never fitted on (mice's ``ignore``), so one
    new patient's values do not shape another's model and no outcome of theirs is read. Each new patient draws
    from a random stream of its own, keyed by its id (:func:`row_key`), and the imputation models' parameters
    for the new rows from a stream keyed by chain, iteration and variable: a patient's imputed values are the
    same whoever else is imputed in the call.

    Parameters
    ----------
    development : polars DataFrame
        The development data, with or without the outcome columns.
    new : polars DataFrame
        The new patients: the development columns less the outcome.
    settings : Settings
    outcome : sequence of str
        Outcome columns to leave out of the models.
    ids : sequence, optional
        A patient id per new row.

    Returns
    -------
    Imputations
        Of the new rows only.
    """
    dev = development.drop([c for c in outcome if c in development.columns])
    absent = [c for c in dev.columns if c not in new.columns]
    if absent:
        raise ImputationError(f"the new patients lack column(s) {absent} that the development imputation uses")
    dev_kinds = {v.name: v for v in describe(dev, settings.levels)}
    new_sel = new.select(dev.columns)
    try:
        new_sel = new_sel.cast({c: dev[c].dtype for c in dev.columns if new_sel[c].dtype != dev[c].dtype})
    except pl.exceptions.PolarsError as exc:
        raise ImputationError(f"the new patients' columns do not match the development data's types: {exc}") from exc
    stacked = pl.concat([dev, new_sel], how="vertical_relaxed")
    fit_rows = np.r_[np.ones(dev.height, dtype=bool), np.zeros(new.height, dtype=bool)]
    plan = _plan(stacked, settings, fit_rows)
    # the category levels are the development data's; a level only the new patients have is refused by encode
    if ids is not None and len(ids) != new.height:
        raise ImputationError(f"{len(ids)} ids for {new.height} new patients")
    # each new patient's draws come from its own stream, keyed by its id (by its position without ids)
    keys = tuple(row_key(p) for p in (ids if ids is not None else range(new.height)))
    plan = _Plan([dev_kinds[v.name] if v.kind != "numeric" else v for v in plan.variables],
                 encode(stacked, [dev_kinds[v.name] for v in plan.variables]), plan.fit_rows, plan.visit,
                 plan.predictors, plan.methods, plan.donors, plan.maxit, keys)
    return _run(plan, settings, 1, np.arange(dev.height, dev.height + new.height), None if ids is None else list(ids))
