"""The model matrix of a regression formula, as R's ``model.matrix`` builds it, fitted on training rows.

:class:`RegressionDesign` turns an input table into the columns of a formula
(:mod:`pipeline.formula` parses it): numbers as they are, categories in treatment coding,
Harrell's restricted cubic splines (``rcs``), and interactions as products. What it learns
from the rows it is fitted on (a training fold) is plain data, reused for held-out rows:

* the levels of each categorical variable (the declared order, ``[variables] x.levels``, then
  any others sorted) and its reference level: ``C(x, ref = ...)``, else the variable's
  ``reference`` key, else the first level;
* the knots of each spline, at rms's default quantiles (Hmisc ``rcspline.eval``), unless :func:`shared_knots`
  fixes them: under multiple imputation they come once from the development data's observed values and
  every completed data set's fit uses them, so the pooled coefficients keep one meaning.

Column order and names are R's (Chambers & Hastie, *Statistical Models in S*, 1992, ch. 2):
terms by degree, then as written; a term's columns with its first factor varying fastest
(``histolUH:stageII``, ``histolUH:stageIII`` ...); a factor in an interaction is coded by
contrasts when the term without it is in the formula, by one column per level otherwise;
spline columns named ``rcs(age, 4)age``, ``rcs(age, 4)age'``, ``rcs(age, 4)age''``. There is no
intercept column: the model fits its own intercept (a Cox model's baseline hazard absorbs it).

A held-out level never seen on the training rows gets all-zero columns, i.e. the
reference level's linear predictor, as the one-hot encoding ignores unknown levels: an error
would stop every cross-validation fold whose training part lacks a rare level. It is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from analytics.stats.terms import Term
from pipeline.errors import CohortlabError
from pipeline.formula import Factor, FormulaError, ParsedFormula, ParsedTerm, parse_formula

log = logging.getLogger("cohortlab.models.formula")

FRACTIED = 0.05  # Hmisc's options(fractied): a value this frequent at an end moves the outer knot inward


class DesignError(CohortlabError, ValueError):
    """A formula that cannot be built on the given rows; the message names the variable."""


# knots fixed for the designs fitted in this context (variable -> knots); None: each design places its own
_SHARED_KNOTS: ContextVar[Mapping[str, tuple[float, ...]] | None] = ContextVar("shared_knots", default=None)


@contextmanager
def shared_knots(knots: Mapping[str, Sequence[float]]) -> Iterator[None]:
    """Within the block, every :class:`RegressionDesign` fitted uses ``knots`` for the splines they name.

    Multiple imputation fits one model per completed data set; knots placed on each completion would give
    each fit's spline coefficients another basis. The knots of the development data's observed values are
    computed once and shared by every completion's fit (and kept by each fitted design's ``knots_``).
    """
    token = _SHARED_KNOTS.set({str(k): tuple(float(v) for v in vs) for k, vs in knots.items()})
    try:
        yield
    finally:
        _SHARED_KNOTS.reset(token)


def _quantile(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.quantile(x, p, method="linear")  # R's quantile type 7


def rcs_knots(x: np.ndarray, k: int, name: str = "x") -> np.ndarray:
    """Knots of a restricted cubic spline with ``k`` knots, as ``rms::rcs`` places them by default.

    Hmisc's ``rcspline.eval`` (Harrell, *Regression Modeling Strategies*, 2nd ed., 2015, section
    2.4.6): quantiles .10 .5 .90 (k = 3), .05 .35 .65 .95 (k = 4), .05 .275 .5 .725 .95 (k = 5),
    equally spaced from .05 (k = 6) or .025 (k = 7) to the mirror quantile; with fewer than 100
    values the outer knots are the 5th smallest and 5th largest; a lowest (highest) value held by
    at least 5% of the rows puts the first (last) knot at the next value (``fractied``).

    Raises
    ------
    DesignError
        Fewer than 6 values, or too few distinct values for ``k`` distinct knots (rms would use fewer
        knots, which would change the model's columns from one fold to the next).
    """
    xx = np.asarray(x, dtype=np.float64)
    xx = xx[~np.isnan(xx)]
    n = len(xx)
    if n < 6:
        raise DesignError(f"rcs({name}, {k}): {n} values; a spline needs at least 6")
    xu = np.unique(xx)
    if len(xu) - 2 <= k:
        raise DesignError(f"rcs({name}, {k}): {name} has {len(xu)} distinct values on the training rows, too few "
                          f"for {k} knots (rms would use {max(len(xu) - 2, 0)}); use fewer knots or a factor")
    outer = 0.1 if k == 3 else 0.05
    if k > 6:
        outer = 0.025
    nke = k
    first: list[float] = []
    last: list[float] = []
    over_first = over_last = False
    values, counts = np.unique(xx, return_counts=True)
    f = counts / n
    if f[1:-1].max() < FRACTIED:
        if f[0] >= FRACTIED:
            first = [float(xx[xx > xx.min()].min())]
            xx = xx[xx > first[0]]
            nke -= 1
            over_first = True
        if f[-1] >= FRACTIED:
            last = [float(xx[xx < xx.max()].max())]
            xx = xx[xx < last[0]]
            nke -= 1
            over_last = True
    if nke == 1:
        knots = np.array([np.median(xx)])
    else:
        p = np.linspace(0.5, 1 - outer, nke) if nke == 2 else np.linspace(outer, 1 - outer, nke)
        knots = _quantile(xx, p)
        if len(np.unique(knots)) < min(nke, 3):
            # Hmisc's alternate algorithm (it warns); a different number of knots is refused below
            knots = _quantile(xx, np.linspace(outer, 1 - outer, 2 * nke))
            if first and len(np.unique(knots)) < 3:
                mid = (first[0] + last[0]) / 2 if last else float(np.median(xx))
                knots = np.sort(np.array([first[0], mid, last[0] if last else float(_quantile(xx, np.array([1 - outer]))[0])]))
        if len(xx) < 100:
            xs = np.sort(xx)
            if not over_first:
                knots[0] = xs[4]
            if not over_last:
                knots[nke - 1] = xs[len(xs) - 5]
    out = np.unique(np.concatenate([first, knots, last]))
    if len(out) != k:
        raise DesignError(f"rcs({name}, {k}): only {len(out)} distinct knots on the training rows (too many tied "
                          f"values of {name}); use fewer knots")
    return out


def rcs_basis(x: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """The basis of ``rms::rcs`` at ``knots``: ``x`` and its ``k - 2`` non-linear terms (norm = 2, inclx = TRUE).

    Each non-linear term is Harrell's restricted cubic (Devlin & Weeks 1986; Harrell, RMS, eq. 2.25),
    scaled by ``(t_k - t_1)^(2/3)`` as Hmisc's ``rcspline.eval`` does.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(knots, dtype=np.float64)
    k = len(t)
    kd = (t[-1] - t[0]) ** (2.0 / 3.0)
    out = np.empty((len(x), k - 1))
    out[:, 0] = x
    tk, tk1 = t[-1], t[-2]
    for j in range(k - 2):
        out[:, j + 1] = (np.maximum((x - t[j]) / kd, 0) ** 3
                         + ((tk1 - t[j]) * np.maximum((x - tk) / kd, 0) ** 3
                            - (tk - t[j]) * np.maximum((x - tk1) / kd, 0) ** 3) / (tk - tk1))
    return out


def _is_categorical(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))


