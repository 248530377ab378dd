"""Test of proportional hazards of a Cox model: the score test of survival 3's ``cox.zph``.

The Grambsch-Therneau test asks whether a coefficient varies with a function
``g(t)`` of time: it extends the model with the covariates ``x g(t)`` and computes
the score test of their coefficients (all zero) at the fitted beta. Survival 3.0
(2019) replaced the old approximation (the regression of scaled Schoenfeld
residuals on ``g(t)`` with an averaged variance, which lifelines'
``proportional_hazard_test`` implements) by this exact score test, using the full
``2p x 2p`` information matrix of the extended model (the C routine ``zph1``).
Terms with several columns (a factor, a spline) are tested jointly, as with
``terms = TRUE``.

References
----------
Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on
weighted residuals. Biometrika 1994;81:515-526.
Therneau TM, Grambsch PM. Modeling Survival Data: Extending the Cox Model.
Springer 2000, section 6.2.
Therneau TM. survival package 3.0 NEWS: "cox.zph now computes the score test
of the expanded model rather than the approximation".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import chi2, rankdata

from .terms import Term

Transform = Literal["km", "rank", "identity", "log"]


@dataclass(frozen=True)
class ZphTest:
    """One row of the proportional-hazards table: a term (or ``GLOBAL``), its score chi-square, df and p."""

    term: str
    chisq: float
    df: int
    p: float


@dataclass(frozen=True)
class Zph:
    """Result of :func:`cox_zph`, the fields of R's ``cox.zph`` object.

    Attributes
    ----------
    tests
        One :class:`ZphTest` per term, then ``GLOBAL`` (all columns jointly).
    x
        Transformed event times, one per event, in time order (R's ``$x``).
    time
        The event times themselves (R's ``$time``).
    residuals
        Scaled Schoenfeld residuals plus the coefficient, shape (events, terms) (R's ``$y``):
        their smooth against ``x`` estimates beta(t) of a one-column term. A term with several
        columns gets the residual of its linear predictor, plus 1.
    var
        The inverse of the averaged information per event, (terms, terms) (R's ``$var``): the
        variance used for the confidence band of the smooth.
    transform
        The time transform used.
    """

    tests: tuple[ZphTest, ...]
    x: np.ndarray
    time: np.ndarray
    residuals: np.ndarray
    var: np.ndarray
    transform: str

    @property
    def terms(self) -> tuple[str, ...]:
        """The term labels (without ``GLOBAL``), in the column order of ``residuals``."""
        return tuple(t.term for t in self.tests[:-1])

    @property
    def global_test(self) -> ZphTest:
        """The joint test of all columns."""
        return self.tests[-1]

    def as_rows(self) -> list[dict[str, object]]:
        """The table as dicts (term, chisq, df, p), ready for a frame or JSON."""
        return [{"term": t.term, "chisq": t.chisq, "df": t.df, "p": t.p} for t in self.tests]


def transform_times(time: np.ndarray, event: np.ndarray, transform: Transform) -> np.ndarray:
    """``g(t)`` of every row: ``km`` is 1 - the Kaplan-Meier estimate just before ``t`` (left-continuous), ``rank``
    the average rank of ``t`` among all times, ``identity`` and ``log`` as named (as ``cox.zph`` computes them)."""
    if transform == "identity":
        return time.astype(np.float64)
    if transform == "log":
        return np.log(time)
    if transform == "rank":
        return rankdata(time, method="average").astype(np.float64)
    if transform == "km":
        grid = np.unique(time)
        at_risk = time.size - np.searchsorted(np.sort(time), grid, side="left")
        deaths = np.array([event[time == t].sum() for t in grid], dtype=np.float64)
        surv = np.cumprod(1.0 - deaths / at_risk)
        # number of grid times strictly below t (findInterval(left.open = TRUE)); S before the first is 1
        idx = np.searchsorted(grid, time, side="left")
        return 1.0 - np.concatenate([[1.0], surv])[idx]
    raise ValueError(f"unknown transform {transform!r}; use 'km', 'rank', 'identity' or 'log'")


def _score_pieces(gt: np.ndarray, time: np.ndarray, event: np.ndarray, X: np.ndarray, eta: np.ndarray,
                  efron: bool, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score vector (2p), information (2p x 2p) of the model extended by ``x g(t)``, and Schoenfeld residuals
    (events x p, time order), at the fitted ``eta``; ties by Efron's or Breslow's approximation (``zph1``)."""
    n, p = X.shape
    Xc = X - X.mean(axis=0)  # centring leaves every quantity unchanged and keeps the sums stable
    risk = np.exp(eta - eta.max())  # a common factor cancels in every ratio below
    u = np.zeros(2 * p)
    imat = np.zeros((2 * p, 2 * p))
    ev_rows = order[event[order] == 1]
    schoen = np.empty((ev_rows.size, p))
    denom = 0.0
    a = np.zeros(p)
    cmat = np.zeros((p, p))
    ts = time[order]
    # walk backwards in time over blocks of tied times, adding each block to the risk set
    stops = np.flatnonzero(np.r_[ts[1:] != ts[:-1], True])
    starts = np.r_[0, stops[:-1] + 1]
    k_event = ev_rows.size
    for lo, hi in zip(starts[::-1], stops[::-1]):
        rows = order[lo:hi + 1]
        dead = rows[event[rows] == 1]
        alive = rows[event[rows] == 0]
        r_alive = risk[alive]
        denom += r_alive.sum()
        a += r_alive @ Xc[alive]
        cmat += (Xc[alive] * r_alive[:, None]).T @ Xc[alive]
        nd = dead.size
        if nd == 0:
            continue
        g = gt[dead[0]]
        r_dead = risk[dead]
        denom2 = r_dead.sum()
        a2 = r_dead @ Xc[dead]
        cmat2 = (Xc[dead] * r_dead[:, None]).T @ Xc[dead]
        xsum = Xc[dead].sum(axis=0)
        u[:p] += xsum
        u[p:] += g * xsum
        k_event -= nd
        if not efron:
            denom += denom2
            a += a2
            cmat += cmat2
            mean = a / denom
            info = (cmat - np.outer(mean, a)) / denom * nd
            u[:p] -= nd * mean
            u[p:] -= g * nd * mean
            schoen[k_event:k_event + nd] = Xc[dead] - mean
        else:
            # Efron: the d tied deaths leave the risk set in d equal steps
            means = np.zeros(p)
            info = np.zeros((p, p))
            for k in range(nd):
                f = (k + 1) / nd
                dk, ak, ck = denom + denom2 * f, a + a2 * f, cmat + cmat2 * f
                mk = ak / dk
                means += mk
                info += (ck - np.outer(mk, ak)) / dk
                u[:p] -= mk
                u[p:] -= g * mk
            schoen[k_event:k_event + nd] = Xc[dead] - means / nd
            denom += denom2
            a += a2
            cmat += cmat2
        imat[:p, :p] += info
        imat[:p, p:] += g * info
        imat[p:, p:] += g * g * info
    imat[p:, :p] = imat[:p, p:].T
    return u, imat, schoen


def _columns_of(terms: Sequence[Term] | None, p: int) -> list[tuple[str, tuple[int, ...]]]:
    if terms is None:
        return [(f"x{j}", (j,)) for j in range(p)]
    out = [(t.label, tuple(int(c) for c in t.columns)) for t in terms]
    cols = sorted(c for _, cs in out for c in cs)
    if cols != list(range(p)):
        raise ValueError(f"the terms' columns {cols} must cover the {p} model-matrix columns exactly once")
    return out


def cox_zph(X: ArrayLike, time: ArrayLike, event: ArrayLike, beta: ArrayLike, terms: Sequence[Term] | None = None,
            transform: Transform = "km", ties: Literal["efron", "breslow"] = "efron") -> Zph:
    """Grambsch-Therneau proportional-hazards test per term and globally, as ``survival::cox.zph`` (survival >= 3).

    Parameters
    ----------
    X
        Model matrix (n, p) of the Cox model, without intercept.
    time, event
        Follow-up time and event indicator (1 = event, 0 = censored).
    beta
        The fitted coefficients (maximum partial likelihood, ``ties`` as given).
    terms
        Column grouping (:class:`analytics.stats.terms.Term`): a term with several columns (a factor,
        a spline) is tested jointly, as ``terms = TRUE``. ``None``: one test per column, named
        ``x0, x1, ...`` (``terms = FALSE``).
    transform
        ``g(t)``: ``"km"`` (R's default), ``"rank"``, ``"identity"`` or ``"log"``.
    ties
        The tie handling of the fit: ``"efron"`` (R's default) or ``"breslow"``.

    Returns
    -------
    Zph
        The table (per term and ``GLOBAL``) and the scaled Schoenfeld residuals for plots.

    Notes
    -----
    With ``g`` centred at its mean over the events, the score of the extended model
    ``beta'(t) = beta + theta g(t)`` at ``theta = 0`` is ``U = sum_events g(t_i) (x_i - xbar(t_i))`` and its
    information has blocks ``I``, ``sum g V``, ``sum g^2 V`` (``V`` the risk-set covariance). A term's
    statistic is ``U' I^-1 U`` over the rows and columns of all p base coefficients plus the term's
    extended ones (the base score set to 0, as at the fitted beta). Strata and case weights are not
    supported. The scaled residuals are ``r_i V-bar^-1 + beta`` with ``V-bar = I / events`` (Grambsch &
    Therneau 1994, eq. 4).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError("X must be a 2-d model matrix")
    n, p = X.shape
    time = np.asarray(time, dtype=np.float64).ravel()
    event = np.asarray(event).astype(np.float64).ravel()
    beta = np.asarray(beta, dtype=np.float64).ravel()
    if time.size != n or event.size != n or beta.size != p:
        raise ValueError(f"X has {n} rows and {p} columns: time, event ({time.size}, {event.size}) and beta "
                         f"({beta.size}) must match")
    if not np.isin(event, (0.0, 1.0)).all():
        raise ValueError("event must be 0 (censored) or 1 (event)")
    n_events = int(event.sum())
    if n_events < 2:
        raise ValueError(f"the proportional-hazards test needs at least 2 events, got {n_events}")
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    groups = _columns_of(terms, p)
    eta = X @ beta
    ttimes = transform_times(time, event, transform)
    gt = ttimes - ttimes[event == 1].mean()
    order = np.argsort(time, kind="stable")  # R's order(): ties keep the row order
    u, imat, schoen = _score_pieces(gt, time, event, X, eta, ties == "efron", order)

    tests = []
    base = list(range(p))
    for label, cols in groups:
        kk = base + [p + c for c in cols]
        uu = np.r_[np.zeros(p), u[[p + c for c in cols]]]
        stat = float(uu @ np.linalg.solve(imat[np.ix_(kk, kk)], uu))
        tests.append(ZphTest(label, stat, len(cols), float(chi2.sf(stat, len(cols)))))
    uu = np.r_[np.zeros(p), u[p:]]
    stat = float(uu @ np.linalg.solve(imat, uu))
    tests.append(ZphTest("GLOBAL", stat, p, float(chi2.sf(stat, p))))

    # scaled Schoenfeld residuals: a column constant over the data has no residual (R's ``used`` = 0)
    used = np.array([np.ptp(X[:, j]) > 0 for j in range(p)])
    vmean = imat[:p, :p] / n_events
    if terms is not None and any(len(c) > 1 for _, c in groups):
        # a multi-column term becomes one column: its linear predictor (R's terms = TRUE)
        T = np.zeros((p, len(groups)))
        for i, (_, cols) in enumerate(groups):
            T[list(cols), i] = 1.0 if len(cols) == 1 else beta[list(cols)]
        sres = schoen @ T
        vmean = T.T @ vmean @ T
        used = np.array([used[list(cols)].any() for _, cols in groups])
    else:
        sres = schoen.copy()
    k = np.flatnonzero(used)
    scaled = np.full_like(sres, np.nan)
    scaled[:, k] = np.linalg.solve(vmean[np.ix_(k, k)], sres[:, k].T).T
    for i, (_, cols) in enumerate(groups):
        scaled[:, i] += beta[cols[0]] if len(cols) == 1 else 1.0
    rows = order[event[order] == 1]
    return Zph(tuple(tests), ttimes[rows], time[rows], scaled, np.linalg.inv(vmean), transform)


@dataclass(frozen=True)
class ZphSmooth:
    """A term's smoothed beta(t): ``fit`` at the ``x`` grid (transformed time) and the half-width ``band`` of its
    +-2 SE band (``fit - band`` to ``fit + band``)."""

    term: str
    x: np.ndarray
    fit: np.ndarray
    band: np.ndarray


def _natural_spline_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """A basis (with intercept) of the natural cubic splines with these knots, the first and last the boundary:
    Harrell's restricted cubic spline (truncated power form; Stone & Koo 1985), the space ``splines::ns`` spans."""
    k = knots.size
    cols = [np.ones_like(x), x]
    scale = (knots[-1] - knots[0]) ** 2  # keeps the columns of the order of x

    def cube(u: np.ndarray) -> np.ndarray:
        return np.maximum(u, 0.0) ** 3

    for j in range(k - 2):
        cols.append((cube(x - knots[j]) - cube(x - knots[-2]) * (knots[-1] - knots[j]) / (knots[-1] - knots[-2])
                     + cube(x - knots[-1]) * (knots[-2] - knots[j]) / (knots[-1] - knots[-2])) / scale)
    return np.column_stack(cols)


def smooth(zph: Zph, term: int | str, df: int = 4, points: int = 40) -> ZphSmooth:
    """The smooth of a term's scaled Schoenfeld residuals against transformed time, as ``plot.cox.zph`` draws it.

    A least-squares natural cubic spline with ``df`` degrees of freedom (``splines::ns(df, intercept = TRUE)``:
    interior knots at quantiles of the grid and the event times together) evaluated at ``points`` equally spaced
    values of ``x``; the band is ``2 sqrt(var[i, i] * p' (B'B)^-1 p)`` (Therneau & Grambsch 2000, section 6.2).
    Residuals that are NaN (a constant column) are left out.
    """
    i = zph.terms.index(term) if isinstance(term, str) else int(term)
    if df < 2:
        raise ValueError(f"df must be at least 2, got {df}")
    grid = np.linspace(zph.x.min(), zph.x.max(), points)
    both = np.r_[grid, zph.x]
    inner = np.quantile(both, np.linspace(0.0, 1.0, df)[1:-1])  # R's quantile type 7, numpy's default
    knots = np.r_[both.min(), inner, both.max()]
    y = zph.residuals[:, i]
    keep = np.isfinite(y)
    B = _natural_spline_basis(zph.x[keep], knots)
    P = _natural_spline_basis(grid, knots)
    if np.linalg.matrix_rank(B) < df:
        raise ValueError(f"the spline fit of {zph.terms[i]!r} is singular (too few distinct event times)")
    coef, *_ = np.linalg.lstsq(B, y[keep], rcond=None)
    xtx_inv = np.linalg.inv(B.T @ B)
    seval = np.einsum("ij,jk,ik->i", P, xtx_inv, P)
    return ZphSmooth(zph.terms[i], grid, P @ coef, 2.0 * np.sqrt(zph.var[i, i] * seval))
