"""The study description: one ``study.toml`` read with :mod:`tomllib` and validated.

Every path in the file is relative to the folder that holds ``study.toml``.
Validation errors name the key (``feature_sets[1].mpp``) and the file, so a
user can fix the file without reading code.

The sections live in sibling modules, each importable from here too: the base model and names
(:mod:`pipeline.config_base`), ``[variables]`` (:mod:`pipeline.config_variables`), ``[[feature_sets]]``
(:mod:`pipeline.config_feature_sets`), ``[validation]`` (:mod:`pipeline.config_validation`) and
``[explain]``, ``[compute]``, ``[sql]``, ``[report]`` (:mod:`pipeline.config_run`), ``[imputation]``
(:mod:`pipeline.config_imputation`).
"""

from __future__ import annotations

import codecs
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.config_base import NAME as NAME
from pipeline.config_base import Name
from pipeline.config_base import Strict as _Strict
from pipeline.config_base import check_name as check_name
from pipeline.config_feature_sets import STAIN_NORMS as STAIN_NORMS
from pipeline.config_feature_sets import FeatureSet
from pipeline.config_imputation import ImputationSettings
from pipeline.config_run import Compute, ExplainSection, Report, SqlLimits
from pipeline.config_validation import INTERNAL_METHODS as INTERNAL_METHODS
from pipeline.config_validation import THRESHOLD_RULES as THRESHOLD_RULES
from pipeline.config_validation import Subgroup as Subgroup
from pipeline.config_validation import ValidationSettings
from pipeline.config_variables import ROLES as ROLES
from pipeline.config_variables import VAR_TYPES as VAR_TYPES
from pipeline.config_variables import Causes, Variable, check_competing_models, study_causes
from pipeline.errors import CohortlabError
from pipeline.formula import FormulaError, parse_formula
from pipeline.model_kinds import KINDS, KindTraits, kinds_where

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# the columns of a cohort frame that carry a meaning of their own (never a clinical variable or feature);
# defined here, the lowest layer that reads cohort columns, for the analysis side to import
RESERVED = ("patient_id", "label", "time", "event", "center", "split")


def check_text_encoding(encoding: str) -> str:
    """The codec name of ``encoding`` when it decodes bytes to text; a ValueError saying why not otherwise.

    ``codecs.lookup`` also knows codecs that are not text encodings (``rot13``
    maps text to text, ``base64`` and ``zlib`` bytes to bytes); decoding a file
    with them fails or yields something else than its text.
    """
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r} (e.g. \"utf-8\", \"cp1252\", \"latin-1\")") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{encoding!r} is not a text encoding (it does not turn bytes into text); use e.g. "
                         "\"utf-8\", \"cp1252\" or \"latin-1\"")
    return info.name


class ConfigError(CohortlabError, ValueError):
    """A study.toml that cannot be used; the message names the file and the key."""


class StudySection(_Strict):
    name: Name
    description: str = ""
    seed: int = 0
    store: str = "store.duckdb"
    log: str = "logs"
    # what the models predict: the binary ``label`` or the time to ``event`` (``time``, ``event``)
    endpoint: Literal["binary", "survival"] = "binary"


class Manifests(_Strict):
    patients: str
    slides: str | None = None
    scans: str | None = None
    encoding: str = "utf-8"  # of every CSV manifest, read strictly (e.g. "cp1252" for a CSV saved by Excel)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        check_text_encoding(v)  # a ValueError naming the encoding: unknown, or not bytes -> text (rot13, base64)
        return v