class RegressionDesign(TransformerMixin, BaseEstimator):
    """The model matrix of ``formula`` (see the module notes); a scikit-learn transformer.

    Parameters
    ----------
    formula
        The right-hand side of an R formula (``"histol + stage + rcs(age, 4) + histol:stage"``).
    levels
        Declared level order of categorical variables (``[variables] x.levels``).
    references
        Reference levels by variable (``[variables] x.reference``); ``C(x, ref = ...)`` in the formula
        overrides them.

    Attributes
    ----------
    levels_, reference_, knots_
        Fitted: each categorical variable's levels and reference, each spline's knots.
    names_
        The model matrix's column names (R's).
    """

    def __init__(self, formula: str, levels: Mapping[str, Sequence[str]] | None = None,
                 references: Mapping[str, str] | None = None) -> None:
        self.formula = formula
        self.levels = levels
        self.references = references

    def _parsed(self) -> ParsedFormula:
        try:
            return parse_formula(self.formula)
        except FormulaError as exc:
            raise DesignError(f"formula \"{self.formula}\": {exc}") from None

    def _frame(self, X: Any, variables: Sequence[str]) -> pd.DataFrame:
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(
            np.asarray(X, dtype=object), columns=list(getattr(self, "feature_names_in_", variables)))
        lacking = [v for v in variables if v not in frame.columns]
        if lacking:
            raise DesignError(f"formula \"{self.formula}\": no column {', '.join(lacking)} in the input table")
        return frame

    def fit(self, X: Any, y: Any = None) -> RegressionDesign:
        parsed = self._parsed()
        frame = self._frame(X, parsed.variables)
        self.feature_names_in_ = np.asarray(list(frame.columns), dtype=object)
        self.n_features_in_ = len(frame.columns)
        declared = {str(k): [str(v) for v in lv] for k, lv in (self.levels or {}).items()}
        given = {**{str(k): str(v) for k, v in (self.references or {}).items()}, **parsed.references}
        splines = parsed.splines
        coded = {f.variable for f in parsed.factors if f.function == "C"}
        levels: dict[str, tuple[str, ...]] = {}
        references: dict[str, str] = {}
        knots: dict[str, tuple[float, ...]] = {}
        fixed = _SHARED_KNOTS.get() or {}
        for var in parsed.variables:
            values = frame[var]
            if var in splines:
                if _is_categorical(values):
                    raise DesignError(f"rcs({var}, {splines[var]}): {var} is categorical; a spline needs a number")
                knots[var] = fixed[var] if var in fixed else tuple(
                    float(v) for v in rcs_knots(values.to_numpy(dtype=np.float64), splines[var], var))
                continue
            if not _is_categorical(values):
                if var in coded:
                    raise DesignError(f"C({var}): {var} is numeric; declare it categorical in [variables] "
                                      f"({var} = {{ type = \"categorical\" }}) to code it by levels")
                continue
            if values.isna().any():
                raise DesignError(f"{var}: missing values reach the design; they are imputed before it")
            seen = {str(v) for v in values}
            order = [lv for lv in declared.get(var, []) if lv in seen]
            order += sorted(seen - set(order))
            if not order:
                raise DesignError(f"{var} has no values on the training rows")
            # one level on these rows (an inner tuning fold short of a rare level): its contrasts are all zero,
            # so it adds no column here; the learner drops a variable constant on an outer fold or the final fit
            # before the design sees it, and records that
            ref = given.get(var, order[0])
            if ref not in order and len(order) == 1:
                ref = order[0]
            if ref not in order:
                raise DesignError(f"{var}: reference level {ref!r} has no training rows (levels {', '.join(order)})")
            levels[var], references[var] = tuple(order), ref
        self.levels_, self.reference_, self.knots_ = levels, references, knots
        self.names_ = [c[0] for c in self._columns(parsed, None)]
        return self

    # --- the columns ------------------------------------------------------------------------------

    def _factor_columns(self, f: Factor, contrasts: bool, frame: pd.DataFrame | None,
                        ) -> list[tuple[str, np.ndarray | None, bool]]:
        """(name, values or None when only names are wanted, non-linear) of one factor's coded columns."""
        var = f.variable
        if f.function == "rcs":
            basis = None if frame is None else rcs_basis(frame[var].to_numpy(dtype=np.float64), self.knots_[var])
            return [(f"{f.label}{var}" + "'" * j, None if basis is None else basis[:, j], j > 0)
                    for j in range(len(self.knots_[var]) - 1)]
        if var not in self.levels_:
            return [(var, None if frame is None else frame[var].to_numpy(dtype=np.float64), False)]
        ref = self.reference_[var]
        coded = [lv for lv in self.levels_[var] if not (contrasts and lv == ref)]
        values = None if frame is None else frame[var].astype(object).map(str).to_numpy()
        return [(f"{var}{lv}", None if values is None else (values == lv).astype(np.float64), False) for lv in coded]

    def _columns(self, parsed: ParsedFormula, frame: pd.DataFrame | None,
                 ) -> list[tuple[str, np.ndarray | None, int, bool]]:
        """(name, values, term index, non-linear) of every model-matrix column, in R's order."""
        keys = {frozenset(f.key for f in t.factors) for t in parsed.terms}
        out: list[tuple[str, np.ndarray | None, int, bool]] = []
        for i, term in enumerate(parsed.terms):
            blocks = []
            for f in term.factors:
                rest = frozenset(g.key for g in term.factors if g is not f)
                contrasts = len(term.factors) == 1 or rest in keys
                blocks.append(self._factor_columns(f, contrasts, frame))
            combos: list[tuple[str, np.ndarray | None, bool]] = blocks[0]
            for block in blocks[1:]:  # the first factor varies fastest
                combos = [(f"{a}:{b}", None if va is None or vb is None else va * vb, na or nb)
                          for b, vb, nb in block for a, va, na in combos]
            out += [(name, values, i, nl) for name, values, nl in combos]
        return out

    def transform(self, X: Any) -> np.ndarray:
        parsed = self._parsed()
        frame = self._frame(X, parsed.variables)
        for var, levels in self.levels_.items():
            values = frame[var]
            if values.isna().any():
                raise DesignError(f"{var}: missing values reach the design; they are imputed before it")
            unseen = sorted({str(v) for v in values} - set(levels))
            if unseen:
                log.warning("%s: level(s) %s not seen on the training rows; coded as the reference level %s",
                            var, ", ".join(unseen), self.reference_[var])
        cols = self._columns(parsed, frame)
        if not cols:
            return np.zeros((len(frame), 0))
        return np.column_stack([np.asarray(c[1], dtype=np.float64) for c in cols])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.names_, dtype=object)

    def terms_(self) -> list[Term]:
        """The formula's terms and their columns in this design's matrix (``nonlinear``: a spline's
        non-linear columns, in an interaction too)."""
        parsed = self._parsed()
        cols = self._columns(parsed, None)
        out = []
        for i, term in enumerate(parsed.terms):
            idx = tuple(j for j, c in enumerate(cols) if c[2] == i)
            out.append(Term(term.label, term.variables, idx, tuple(j for j in idx if cols[j][3])))
        return out


