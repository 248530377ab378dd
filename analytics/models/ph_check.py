"""The proportional-hazards check of a fitted Cox regression, made at fit time and saved in its model folder.

:func:`ph_check` runs the Grambsch-Therneau score test of survival 3's ``cox.zph`` (``transform = "km"``,
Efron ties, ``terms = TRUE``: a factor or a spline is tested as one term; :func:`analytics.stats.zph.cox_zph`)
on the final refit's training patients: the model matrix the fit saw (``learner.prep_``), its coefficients
(``learner.model_.coef_``) and the terms of its formula (:func:`analytics.models.formula.design_terms`).
Its record (:func:`ph_record`) is what ``models/<name>/zph.json`` holds: the table and, per term, the
transformed event times and scaled Schoenfeld residuals the report plots; :func:`zph_of` reads it back as a
:class:`analytics.stats.zph.Zph` without loading the learner.

A penalised fit is not checked: R's ``cox.zph`` of a penalised ``coxph`` adds the penalty to the information
matrix, which this test does not, so the numbers would not be R's (the record says so).

References
----------
Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on weighted residuals.
Biometrika 1994;81:515-526.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from analytics.models.data import ModelData
from analytics.models.formula import design_terms
from analytics.stats.zph import Zph, ZphTest, cox_zph

METHOD = "Grambsch-Therneau score test, transform km, Efron ties, terms pooled (survival::cox.zph, survival >= 3)"
ALPHA = 0.05  # a term with p below it is flagged in the report


def _penalty(learner: Any) -> float:
    """The penalty of a fitted ``cox`` learner (0: maximum partial likelihood)."""
    chosen = getattr(learner, "chosen", None) or {}
    return float(chosen.get("penalizer", 0.0) or 0.0)


def ph_check(learner: Any, data: ModelData, y: np.ndarray) -> dict[str, Any] | None:
    """The proportional-hazards record of a fitted ``cox`` model on its training patients (``data``, ``y`` the
    ``(n, 2)`` times and events the final refit used); None for a learner that is not a Cox regression.

    A penalised fit, or one the test cannot be computed for (fewer than two events, a singular information
    matrix), gets a record with ``computed = false`` and the reason.
    """
    model, prep = getattr(learner, "model_", None), getattr(learner, "prep_", None)
    if model is None or prep is None or not hasattr(model, "coef_") or not hasattr(prep, "transformers_"):
        return None
    if _penalty(learner) > 0:
        return {"computed": False, "method": METHOD,
                "reason": f"a penalised fit (penalizer = {_penalty(learner):g}): R's cox.zph adds the penalty to "
                          "the information matrix and this test does not, so no test is reported"}
    if data.table is None:
        return None
    X = np.asarray(prep.transform(data.table), dtype=np.float64)
    keep = getattr(learner, "keep_", None)
    if keep is not None:  # a model saved before its formula's design: its columns have no terms
        X = X[:, keep]
    time, event = np.asarray(y, dtype=np.float64)[:, 0], np.asarray(y, dtype=np.float64)[:, 1]
    _, terms = design_terms(prep)
    try:
        zph = cox_zph(X, time, event, model.coef_, None if keep is not None else terms, transform="km", ties="efron")
    except (ValueError, np.linalg.LinAlgError) as exc:
        return {"computed": False, "method": METHOD, "reason": f"not computable: {exc}"}
    return ph_record(zph, len(time), int(event.sum()))


def _number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # a constant column has no residual (NaN): JSON null


def ph_record(zph: Zph, n: int, events: int) -> dict[str, Any]:
    """The JSON record of a :class:`~analytics.stats.zph.Zph` (``zph.json``): the table, the event times,
    transformed times, scaled Schoenfeld residuals (one list per term) and the variance the smooth's band uses."""
    return {
        "computed": True, "method": METHOD, "transform": zph.transform, "n": int(n), "events": int(events),
        "tests": zph.as_rows(), "x": [float(v) for v in zph.x], "time": [float(v) for v in zph.time],
        "residuals": {term: [_number(v) for v in zph.residuals[:, i]] for i, term in enumerate(zph.terms)},
        "var": [[float(v) for v in row] for row in zph.var],
    }


def zph_of(record: Mapping[str, Any]) -> Zph | None:
    """The :class:`~analytics.stats.zph.Zph` a ``zph.json`` record holds; None when no test was computed."""
    if not record.get("computed"):
        return None
    tests = tuple(ZphTest(str(r["term"]), float(r["chisq"]), int(r["df"]), float(r["p"])) for r in record["tests"])
    terms = [t.term for t in tests[:-1]]
    residuals = np.column_stack([np.array([np.nan if v is None else v for v in record["residuals"][t]], dtype=float)
                                 for t in terms])
    return Zph(tests, np.asarray(record["x"], dtype=float), np.asarray(record["time"], dtype=float), residuals,
               np.asarray(record["var"], dtype=float), str(record["transform"]))


__all__ = ["ALPHA", "METHOD", "ph_check", "ph_record", "zph_of"]