class CohortSection(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SplitSection(_Strict):
    external_centers: list[str] = Field(default_factory=list)
    internal_fraction: float = Field(default=0.25, ge=0, lt=1)
    seed: int = 0
    column: str | None = None  # take the split from this cohort column instead


# model kinds that predict time to event (their score is a risk: higher = worse); a view of the kind table
SURVIVAL_KINDS = kinds_where(endpoint="survival")


def check_kind(value: str) -> str:
    """``value`` when it is a model kind of :data:`pipeline.model_kinds.KINDS`."""
    if value not in KINDS:
        raise PydanticCustomError("literal_error", "Input should be one of {expected}",
                                  {"expected": ", ".join(repr(k) for k in KINDS)})
    return value


def _alternatives(names: tuple[str, ...]) -> str:
    """``"a, b and c"``."""
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


class Model(_Strict):
    name: Name
    kind: Annotated[str, AfterValidator(check_kind)]  # a row of the kind table (pipeline/model_kinds.py)
    # the model's endpoint; None: the study's ([study] endpoint); survival kinds are always "survival"
    endpoint: Literal["binary", "survival"] | None = None
    features: list[str] = Field(default_factory=list)  # "feature_set" or "feature_set:pooling"
    clinical: list[str] = Field(default_factory=list)
    # a regression model's R-style formula (right-hand side) instead of `clinical`, which it then fills
    formula: str | None = None
    scores: list[str] = Field(default_factory=list)  # other models whose scores are inputs
    members: list[str] = Field(default_factory=list)  # for voting / stacking
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    # a model fitted on other models' out-of-fold scores refits them inside each outer fold (nested cross-fitting)
    nested: bool = True
    # ComBat harmonisation of the image features across the cohort column `batch`, fitted inside each training
    # fold; harmonize_covariates: cohort columns whose effects ComBat protects (never the outcome)
    harmonize: Literal["combat", "none"] = "none"
    batch: str = "center"
    harmonize_covariates: list[str] = Field(default_factory=list)
    # a published model (kind "fixed", analytics.models.fixed): its coefficients by R's column names, for a Cox
    # model its baseline survival by time (at lp_centre, else at all covariates zero); an explicit threshold
    coefficients: dict[str, float] | None = None
    baseline_survival: dict[float, float] | None = None
    lp_centre: float | None = None
    threshold: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    # a single-event survival kind on a competing-risk outcome: "cause_specific" models the cause-specific hazard
    # of [validation] cause (discrimination only); without it such a model is refused
    competing: Literal["cause_specific"] | None = None
    # reference levels of its clinical variables from [variables] (set with the study; see StudyConfig)
    _references: dict[str, str] = PrivateAttr(default_factory=dict)
    # the study's status codes and cause of interest (set with the study; see StudyConfig)
    _causes: Causes | None = PrivateAttr(default=None)
    # the study's [imputation] when it is method = "mice", and the seed of its chains (set with the study)
    _imputation: ImputationSettings | None = PrivateAttr(default=None)
    _imputation_seed: int = PrivateAttr(default=0)

    @model_validator(mode="before")
    @classmethod
    def _formula_inputs(cls, data: Any) -> Any:
        # the variables a formula reads are the model's clinical inputs: every stage reading `clinical` sees them
        if not isinstance(data, dict) or data.get("formula") is None:
            return data
        where = f"model '{data.get('name', '?')}'"
        text = data["formula"]
        if not isinstance(text, str):
            raise ValueError(f"{where}: formula is a text, e.g. \"histol + stage + rcs(age, 4)\"")
        if data.get("clinical"):
            raise ValueError(f"{where}: give formula or clinical, not both (the formula names the clinical inputs)")
        try:
            parsed = parse_formula(text)
        except FormulaError as exc:
            raise ValueError(f"{where}: formula \"{text}\": {exc}") from None
        reserved = [v for v in parsed.variables if v in RESERVED]
        if reserved:
            raise ValueError(f"{where}: formula \"{text}\": {', '.join(reserved)} is the outcome, follow-up, "
                             "identity or split, not an input")
        return {**data, "clinical": list(parsed.variables)}

    @model_validator(mode="before")
    @classmethod
    def _published_endpoint(cls, data: Any) -> Any:
        # a published Cox model is known by its baseline survival: its endpoint follows from it
        if isinstance(data, dict) and data.get("baseline_survival") is not None and data.get("endpoint") is None:
            return {**data, "endpoint": "survival"}
        return data

    @model_validator(mode="after")
    def _published(self) -> Model:
        where = f"model '{self.name}'"
        given = [k for k in ("coefficients", "baseline_survival", "lp_centre", "threshold")
                 if getattr(self, k) is not None]
        if not self.traits.published:
            if given:
                raise ValueError(f"{where}: {', '.join(given)} apply only to published models (kind = \"fixed\")")
            return self
        if self.formula is None or not self.coefficients:
            raise ValueError(f"{where}: a fixed model needs formula and coefficients = {{ ... }} (R's column names, "
                             "e.g. { \"(Intercept)\" = -3.1, age = 0.042 })")
        if self.grid or self.params or self.features or self.scores:
            raise ValueError(f"{where}: a fixed model is never fitted; remove grid, params, features and scores")
        bad = [k for k, v in self.coefficients.items() if v != v or v in (float("inf"), float("-inf"))]
        if bad:
            raise ValueError(f"models.{self.name}.coefficients.{bad[0]}: not a finite number")
        survival = self.endpoint == "survival"
        if survival:
            if not self.baseline_survival:
                raise ValueError(f"{where}: a fixed survival model needs baseline_survival = {{ 60 = 0.93 }} "
                                 "(time = survival at the baseline)")
            if "(Intercept)" in self.coefficients:
                raise ValueError(f"models.{self.name}.coefficients.(Intercept): a Cox model has no intercept "
                                 "(its baseline survival holds it)")
            off = [t for t, s in self.baseline_survival.items() if not (t > 0 and 0 < s < 1)]
            if off:
                raise ValueError(f"models.{self.name}.baseline_survival.{off[0]:g}: give a time > 0 and a "
                                 "survival strictly between 0 and 1")
            if self.threshold is not None:
                raise ValueError(f"models.{self.name}.threshold: a threshold applies to a binary endpoint")
        else:
            if self.baseline_survival is not None or self.lp_centre is not None:
                raise ValueError(f"{where}: baseline_survival and lp_centre apply to a survival model "
                                 "(endpoint = \"survival\")")
            if "(Intercept)" not in self.coefficients:
                raise ValueError(f"models.{self.name}.coefficients: a logistic model needs \"(Intercept)\"")
        return self

    @model_validator(mode="after")
    def _formula_kind(self) -> Model:
        if self.formula is not None and self.traits.regression is None and not self.traits.published:
            raise ValueError(f"model '{self.name}': a formula applies to regression models "
                             f"({_alternatives(kinds_where(regression='logit') + kinds_where(regression='cox'))}), "
                             f"not {self.kind}")
        return self

    @property
    def references(self) -> dict[str, str]:
        """Reference levels of its clinical variables declared in ``[variables]`` (``x.reference``)."""
        return dict(self._references)

    @property
    def causes(self) -> Causes | None:
        """The study's declared status codes and cause of interest (None: a 0/1 event, or a model read alone)."""
        return self._causes

    @property
    def imputation(self) -> ImputationSettings | None:
        """The study's ``[imputation]`` when ``method = "mice"`` (its fits impute inside every fold), else None."""
        return self._imputation

    @property
    def imputation_seed(self) -> int:
        """The seed of the imputation chains: ``[imputation] seed``, else the study's."""
        return self._imputation_seed

    @model_validator(mode="after")
    def _harmonize(self) -> Model:
        where = f"model '{self.name}'"
        if self.harmonize == "none":
            if self.batch != "center" or self.harmonize_covariates:
                raise ValueError(f"{where}: batch and harmonize_covariates apply only with harmonize = \"combat\"")
            return self
        if not self.traits.harmonisable:
            raise ValueError(f"{where}: harmonize = \"combat\" applies to "
                             f"{_alternatives(kinds_where(harmonisable=True))} models, not {self.kind}")
        if not self.features:
            raise ValueError(f"{where}: harmonize = \"combat\" harmonises image features; the model has none")
        # the centre is the default batch (and may be a covariate of another batch): every other reserved column
        # is the outcome, follow-up, identity or split, never a batch nor a protected covariate
        reserved = tuple(c for c in RESERVED if c != "center")
        if self.batch in reserved:
            raise ValueError(f"{where}: batch = \"{self.batch}\" cannot be a batch; name the centre column "
                             "(default \"center\")")
        bad = [c for c in self.harmonize_covariates if c in reserved or c == self.batch]
        if bad:
            raise ValueError(f"{where}: harmonize_covariates cannot hold {bad} (the outcome, follow-up, split "
                             "or the batch itself)")
        if len(set(self.harmonize_covariates)) < len(self.harmonize_covariates):
            raise ValueError(f"{where}: harmonize_covariates lists a column twice")
        return self

    @model_validator(mode="after")
    def _penalty(self) -> Model:
        # logistic penalties (analytics.models.classical.PENALTIES; pipeline never imports analytics): checked
        # here so a typo fails at load, not once fitting has started
        if self.traits.regression != "logit":
            return self
        known = ("l2", "l1", "elasticnet", "none")
        key = f"models.{self.name}.params.penalty"
        penalty = self.params.get("penalty", "l2")
        if penalty not in known:
            raise ValueError(f"{key} = {penalty!r}: use one of {', '.join(repr(k) for k in known)}")
        bad = [p for p in self.grid.get("penalty", []) if p not in known[:3]]
        if bad:
            raise ValueError(f"models.{self.name}.grid.penalty: {bad} cannot be tuned; use "
                             f"{', '.join(repr(k) for k in known[:3])} (penalty \"none\" is set in params)")
        if penalty == "none":
            tuned = [k for k in ("C", "l1_ratio", "penalty") if k in self.grid or (k in self.params and k != "penalty")]
            if tuned:
                raise ValueError(f"{key} = \"none\" is maximum likelihood (as R's glm): remove "
                                 f"{', '.join(f'models.{self.name}.grid.{k}' if k in self.grid else f'models.{self.name}.params.{k}' for k in tuned)}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # a model without harmonisation dumps as before it existed (its fit identity is unchanged)
        out = handler(self)
        if self.harmonize == "none":
            for key in ("harmonize", "batch", "harmonize_covariates"):
                out.pop(key, None)
        if self.competing is None:  # nor one on a single-event outcome
            out.pop("competing", None)
        # a model without a formula dumps as before the key existed; one with a formula without the clinical
        # inputs it fills (the dump reads back as the same model)
        out.pop("clinical" if self.formula is not None else "formula", None)
        # a fitted model dumps as before published models existed
        for key in ("coefficients", "baseline_survival", "lp_centre", "threshold"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    @property
    def traits(self) -> KindTraits:
        """The row of the kind table for this model's kind: what every stage reads instead of the kind's name."""
        return KINDS[self.kind]

    @model_validator(mode="after")
    def _inputs(self) -> Model:
        traits = self.traits
        if traits.ensemble:
            if len(self.members) < 2:
                raise ValueError(f"a {self.kind} model needs at least two members")
        elif not (self.features or self.clinical or self.scores):
            raise ValueError("a model needs inputs: features, clinical or scores")
        if traits.bags and len(self.features) != 1:
            raise ValueError(f"a {self.kind} model reads instance bags of exactly one feature set")
        if traits.survival and self.endpoint == "binary":
            raise ValueError(f"a {self.kind} model predicts a survival endpoint; remove endpoint = \"binary\"")
        if traits.binary and self.endpoint == "survival":
            raise ValueError(f"a {self.kind} model predicts a binary label; use a survival kind "
                             f"({', '.join(kinds_where(endpoint='survival'))}) for endpoint = \"survival\"")
        return self


class StudyConfig(_Strict):
    """A validated study.toml; ``root`` is the folder that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    root: Path
    study: StudySection
    manifests: Manifests
    variables: dict[str, Variable] = Field(default_factory=dict)
    feature_sets: list[FeatureSet] = Field(default_factory=list)
    cohort: CohortSection | None = None
    split: SplitSection = Field(default_factory=SplitSection)
    models: list[Model] = Field(default_factory=list)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    explain: ExplainSection = Field(default_factory=ExplainSection)
    report: Report = Field(default_factory=Report)
    compute: Compute = Field(default_factory=Compute)
    sql: SqlLimits = Field(default_factory=SqlLimits)
    # [imputation]: absent, the study imputes as before (median / mode inside the training folds)
    imputation: ImputationSettings | None = None

    @model_validator(mode="after")
    def _cross(self) -> StudyConfig:
        _unique("feature_sets", [f.name for f in self.feature_sets])
        _unique("models", [m.name for m in self.models])
        fs_names = {f.name for f in self.feature_sets}
        names = [m.name for m in self.models]
        for i, m in enumerate(self.models):
            for ref in m.features:
                if ref.split(":", 1)[0] not in fs_names:
                    raise ValueError(f"models[{i}].features: unknown feature set '{ref}'")
            for ref in m.scores + m.members:
                if ref not in names[:i]:
                    raise ValueError(
                        f"models[{i}]: '{ref}' must name a model defined earlier in the file"
                    )
        check_competing_models(self.models, study_causes(self.variables, self.validation.cause))
        mice = self.imputation if self.imputation is not None and self.imputation.method == "mice" else None
        for i, m in enumerate(self.models):
            _formula_variables(i, m, self.variables)
            m._imputation = mice
            m._imputation_seed = self.study.seed if mice is None or mice.seed is None else mice.seed
            # a published Cox model's risks exist only at the times of its baseline survival
            if m.baseline_survival is not None:
                if not self.validation.horizons:
                    raise ValueError(f"model '{m.name}': a fixed survival model needs [validation] horizons, each one "
                                     f"of its baseline_survival times ({', '.join(f'{t:g}' for t in m.baseline_survival)})")
                off = [t for t in self.validation.horizons if float(t) not in m.baseline_survival]
                if off:
                    raise ValueError(f"model '{m.name}': [validation] horizons {', '.join(f'{t:g}' for t in off)} not "
                                     "among its baseline_survival times "
                                     f"({', '.join(f'{t:g}' for t in m.baseline_survival)})")
        # with the centre rule, the external centres are known here: a misspelt one stops at load
        off_centres = [c for c in self.validation.updating_centers if c not in self.split.external_centers]
        if off_centres and self.split.column is None:
            raise ValueError(f"validation.updating_centers: no external centre named "
                             f"{', '.join(repr(c) for c in off_centres)} (split.external_centers: "
                             f"{', '.join(self.split.external_centers) or 'none'})")
        for j, pair in enumerate(self.validation.compare):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"validation.compare[{j}]: give two different model names, e.g. [\"a\", \"b\"]")
            unknown = [n for n in pair if n not in names]
            if unknown:
                raise ValueError(f"validation.compare[{j}]: no model named {', '.join(repr(n) for n in unknown)} "
                                 f"(models: {', '.join(names) or 'none'})")
        for j, pair in enumerate(self.validation.added_value):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"validation.added_value[{j}]: give two different model names, new then old, "
                                 f"e.g. [\"fusion\", \"clinical\"]")
            unknown = [n for n in pair if n not in names]
            if unknown:
                raise ValueError(f"validation.added_value[{j}]: no model named "
                                 f"{', '.join(repr(n) for n in unknown)} (models: {', '.join(names) or 'none'})")
        return self

    # --- resolved paths -------------------------------------------------
    def path(self, relative: str | Path) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else (self.root / p).resolve()

    @property
    def store_path(self) -> Path:
        return self.path(self.study.store)

    @property
    def causes(self) -> Causes | None:
        """The declared status codes and the event of interest; None for a 0/1 event (no codes declared)."""
        return study_causes(self.variables, self.validation.cause)

    @property
    def report_dir(self) -> Path:
        return self.path(self.report.dir or f"reports/{self.study.name}")

    @property
    def log_dir(self) -> Path:
        return self.path(self.study.log)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def feature_set(self, name: str) -> FeatureSet:
        for f in self.feature_sets:
            if f.name == name:
                return f
        raise ConfigError(f"{self.root / 'study.toml'}: no feature set named '{name}'")

    def model(self, name: str) -> Model:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"{self.root / 'study.toml'}: no model named '{name}'")

    def endpoint(self, model: Model | str) -> str:
        """A model's endpoint: survival kinds predict ``"survival"``, others their own or the study's endpoint.

        A voting, stacking or fusion model without its own ``endpoint`` takes that of its inputs when they
        all agree on one.
        """
        spec = self.model(model) if isinstance(model, str) else model
        if spec.traits.survival:
            return "survival"
        if spec.endpoint is not None:
            return spec.endpoint
        inputs = [*spec.members, *spec.scores]
        ends = {self.endpoint(n) for n in inputs if any(m.name == n for m in self.models)}
        if spec.traits.endpoint == "inputs" and len(ends) == 1:
            return ends.pop()
        return self.study.endpoint


def _formula_variables(i: int, model: Model, variables: dict[str, Variable]) -> None:
    """A model's formula against ``[variables]``; the model's reference levels from it."""
    if model.traits.regression is not None or model.traits.published:  # treatment coding (one-hot elsewhere)
        model._references = {v: variables[v].reference for v in model.clinical
                             if v in variables and variables[v].reference is not None}
    if model.formula is None:
        return
    parsed = parse_formula(model.formula)
    where = f"models[{i}].formula: \"{model.formula}\""
    for var, k in parsed.splines.items():
        declared = variables.get(var)
        if declared is not None and (declared.levels is not None or declared.type not in (None, "numeric", "integer")):
            raise ValueError(f"{where}: rcs({var}, {k}): {var} is {declared.type or 'categorical'} ([variables] {var}); "
                             "a spline needs a number")
    for var, ref in parsed.references.items():
        declared = variables.get(var)
        if declared is not None and declared.levels is not None and ref not in declared.levels:
            raise ValueError(f"{where}: C({var}, ref = \"{ref}\"): {ref!r} is not one of {var}'s levels "
                             f"({', '.join(declared.levels)})")


def toml_value(v: Any) -> str:
    """One value as TOML: booleans, numbers, strings, arrays and inline tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(data: dict[str, Any]) -> str:
    """A study dictionary as study.toml text: a table per key, an array of tables for lists of tables."""
    parts = []
    for key, val in data.items():
        items = val if isinstance(val, list) else [val]
        header = f"[[{key}]]" if isinstance(val, list) else f"[{key}]"
        parts += [header + "\n" + "".join(f"{k} = {toml_value(x)}\n" for k, x in item.items()) for item in items]
    return "\n".join(parts)


def _unique(key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"{key}[{i}].name: '{n}' is used twice")
        seen.add(n)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_study(data: dict[str, Any], root: Path, source: str = "study.toml") -> StudyConfig:
    """Validate a parsed study dictionary; errors name ``source`` and the key."""
    try:
        study = StudyConfig.model_validate({**data, "root": Path(root).resolve()})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _loc(tuple(p for p in err["loc"] if p not in ("function-after",)))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling and section)"
            lines.append(f"{source}: key '{loc}': {msg}")
        raise ConfigError("\n".join(lines)) from None
    for fs in study.feature_sets:
        fs._base = study.root
    return study


# byte-order marks of the encodings a text editor may save in; TOML files are UTF-8
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def _toml_text(path: Path) -> str:
    """The text of a study file, which TOML requires to be UTF-8 (a UTF-8 byte-order mark is dropped).

    Raises
    ------
    ConfigError
        Naming the file, and the encoding its byte-order mark declares or the line
        and byte offset of the first byte that is not UTF-8.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    data = path.read_bytes()
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise ConfigError(f"{path}: saved as {name} (byte-order mark 0x{bom.hex()}); a study file must be UTF-8: "
                              "save it again as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: line {line}: byte 0x{data[exc.start:exc.start + 1].hex()} (byte offset "
                          f"{exc.start}) is not valid UTF-8; a study file must be UTF-8: save it again as UTF-8"
                          ) from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate ``study.toml`` (or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "study.toml"
    if not p.exists():
        raise ConfigError(f"{p}: no such study file")
    try:
        data = tomllib.loads(_toml_text(p))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_study(data, p.parent, source=str(p))
