"""Nomograms of fitted logistic models: a points scale per predictor, total points and predicted risk.

A logistic pipeline (:mod:`analytics.models.classical`) standardises numbers,
one-hot encodes categories and fits ``logit p = b0 + sum_k w_k z_k`` on the
transformed columns. Undoing the standardisation, each numeric predictor adds
``beta_j x_j`` with ``beta_j = w_j / sd_j`` in the variable's own units (the
centring moves into the intercept), and each level of a categorical predictor
adds the coefficient of its one-hot column. Over the predictor's axis (the
range of the training values, or its levels) its contribution spans
``[c_min_j, c_max_j]``; the predictor with the widest span gets 0-100 points
and the others proportionally fewer (the layout of ``rms::nomogram``)::

    points_j(x)  = 100 * (beta_j x - c_min_j) / R,       R = max_j (c_max_j - c_min_j)
    logit p      = b0' + sum_j c_min_j + total_points * R / 100

so reading a patient's points off each axis, adding them up and reading the
total on the risk axis gives the model's predicted probability. Image features
reduced by PCA have no per-variable axis: such models get no nomogram.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from analytics import figures
from pipeline.errors import CohortlabError

RISK_TICKS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
              0.85, 0.9, 0.95, 0.98, 0.99)
CHAR_INCHES = 7 / 72 * 0.62  # width of one tick-label character (7 pt DejaVu Sans, about 0.62 em)
MAX_AXES = 25  # more predictors than this make an unreadable nomogram


class NomogramError(CohortlabError, ValueError):
    """A model that has no nomogram (not logistic, PCA-reduced inputs, too many predictors); the message says why."""


@dataclass(frozen=True)
class Axis:
    """One predictor's scale: tick values (numbers in the variable's units, or levels) and their points.

    ``coefficient`` is the back-transformed log-odds per unit (numeric) and
    ``level_coefficients`` the log-odds of each level (categorical);
    ``impute`` the value a missing entry takes (the training median or most
    frequent level, as the pipeline imputes it).
    """

    name: str
    label: str
    kind: Literal["numeric", "categorical"]
    values: tuple[Any, ...]
    points: tuple[float, ...]
    low: float
    high: float
    coefficient: float | None = None
    level_coefficients: tuple[float, ...] = ()
    impute: Any = None


def _contribution(axis: Axis, column: pd.Series) -> np.ndarray:
    """What ``column``'s values add to the linear predictor (a missing value takes the axis's imputed one)."""
    if axis.kind == "numeric":
        x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        x = np.where(np.isnan(x), float(axis.impute), x)
        return float(axis.coefficient or 0.0) * x
    coef = dict(zip(axis.values, axis.level_coefficients))
    values = [axis.impute if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in column]
    return np.array([coef.get(v, 0.0) for v in values], dtype=float)  # unknown level: all one-hot zeros


def _points(axes: Sequence[Axis], per_point: float, table: pd.DataFrame) -> np.ndarray:
    """Each row's points on each axis, shape (rows, axes)."""
    cols = [(_contribution(axis, table[axis.name]) - min(axis.low, axis.high)) / per_point for axis in axes]
    return np.column_stack(cols) if cols else np.zeros((len(table), 0))


@dataclass(frozen=True)
class Nomogram:
    """What a nomogram figure draws: one :class:`Axis` per predictor, the total-points axis and the risk axis.

    ``intercept`` is the linear predictor at zero total points and
    ``per_point`` the log-odds one point is worth; ``risk`` holds
    (probability, total points) pairs of the risk axis.
    """

    model: str
    axes: tuple[Axis, ...]
    intercept: float
    per_point: float
    max_total: float
    total_ticks: tuple[float, ...]
    risk: tuple[tuple[float, float], ...]

    def points(self, table: pd.DataFrame) -> np.ndarray:
        """Each row's points on each axis, shape (rows, axes)."""
        return _points(self.axes, self.per_point, table)

    def total_points(self, table: pd.DataFrame) -> np.ndarray:
        """Each row's total points."""
        return self.points(table).sum(axis=1)

    def probability(self, total: np.ndarray | float) -> np.ndarray:
        """The predicted risk at ``total`` points."""
        lp = self.intercept + np.asarray(total, dtype=float) * self.per_point
        return 1.0 / (1.0 + np.exp(-lp))

    def total_at(self, probability: float) -> float:
        """The total points at which the predicted risk is ``probability``."""
        return (float(np.log(probability / (1 - probability))) - self.intercept) / self.per_point


