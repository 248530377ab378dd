"""Internal validation by the optimism-corrected bootstrap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .bootstrap import spawn_generators
from .calibrate import _clip_probability, logistic_fit, logit
from .roc import placements

METRICS = ("auc", "slope", "brier")


def _metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    if name == "auc":
        return placements(y, p)[0]
    if name == "brier":
        return float(np.mean((p - y) ** 2))
    if name == "slope":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lp = logit(_clip_probability(np.asarray(p, dtype=np.float64)))
            return float(logistic_fit(np.column_stack([np.ones(p.size), lp]),
                                      y.astype(np.float64))[1])
    raise ValueError(f"unknown metric {name!r}; choose from {METRICS}")


def _factory(estimator_factory: Any) -> Callable[[], Any]:
    if isinstance(estimator_factory, type) or (
        callable(estimator_factory) and not hasattr(estimator_factory, "fit")
    ):
        return estimator_factory
    if hasattr(estimator_factory, "fit"):
        from sklearn.base import clone

        return lambda: clone(estimator_factory)
    raise TypeError("estimator_factory must be a callable returning an unfitted estimator")


def _prob(model: Any, x: Any) -> np.ndarray:
    p = np.asarray(model.predict_proba(x))
    return (p[:, 1] if p.ndim == 2 else p).astype(np.float64)


def optimism_corrected(
    estimator_factory: Callable[[], Any] | Any,
    X: Any,
    y: ArrayLike,
    *,
    n_boot: int = 200,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
) -> pl.DataFrame:
    """Optimism-corrected performance by bootstrap refitting.

    Parameters
    ----------
    estimator_factory : callable or estimator
        ``estimator_factory()`` returns a new unfitted estimator with
        ``fit(X, y)`` and ``predict_proba(X)`` (a function or a class); an
        estimator instance is cloned
        (``sklearn.base.clone``).  Seed any randomness inside it yourself.
    X : array-like or DataFrame
        Predictors (rows = subjects).
    y : array-like of 0/1
    n_boot : int
        Bootstrap resamples (Harrell suggests 150-200).
    seed : int
        Seed of the ``Generator(PCG64)`` that draws the resamples.
    metrics : sequence of {"auc", "slope", "brier"}

    Returns
    -------
    polars.DataFrame
        One row per metric: ``metric``, ``apparent``, ``optimism`` (mean of
        bootstrap-sample minus original-sample performance of each refitted
        model), ``corrected = apparent - optimism``, ``n_boot``.

    Notes
    -----
    Efron, JASA 1983;78:316-331; Harrell, Lee & Mark, Stat Med
    1996;15:361-387; Harrell, *Regression Modeling Strategies* (2nd ed. 2015,
    section 5.3.5); Steyerberg, *Clinical Prediction Models* (2nd ed. 2019,
    ch. 17).  Resamples are ordinary (subjects with replacement); a resample
    containing one class only is redrawn.  The corrected slope is the
    bootstrap shrinkage factor.
    """
    n_boot = v.n_boot_ok(n_boot)
    yy = v.binary_y(y)
    n = yy.size
    if len(X) != n:
        raise ValueError(f"lengths differ: X has {len(X)} rows, y has {n}")
    names = list(metrics)
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {METRICS}")
    make = _factory(estimator_factory)
    model = make().fit(X, yy)
    p_app = _prob(model, X)
    apparent = np.array([_metric(m, yy, p_app) for m in names])
    (rng,) = spawn_generators(seed, 1)
    opt = np.empty((n_boot, len(names)))
    for b in range(n_boot):
        while True:
            idx = rng.integers(0, n, size=n)
            yb = yy[idx]
            if 0 < yb.sum() < n:
                break
        xb = v.take_rows(X, idx)
        mb = make().fit(xb, yb)
        p_boot = _prob(mb, xb)
        p_orig = _prob(mb, X)
        opt[b] = [_metric(m, yb, p_boot) - _metric(m, yy, p_orig) for m in names]
    optimism = opt.mean(axis=0)
    return pl.DataFrame({
        "metric": names,
        "apparent": apparent,
        "optimism": optimism,
        "corrected": apparent - optimism,
        "n_boot": [n_boot] * len(names),
    })
