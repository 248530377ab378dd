"""Added value of a new model over an old one, and the sample size to develop one.

* :func:`nri` -- net reclassification improvement, continuous (category-free;
  Pencina, Steyerberg & D'Agostino, Stat Med 2011;30:11-21) or categorical over
  risk cut-offs (Pencina, D'Agostino, D'Agostino & Vasan, Stat Med
  2008;27:157-172), with the standard errors of ``Hmisc::improveProb``.
* :func:`idi` -- integrated discrimination improvement (Pencina et al. 2008).
* :func:`lr_test` -- likelihood-ratio test of two nested models from their
  fitted probabilities (R's ``anova(glm_a, glm_b, test = "LRT")``).
* :func:`sample_size` -- minimum development sample size for a binary outcome,
  criteria 1-3 of Riley et al. (BMJ 2020;368:m441).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, ndtr, ndtri
from scipy.stats import chi2

from . import _validate as v
from .bootstrap import bootstrap_indices, drop_nan, percentile_interval
from .types import _json_value


def _p_two_sided(z: float) -> float:
    return float(2.0 * ndtr(-abs(z))) if math.isfinite(z) else float("nan")


def _ratio(a: float, b: float) -> float:
    # 0/0 (no one reclassified) is undefined, not an error: improveProb returns NaN too
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(a) / np.float64(b))


def _as_dict(obj: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, val in asdict(obj).items():  # type: ignore[call-overload]
        if isinstance(val, dict):
            out[k] = {kk: _json_value(vv) for kk, vv in val.items()}
        elif isinstance(val, tuple):
            out[k] = [_json_value(x) for x in val]
        else:
            out[k] = _json_value(val)
    return out


@dataclass(frozen=True)
class NRIComponent:
    """NRI among events (or non-events) with its ``improveProb`` standard error.

    Attributes
    ----------
    estimate : float
        Events: ``P(up) - P(down)``; non-events: ``P(down) - P(up)``.
    se, z, p : float
        Standard error, ``estimate / se``, two-sided normal p-value.
    n, up, down : int
        Patients in the group, and those moved up / down by the new model.
    """

    estimate: float
    se: float
    z: float
    p: float
    n: int
    up: int
    down: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        return _as_dict(self)


@dataclass(frozen=True)
class NRI:
    """Net reclassification improvement of ``p_new`` over ``p_old``.

    Attributes
    ----------
    estimate, low, high : float
        NRI (events + non-events components; range -2 to 2) and its CI.
    se, z, p : float
        ``improveProb`` standard error (the components' variances added), z and
        two-sided p-value; always the asymptotic ones, also with a bootstrap CI.
    events, nonevents : NRIComponent
    level : float
    method : str
        ``"asymptotic"`` (``estimate +- z * se``) or ``"bootstrap-percentile"``.
    cutoffs : tuple of float or None
        Risk cut-offs of the categorical NRI; ``None`` for the continuous NRI.
    """

    estimate: float
    low: float
    high: float
    se: float
    z: float
    p: float
    events: NRIComponent
    nonevents: NRIComponent
    level: float = 0.95
    method: str = "asymptotic"
    cutoffs: tuple[float, ...] | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        out = _as_dict(self)
        out["events"] = self.events.as_dict()
        out["nonevents"] = self.nonevents.as_dict()
        return out


@dataclass(frozen=True)
class IDI:
    """Integrated discrimination improvement of ``p_new`` over ``p_old``.

    Attributes
    ----------
    estimate, low, high : float
        IDI (change in discrimination slope) and its asymptotic CI.
    se, z, p : float
        ``improveProb`` standard error, z and two-sided p-value.
    events, nonevents : float
        Mean change in predicted risk among events (``improveSens``) and mean
        decrease among non-events (``improveSpec``); ``estimate`` is their sum.
    level : float
    """

    estimate: float
    low: float
    high: float
    se: float
    z: float
    p: float
    events: float
    nonevents: float
    level: float = 0.95
    method: str = "asymptotic"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        return _as_dict(self)


@dataclass(frozen=True)
class LRTest:
    """Likelihood-ratio test of a reduced model nested in a full one.

    Attributes
    ----------
    statistic : float
        Deviance of the reduced model minus that of the full model.
    df : int
        Extra parameters of the full model.
    p : float
        Upper chi-square tail of ``statistic`` on ``df`` degrees of freedom.
    deviance_reduced, deviance_full : float
    """

    statistic: float
    df: int
    p: float
    deviance_reduced: float
    deviance_full: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        return _as_dict(self)


@dataclass(frozen=True)
class SampleSize:
    """Riley et al. (2020) minimum sample size for a binary-outcome model.

    Attributes
    ----------
    criterion_1 : int
        n for an expected uniform shrinkage of at least ``shrinkage``.
    criterion_2 : int
        n for a difference of at most 0.05 between apparent and adjusted
        Nagelkerke R^2.
    criterion_3 : int
        n for estimating the overall risk within +-0.05 (95% confidence).
    n : int
        The required n, the largest of the three.
    events : float
        ``n * prevalence``.
    events_per_parameter : float
    r2_cs : float
        Anticipated Cox-Snell R^2 used (given, or converted from ``auc``).
    max_r2_cs : float
        Largest possible Cox-Snell R^2 at this prevalence (rounded to 2
        decimals, as pmsampsize).
    shrinkage, shrinkage_2 : float
        Target shrinkage of criterion 1, and the shrinkage criterion 2 implies.
    prevalence : float
    parameters : int
    auc : float or None
        The AUC that ``r2_cs`` was converted from, if any.
    """

    criterion_1: int
    criterion_2: int
    criterion_3: int
    n: int
    events: float
    events_per_parameter: float
    r2_cs: float
    max_r2_cs: float
    shrinkage: float
    shrinkage_2: float
    prevalence: float
    parameters: int
    auc: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        return _as_dict(self)


# --- NRI / IDI ---------------------------------------------------------------------------------


def _inputs(y: ArrayLike, p_old: ArrayLike, p_new: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy = v.binary_y(y)
    old = v.probability(p_old, "p_old")
    new = v.probability(p_new, "p_new")
    v.same_length(y=yy, p_old=old, p_new=new)
    return yy, old, new


def _component(moves: np.ndarray, sign: int) -> NRIComponent:
    """improveProb's component: ``moves`` is +1 (up), -1 (down), 0 per patient of one group."""
    n = moves.size
    up, down = int(np.sum(moves > 0)), int(np.sum(moves < 0))
    est = sign * (up - down) / n
    var = (up + down) / n**2 - (up - down) ** 2 / n**3
    se = math.sqrt(var)
    z = _ratio(est, se)
    return NRIComponent(float(est), se, z, _p_two_sided(z), n, up, down)


def _categories(p: np.ndarray, cutoffs: tuple[float, ...]) -> np.ndarray:
    """Risk group index: the number of cut-offs at or below ``p`` (R's ``findInterval``)."""
    return np.searchsorted(np.asarray(cutoffs), p, side="right")


def _cutoffs_ok(cutoffs: Sequence[float]) -> tuple[float, ...]:
    c = tuple(float(x) for x in cutoffs)
    if not c:
        raise ValueError("cutoffs is empty; pass None for the continuous NRI")
    if any(not 0.0 < x < 1.0 for x in c):
        raise ValueError(f"cutoffs must lie in (0, 1), got {list(c)}")
    if any(b <= a for a, b in zip(c, c[1:])):
        raise ValueError(f"cutoffs must be strictly increasing, got {list(c)}")
    return c


def nri(
    y: ArrayLike,
    p_old: ArrayLike,
    p_new: ArrayLike,
    cutoffs: Sequence[float] | None = None,
    level: float = 0.95,
    method: Literal["asymptotic", "bootstrap"] = "asymptotic",
    n_boot: int = 2000,
    seed: int = 0,
) -> NRI:
    """Net reclassification improvement (NRI) of ``p_new`` over ``p_old``.

    Parameters
    ----------
    y : array of 0/1
    p_old, p_new : array of float in [0, 1]
        Predicted risks of the old and the new model for the same patients.
    cutoffs : sequence of float, optional
        ``None``: the continuous (category-free) NRI, where any increase of the
        predicted risk counts as moving up (Pencina et al., Stat Med
        2011;30:11-21).  Otherwise the categorical NRI over the risk groups
        these cut-offs define (Pencina et al., Stat Med 2008;27:157-172); a
        risk equal to a cut-off belongs to the higher group.
    level : float
    method : {"asymptotic", "bootstrap"}
        CI as ``estimate +- z * se`` (as ``Hmisc::improveProb`` prints), or
        the percentile interval of a bootstrap stratified by outcome (events
        and non-events resampled separately, the resamples of
        :func:`~analytics.stats.bootstrap.bootstrap_indices`).
    n_boot, seed : int
        Bootstrap replicates and seed (``method="bootstrap"`` only).

    Returns
    -------
    NRI

    Notes
    -----
    Among events NRI_e = P(up) - P(down), among non-events NRI_ne = P(down) -
    P(up), NRI = NRI_e + NRI_ne.  The variance of each component is
    ``(up + down) / n^2 - (up - down)^2 / n^3`` (McNemar-type, as
    ``Hmisc::improveProb``), the variance of the NRI their sum.  The
    categorical NRI is ``improveProb`` applied to the risk-group indices.
    """
    yy, old, new = _inputs(y, p_old, p_new)
    level = v.level_ok(level)
    cuts = None if cutoffs is None else _cutoffs_ok(cutoffs)
    if cuts is None:
        moves = np.sign(new - old).astype(np.int8)
    else:
        moves = np.sign(_categories(new, cuts) - _categories(old, cuts)).astype(np.int8)
    ev = _component(moves[yy == 1], 1)
    ne = _component(moves[yy == 0], -1)
    est = ev.estimate + ne.estimate
    se = math.sqrt(ev.se**2 + ne.se**2)
    z = _ratio(est, se)
    if method == "asymptotic":
        half = float(ndtri(0.5 + level / 2.0)) * se
        low, high, how = est - half, est + half, "asymptotic"
    elif method == "bootstrap":
        n_boot = v.n_boot_ok(n_boot)
        m = int(yy.sum())
        reps = np.empty(n_boot)
        col = 0
        for idx in bootstrap_indices(yy, n_boot, seed, stratified=True):
            mv = moves[idx].astype(np.float64)
            reps[col:col + idx.shape[0]] = mv[:, :m].mean(axis=1) - mv[:, m:].mean(axis=1)
            col += idx.shape[0]
        low, high = percentile_interval(drop_nan(reps), level)
        how = "bootstrap-percentile"
    else:
        raise ValueError(f"method must be 'asymptotic' or 'bootstrap', got {method!r}")
    return NRI(float(est), float(low), float(high), se, z, _p_two_sided(z), ev, ne, level, how, cuts)


def idi(y: ArrayLike, p_old: ArrayLike, p_new: ArrayLike, level: float = 0.95) -> IDI:
    """Integrated discrimination improvement (IDI) of ``p_new`` over ``p_old``.

    Parameters
    ----------
    y : array of 0/1
    p_old, p_new : array of float in [0, 1]
    level : float

    Returns
    -------
    IDI

    Notes
    -----
    Pencina et al. (Stat Med 2008;27:157-172): with ``d = p_new - p_old``,
    ``IDI = mean(d | event) - mean(d | non-event)``, the change in the
    discrimination slope; ``se = sqrt(var(d | event) / n_e + var(d | non-event)
    / n_ne)`` with sample variances (as ``Hmisc::improveProb``), CI
    ``estimate +- z * se``.
    """
    yy, old, new = _inputs(y, p_old, p_new)
    level = v.level_ok(level)
    d = new - old
    de, dn = d[yy == 1], d[yy == 0]
    sens, spec = float(de.mean()), float(-dn.mean())
    est = sens + spec
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (np.var(de, ddof=1) if de.size > 1 else np.nan) / de.size + (
            np.var(dn, ddof=1) if dn.size > 1 else np.nan) / dn.size
    se = float(math.sqrt(var)) if math.isfinite(var) else float("nan")
    z = _ratio(est, se)
    half = float(ndtri(0.5 + level / 2.0)) * se
    return IDI(est, est - half, est + half, se, z, _p_two_sided(z), sens, spec, level)


def reclassification(
    y: ArrayLike, p_old: ArrayLike, p_new: ArrayLike, cutoffs: Sequence[float]
) -> dict[str, list[list[int]]]:
    """Reclassification tables over the risk groups of ``cutoffs``.

    Returns
    -------
    dict
        ``{"events": T, "nonevents": T, "all": T}`` where ``T[i][j]`` counts
        the patients in old group ``i`` and new group ``j`` (groups as in
        :func:`nri`: a risk equal to a cut-off belongs to the higher group).
    """
    yy, old, new = _inputs(y, p_old, p_new)
    cuts = _cutoffs_ok(cutoffs)
    k = len(cuts) + 1
    cell = _categories(old, cuts) * k + _categories(new, cuts)

    def table(mask: np.ndarray) -> list[list[int]]:
        return np.bincount(cell[mask], minlength=k * k).reshape(k, k).astype(int).tolist()

    return {"events": table(yy == 1), "nonevents": table(yy == 0), "all": table(np.ones(yy.size, bool))}


# --- likelihood-ratio test ----------------------------------------------------------------------


def _deviance(y: np.ndarray, p: np.ndarray) -> float:
    # xlogy-style: a fitted 0 or 1 on the matching outcome contributes 0, as in glm
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = np.where(y == 1, np.log(p), np.log1p(-p))
    return float(-2.0 * np.sum(ll))


def lr_test(y: ArrayLike, p_reduced: ArrayLike, p_full: ArrayLike, df: int) -> LRTest:
    """Likelihood-ratio test of a reduced model nested in a full one.

    Parameters
    ----------
    y : array of 0/1
    p_reduced, p_full : array of float in [0, 1]
        Fitted (apparent, maximum-likelihood) probabilities of the two models
        on the data they were fitted to.
    df : int
        Number of parameters the full model adds.

    Returns
    -------
    LRTest

    Notes
    -----
    The statistic is the difference of the binomial deviances
    ``-2 sum(y log p + (1 - y) log(1 - p))``, referred to chi-square on ``df``
    degrees of freedom: R's ``anova(glm_reduced, glm_full, test = "LRT")``.
    It is valid only for maximum-likelihood fits of nested models on the same
    patients; penalised or cross-validated probabilities do not qualify.
    """
    yy = v.binary_y(y)
    pr = v.probability(p_reduced, "p_reduced")
    pf = v.probability(p_full, "p_full")
    v.same_length(y=yy, p_reduced=pr, p_full=pf)
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df!r}")
    dr, dfull = _deviance(yy, pr), _deviance(yy, pf)
    stat = dr - dfull
    p = float(chi2.sf(stat, int(df))) if math.isfinite(stat) else float("nan")
    return LRTest(stat, int(df), p, dr, dfull)