def _ticks(lo: float, hi: float, n: int = 8, cover: bool = False) -> np.ndarray:
    """"Nice" ticks from ``lo`` to ``hi``; with ``cover``, the first and last at or beyond them (an axis that
    covers every observed value), else within them."""
    t = np.asarray(MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi), dtype=float)
    span = hi - lo
    if cover:
        first = t[t <= lo + 1e-9 * span].max()
        last = t[t >= hi - 1e-9 * span].min()
        return np.round(t[(t >= first) & (t <= last)], 12)
    t = t[(t >= lo - 1e-9 * span) & (t <= hi + 1e-9 * span)]
    return np.unique(np.concatenate([[lo], t, [hi]])) if t.size < 2 else t


def nomogram(name: str, pipeline: Any, table: pd.DataFrame, labels: Mapping[str, str] | None = None) -> Nomogram:
    """The nomogram of a fitted logistic pipeline; axes cover ``table``'s values (the training rows).

    Parameters
    ----------
    name
        The model's name.
    pipeline
        A fitted ``prep -> clf`` :class:`sklearn.pipeline.Pipeline` whose
        classifier is a :class:`~sklearn.linear_model.LogisticRegression` or, fitted by maximum
        likelihood, an :class:`analytics.models.glm.MLLogistic`.
    table
        The input table the axes' ranges come from (original units).
    labels
        Axis labels by column (default: the column name).

    Raises
    ------
    NomogramError
        Not a logistic pipeline, PCA-reduced inputs, too many predictors, or all coefficients zero.
    """
    from sklearn.linear_model import LogisticRegression

    from analytics.models.glm import MLLogistic

    labels = labels or {}
    clf = pipeline.named_steps.get("clf") if hasattr(pipeline, "named_steps") else None
    if not isinstance(clf, (LogisticRegression, MLLogistic)):
        raise NomogramError(f"{name}: a nomogram needs a logistic regression model")
    if "harmonize" in pipeline.named_steps:
        raise NomogramError(f"{name}: its image features are ComBat-harmonised per centre before the model, "
                            "so points read from the raw values would be wrong")
    prep = pipeline.named_steps["prep"]
    w = np.asarray(clf.coef_, dtype=float).ravel()
    b0 = float(np.asarray(clf.intercept_, dtype=float).ravel()[0])
    raw: list[tuple[str, str, Any]] = []  # (column, kind, (coefficient, impute) | (levels, coefficients, impute))
    k = 0
    for part, trans, columns in prep.transformers_:
        if part == "remainder" or trans == "drop":
            continue
        steps = trans.named_steps
        if "pca" in steps:
            raise NomogramError(f"{name}: image features reduced by PCA have no per-variable scale")
        if "design" in steps:  # a formula's treatment-coded design (penalty = "none", or a formula)
            b0 += _design_axes(name, steps, w, k, raw)
            k += len(steps["design"].names_)
            continue
        if "onehot" in steps:
            imputed = steps["impute"].statistics_
            for j, col in enumerate(columns):
                levels = [str(v) for v in steps["onehot"].categories_[j]]
                raw.append((col, "categorical", (tuple(levels), tuple(w[k:k + len(levels)]), str(imputed[j]))))
                k += len(levels)
        else:
            scale = steps["scale"]
            mean = scale.mean_ if scale.mean_ is not None else np.zeros(len(columns))
            sd = scale.scale_ if scale.scale_ is not None else np.ones(len(columns))
            for j, col in enumerate(columns):
                beta = w[k] / sd[j]
                b0 -= beta * mean[j]
                raw.append((col, "numeric", (float(beta), float(steps["impute"].statistics_[j]))))
                k += 1
    if k != w.size:
        raise NomogramError(f"{name}: {w.size} coefficients for {k} transformed columns; cannot map them to predictors")
    axes, per_point, shift = _layout(name, raw, table, labels)
    intercept = b0 + shift
    max_total = float(sum(abs(ax.high - ax.low) for ax in axes) / per_point)
    nom = Nomogram(name, tuple(axes), intercept, per_point, max_total, tuple(float(t) for t in _ticks(0.0, max_total, 8)),
                   ())
    risk = tuple((p, nom.total_at(p)) for p in RISK_TICKS if 0.0 <= nom.total_at(p) <= max_total)
    return Nomogram(name, nom.axes, intercept, per_point, max_total, nom.total_ticks, risk)


