"""A fitted model as one typed record: :class:`FitRecord` (its ``manifest.json``).

``cohortlab fit`` builds a :class:`FitRecord` and writes it with :meth:`FitRecord.to_json` (keys sorted,
two-space indent, one trailing newline: the bytes a model folder's sha256 was always taken over);
every stage reads it back with :meth:`FitRecord.from_json` and reads attributes, never string keys.
A manifest of the same format written before a field existed reads with that field's default.

The record imports no learner: the report and validation read records without loading a model.
:class:`analytics.models.persist.FittedModel` is the loaded view (record, predictions, learner,
attention, horizon risks, coefficients).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.atomic import json_text
from pipeline.errors import CohortlabError

if TYPE_CHECKING:
    from pipeline.config import Model

FORMAT = 2  # 1: model.joblib (a pickle), no digests recorded


class RecordError(CohortlabError, ValueError):
    """A ``manifest.json`` that is not a fitted-model record (not JSON, not an object, a field of the wrong type)."""


def _empty_dict() -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class FitRecord:
    """What ``cohortlab fit`` records about one fitted model (``models/<name>/manifest.json``).

    Attributes
    ----------
    name, kind
        The model and its kind (a row of :data:`pipeline.model_kinds.KINDS`).
    config
        The model's ``study.toml`` entry as fitted (:meth:`pipeline.config.Model.model_dump`).
    features, clinical, inputs
        Pooled feature references, clinical columns and input models it reads.
    input_hashes
        Each input model's predictions hash when this model was fitted.
    cohort
        ``name``, ``file``, ``params`` and ``hash`` of the cohort it was fitted on.
    feature_sets
        Provenance of each feature set it reads.
    seed, outer_folds, fit_key
        The seed, the outer folds (``k``, ``hash``) and the hash ``fit`` compares to skip an unchanged model.
    chosen, fold_chosen, inner_auc, tuning
        Hyper-parameters chosen (final model and per outer fold), inner cross-validated AUC, tuning record.
    nesting
        How a second-stage model's training estimate was made (None: not a second-stage model).
    columns, input_columns
        The columns the final model uses, and those it reads from a cohort (``Columns.to_dict``).
    dropped
        Predictors dropped before fitting, with the reason.
    predictions_hash, counts
        sha256 of the predictions' rows; patients predicted per split.
    oof_auc, oof_c
        Out-of-fold AUC (binary) or Harrell's C (survival) on the training patients.
    endpoint, horizons
        ``binary`` or ``survival``; a survival model's horizons.
    missing, unlabelled
        Patients lacking its inputs (per split); unlabelled patients.
    versions, device, created_at
        Library versions, the device a network trained on, the time of the fit (UTC, ISO 8601).
    mil
        A MIL network's configuration (None for other kinds).
    free_parameters
        Coefficients a maximum-likelihood regression estimated (the likelihood-ratio test's degrees of
        freedom come from these); None where the learner has no coefficients.
    internal
        Internal validation (``[validation] internal``): method, ``B`` / ``repeats``, replicates done and
        failed (with the reasons), and where the replicate files are with their sha256
        (:func:`analytics.models.replicates.load_replicates`); None when not asked for.
    regression
        A regression model's model line (``link``, ``penalised``, ``n``, ``events`` and, unpenalised, ``lr_chisq``,
        ``df``, ``p``, ``aic``), next to its ``coefficients.csv`` and ``anova.csv``
        (:class:`analytics.models.coefficients.RegressionTables`); None for other models.
    updates
        A model updated for a new centre by ``cohortlab validate`` (``[validation] updating``): the ``model`` it
        updates, that model's ``fit_key``, the ``center``, the ``method`` the closed test chose and the
        estimated ``coefficients`` (:mod:`analytics.models.updated`); None for a model of ``study.toml``.
    imputation
        Multiple imputation inside the model's procedure (``[imputation] method = "mice"``,
        :func:`analytics.models.imputed.record`): ``method``, ``m``, ``maxit``, ``seed``, ``m_boot``,
        ``validation_imputation``, ``source`` (``"chains"`` or ``"from"``), ``pooled`` (``"rubin"``: the pooled
        coefficients are the model; ``"mean_risk"``: the mean of the m fits' risks), ``seconds`` and
        ``not_in_imputation_model`` (formula terms the chains do not model); None without it.
    format, artifact
        The folder's format and the file holding the fitted learner (None: the record alone describes it).
    """

    name: str
    kind: str
    config: dict[str, Any] = field(default_factory=_empty_dict)
    features: list[str] = field(default_factory=list)
    clinical: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    input_hashes: dict[str, str] = field(default_factory=dict)
    cohort: dict[str, Any] = field(default_factory=_empty_dict)
    feature_sets: dict[str, Any] = field(default_factory=_empty_dict)
    seed: int | None = None
    outer_folds: dict[str, Any] = field(default_factory=_empty_dict)
    fit_key: str | None = None
    chosen: dict[str, Any] = field(default_factory=_empty_dict)
    fold_chosen: list[Any] = field(default_factory=list)
    inner_auc: float | None = None
    nesting: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None
    columns: dict[str, Any] | None = None
    input_columns: dict[str, Any] | None = None
    dropped: dict[str, Any] = field(default_factory=_empty_dict)
    predictions_hash: str | None = None
    counts: dict[str, Any] = field(default_factory=_empty_dict)
    oof_auc: float | None = None
    endpoint: str = "binary"
    horizons: list[float] = field(default_factory=list)
    oof_c: float | None = None
    missing: dict[str, Any] = field(default_factory=_empty_dict)
    unlabelled: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    created_at: str | None = None
    mil: dict[str, Any] | None = None
    free_parameters: int | None = None
    internal: dict[str, Any] | None = None
    regression: dict[str, Any] | None = None
    updates: dict[str, Any] | None = None
    imputation: dict[str, Any] | None = None
    format: int | None = None
    artifact: str | None = None

    # fields written only when set: a manifest lacking them is byte-identical to one written before they existed
    OPTIONAL = ("mil", "free_parameters", "internal", "regression", "updates", "imputation")

    @property
    def saved_columns(self) -> dict[str, Any] | None:
        """The columns a cohort must give the model (``input_columns``, else ``columns`` of an older fit)."""
        return self.input_columns or self.columns

    @property
    def cohort_hash(self) -> str | None:
        """The hash of the cohort the model was fitted on."""
        value = self.cohort.get("hash")
        return None if value is None else str(value)

    @property
    def optimistic_reason(self) -> str | None:
        """Why the training (out-of-fold) estimate is optimistic; None when it is not."""
        if not self.nesting or not self.nesting.get("optimistic"):
            return None
        return self.nesting.get("reason") or "an input model's training estimate is optimistic"

    def to_dict(self) -> dict[str, Any]:
        """The record as the manifest's JSON object (optional fields only when set)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in self.OPTIONAL:
            if out[name] is None:
                del out[name]
        return out

    def to_json(self) -> str:
        """The manifest's text: keys sorted, two-space indent, a trailing newline."""
        return json_text(self.to_dict(), 2, str, "\n")

    def replace(self, **changes: Any) -> FitRecord:
        """A copy with ``changes`` (a frozen record is never edited in place)."""
        from dataclasses import replace

        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | Path = "manifest.json") -> FitRecord:
        """The record of a manifest's object; a missing field takes its default, an unknown key is ignored.

        Raises
        ------
        RecordError
            No ``name`` or ``kind``, or a field of the wrong type (names ``where`` and the key).
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("name", "kind"):
            if not isinstance(values.get(key), str):
                raise RecordError(f"{where}: key {key!r} is missing or not a string")
        for f in fields(cls):
            value = values.get(f.name)
            if value is None:
                if f.default is not None:  # a null where the field holds a container: its (empty) default
                    values.pop(f.name, None)
                continue
            want = _SHAPE.get(f.name)
            if want is not None and not isinstance(value, want):
                raise RecordError(f"{where}: key {f.name!r} is a {type(value).__name__}, "
                                  f"not a {' or '.join(t.__name__ for t in want)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes, where: str | Path = "manifest.json") -> FitRecord:
        """The record of a manifest's text (see :meth:`from_dict`).

        Raises
        ------
        RecordError
            Not JSON, not an object, or as :meth:`from_dict`.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RecordError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RecordError(f"{where}: not a JSON object")
        return cls.from_dict(data, where)


