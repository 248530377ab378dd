"""The models updated for each external centre (``[validation] updating``), saved as models of their own.

:func:`save_updated_models` writes the closed test's choice for each centre as a published model in
``models/<model>-updated-<centre>/`` (:mod:`analytics.models.updated`) and says, for each updated model it
could not save, why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import polars as pl

from analytics.models.updated import regression_terms, save_updated

if TYPE_CHECKING:
    from analytics.validation.multicentre import ModelMulticentre
    from pipeline.config import StudyConfig


def save_updated_models(study: StudyConfig, results: Mapping[str, ModelMulticentre]) -> list[str]:
    """Save every updated model of the external centres in ``results`` that a published model can hold; one
    note per model saved (where) or not saved (why). Each folder is staged and renamed into place whole. Nothing
    without ``[validation] updating``."""
    notes: list[str] = []
    if not study.validation.updating:
        return notes
    for mc in results.values():
        if mc.split != "external":
            continue
        spec = next((m for m in study.models if m.name == mc.model), None)
        for u in mc.updated:
            if spec is None or u.coefficients is None or u.formula is None or not u.scored:
                why = "a Cox model's recalibrated baseline survival is reported only" if (
                    spec is not None and study.endpoint(spec) == "survival") else (
                    "no patients scored" if spec is None or u.coefficients is not None else regression_terms(study, spec))
                notes.append(f"{u.name}: not saved as a model ({why})")
                continue
            ids, scores = zip(*u.scored)
            frame = pl.DataFrame({"patient_id": list(ids), "split": "updating", "score": list(scores)})
            updates = {"method": u.choice, "coefficients": dict(u.coefficients),
                       "closed_test": [dict(t) for t in u.tests], "deviance": dict(u.deviance)}
            try:
                save_updated(study, spec, u.center, u.formula, u.coefficients, updates, frame)
            except ValueError as exc:
                notes.append(f"{u.name}: not saved as a model ({exc})")
                continue
            notes.append(f"{u.name}: saved as a model in {study.models_dir / u.name} ({u.choice}; "
                         "`cohortlab predict --model` scores with it)")
    return notes


def updating_digest(study: StudyConfig, models: list[str]) -> str:
    """What the saved updated models depend on beyond the predictions: each model's fit key (a refit that gives
    the same predictions still makes its updates anew). The folders were checked against the store when
    validation began. Empty without ``[validation] updating`` (the digest is then as before)."""
    from analytics.models.artifacts import FitRecord

    if not study.validation.updating:
        return ""
    keys = []
    for name in models:
        path = study.models_dir / name / "manifest.json"
        keys.append(f"{name}:{FitRecord.from_json(path.read_bytes(), path).fit_key if path.is_file() else '-'}")
    return ";".join(keys)


__all__ = ["save_updated_models", "updating_digest"]