def _layout(name: str, raw: Sequence[tuple[str, str, Any]], table: pd.DataFrame | None, labels: Mapping[str, str],
            ranges: Mapping[str, tuple[float, float]] | None = None) -> tuple[list[Axis], float, float]:
    """The axes of predictors ``(column, kind, spec)``: numeric ``spec = (coefficient, impute)``, categorical
    ``spec = (levels, coefficients, impute)``; a numeric axis spans ``ranges[column]`` when given (its ends exactly),
    else the nice ticks covering ``table``'s values. Returns the axes, the linear predictor per point and the sum of
    the axes' smallest contributions (the linear predictor at zero points, less any intercept)."""
    ranges = ranges or {}
    if len(raw) > MAX_AXES:
        raise NomogramError(f"{name}: {len(raw)} predictors; a nomogram is drawn for at most {MAX_AXES}")
    spans: list[tuple[float, float, Any, Any]] = []
    for col, kind, spec in raw:
        if kind == "numeric":
            if col in ranges:
                lo, hi = (float(v) for v in ranges[col])
            else:
                if table is None:
                    raise NomogramError(f"{name}: no values or range for {col!r}")
                x = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
                x = x[np.isfinite(x)]
                lo, hi = (float(x.min()), float(x.max())) if x.size else (spec[1], spec[1])
                if hi > lo:  # the axis runs from the nice tick at or below the smallest value to the one above the largest
                    ticks = _ticks(lo, hi, cover=True)
                    lo, hi = float(ticks[0]), float(ticks[-1])
            spans.append((spec[0] * lo, spec[0] * hi, lo, hi))
        else:
            spans.append((min(spec[1]), max(spec[1]), None, None))
    widest = max(abs(b - a) for a, b, _, _ in spans) if spans else 0.0
    if not widest > 0:
        raise NomogramError(f"{name}: every coefficient is zero; the model predicts one risk for everyone")
    per_point = widest / 100.0
    axes = []
    shift = 0.0
    for (col, kind, spec), (a, b, lo, hi) in zip(raw, spans):
        c_min = min(a, b)
        shift += c_min
        if kind == "numeric":
            if col in ranges:  # the given ends are ticks
                ticks = np.unique(np.r_[lo, _ticks(lo, hi), hi]) if hi > lo else np.array([lo])
            else:
                ticks = _ticks(lo, hi, cover=True) if hi > lo else np.array([lo])
            axes.append(Axis(col, labels.get(col, col), "numeric", tuple(float(t) for t in ticks),
                             tuple(float((spec[0] * t - c_min) / per_point) for t in ticks), a, b, spec[0],
                             impute=spec[1]))
        else:
            levels, coefs, impute = spec
            axes.append(Axis(col, labels.get(col, col), "categorical", levels,
                             tuple(float((c - c_min) / per_point) for c in coefs), a, b, None, coefs, impute))
    return axes, per_point, shift


SURVIVAL_TICKS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class CoxNomogram:
    """A Cox model's nomogram: one :class:`Axis` per predictor, total points, linear predictor and survival scales.

    ``lp_zero`` is the linear predictor at zero total points and ``per_point`` what one point adds to it;
    ``cumulative_hazard`` is the baseline cumulative hazard ``H0(t)`` at each horizon, on the scale of that linear
    predictor, so that ``S(t | points) = exp(-H0(t) exp(lp_zero + points * per_point))``. ``lp`` and ``survival``
    hold (value, total points) ticks of the linear-predictor and survival scales (one tuple per horizon).
    """

    model: str
    axes: tuple[Axis, ...]
    lp_zero: float
    per_point: float
    max_total: float
    total_ticks: tuple[float, ...]
    horizons: tuple[float, ...]
    cumulative_hazard: tuple[float, ...]
    lp: tuple[tuple[float, float], ...]
    survival: tuple[tuple[tuple[float, float], ...], ...]

    def points(self, table: pd.DataFrame) -> np.ndarray:
        """Each row's points on each axis, shape (rows, axes)."""
        return _points(self.axes, self.per_point, table)

    def total_points(self, table: pd.DataFrame) -> np.ndarray:
        """Each row's total points."""
        return self.points(table).sum(axis=1)

    def linear_predictor(self, total: np.ndarray | float) -> np.ndarray:
        """The linear predictor at ``total`` points."""
        return self.lp_zero + np.asarray(total, dtype=float) * self.per_point

    def survival_at(self, total: np.ndarray | float, horizon: float) -> np.ndarray:
        """Predicted survival at ``horizon`` (one of :attr:`horizons`) for ``total`` points."""
        h0 = self.cumulative_hazard[self.horizons.index(horizon)]
        return np.exp(-h0 * np.exp(self.linear_predictor(total)))

    def total_at(self, survival: float, horizon: float) -> float:
        """The total points at which the predicted survival at ``horizon`` is ``survival``."""
        h0 = self.cumulative_hazard[self.horizons.index(horizon)]
        return (float(np.log(-np.log(survival) / h0)) - self.lp_zero) / self.per_point