# the JSON type each field must have when present (bool is an int: a count or seed of true is refused below)
_SHAPE: dict[str, tuple[type, ...]] = {
    "config": (dict,), "features": (list,), "clinical": (list,), "inputs": (list,), "input_hashes": (dict,),
    "cohort": (dict,), "feature_sets": (dict,), "seed": (int,), "outer_folds": (dict,), "fit_key": (str,),
    "chosen": (dict,), "fold_chosen": (list,), "inner_auc": (int, float), "nesting": (dict,), "tuning": (dict,),
    "columns": (dict,), "input_columns": (dict,), "dropped": (dict,), "predictions_hash": (str,),
    "counts": (dict,), "oof_auc": (int, float), "endpoint": (str,), "horizons": (list,), "oof_c": (int, float),
    "missing": (dict,), "unlabelled": (list,), "versions": (dict,), "device": (str,), "created_at": (str,),
    "mil": (dict,), "free_parameters": (int,), "internal": (dict,), "regression": (dict,), "updates": (dict,), "imputation": (dict,), "format": (int,), "artifact": (str,),
}


def ml_regression_reason(spec: Model) -> str | None:
    """Why ``spec`` is not a maximum-likelihood logistic regression (the likelihood-ratio test's models); None
    when it is: ``kind = "logistic"`` with ``params.penalty = "none"`` (or ``params.C = inf`` and no ``C``
    grid), and no PCA. ``fit`` saves such a
    model's coefficient count and training fitted probabilities in its record."""
    if spec.traits.regression != "logit":
        return f"{spec.name} is a {spec.kind} model, not a logistic regression"
    if spec.params.get("penalty") == "none":  # fitted by maximum likelihood (analytics.models.glm.MLLogistic)
        return (f"{spec.name} reduces its features by PCA, so the two models' inputs are not nested"
                if "pca" in spec.params or "pca" in spec.grid else None)
    c = spec.params.get("C")
    if "C" in spec.grid or c is None or not math.isinf(float(c)):
        how = f"C tuned over {spec.grid['C']}" if "C" in spec.grid else (
            f"C = {c}" if c is not None else "C tuned by default")
        return (f"{spec.name} is a penalised logistic regression ({how}); the likelihood-ratio test needs "
                "maximum-likelihood fits (params.penalty = \"none\")")
    if "pca" in spec.params or "pca" in spec.grid:
        return f"{spec.name} reduces its features by PCA, so the two models' inputs are not nested"
    return None


__all__ = ["FORMAT", "FitRecord", "RecordError", "ml_regression_reason"]
