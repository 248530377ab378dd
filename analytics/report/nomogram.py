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

    def _contribution(self, axis: Axis, column: pd.Series) -> np.ndarray:
        if axis.kind == "numeric":
            x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            x = np.where(np.isnan(x), float(axis.impute), x)
            return float(axis.coefficient or 0.0) * x
        coef = dict(zip(axis.values, axis.level_coefficients))
        values = [axis.impute if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in column]
        return np.array([coef.get(v, 0.0) for v in values], dtype=float)  # unknown level: all one-hot zeros

    def points(self, table: pd.DataFrame) -> np.ndarray:
        """Each row's points on each axis, shape (rows, axes)."""
        cols = []
        for axis in self.axes:
            c = self._contribution(axis, table[axis.name])
            c_min = min(axis.low, axis.high)
            cols.append((c - c_min) / self.per_point)
        return np.column_stack(cols) if cols else np.zeros((len(table), 0))

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
    t = MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
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
        classifier is a :class:`~sklearn.linear_model.LogisticRegression`.
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

    labels = labels or {}
    clf = pipeline.named_steps.get("clf") if hasattr(pipeline, "named_steps") else None
    if not isinstance(clf, LogisticRegression):
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
    if len(raw) > MAX_AXES:
        raise NomogramError(f"{name}: {len(raw)} predictors; a nomogram is drawn for at most {MAX_AXES}")
    spans = []
    for col, kind, spec in raw:
        if kind == "numeric":
            x = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
            x = x[np.isfinite(x)]
            lo, hi = (float(x.min()), float(x.max())) if x.size else (spec[1], spec[1])
            if hi > lo:  # the axis runs from the nice tick at or below the smallest value to the one above the largest
                ticks = _ticks(lo, hi, cover=True)
                lo, hi = float(ticks[0]), float(ticks[-1])
            spans.append((spec[0] * lo, spec[0] * hi, lo, hi))
        else:
            spans.append((min(spec[1]), max(spec[1]), None, None))
    widest = max(abs(b - a) for a, b, _, _ in spans)
    if not widest > 0:
        raise NomogramError(f"{name}: every coefficient is zero; the model predicts one risk for everyone")
    per_point = widest / 100.0
    axes = []
    intercept = b0
    for (col, kind, spec), (a, b, lo, hi) in zip(raw, spans):
        c_min = min(a, b)
        intercept += c_min
        if kind == "numeric":
            ticks = _ticks(lo, hi, cover=True) if hi > lo else np.array([lo])
            axes.append(Axis(col, labels.get(col, col), "numeric", tuple(float(t) for t in ticks),
                             tuple(float((spec[0] * t - c_min) / per_point) for t in ticks), a, b, spec[0],
                             impute=spec[1]))
        else:
            levels, coefs, impute = spec
            axes.append(Axis(col, labels.get(col, col), "categorical", levels,
                             tuple(float((c - c_min) / per_point) for c in coefs), a, b, None, coefs, impute))
    max_total = float(sum(abs(ax.high - ax.low) for ax in axes) / per_point)
    nom = Nomogram(name, tuple(axes), intercept, per_point, max_total, tuple(float(t) for t in _ticks(0.0, max_total, 8)),
                   ())
    risk = tuple((p, nom.total_at(p)) for p in RISK_TICKS if 0.0 <= nom.total_at(p) <= max_total)
    return Nomogram(name, nom.axes, intercept, per_point, max_total, nom.total_ticks, risk)


def _tick_text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def nomogram_figure(nom: Nomogram, title: str | None = None) -> bytes:
    """The nomogram as PNG: points scale on top, one row per predictor, total points and predicted risk below."""
    rows = len(nom.axes) + 3
    with matplotlib.rc_context(dict(figures.STYLE)):
        fig = figures.new_figure(7.6, 0.9 + 0.46 * rows)
        w, h = fig.get_size_inches()
        label_width = 0.2 + 0.062 * max(len(r) for r in [a.label for a in nom.axes] + ["Predicted risk"])
        fig.subplots_adjust(left=label_width / w, right=1 - 0.3 / w, bottom=0.15 / h,
                            top=1 - (0.5 if title else 0.2) / h)
        ax = fig.subplots()
        ax.set_xlim(-3, 103)
        ax.set_ylim(rows - 0.4, -0.8)
        ax.axis("off")
        scale = 100.0 / nom.max_total if nom.max_total > 0 else 1.0
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
        row(0, "Points", pts, [f"{p:g}" for p in pts])
        for i, a in enumerate(nom.axes, start=1):
            row(i, a.label, a.points, [_tick_text(v) for v in a.values], figures.model_color(0),
                every=a.kind == "categorical")
        y_total = len(nom.axes) + 1
        row(y_total, "Total points", [t * scale for t in nom.total_ticks], [f"{t:g}" for t in nom.total_ticks])
        if nom.risk:
            row(y_total + 1, "Predicted risk", [t * scale for _, t in nom.risk], [f"{p:g}" for p, _ in nom.risk],
                figures.PALETTE[1])
        if title:
            fig.suptitle(figures.literal(title), fontsize=10, fontweight="bold")
        return figures.to_png(fig)