# --- sample size --------------------------------------------------------------------------------


def _logistic_lr(lp: np.ndarray, y: np.ndarray) -> float:
    """Likelihood-ratio statistic of ``glm(y ~ lp, binomial)`` against the null model (Newton-Raphson)."""
    ybar = float(y.mean())
    beta = np.array([math.log(ybar / (1.0 - ybar)), 0.0])
    x = np.column_stack([np.ones_like(lp), lp])
    for _ in range(100):
        eta = x @ beta
        mu = expit(eta)
        w = mu * (1.0 - mu)
        step = np.linalg.solve((x * w[:, None]).T @ x, x.T @ (y - mu))
        beta = beta + step
        if np.max(np.abs(step)) < 1e-12:
            break
    mu = expit(x @ beta)
    dev = _deviance(y, mu)
    null = -2.0 * float(y.size) * (ybar * math.log(ybar) + (1.0 - ybar) * math.log1p(-ybar))
    return null - dev


def r2_cs_from_auc(auc: float, prevalence: float, n: int = 1_000_000, seed: int = 123456) -> float:
    """Cox-Snell R^2 anticipated from a C statistic (AUC) and the outcome prevalence.

    Parameters
    ----------
    auc : float
        C statistic in (0.5, 1); at or below 0.5 a ValueError says that it implies no explained variation.
    prevalence : float
    n : int
        Size of the simulated data set.
    seed : int
        Seed of the simulation (numpy ``PCG64``).

    Returns
    -------
    float

    Notes
    -----
    The simulation of Riley, Van Calster & Collins (Stat Med 2021;40:859-864),
    as in pmsampsize's ``cstatistic`` option: the linear predictor is drawn
    from N(0, 1) for ``prevalence * n`` patients of one outcome class and from
    N(mu, 1), ``mu = sqrt(2) * Phi^-1(auc)``, for the others (two equal-variance
    normals have that AUC); a logistic regression of the outcome on it is
    fitted and ``R^2cs = 1 - exp(-LR / n)``.  The random numbers differ from
    R's, so results agree with pmsampsize within simulation error (about
    0.001 at n = 10^6), not digit for digit.
    """
    auc = float(auc)
    if math.isnan(auc):
        raise ValueError("the AUC is undefined (NaN): no explained variation to derive a sample size from")
    if not 0.0 <= auc < 1.0:
        raise ValueError(f"auc must lie in (0.5, 1), got {auc}")
    if auc <= 0.5:
        raise ValueError(f"auc must lie in (0.5, 1), got {auc:.4g}: an AUC at or below 0.5 implies no explained "
                         "variation (Cox-Snell R^2 of 0), so no sample size can be derived from it")
    prevalence = _prevalence_ok(prevalence)
    n0 = int(round(prevalence * n))
    n1 = int(round((1.0 - prevalence) * n))
    if n0 < 1 or n1 < 1:
        raise ValueError(f"n = {n} is too small for prevalence {prevalence}")
    mu = math.sqrt(2.0) * float(ndtri(auc))
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    lp = np.concatenate([rng.standard_normal(n0), mu + rng.standard_normal(n1)])
    yy = np.concatenate([np.zeros(n0), np.ones(n1)])
    lr = _logistic_lr(lp, yy)
    return float(1.0 - math.exp(-lr / yy.size))