def cox_nomogram_from_coefficients(name: str, predictors: Sequence[tuple[str, str, Any]], offset: float,
                                   horizons: Sequence[float], cumulative_hazard: Sequence[float],
                                   table: pd.DataFrame | None = None,
                                   ranges: Mapping[str, tuple[float, float]] | None = None,
                                   labels: Mapping[str, str] | None = None,
                                   survival_ticks: Sequence[float] = SURVIVAL_TICKS) -> CoxNomogram:
    """The nomogram of a Cox model ``lp = offset + sum_j contribution_j`` with baseline ``H0`` at ``horizons``.

    The layout of ``rms::nomogram`` on a ``cph`` fit (Harrell, Regression Modeling Strategies, 2nd ed., Springer
    2015; Iasonos et al., J Clin Oncol 2008;26:1364-1370): each predictor's contribution over its axis is
    scaled to points, 100 for the predictor with the widest span; total points map linearly to the linear
    predictor, and through ``S(t | lp) = exp(-H0(t) exp(lp))`` (``S0(t)^exp(lp)``) to survival at each horizon.

    Parameters
    ----------
    predictors
        ``(column, "numeric", (coefficient, impute))`` or ``(column, "categorical", (levels, coefficients,
        impute))``: coefficients per unit / per level (0 for the reference level) on the linear-predictor scale.
    offset
        What the linear predictor adds to the predictors' contributions (centring, intercept).
    horizons, cumulative_hazard
        Horizons and the baseline cumulative hazard at each (for ``lp`` as defined here).
    table, ranges
        Numeric axes cover ``table``'s values, or span ``ranges[column]`` exactly where given.
    labels
        Axis labels by column.
    survival_ticks
        Survival probabilities marked on each horizon's scale (those inside the total-points range).
    """
    if len(horizons) != len(cumulative_hazard):
        raise NomogramError(f"{name}: {len(horizons)} horizons but {len(cumulative_hazard)} baseline hazards")
    if any(not (h > 0 and np.isfinite(h)) for h in cumulative_hazard):
        raise NomogramError(f"{name}: the baseline cumulative hazard must be positive at every horizon "
                            f"({', '.join(f'{t:g}' for t in horizons)}); a horizon before the first event has none")
    axes, per_point, shift = _layout(name, predictors, table, labels or {}, ranges)
    max_total = float(sum(abs(ax.high - ax.low) for ax in axes) / per_point)
    lp_zero = float(offset) + shift
    nom = CoxNomogram(name, tuple(axes), lp_zero, per_point, max_total,
                      tuple(float(t) for t in _ticks(0.0, max_total, 8)), tuple(float(t) for t in horizons),
                      tuple(float(h) for h in cumulative_hazard), (), ())
    lp_ticks = _ticks(lp_zero, lp_zero + max_total * per_point, 8)
    lp = tuple((float(v), (float(v) - lp_zero) / per_point) for v in lp_ticks)
    survival = tuple(tuple((float(p), nom.total_at(p, t)) for p in survival_ticks
                           if 0.0 <= nom.total_at(p, t) <= max_total) for t in nom.horizons)
    return CoxNomogram(name, nom.axes, lp_zero, per_point, max_total, nom.total_ticks, nom.horizons,
                       nom.cumulative_hazard, lp, survival)


