"""Internal validation from refitted replicates: optimism-corrected bootstrap, repeated cross-validation,
.632+, the location-shifted bootstrap interval, and the bias-corrected calibration curve.

The replicates (:class:`analytics.stats.resampling.Replicate`) hold, for a model's whole procedure
refitted on a resample (or the training folds), its scores of the resample ("training", rms's
``evalfit``) and of the original patients ("test").  This module only turns them into measures, in the
layout of ``rms::validate`` / ``rms::calibrate`` (Harrell, *Regression Modeling Strategies*, 2nd ed.
2015, section 5.3; Harrell, Lee & Mark, Stat Med 1996;15:361-387; Steyerberg, *Clinical Prediction
Models*, 2nd ed. 2019, ch. 17):

- ``method="bootstrap"``: optimism = mean(training - test), corrected = original - optimism (Efron,
  JASA 1983;78:316-331), as ``rms::validate(method = "boot")``;
- ``method="cv"``: each replicate's test rows are its left-out fold; optimism = mean over folds (and
  repeats) of training - test, corrected = original - optimism, as ``rms::validate(method =
  "crossvalidation")`` (whose ``test`` column is the plain cross-validated estimate);
- ``method=".632+"``: Efron & Tibshirani, JASA 1997;92:548-560 for the Brier score (per-patient
  leave-one-out bootstrap error, no-information error ``mean_ij (y_i - p_j)^2``); for AUC and Dxy
  the extension of Sahiner, Chan & Hadjiiski (Neural Networks 2008;21:476-483) with out-of-bag AUC per
  replicate and no-information AUC 1/2 (as Noma et al.'s R package predboot).  Other indexes, and
  every survival index, are NaN under .632+.

Intervals for the corrected estimates (:meth:`InternalValidation.interval`) are the location-shifted
bootstrap of Noma, Shinozaki, Iba, Teramukai & Furukawa (Stat Methods Med Res 2021;30:2361-2374).  They
under-cover when the procedure overfits (bench/coverage.py); the training-split interval whose coverage
was measured near its level is the nested cross-validation one of :mod:`analytics.stats.nested_cv` (Bates,
Hastie & Tibshirani, JASA 2024), from its own replicates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from . import _validate as v
from .bootstrap import spawn_generators
from .calibrate import logit
from .internal_measures import (
    BINARY_INDEXES,
    SURVIVAL_INDEXES,
    approx_first,
    binary_measures,
    emax,
    lowess,
    survival_measures,
)
from .resampling import Replicate
from .roc import placements
from .survival_time import brier as ipcw_brier

Endpoint = Literal["binary", "survival"]
Method = Literal["bootstrap", "cv", ".632+"]
METHODS = ("bootstrap", "cv", ".632+")


@dataclass(frozen=True, eq=False)
class InternalValidation:
    """Apparent, optimism and corrected performance, in ``rms::validate``'s layout.

    Attributes
    ----------
    method : str
        ``"bootstrap"``, ``"cv"`` or ``".632+"``.
    table : polars.DataFrame
        ``index, original, training, test, optimism, corrected, n``: one row per index (binary: Dxy,
        AUC, R2, Intercept, Slope, Emax, D, U, Q, B, g, gp; survival: Dxy, C, R2, Slope, D, U, Q, g and
        ``Brier(t=...)`` per horizon); ``n`` counts the replicates whose index was not NaN.
    replicates, failed : int
        Replicates given, and those that failed (their ``error`` set).
    reasons : dict
        Failure message -> count.
    training, test : ndarray, shape (successful replicates, indexes)
        Per-replicate values (NaN where undefined), for intervals and diagnostics.
    """

    method: str
    table: pl.DataFrame
    replicates: int
    failed: int
    reasons: dict[str, int]
    training: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)

    def interval(self, level: float = 0.95) -> pl.DataFrame:
        """Location-shifted bootstrap interval of each corrected index (Noma et al. 2021).

        The percentile interval of the apparent index of the bootstrap models on their own resamples
        (the ``training`` values), shifted by the correction: ``[q_(a/2) + d, q_(1-a/2) + d]`` with
        ``d = corrected - original`` (minus the mean optimism for ``"bootstrap"``; the .632+ correction
        for ``".632+"``).  Noma, Shinozaki, Iba, Teramukai & Furukawa, Stat Methods Med Res
        2021;30:2361-2374, as their R package predboot (``C.Harrell_LSCI``, ``C.0.632p_LSCI``).  The
        interval is centred on the mean test value rather than on the corrected estimate, so it inherits
        the optimism correction's own bias (see bench/coverage.py for its coverage).  NaN for ``"cv"``
        and for indexes constant on the training samples (rms's Intercept 0 and Slope 1, and Emax).

        Returns
        -------
        polars.DataFrame
            ``index, corrected, low, high, level, method`` (``"location-shifted bootstrap"``).
        """
        level = v.level_ok(level)
        names = self.table["index"].to_list()
        corrected = self.table["corrected"].to_numpy()
        shift = corrected - self.table["original"].to_numpy()
        low = np.full(len(names), math.nan)
        high = np.full(len(names), math.nan)
        if self.method in ("bootstrap", ".632+") and self.training.shape[0] > 1:
            a = (1.0 - level) / 2.0
            for k in range(len(names)):
                col = self.training[:, k]
                col = col[np.isfinite(col)]
                if col.size < 2 or np.ptp(col) == 0.0:
                    continue
                lo, hi = np.quantile(col, [a, 1.0 - a])
                low[k], high[k] = lo + shift[k], hi + shift[k]
        return pl.DataFrame({
            "index": names, "corrected": corrected, "low": low, "high": high,
            "level": [level] * len(names), "method": ["location-shifted bootstrap"] * len(names),
        })


# ----------------------------------------------------------------------------------------- inputs
def _outcome(y: Any, endpoint: Endpoint) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels, None) for binary; (event, time) for survival (``y`` an (n, 2) array or a pair)."""
    if endpoint == "binary":
        return v.binary_y(y), None
    if isinstance(y, tuple | list) and len(y) == 2:
        t, e = v.as_1d(y[0], "time"), v.as_1d(y[1], "event")
    else:
        arr = np.asarray(y, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError("survival y must be (time, event): an (n, 2) array or a pair of arrays")
        t, e = arr[:, 0], arr[:, 1]
    v.no_nan(t, "time", finite=True)
    v.same_length(time=t, event=e)
    return v.binary_y(e, both_classes=False, name="event").astype(np.float64), t.astype(np.float64)


def _lp(score: np.ndarray, endpoint: Endpoint) -> np.ndarray:
    """Binary scores are probabilities: rms works on their logit.  A probability of exactly 0 or 1 (a
    tree, a separated fit) is moved to 1e-15 from the bound so that every index stays finite."""
    if endpoint == "binary":
        return logit(score, eps=1e-15)
    return score


def _names(endpoint: Endpoint, horizons: np.ndarray) -> list[str]:
    if endpoint == "binary":
        return ["Dxy", "AUC", "R2", "Intercept", "Slope", "Emax", "D", "U", "Q", "B", "g", "gp"]
    return ["Dxy", "C", "R2", "Slope", "D", "U", "Q", "g"] + [f"Brier(t={t:g})" for t in horizons]


def _measure(endpoint: Endpoint, yb: np.ndarray, tb: np.ndarray | None, score: np.ndarray,
             risk: np.ndarray | None, horizons: np.ndarray, recalibrate: bool) -> np.ndarray:
    """One column of the table (Emax left NaN: rms computes it from the corrected calibration)."""
    lp = _lp(score, endpoint)
    if endpoint == "binary":
        m = binary_measures(yb, lp, recalibrate=recalibrate)
        k = dict(zip(BINARY_INDEXES, m, strict=True))
        return np.array([k["Dxy"], (k["Dxy"] + 1) / 2, k["R2"], k["Intercept"], k["Slope"], math.nan,
                         k["D"], k["U"], k["Q"], k["B"], k["g"], k["gp"]])
    assert tb is not None
    m = survival_measures(tb, yb, lp, recalibrate=recalibrate)
    k = dict(zip(SURVIVAL_INDEXES, m, strict=True))
    briers = np.full(horizons.size, math.nan)
    if horizons.size and risk is not None:
        briers = ipcw_brier(tb, yb, np.asarray(risk, dtype=np.float64).reshape(tb.size, -1),
                            horizons).estimate
    return np.concatenate([[k["Dxy"], (k["Dxy"] + 1) / 2, k["R2"], k["Slope"], k["D"], k["U"], k["Q"],
                            k["g"]], briers])


def _pick(y: np.ndarray, t: np.ndarray | None, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    return y[rows], (None if t is None else t[rows])


# ----------------------------------------------------------------------------------------- optimism
def replicate_values(
    replicates: Sequence[Replicate],
    n: int,
    cv: bool,
    width: int,
    train_of: Callable[[Replicate, np.ndarray], np.ndarray],
    test_of: Callable[[Replicate, np.ndarray], np.ndarray],
) -> tuple[list[Replicate], dict[str, int], np.ndarray, np.ndarray]:
    """Each successful replicate's indices on its own resample (``train_of(rep, index)``) and on the rows it is
    tested on (``test_of(rep, rows)``: all n rows, or with ``cv`` those outside its training folds), as
    ``(ok, reasons, train, test)``; failed replicates are left out and counted by reason (Harrell's
    ``predab.resample``)."""
    ok = [r for r in replicates if r.error is None]
    reasons = dict(sorted(Counter(str(r.error) for r in replicates if r.error is not None).items()))
    train = np.full((len(ok), width), math.nan)
    test = np.full((len(ok), width), math.nan)
    for b, rep in enumerate(ok):
        idx = np.asarray(rep.index, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"replicate {b} has row indices outside 0..{n - 1}")
        train[b] = train_of(rep, idx)
        test[b] = test_of(rep, np.setdiff1d(np.arange(n), idx) if cv else np.arange(n))
    return ok, reasons, train, test


def replicate_means(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean training and test value of each index over the replicates where both are finite, and their count."""
    both = np.isfinite(train) & np.isfinite(test)
    count = both.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tr_mean = np.where(both, train, 0.0).sum(axis=0) / count
        te_mean = np.where(both, test, 0.0).sum(axis=0) / count
    return tr_mean, te_mean, count


def optimism(
    y: Any,
    apparent_score: ArrayLike,
    replicates: Sequence[Replicate],
    endpoint: Endpoint = "binary",
    horizons: Sequence[float] = (),
    method: Method = "bootstrap",
    *,
    apparent_risk: ArrayLike | None = None,
) -> InternalValidation:
    """Optimism-corrected performance of a modelling procedure, as ``rms::validate``.

    Parameters
    ----------
    y : array-like
        Binary: 0/1 labels of the n training patients.  Survival: ``(time, event)`` (an (n, 2) array or
        a pair of arrays).
    apparent_score : array-like, shape (n,)
        The model fitted on all n patients scoring them: binary a probability (rms's linear predictor is
        its logit), survival a linear predictor / risk score (higher = earlier event).
    replicates : sequence of Replicate
        The procedure refitted on each resample (``method="bootstrap"`` or ``".632+"``: n rows drawn with
        replacement; ``"cv"``: the training folds, every fold of every repeat).  Failed ones (``error``
        set) are counted and left out.
    endpoint : {"binary", "survival"}
    horizons : sequence of float
        Survival: horizons of the IPCW Brier score (Graf et al. 1999), computed from
        ``apparent_risk`` and each replicate's ``apparent_risk`` / ``test_risk``.
    method : {"bootstrap", "cv", ".632+"}
    apparent_risk : array-like, shape (n, len(horizons)), optional
        Survival: the full model's risk by each horizon.

    Returns
    -------
    InternalValidation

    Notes
    -----
    The training and original columns follow rms's ``evalfit``: the intercept and slope are 0 and 1 by
    definition and the likelihood-ratio statistic is that of the scores as they are; the test column
    refits a logistic (Cox) regression of the outcome on the linear predictor.  Emax is
    ``max |p - plogis(a + b logit p)|`` for the corrected intercept ``a`` and slope ``b`` (rms puts it
    in the test, optimism and corrected columns alike).  With R's resample indices and a maximum
    likelihood logistic / Cox refit, every index equals ``validate.lrm`` / ``validate.cph``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown internal validation method {method!r}; choose from {METHODS}")
    yy, tt = _outcome(y, endpoint)
    n = yy.size
    score = v.as_1d(apparent_score, "apparent_score").astype(np.float64)
    v.same_length(y=yy, apparent_score=score)
    hz = np.asarray(horizons, dtype=np.float64).reshape(-1)
    if endpoint == "survival" and hz.size and apparent_risk is None:
        raise ValueError("horizons given without apparent_risk (the full model's risk at each horizon)")
    names = _names(endpoint, hz)
    risk_all = None if apparent_risk is None else np.asarray(apparent_risk, dtype=np.float64)
    original = _measure(endpoint, yy, tt, score, risk_all, hz, recalibrate=False)

    def train_of(rep: Replicate, idx: np.ndarray) -> np.ndarray:
        yb, tb = _pick(yy, tt, idx)
        return _measure(endpoint, yb, tb, np.asarray(rep.apparent, dtype=np.float64), rep.apparent_risk, hz,
                        recalibrate=False)

    def test_of(rep: Replicate, rows: np.ndarray) -> np.ndarray:
        ys, ts = _pick(yy, tt, rows)
        risk = None if rep.test_risk is None else np.asarray(rep.test_risk).reshape(n, -1)[rows]
        return _measure(endpoint, ys, ts, np.asarray(rep.test, dtype=np.float64)[rows], risk, hz, recalibrate=True)

    ok, reasons, train, test = replicate_values(replicates, n, method == "cv", len(names), train_of, test_of)
    tr_mean, te_mean, count = replicate_means(train, test)
    opt = tr_mean - te_mean
    corrected = original - opt
    if method == ".632+":
        corrected, te_mean = _point632plus(endpoint, yy, score, ok, names, original, corrected, te_mean)
        opt = original - corrected
    if endpoint == "binary":
        k = names.index("Emax")
        ia, isl = names.index("Intercept"), names.index("Slope")
        e = emax(float(corrected[ia]), float(corrected[isl])) if method != ".632+" else math.nan
        original[k], tr_mean[k], te_mean[k], opt[k], corrected[k] = 0.0, 0.0, e, e, e
        count[k] = count[names.index("Dxy")]
    table = pl.DataFrame({
        "index": names, "original": original, "training": tr_mean, "test": te_mean,
        "optimism": opt, "corrected": corrected, "n": count.astype(np.int64),
    })
    return InternalValidation(method=method, table=table, replicates=len(replicates),
                              failed=len(replicates) - len(ok), reasons=reasons, training=train, test=test)


def _point632plus(endpoint: Endpoint, y: np.ndarray, score: np.ndarray, reps: Sequence[Replicate],
                  names: list[str], original: np.ndarray, corrected: np.ndarray,
                  test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """.632+ for Brier (binary) and AUC/C/Dxy; every other index NaN.  Returns (estimate, OOB value)."""
    n = y.size
    est = np.full(len(names), math.nan)
    oob = np.full(len(names), math.nan)
    out_of_bag = [np.setdiff1d(np.arange(n), np.asarray(r.index)) for r in reps]
    # AUC / C: mean out-of-bag AUC of each replicate (Sahiner et al. 2008); no-information value 1/2
    aucs = []
    for rep, rows in zip(reps, out_of_bag, strict=True):
        if rows.size < 2:
            continue
        s = np.asarray(rep.test, dtype=np.float64)[rows]
        if endpoint == "binary":
            if 0 < y[rows].sum() < rows.size:
                aucs.append(placements(y[rows], s)[0])
    if endpoint == "binary" and aucs:
        app = float(original[names.index("AUC")])
        auc1 = float(np.mean(aucs))
        auc = _632plus(1.0 - app, 1.0 - auc1, 0.5)
        est[names.index("AUC")], oob[names.index("AUC")] = 1.0 - auc, auc1
        est[names.index("Dxy")], oob[names.index("Dxy")] = 2 * (1.0 - auc) - 1, 2 * auc1 - 1
        # Brier: per-patient leave-one-out bootstrap error (Efron & Tibshirani 1997, Err^(1))
        loss = np.zeros(n)
        times = np.zeros(n)
        for rep, rows in zip(reps, out_of_bag, strict=True):
            p = np.asarray(rep.test, dtype=np.float64)[rows]
            loss[rows] += (y[rows] - p) ** 2
            times[rows] += 1
        seen = times > 0
        err1 = float(np.mean(loss[seen] / times[seen]))
        err = float(original[names.index("B")])
        gamma = float(np.mean(y) - 2 * np.mean(y) * np.mean(score) + np.mean(score ** 2))
        est[names.index("B")], oob[names.index("B")] = _632plus(err, err1, gamma), err1
    return est, oob


def _632plus(err: float, err1: float, gamma: float) -> float:
    """Efron & Tibshirani (1997) eq. 32: ``(1 - w) err + w Err1'`` with ``w = .632 / (1 - .368 R')``."""
    err1p = min(err1, gamma)
    r = (err1p - err) / (gamma - err) if (err1p > err and gamma > err) else 0.0
    r = min(max(r, 0.0), 1.0)
    w = 0.632 / (1.0 - 0.368 * r)
    return (1.0 - w) * err + w * err1p


# ------------------------------------------------------------------------------ from a callable
def bootstrap_indices(n: int, B: int, seed: int = 0) -> np.ndarray:
    """``(B, n)`` rows drawn with replacement; replicate ``b`` uses its own stream (``SeedSequence(seed)``
    spawned), so a replicate's resample depends only on ``seed`` and ``b``."""
    B = v.n_boot_ok(B)
    return np.stack([g.integers(0, n, size=n) for g in spawn_generators(seed, B)])


def cv_indices(n: int, k: int = 10, repeats: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Training rows (sorted) of every fold of ``repeats`` random k-fold partitions (a random
    permutation cut into k runs of n // k or n // k + 1 rows; every row is left out once per repeat).
    rms's own cut (:func:`_folds`) can put a row in two folds, so it is kept for the R tests only."""
    if k < 2 or n / k < 2:
        raise ValueError(f"cross-validation needs 2 <= k <= n/2 folds, got k={k} for n={n}")
    out: list[np.ndarray] = []
    for g in spawn_generators(seed, int(repeats)):
        perm = g.permutation(n)
        out.extend(np.setdiff1d(np.arange(n), fold) for fold in np.array_split(perm, k))
    return out


def _folds(perm: np.ndarray, k: int) -> list[np.ndarray]:
    """rms's ``predab.resample`` cut of a permutation into k test folds (R's round, half to even)."""
    n = perm.size
    per = n / k
    out = []
    for i in range(1, k + 1):
        start = 1 + round((i - 1) * per)
        end = min(n, round(start + per - 1))
        out.append(perm[start - 1:end])
    return out


Predict = Callable[[Any], Any]


def _scores(out: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(out, tuple):
        return np.asarray(out[0], dtype=np.float64), np.asarray(out[1], dtype=np.float64)
    return np.asarray(out, dtype=np.float64), None


def replicates_from(fit: Callable[[Any, Any], Predict], X: Any, y: Any,
                    indices: Sequence[np.ndarray]) -> list[Replicate]:
    """Refit ``fit(X_rows, y_rows) -> predict`` on each row set and score it and all rows.

    ``predict(X)`` returns scores, or ``(scores, risk)`` with risk ``(rows, horizons)`` for survival.
    An exception in a replicate is recorded as its ``error`` (``"TypeName: message"``).
    """
    reps = []
    ya = np.asarray(y)
    for idx in indices:
        rows = np.asarray(idx, dtype=np.int64)
        try:
            predict = fit(v.take_rows(X, rows), ya[rows])
            s_app, r_app = _scores(predict(v.take_rows(X, rows)))
            s_test, r_test = _scores(predict(X))
        except Exception as exc:  # a failed refit is data, not a crash: rms counts it too
            empty = np.empty(0)
            reps.append(Replicate(rows, empty, empty, error=f"{type(exc).__name__}: {exc}"))
            continue
        reps.append(Replicate(rows, s_app, s_test, r_app, r_test))
    return reps


def optimism_bootstrap(
    fit: Callable[[Any, Any], Predict],
    X: Any,
    y: Any,
    indices: Sequence[np.ndarray] | np.ndarray | None = None,
    *,
    B: int = 200,
    seed: int = 0,
    endpoint: Endpoint = "binary",
    horizons: Sequence[float] = (),
    method: Method = "bootstrap",
) -> InternalValidation:
    """Fit on all rows, refit on each resample (R's indices when given, else :func:`bootstrap_indices`),
    and return :func:`optimism` of the replicates.  ``y`` is 0/1, or an (n, 2) array of time, event."""
    n = len(np.asarray(y))
    if indices is None:
        indices = bootstrap_indices(n, B, seed) if method != "cv" else cv_indices(n, 10, 1, seed)
    predict = fit(X, np.asarray(y))
    score, risk = _scores(predict(X))
    reps = replicates_from(fit, X, y, list(indices))
    return optimism(y, score, reps, endpoint, horizons, method, apparent_risk=risk)


# ---------------------------------------------------------------------------- calibration curve
@dataclass(frozen=True, eq=False)
class CorrectedCalibration:
    """Bias-corrected calibration curve, as ``rms::calibrate`` (binary, lowess smoother).

    Attributes
    ----------
    curve : polars.DataFrame
        ``predicted`` (rms's ``predy`` grid), ``apparent`` (lowess of y on the predicted probability of
        the full model), ``optimism``, ``corrected`` (apparent - optimism), ``n`` (replicates whose
        smooth covered that point).
    mae, mse, q90 : float
        Mean absolute and squared error, 0.9 quantile of the absolute error of the corrected curve
        interpolated at every patient's predicted probability (rms's ``print.calibrate``).
    replicates, failed : int
    """

    curve: pl.DataFrame
    mae: float
    mse: float
    q90: float
    replicates: int
    failed: int


def _cal_error(p: np.ndarray, y: np.ndarray, predy: np.ndarray) -> np.ndarray:
    sx, sy = lowess(p, y.astype(np.float64))
    return approx_first(sx, sy, predy) - predy


def calibration_corrected(
    y: ArrayLike,
    apparent_prob: ArrayLike,
    replicates: Sequence[Replicate],
    predy: ArrayLike | None = None,
) -> CorrectedCalibration:
    """Bootstrap bias-corrected calibration curve of ``rms::calibrate.default`` (Harrell 2015, 10.11).

    Each curve is R's ``lowess(p, y, iter = 0)`` read at the ``predy`` grid (default: 50 points evenly
    from the 5th smallest to the 5th largest predicted probability); optimism is the mean over the
    replicates of (training curve - predy) - (test curve - predy); corrected = apparent - optimism.
    """
    yy = v.binary_y(y)
    p = v.probability(apparent_prob, "apparent_prob")
    v.same_length(y=yy, apparent_prob=p)
    n = yy.size
    if predy is None:
        if n < 11:
            raise ValueError("calibration curve needs n > 10 when predy is not given")
        ps = np.sort(p)
        grid = np.linspace(ps[4], ps[n - 5], 50)
    else:
        grid = v.as_1d(predy, "predy").astype(np.float64)
    orig = _cal_error(p, yy, grid)
    ok = [r for r in replicates if r.error is None]
    tot = np.zeros(grid.size)
    cnt = np.zeros(grid.size, dtype=np.int64)
    for rep in ok:
        idx = np.asarray(rep.index, dtype=np.int64)
        tr = _cal_error(np.asarray(rep.apparent, dtype=np.float64), yy[idx], grid)
        te = _cal_error(np.asarray(rep.test, dtype=np.float64), yy, grid)
        good = np.isfinite(tr + te)
        tot += np.where(good, tr - te, 0.0)
        cnt += good
    with np.errstate(invalid="ignore", divide="ignore"):
        opt = tot / cnt
    apparent = orig + grid
    corrected = apparent - opt
    s = np.isfinite(grid + corrected)
    err = p - _approx_mean(grid[s], corrected[s], p)
    err = err[np.isfinite(err)]
    return CorrectedCalibration(
        curve=pl.DataFrame({"predicted": grid, "apparent": apparent, "optimism": opt,
                            "corrected": corrected, "n": cnt}),
        mae=float(np.mean(np.abs(err))), mse=float(np.mean(err ** 2)),
        q90=float(np.quantile(np.abs(err), 0.9)), replicates=len(replicates),
        failed=len(replicates) - len(ok))


def _approx_mean(x: np.ndarray, y: np.ndarray, xout: np.ndarray) -> np.ndarray:
    """R ``approx(x, y, xout, ties = mean)$y`` (NaN outside the range of x)."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    ux, inv = np.unique(xs, return_inverse=True)
    uy = np.bincount(inv, weights=ys) / np.bincount(inv)
    res = np.interp(xout, ux, uy)
    res[(xout < ux[0]) | (xout > ux[-1])] = np.nan
    return res


# ------------------------------------------------------------------- survival calibration (KM groups)
@dataclass(frozen=True, eq=False)
class CorrectedSurvivalCalibration:
    """Bias-corrected calibration of predicted survival at a horizon, as ``rms::calibrate.cph(cmethod =
    "KM")``.

    Attributes
    ----------
    u : float
        The horizon.
    groups : polars.DataFrame
        One row per group of the full model's predicted survival (cut at the quantiles of
        ``c(0, 1, predicted)``, about m patients each): ``predicted`` (mean predicted survival at u),
        ``observed`` (Kaplan-Meier at u), ``original``, ``training``, ``test`` (observed - predicted),
        ``optimism``, ``corrected`` (observed - optimism, rms's ``KM.corrected``), ``n`` (replicates).
    cuts : ndarray
        The group boundaries on the predicted-survival scale.
    replicates, failed : int
    """

    u: float
    groups: pl.DataFrame
    cuts: np.ndarray = field(repr=False)
    replicates: int
    failed: int


def _km_at(time: np.ndarray, event: np.ndarray, u: float) -> float:
    """Kaplan-Meier survival at u, NaN past the last time when still above 0 (``rms::groupkm``)."""
    tt, inv = np.unique(time, return_inverse=True)
    d = np.bincount(inv, weights=event, minlength=tt.size)
    c = np.bincount(inv, minlength=tt.size).astype(np.float64)
    at_risk = c[::-1].cumsum()[::-1]
    surv = np.cumprod(1.0 - d / at_risk)
    t_all, s_all = np.r_[0.0, tt], np.r_[1.0, surv]
    k = int(np.flatnonzero(t_all <= u + 1e-6).max())
    if u > t_all[-1] + 1e-6 and s_all[-1] > 0:
        return math.nan
    return float(s_all[k])


def _cut2(x: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Group codes 0..l-2 of ``Hmisc::cut2(x, cuts)`` (intervals [c_j, c_j+1), the last closed); -1 if
    outside."""
    xu = np.unique(np.r_[x, cuts])
    md = np.min(np.diff(xu)) / 2.0 if xu.size > 1 else 0.0
    c = np.asarray(cuts, dtype=np.float64)
    if x.min() < c[0]:
        c = np.r_[x.min(), c]
    if x.max() > c.max():
        c = np.r_[c, x.max()]
    k2 = c - md
    k2[-1] = c[-1]
    # R's cut(x, k2): right-closed (k2[j], k2[j+1]]
    code = np.searchsorted(k2, x, side="left") - 1
    code[(x <= k2[0]) | (x > k2[-1])] = -1
    return code


def _groupkm(surv: np.ndarray, time: np.ndarray, event: np.ndarray, u: float, cuts: np.ndarray,
             n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted survival and Kaplan-Meier at u per group (``rms::groupkm``)."""
    s = np.where(np.abs(surv) < 1e-10, 0.0, surv)
    code = _cut2(s, cuts)
    pred = np.full(n_groups, math.nan)
    km = np.full(n_groups, math.nan)
    for g in range(n_groups):
        rows = code == g
        if rows.sum() == 1:
            pred[g] = float(s[rows].mean())
        elif rows.sum() >= 2:
            pred[g] = float(s[rows].mean())
            km[g] = _km_at(time[rows], event[rows], u)
    return pred, km


def calibration_corrected_survival(
    y: Any,
    apparent_risk: ArrayLike,
    replicates: Sequence[Replicate],
    u: float,
    *,
    horizon: int = 0,
    m: int = 150,
) -> CorrectedSurvivalCalibration:
    """Bootstrap bias-corrected calibration of survival at ``u`` by Kaplan-Meier groups, as
    ``rms::calibrate.cph(cmethod = "KM", u, m)`` (Harrell 2015, section 20.13).

    Parameters
    ----------
    y : (time, event), an (n, 2) array or a pair
    apparent_risk : array-like, shape (n,) or (n, horizons)
        The full model's risk of an event by u (predicted survival is ``1 - risk``).
    replicates : sequence of Replicate
        With ``apparent_risk`` / ``test_risk`` at the same horizons.
    u : float
    horizon : int
        The column of the risk matrices that holds u.
    m : int
        Patients per group: ``floor(n / m)`` groups cut at quantiles of ``c(0, 1, predicted)``.

    Notes
    -----
    Each replicate's distance is (KM - mean predicted) per group of the original cuts, on its resample
    (training) and on the original patients (test); a replicate with fewer than 5 events in its
    resample counts as failed (rms refuses the fit).  ``corrected = KM - mean(training - test)``.
    """
    ev, tt = _outcome(y, "survival")
    assert tt is not None
    n = tt.size
    risk = np.asarray(apparent_risk, dtype=np.float64).reshape(n, -1)[:, horizon]
    surv = 1.0 - risk
    g = max(1, n // int(m))
    cuts = np.unique(np.quantile(np.r_[0.0, 1.0, surv], np.linspace(0.0, 1.0, g + 1)))
    k = _cut2(np.where(np.abs(surv) < 1e-10, 0.0, surv), cuts).max() + 1
    n_groups = int(max(k, cuts.size - 1))
    pred, km = _groupkm(surv, tt, ev, u, cuts, n_groups)
    original = km - pred
    tr_tot = np.zeros(n_groups)
    te_tot = np.zeros(n_groups)
    cnt = np.zeros(n_groups, dtype=np.int64)
    failed = 0
    for rep in replicates:
        idx = np.asarray(rep.index, dtype=np.int64)
        if rep.error is not None or rep.apparent_risk is None or rep.test_risk is None or ev[idx].sum() < 5:
            failed += 1
            continue
        s_tr = 1.0 - np.asarray(rep.apparent_risk, dtype=np.float64).reshape(idx.size, -1)[:, horizon]
        s_te = 1.0 - np.asarray(rep.test_risk, dtype=np.float64).reshape(n, -1)[:, horizon]
        p_tr, k_tr = _groupkm(s_tr, tt[idx], ev[idx], u, cuts, n_groups)
        p_te, k_te = _groupkm(s_te, tt, ev, u, cuts, n_groups)
        d_tr, d_te = k_tr - p_tr, k_te - p_te
        good = np.isfinite(d_tr + d_te)
        tr_tot += np.where(good, d_tr, 0.0)
        te_tot += np.where(good, d_te, 0.0)
        cnt += good
    with np.errstate(invalid="ignore", divide="ignore"):
        training, test = tr_tot / cnt, te_tot / cnt
    opt = training - test
    return CorrectedSurvivalCalibration(
        u=float(u),
        groups=pl.DataFrame({"predicted": pred, "observed": km, "original": original, "training": training,
                             "test": test, "optimism": opt, "corrected": km - opt, "n": cnt}),
        cuts=cuts, replicates=len(replicates), failed=failed)