def _prevalence_ok(prevalence: float) -> float:
    prevalence = float(prevalence)
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must lie in (0, 1), got {prevalence}")
    return prevalence


def _n_for_shrinkage(parameters: int, r2: float, s: float) -> int:
    return int(math.ceil(parameters / ((s - 1.0) * math.log(1.0 - r2 / s))))


def sample_size(
    prevalence: float,
    parameters: int,
    r2_cs: float | None = None,
    auc: float | None = None,
    shrinkage: float = 0.9,
    r2_difference: float = 0.05,
    margin: float = 0.05,
    seed: int = 123456,
) -> SampleSize:
    """Minimum sample size to develop a binary-outcome prediction model.

    Riley et al., "Calculating the sample size required for developing a
    clinical prediction model", BMJ 2020;368:m441 (criteria 1-3; the formulas
    of Riley et al., Stat Med 2019;38:1276-1296), computed as the pmsampsize
    package does, its rounding included (maximum R^2cs to 2 decimals, the
    shrinkage of criterion 2 to 3), so that its published examples are
    reproduced.

    Parameters
    ----------
    prevalence : float
        Anticipated outcome proportion.
    parameters : int
        Candidate predictor parameters (after one-hot encoding etc.).
    r2_cs : float, optional
        Anticipated Cox-Snell R^2 of the model.
    auc : float, optional
        Anticipated C statistic, used when ``r2_cs`` is not given: converted
        with :func:`r2_cs_from_auc` (Riley, Van Calster & Collins, Stat Med
        2021;40:859-864, the simulation of pmsampsize's ``cstatistic``).
    shrinkage : float
        Target expected uniform shrinkage (criterion 1).
    r2_difference : float
        Largest acceptable optimism in Nagelkerke's R^2 (criterion 2).
    margin : float
        Margin of error of the overall risk (criterion 3).
    seed : int
        Seed of the AUC conversion.

    Returns
    -------
    SampleSize

    Raises
    ------
    ValueError
        For an invalid argument, and when the anticipated model explains no
        variation: an R^2cs at or below 0 or undefined, an AUC at or below 0.5,
        or an R^2cs so small that the shrinkage of criterion 2 rounds to 0 (an
        AUC within about 0.003 of 0.5). The message says which.

    Notes
    -----
    1. ``n = P / ((S - 1) ln(1 - R2cs / S))``.
    2. ``S = R2cs / (R2cs + delta * maxR2cs)`` with ``maxR2cs = 1 -
       exp(2 (phi ln phi + (1 - phi) ln(1 - phi)))``, then formula 1.
    3. ``n = (1.96 / margin)^2 phi (1 - phi)``.
    Each is rounded up; the required n is the largest.
    """
    prevalence = _prevalence_ok(prevalence)
    if isinstance(parameters, bool) or int(parameters) != parameters or parameters < 1:
        raise ValueError(f"parameters must be a positive integer, got {parameters!r}")
    parameters = int(parameters)
    if r2_cs is None:
        if auc is None:
            raise ValueError("give r2_cs or auc (the anticipated Cox-Snell R^2 or C statistic)")
        r2 = r2_cs_from_auc(auc, prevalence, seed=seed)
    else:
        r2 = float(r2_cs)
        auc = None
    if not math.isfinite(r2):
        raise ValueError(f"r2_cs is undefined ({r2}): no explained variation to derive a sample size from")
    if r2 <= 0.0:
        raise ValueError(f"r2_cs = {r2:.4g} (at or below 0) means no explained variation: no sample size can "
                         "be derived from it")
    if r2 >= 1.0:
        raise ValueError(f"r2_cs must lie in (0, 1), got {r2}")
    shrinkage = float(shrinkage)
    if not 0.0 < shrinkage < 1.0:
        raise ValueError(f"shrinkage must lie in (0, 1), got {shrinkage}")
    if shrinkage <= r2:
        raise ValueError(f"shrinkage ({shrinkage}) must exceed r2_cs ({r2:.4g}) for criterion 1")
    n1 = _n_for_shrinkage(parameters, r2, shrinkage)
    ln_null = prevalence * math.log(prevalence) + (1.0 - prevalence) * math.log1p(-prevalence)
    max_r2 = round(1.0 - math.exp(2.0 * ln_null), 2)
    if max_r2 < r2:
        raise ValueError(f"r2_cs ({r2:.4g}) exceeds the largest possible Cox-Snell R^2 ({max_r2}) "
                         f"at prevalence {prevalence}")
    s2 = round(r2 / (r2 + float(r2_difference) * max_r2), 3)
    if s2 <= 0.0:
        # pmsampsize's rounding to 3 decimals leaves no shrinkage: criterion 2 (and formula 1) is undefined
        what = f"an AUC of {auc:.4g}" if auc is not None else f"r2_cs = {r2:.3g}"
        raise ValueError(f"{what} implies almost no explained variation (R^2cs {r2:.2g}): the shrinkage of "
                         f"criterion 2 rounds to 0, so no sample size can be derived from it")
    n2 = _n_for_shrinkage(parameters, r2, s2)
    # 1.96, not Phi^-1(0.975): the paper's and pmsampsize's constant
    n3 = int(math.ceil((1.96 / float(margin)) ** 2 * prevalence * (1.0 - prevalence)))
    n = max(n1, n2, n3)
    return SampleSize(n1, n2, n3, n, n * prevalence, n * prevalence / parameters, r2, max_r2,
                      shrinkage, s2, prevalence, parameters, None if auc is None else float(auc))
