"""Which model-matrix columns belong to which term of a regression formula.

A formula such as ``histol + stage + rcs(age, 4) + histol:stage`` expands to a model
matrix whose columns group into terms: a factor's treatment-coded levels, a spline's
basis, an interaction's products. Coefficient tables and ``rms::anova``-style Wald
tests read this grouping; the design that builds the matrix
(:mod:`analytics.models.formula`) produces it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """One term of a regression formula and its model-matrix columns.

    Attributes
    ----------
    label
        The term as written in the formula (``"rcs(age, 4)"``, ``"histol:stage"``).
    variables
        The input variables it involves (``("age",)``, ``("histol", "stage")``); an interaction
        involves several, which is how ``rms::anova`` pools a variable with its interactions.
    columns
        Indices of its columns in the model matrix (no intercept column counted).
    nonlinear
        The subset of ``columns`` that are non-linear (a spline's basis beyond its linear column);
        empty for linear terms and factors.
    """

    label: str
    variables: tuple[str, ...]
    columns: tuple[int, ...]
    nonlinear: tuple[int, ...] = ()
