"""Internal validation of a competing-risk model's predicted cumulative incidence of one cause.

The optimism bootstrap (Efron, JASA 1983;78:316-331; Harrell, Lee & Mark, Stat Med 1996;15:361-387) or
repeated cross-validation of AUC(t) and Brier(t) of the cause of interest at each horizon, in the layout of
:func:`analytics.stats.internal.optimism` (``rms::validate``): apparent (``original``), mean of the
replicates on their own resample (``training``) and on the original patients (``test``), ``optimism =
training - test`` and ``corrected = original - optimism``.  Each value is
:func:`~analytics.stats.time_auc` / :func:`~analytics.stats.brier` with ``cause`` (equal to
``riskRegression::Score(..., cause, cens.model = "km")``), the censoring distribution re-estimated on the
patients it is computed on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from .competing_status import cause_ok, competing_inputs
from .internal import InternalValidation, replicate_means, replicate_values
from .resampling import Replicate
from .survival_time import brier, time_auc


def index_names(horizons: Sequence[float]) -> list[str]:
    """``AUC(t=...)`` then ``Brier(t=...)`` per horizon: the table's indexes."""
    return [f"AUC(t={t:g})" for t in horizons] + [f"Brier(t={t:g})" for t in horizons]


def _measures(time: np.ndarray, status: np.ndarray, risk: np.ndarray, horizons: np.ndarray,
              cause: int) -> np.ndarray:
    """AUC(t) and Brier(t) of ``cause`` at each horizon; NaN at a horizon a resample leaves undefined (no case,
    no control, nobody followed past it, or a risk outside [0, 1])."""
    k = horizons.size
    out = np.full(2 * k, math.nan)
    for j, t in enumerate(horizons):
        if t >= time.max():
            continue
        try:
            out[j] = time_auc(time, status, risk[:, j], [t], cause=cause).estimate[0]
        except ValueError:  # no case of the cause by t, or no control, in this resample
            pass
        try:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[k + j] = brier(time, status, risk[:, j], [t], cause=cause).estimate[0]
        except ValueError:  # a refit predicting a risk outside [0, 1] (a tiny resample): left out, as n shows
            pass
    return out


def optimism_competing(
    time: ArrayLike,
    status: ArrayLike,
    apparent_risk: ArrayLike,
    replicates: Sequence[Replicate],
    horizons: Sequence[float],
    cause: int = 1,
    method: Literal["bootstrap", "cv"] = "bootstrap",
) -> InternalValidation:
    """Optimism-corrected AUC(t) and Brier(t) of the cumulative incidence of ``cause``.

    Parameters
    ----------
    time, status : array-like
        The n training patients' follow-up and status codes (0 censored, otherwise the cause).
    apparent_risk : array-like, shape (n, len(horizons))
        The model fitted on all n patients: its cumulative incidence of ``cause`` by each horizon.
    replicates : sequence of Replicate
        The procedure refitted on each resample, with ``apparent_risk`` (its own rows) and ``test_risk``
        (all n patients) at the horizons.  Failed ones (``error`` set) are counted and left out.
    horizons : sequence of float
    cause : int
    method : {"bootstrap", "cv"}
        ``"cv"``: each replicate is tested on the rows it was not fitted on.

    Returns
    -------
    InternalValidation
        Indexes ``AUC(t=...)`` and ``Brier(t=...)``; ``n`` counts the replicates where both the training
        and the test value are defined.

    Notes
    -----
    Harrell's optimism bootstrap (Harrell, Lee & Mark 1996) of the competing-risk AUC(t) (Blanche,
    Dartigues & Jacqmin-Gadda, Stat Med 2013;32:5381-5397) and Brier(t) (Graf et al., Stat Med 1999), the
    measures Gerds & Kattan (*Medical Risk Prediction Models*, 2021, ch. 7) validate with
    ``riskRegression::Score(..., split.method = "bootcv")`` for a cause of interest.  The .632+ estimator
    is not offered: its no-information rate is defined for one event type.
    """
    if method not in ("bootstrap", "cv"):
        raise ValueError(f"internal validation of a cause with competing risks: method must be \"bootstrap\" "
                         f"or \"cv\", not {method!r}")
    t_, s_ = competing_inputs(time, status)
    c = cause_ok(s_, cause)
    n = t_.size
    hz = np.asarray(horizons, dtype=np.float64).reshape(-1)
    if hz.size == 0:
        raise ValueError("horizons are required: AUC(t) and Brier(t) are evaluated at them")
    risk = np.asarray(apparent_risk, dtype=np.float64).reshape(n, hz.size)
    names = index_names(hz.tolist())
    original = _measures(t_, s_, risk, hz, c)
    def train_of(rep: Replicate, idx: np.ndarray) -> np.ndarray:
        if rep.apparent_risk is None or rep.test_risk is None:
            raise ValueError("a replicate has no risks at the horizons (refit the model)")
        return _measures(t_[idx], s_[idx], np.asarray(rep.apparent_risk, dtype=np.float64).reshape(idx.size, -1),
                         hz, c)

    def test_of(rep: Replicate, rows: np.ndarray) -> np.ndarray:
        risk = np.asarray(rep.test_risk, dtype=np.float64).reshape(n, -1)[rows]
        return _measures(t_[rows], s_[rows], risk, hz, c)

    ok, reasons, train, test = replicate_values(replicates, n, method == "cv", len(names), train_of, test_of)
    tr_mean, te_mean, count = replicate_means(train, test)
    opt = tr_mean - te_mean
    table = pl.DataFrame({"index": names, "original": original, "training": tr_mean, "test": te_mean,
                          "optimism": opt, "corrected": original - opt, "n": count.astype(np.int64)})
    return InternalValidation(method=method, table=table, replicates=len(replicates),
                              failed=len(replicates) - len(ok), reasons=reasons, training=train, test=test)


__all__ = ["index_names", "optimism_competing"]
