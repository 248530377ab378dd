"""Published models (``kind = "fixed"``): a formula and its coefficients, scored as published, never fitted.

A logistic model's risk is ``expit(lp)`` with ``lp = (Intercept) + sum(beta_j x_j)``; a Cox model's risk at a
time ``t`` of its baseline survival is ``1 - S0(t) ** exp(lp - lp_centre)`` (``lp_centre`` 0 when not given:
the baseline is then at all covariates zero), the linear predictor without intercept being its score. This is
how a published model is applied in an external validation (Steyerberg, *Clinical Prediction Models*, 2nd ed.,
2019, ch. 17; Royston & Altman, BMC Med Res Methodol 2013, 13:33 for the Cox baseline at a centre).

The coefficients are named as R names the columns of ``model.matrix`` (:mod:`analytics.models.formula`):
a number by its variable, a level of a categorical variable by ``<variable><level>`` (``sexmale``), an
interaction's columns joined by ``:``. A categorical variable's level without a coefficient is its
reference level (one only, else the entry is refused); a patient at a level that is neither has no linear
predictor and is reported. Nothing is imputed: a patient lacking a predictor has no linear predictor.
Splines are refused: their published knots would be needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analytics.models.data import ModelData
from pipeline.config import Model
from pipeline.errors import CohortlabError
from pipeline.formula import parse_formula

INTERCEPT = "(Intercept)"


class FixedModelError(CohortlabError, ValueError):
    """A published model's entry that does not fit the cohort; the message names the model and the key."""


@dataclass(frozen=True)
class Scored:
    """A published model's linear predictor for some rows and why a row has none.

    Attributes
    ----------
    lp
        The linear predictor (NaN where a row has none).
    reasons
        Per row, why it has no linear predictor ("" where it has one).
    """

    lp: np.ndarray
    reasons: tuple[str, ...]


def _is_number(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))