def restricted(formula: str, available: Sequence[str]) -> str | None:
    """``formula`` without the terms of variables outside ``available`` (left out of a fit: constant or
    without values on its training rows); None when no term is left."""
    parsed = parse_formula(formula)
    keep = [t for t in parsed.terms if set(t.variables) <= set(available)]
    if len(keep) == len(parsed.terms):
        return formula
    return " + ".join(_term_text(t) for t in keep) or None


def _term_text(term: ParsedTerm) -> str:
    return ":".join(f"C({f.variable}, ref = \"{f.reference}\")" if f.reference is not None else f.label
                    for f in term.factors)


def main_effects(variables: Sequence[str]) -> str:
    """The formula ``a + b + c`` of variables entered as they are (numbers) or treatment-coded (categories)."""
    return " + ".join(f"`{v}`" if not v.isidentifier() else v for v in variables)


def design_terms(prep: Any) -> tuple[list[str], list[Term]]:
    """Every output column of a fitted :func:`analytics.models.classical.regression_preprocessor` named, and
    grouped into terms: the formula's terms (R's column names), then one linear term per other column (an
    input model's score, an image feature or principal component). Indices count the classifier's
    coefficients (no intercept), in order.
    """
    names: list[str] = []
    terms: list[Term] = []
    for part, trans, _ in prep.transformers_:
        if part == "remainder" or trans == "drop":
            continue
        block = prep.output_indices_[part]
        if part == "design":
            design = trans.named_steps["design"]
            names += list(design.names_)
            terms += [Term(t.label, t.variables, tuple(block.start + j for j in t.columns),
                           tuple(block.start + j for j in t.nonlinear)) for t in design.terms_()]
            continue
        out = [str(n).split("__", 1)[-1] for n in trans.get_feature_names_out()]
        names += out
        terms += [Term(n, (n,), (block.start + j,)) for j, n in enumerate(out)]
    return names, terms