def _unscale(scaler: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted StandardScaler's means and scales (zeros and ones when there is none)."""
    if scaler is None:
        return np.zeros(n), np.ones(n)
    mu = scaler.mean_ if scaler.mean_ is not None else np.zeros(n)
    sd = scaler.scale_ if scaler.scale_ is not None else np.ones(n)
    return np.asarray(mu, dtype=float), np.asarray(sd, dtype=float)


def _design_axes(name: str, steps: Any, w: np.ndarray, start: int, raw: list[tuple[str, str, Any]]) -> float:
    """Append the predictors of a formula design (impute -> RegressionDesign [-> scale]) to ``raw``; returns what
    the design's standardisation adds to the linear predictor."""
    design = steps["design"]
    n = len(design.names_)
    mu, sd = _unscale(steps.get("scale"), n)
    beta = w[start:start + n] / sd
    offset = -float(beta @ mu)
    impute: dict[str, Any] = {}
    for _, imp, cols in steps["impute"].transformers_:
        if hasattr(imp, "statistics_"):
            impute.update(zip(cols, imp.statistics_))
    for term in design.terms_():
        var = term.variables[0]
        linear = 1 if var not in design.levels_ else len(design.levels_[var]) - 1  # a main effect's columns
        if len(term.variables) != 1 or term.nonlinear or len(term.columns) != linear:
            raise NomogramError(f"{name}: term {term.label} (a spline or an interaction) has no single linear axis; "
                                "the nomogram draws main effects only")
        if var in design.levels_:
            levels = [str(v) for v in design.levels_[var]]
            by_name = {design.names_[c]: float(beta[c]) for c in term.columns}
            coefs = tuple(by_name.get(f"{var}{lv}", 0.0) for lv in levels)  # the reference level adds 0
            raw.append((var, "categorical", (tuple(levels), coefs, str(impute.get(var, levels[0])))))
        else:
            raw.append((var, "numeric", (float(beta[term.columns[0]]), float(impute.get(var, 0.0)))))
    return offset


def cox_nomogram(name: str, learner: Any, table: pd.DataFrame, horizons: Sequence[float],
                 labels: Mapping[str, str] | None = None) -> CoxNomogram:
    """The nomogram of a fitted ``cox`` (or ``coxnet``) :class:`analytics.models.survival.SurvivalLearner`.

    The learner's inputs go through a formula's design (treatment-coded factors, numbers on their own
    scale, standardised when penalised; :func:`analytics.models.classical.regression_preprocessor`) or,
    for models saved before it, the classical imputation, standardisation and one-hot coding less each
    reference level; it predicts ``lp = (x - mean) . beta`` with a Breslow baseline ``H0`` on that ``lp``
    (:func:`analytics.models.survival.breslow`). Undoing any standardisation gives per-unit and per-level
    coefficients; the centring goes into the offset, so the survival read off the nomogram equals the
    learner's ``1 - risk_at``. ``table`` (the training rows) sets the numeric axes' ranges.

    Raises
    ------
    NomogramError
        Not a fitted Cox regression; PCA-reduced inputs; a spline or interaction term (no single linear
        axis); too many predictors; a horizon before the first event.
    """
    model = getattr(learner, "model_", None)
    prep: Any = getattr(learner, "prep_", None)
    if model is None or not hasattr(model, "coef_") or not hasattr(prep, "transformers_"):
        raise NomogramError(f"{name}: a Cox nomogram needs a fitted Cox regression (kind cox or coxnet)")
    coef = np.asarray(model.coef_, dtype=float).ravel()
    keep = getattr(learner, "keep_", None)
    keep = np.ones(coef.size, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    w = np.zeros(keep.size)
    mean = np.zeros(keep.size)
    w[keep] = coef
    mean[keep] = np.asarray(model.mean_, dtype=float).ravel()
    offset = -float(w @ mean)
    raw: list[tuple[str, str, Any]] = []
    for part, trans, columns in prep.transformers_:
        if part == "remainder" or trans == "drop":
            continue
        steps = trans.named_steps
        if "pca" in steps:
            raise NomogramError(f"{name}: image features reduced by PCA have no per-variable scale")
        start = prep.output_indices_[part].start
        if "design" in steps:
            offset += _design_axes(name, steps, w, start, raw)
        elif "onehot" in steps:
            k = start
            imputed = steps["impute"].statistics_
            for j, col in enumerate(columns):
                levels = [str(v) for v in steps["onehot"].categories_[j]]
                raw.append((col, "categorical", (tuple(levels), tuple(float(c) for c in w[k:k + len(levels)]),
                                                 str(imputed[j]))))
                k += len(levels)
        else:
            mu, sd = _unscale(steps.get("scale"), len(columns))
            for j, col in enumerate(columns):
                beta = w[start + j] / sd[j]
                offset -= beta * mu[j]
                raw.append((col, "numeric", (float(beta), float(steps["impute"].statistics_[j]))))
    times = np.asarray(model.base_times_, dtype=float)
    hazard = np.asarray(model.base_hazard_, dtype=float)
    h0 = [float(hazard[times <= t][-1]) if (times <= t).any() else 0.0 for t in horizons]
    return cox_nomogram_from_coefficients(name, raw, offset, horizons, h0, table=table, labels=labels)


def cox_nomogram_figure(nom: CoxNomogram, title: str | None = None, unit: str = "") -> bytes:
    """The Cox nomogram as PNG: points, one row per predictor, total points, linear predictor and one survival
    scale per horizon (``unit`` names the time unit in the labels)."""
    outcomes = [("Linear predictor", [(f"{v:.2g}", t) for v, t in nom.lp])]
    for h, ticks in zip(nom.horizons, nom.survival):
        outcomes.append((f"Survival at {h:g}{' ' + unit if unit else ''}", [(f"{p:g}", t) for p, t in ticks]))
    return _draw(nom.axes, nom.max_total, nom.total_ticks, outcomes, title)


def _tick_text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def nomogram_figure(nom: Nomogram, title: str | None = None) -> bytes:
    """The nomogram as PNG: points scale on top, one row per predictor, total points and predicted risk below."""
    return _draw(nom.axes, nom.max_total, nom.total_ticks,
                 [("Predicted risk", [(f"{p:g}", t) for p, t in nom.risk])], title)


def _draw(axes: Sequence[Axis], max_total: float, total_ticks: Sequence[float],
          outcomes: Sequence[tuple[str, Sequence[tuple[str, float]]]], title: str | None) -> bytes:
    """Points scale, one row per predictor, total points, then one row per outcome scale ((text, total) ticks)."""
    rows = len(axes) + 2 + len(outcomes)
    style: Any = dict(figures.STYLE)  # matplotlib types rc keys as a Literal of every rc name
    with matplotlib.rc_context(style):
        fig = figures.new_figure(7.6, 0.9 + 0.46 * rows)
        w, h = fig.get_size_inches()
        label_width = 0.2 + 0.062 * max(len(r) for r in [a.label for a in axes] + [o for o, _ in outcomes])
        fig.subplots_adjust(left=label_width / w, right=1 - 0.3 / w, bottom=0.15 / h,
                            top=1 - (0.5 if title else 0.2) / h)
        ax = fig.subplots()
        ax.set_xlim(-3, 103)
        ax.set_ylim(rows - 0.4, -0.8)
        ax.axis("off")
        scale = 100.0 / max_total if max_total > 0 else 1.0
        # x units per inch of the drawing area: how far apart two tick labels must be not to overlap
        per_inch = 106.0 / (w * (fig.subplotpars.right - fig.subplotpars.left))

        def row(y: int, label: str, xs: Sequence[float], texts: Sequence[str], color: str = "#222222",
                every: bool = False) -> None:
            xs = list(xs)
            ax.plot([min(xs), max(xs)], [y, y], color=color, lw=1.0, solid_capstyle="butt")
            shown: list[tuple[float, str]] = []
            below: list[tuple[float, str]] = []
            for x, t in sorted(zip(xs, texts)):
                ax.plot([x, x], [y, y - 0.14], color=color, lw=0.8)
                # a number too close to the last label shown is left out (its tick stays); a level goes below the line
                if not shown or abs(x - shown[-1][0]) >= (max(len(t), len(shown[-1][1])) + 1) * CHAR_INCHES * per_inch:
                    shown.append((x, t))
                elif every:
                    below.append((x, t))
            # labels and categorical levels are the user's text: drawn literally, never as mathtext
            for x, t in shown:
                ax.text(x, y - 0.2, figures.literal(t), ha="center", va="bottom", fontsize=7)
            for x, t in below:
                ax.text(x, y + 0.08, figures.literal(t), ha="center", va="top", fontsize=7)
            ax.text(-5, y, figures.literal(label), ha="right", va="center", fontsize=8)

        pts = np.arange(0, 101, 10.0)
        row(0, "Points", pts.tolist(), [f"{p:g}" for p in pts])
        for i, a in enumerate(axes, start=1):
            row(i, a.label, a.points, [_tick_text(v) for v in a.values], figures.model_color(0),
                every=a.kind == "categorical")
        y_total = len(axes) + 1
        row(y_total, "Total points", [t * scale for t in total_ticks], [f"{t:g}" for t in total_ticks])
        for k, (label, ticks) in enumerate(outcomes, start=1):
            if ticks:
                row(y_total + k, label, [t * scale for _, t in ticks], [text for text, _ in ticks], figures.model_color(k))
        if title:
            fig.suptitle(figures.literal(title), fontsize=10, fontweight="bold")
        return figures.to_png(fig)