class FixedLearner:
    """A published model behind the learners' interface: ``fit`` checks it against the cohort and learns nothing.

    Parameters
    ----------
    spec
        The model's ``study.toml`` entry (``formula``, ``coefficients``; a Cox model's ``baseline_survival``
        and ``lp_centre``; the model's reference levels from ``[variables]``).
    """

    kind = "fixed"

    def __init__(self, spec: Model) -> None:
        if spec.formula is None or not spec.coefficients:
            raise ValueError("a fixed model needs formula and coefficients")
        self.name = spec.name
        self.formula = spec.formula
        self.coefficients = dict(spec.coefficients)
        self.survival = spec.baseline_survival is not None
        self.baseline = {float(t): float(s) for t, s in (spec.baseline_survival or {}).items()}
        self.centre = float(spec.lp_centre or 0.0)
        self.parsed = parse_formula(spec.formula)
        splines = sorted(self.parsed.splines)
        if splines:
            raise ValueError(f"formula \"{spec.formula}\": rcs({splines[0]}, ...) needs the published knots; enter the "
                             "spline's basis columns as variables")
        self.references = {**spec.references, **self.parsed.references}

    # --- the model matrix, column by column ----------------------------------------------------------

    def _factor_columns(self, var: str, frame: pd.DataFrame, levels: Sequence[str]) -> list[tuple[str, np.ndarray]]:
        values = frame[var]
        if _is_number(values):
            return [(var, values.to_numpy(dtype=np.float64, na_value=np.nan))]
        text = values.astype(object).map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                                         else str(v)).to_numpy()
        return [(f"{var}{lv}", np.where(pd.isna(text), np.nan, (text == lv).astype(np.float64))) for lv in levels]

    def _levels(self, var: str, frame: pd.DataFrame, declared: Mapping[str, Sequence[str]]) -> list[str]:
        """Every level a coefficient, the declaration or a row names (the columns an interaction may hold)."""
        seen = sorted({str(v) for v in frame[var].dropna()})
        named = [k[len(var):] for k in self.coefficients if k.startswith(var) and ":" not in k and k != var]
        return list(dict.fromkeys([*declared.get(var, ()), *named, *seen]))

    def _check(self, frame: pd.DataFrame, declared: Mapping[str, Sequence[str]]) -> dict[str, str | None]:
        """Every coefficient names a column of the formula; each categorical variable's reference level."""
        lacking = [v for v in self.parsed.variables if v not in frame.columns]
        if lacking:
            raise FixedModelError(f"model '{self.name}': formula \"{self.formula}\" reads {', '.join(lacking)}, which "
                                  "the cohort lacks")
        names = set()
        for term in self.parsed.terms:
            combos = [""]
            for f in term.factors:
                cols = [c for c, _ in self._factor_columns(f.variable, frame.head(0), self._levels(
                    f.variable, frame, declared))] if not _is_number(frame[f.variable]) else [f.variable]
                combos = [f"{a}:{c}" if a else c for c in cols for a in combos]
            names.update(combos)
        unknown = [k for k in self.coefficients if k != INTERCEPT and k not in names]
        if unknown:
            raise FixedModelError(f"models.{self.name}.coefficients.{unknown[0]}: names no column of the formula "
                                  f"\"{self.formula}\" on the cohort (a number by its name, a level as "
                                  "<variable><level>, an interaction as a:b)")
        refs: dict[str, str | None] = {}
        for var in self.parsed.variables:
            if _is_number(frame[var]):
                continue
            without = [lv for lv in self._levels(var, frame, declared) if f"{var}{lv}" not in self.coefficients]
            ref = self.references.get(var)
            if ref is None and declared.get(var):
                free = [lv for lv in declared[var] if f"{var}{lv}" not in self.coefficients]
                if len(free) > 1:
                    raise FixedModelError(f"models.{self.name}.coefficients: {var}'s levels {', '.join(free)} have no "
                                          "coefficient; one only is the reference (set it with C(x, ref = ...))")
                ref = free[0] if free else None
            refs[var] = ref if ref is not None else (without[0] if len(without) == 1 else None)
        return refs

    def score_table(self, table: pd.DataFrame, declared: Mapping[str, Sequence[str]] | None = None) -> Scored:
        """The linear predictor of every row of ``table`` (the intercept included for a logistic model)."""
        declared = dict(declared or {})
        refs = self._check(table, declared)
        n = len(table)
        lp = np.full(n, self.coefficients.get(INTERCEPT, 0.0), dtype=np.float64)
        reasons = [""] * n
        for var in self.parsed.variables:
            values = table[var]
            missing = values.isna().to_numpy()
            for row in np.flatnonzero(missing).tolist():
                reasons[row] = reasons[row] or f"missing {var}"
            if _is_number(values):
                continue
            ok = {refs.get(var)} | {k[len(var):] for k in self.coefficients if k.startswith(var) and ":" not in k}
            for i, v in enumerate(values):
                if not missing[i] and str(v) not in ok and refs.get(var) is not None:
                    reasons[i] = reasons[i] or f"unknown level {var} = {v!r}"
        for term in self.parsed.terms:
            combos: list[tuple[str, np.ndarray]] = [("", np.ones(n))]
            for f in term.factors:
                cols = self._factor_columns(f.variable, table, self._levels(f.variable, table, declared))
                combos = [(f"{a}:{c}" if a else c, va * vc) for c, vc in cols for a, va in combos]
            for name, values in combos:
                beta = self.coefficients.get(name)
                if beta is not None:
                    lp += beta * np.nan_to_num(values, nan=0.0)
        bad = np.array([bool(r) for r in reasons], dtype=bool)
        lp[bad] = np.nan
        return Scored(lp, tuple(reasons))

    # --- the learners' interface ---------------------------------------------------------------------

    def _declared(self, data: ModelData) -> dict[str, tuple[str, ...]]:
        return {c: tuple(lv) for c, lv in data.columns.levels} if data.columns is not None else {}

    def _table(self, data: ModelData) -> pd.DataFrame:
        if data.table is None:
            raise FixedModelError(f"model '{self.name}': a fixed model needs an input table")
        return data.table

    def fit(self, data: ModelData, y: np.ndarray) -> FixedLearner:
        """Check the model against the cohort's columns; nothing is estimated."""
        self._check(self._table(data), self._declared(data))
        self.columns_ = data.columns
        return self

    def linear_predictor(self, data: ModelData) -> np.ndarray:
        """The linear predictor (a Cox model's less ``lp_centre``); NaN for a row without one."""
        lp = self.score_table(self._table(data), self._declared(data)).lp
        return lp - self.centre if self.survival else lp

    def predict_score(self, data: ModelData) -> np.ndarray:
        """The risk of a logistic model, a Cox model's linear predictor (the order its risks have)."""
        lp = self.linear_predictor(data)
        return lp if self.survival else 1.0 / (1.0 + np.exp(-lp))

    def risk_at(self, data: ModelData, horizons: Sequence[float]) -> np.ndarray:
        """``1 - S0(t) ** exp(lp - lp_centre)`` per row and time; NaN at a time the baseline survival lacks."""
        lp = self.linear_predictor(data)
        out = np.full((len(lp), len(horizons)), np.nan)
        for j, t in enumerate(horizons):
            s0 = self.baseline.get(float(t))
            if s0 is not None:
                out[:, j] = 1.0 - s0 ** np.exp(lp)
        return out

    @property
    def chosen(self) -> dict[str, Any]:
        return {}


def fixed_learner(spec: Model, seed: int) -> FixedLearner:
    """The registry's factory of a ``fixed`` model (``seed`` unused: nothing is drawn)."""
    return FixedLearner(spec)


__all__ = ["INTERCEPT", "FixedLearner", "FixedModelError", "Scored", "fixed_learner"]
