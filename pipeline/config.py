"""The study description: one ``study.toml`` read with :mod:`tomllib` and validated.

Every path in the file is relative to the folder that holds ``study.toml``.
Validation errors name the key (``feature_sets[1].mpp``) and the file, so a
user can fix the file without reading code.
"""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.errors import CohortlabError
from pipeline.model_kinds import KINDS, KindTraits, kinds_where

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# \Z, not $: "$" also matches before a final line break, so "t\n" would pass and name a folder "t\n"
NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_\-]*\Z")
ROLES = ("predictor", "outcome", "time", "event", "id", "strata", "other")
VAR_TYPES = ("numeric", "integer", "binary", "categorical", "text", "date")
STAIN_NORMS = ("macenko", "reinhard", "none")  # feature_sets[].stain_norm
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


def check_name(value: str) -> str:
    """``value`` when it is a valid study, feature-set or model name (a letter, then letters, digits, ``_``, ``-``)."""
    if not NAME.match(value):
        raise ValueError("must start with a letter and hold only letters, digits, '_' and '-'")
    return value


Name = Annotated[str, AfterValidator(check_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class Variable(_Strict):
    """Dictionary entry for one clinical column (type is inferred when left out)."""

    type: Literal["numeric", "integer", "binary", "categorical", "text", "date"] | None = None
    unit: str | None = None
    role: Literal["predictor", "outcome", "time", "event", "id", "strata", "other"] | None = None
    label: str | None = None
    # the levels of a categorical column, in the order tables, one-hot encodings and figures show them;
    # every value in the manifest must be one of them
    levels: list[str] | None = None

    @field_validator("levels", mode="before")
    @classmethod
    def _levels_text(cls, v: Any) -> Any:
        # levels written as numbers (codes 1, 2, 3) are the manifest's text "1", "2", "3"
        if isinstance(v, list):
            return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in v]
        return v

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("levels is a non-empty list of the column's values, in the order to show them")
        stripped = [x.strip() for x in v]
        if any(not x for x in stripped):
            raise ValueError("levels may not hold an empty value (leave a cell empty for missing)")
        dup = sorted({x for x in stripped if stripped.count(x) > 1})
        if dup:
            raise ValueError(f"levels {dup} are listed more than once")
        return stripped

    @model_validator(mode="after")
    def _levels_type(self) -> Variable:
        if self.levels is not None and self.type not in (None, "categorical"):
            raise ValueError(f"levels apply to categorical variables, not type '{self.type}'")
        return self


class FeatureSet(_Strict):
    """One immutable way of turning images into features.

    Fields not relevant to a modality must be left out; ``params`` holds
    encoder-specific extras and is part of the feature set's identity.
    """

    name: Name
    modality: Literal["wsi", "ct"]
    encoder: str
    weights: str = "pretrained"  # "pretrained" | "random" | a local file | a hf-hub: name
    pooling: list[Literal["mean", "max", "meanmax"]] = Field(default_factory=lambda: ["mean", "max", "meanmax"])
    batch_size: int = Field(default=32, ge=1)
    num_workers: int = Field(default=2, ge=0)
    # whole-slide images
    mpp: float | None = Field(default=None, gt=0)
    magnification: str | None = None
    tile_size: int | None = Field(default=None, ge=16)
    overlap: int = Field(default=0, ge=0)
    tissue_threshold: float = Field(default=0.25, ge=0, le=1)
    # colour normalisation of tiles before the encoder: "macenko" (Macenko et al. 2009), "reinhard"
    # (Reinhard et al. 2001) or "none"; its reference is fitted on tiles of the development centres' slides
    stain_norm: Literal["macenko", "reinhard", "none"] = "none"
    # CT volumes
    mode: Literal["3d", "2.5d", "radiomics"] | None = None
    spacing: list[float] | None = None
    window: list[float] | None = None
    margin_mm: float | None = Field(default=None, ge=0)
    input_size: list[int] | None = None
    bin_width: float | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("magnification")
    @classmethod
    def _mag(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+(\.\d+)?[xX]", v):
            raise ValueError("write an objective magnification as e.g. '20x'")
        return v

    @field_validator("stain_norm", mode="before")
    @classmethod
    def _stain_norm(cls, v: Any, info: ValidationInfo) -> Any:
        if v not in STAIN_NORMS:
            name = info.data.get("name", "?")
            raise ValueError(f"feature set '{name}': stain_norm {v!r} is not one of "
                             f"{', '.join(repr(m) for m in STAIN_NORMS)}")
        return v

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 3 or any(s <= 0 for s in v)):
            raise ValueError("spacing is three positive numbers in mm (x, y, z)")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 2 or v[0] >= v[1]):
            raise ValueError("window is [low, high] in HU with low < high")
        return v

    @model_validator(mode="after")
    def _modality_fields(self) -> FeatureSet:
        wsi_only = {"mpp", "magnification", "tile_size", "stain_norm"}
        ct_only = {"mode", "spacing", "window", "margin_mm", "input_size", "bin_width"}
        wrong = (ct_only if self.modality == "wsi" else wsi_only) & self.model_fields_set
        if wrong:
            raise ValueError(f"{sorted(wrong)} do not apply to modality '{self.modality}'")
        if self.mpp is not None and self.magnification is not None:
            raise ValueError("give either mpp or magnification, not both")
        return self

    def target_mpp(self) -> float:
        """Microns per pixel asked for (magnification 20x is taken as 0.5 mpp)."""
        if self.mpp is not None:
            return self.mpp
        if self.magnification is not None:
            return 10.0 / float(self.magnification[:-1])
        return 0.5

    # the folder of the study.toml that declared this feature set (set by parse_study)
    _base: Path | None = PrivateAttr(default=None)

    def weights_source(self) -> str:
        """``weights`` as the encoder loaders take it: a relative local file is found beside study.toml.

        Named choices (``pretrained``, ``random``, ``hf-hub:`` names, weight enums) pass unchanged, and a
        relative file that is not in the study folder is left to the loaders (relative to the working
        directory, as before), so the stored ``weights_spec`` never depends on where the study lives.
        """
        w = self.weights
        if w in ("pretrained", "random") or w.startswith("hf-hub:") or self._base is None:
            return w
        path = Path(w).expanduser()
        if path.is_absolute():
            return w
        beside = self._base / path
        return str(beside) if beside.is_file() else w


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

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # a model without harmonisation dumps as before it existed (its fit identity is unchanged)
        out = handler(self)
        if self.harmonize == "none":
            for key in ("harmonize", "batch", "harmonize_covariates"):
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


class Subgroup(_Strict):
    """How one cohort column splits the patients into subgroups: by its levels (no ``cuts``), or at ``cuts``
    (a numeric column: ``< 60`` and ``>= 60`` for ``cuts = [60]``)."""

    cuts: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sorted(self) -> Subgroup:
        if any(b <= a for a, b in zip(self.cuts, self.cuts[1:])):
            raise ValueError("cuts must be strictly increasing, e.g. [60] or [40, 60]")
        return self


THRESHOLD_RULES = ("youden", "closest_topleft", "closest.topleft", "topleft", "sensitivity", "specificity")
"""The ``[validation] threshold_rule`` values (:func:`analytics.stats.threshold`'s rules and pROC's spellings)."""


class ValidationSettings(_Strict):
    """The ``[validation]`` settings of study.toml (the result of validation is :class:`analytics.validation.Validation`)."""

    n_boot: int = Field(default=2000, ge=0)
    level: float = Field(default=0.95, gt=0, lt=1)
    # how the classification threshold is chosen on training scores (analytics.stats.threshold); "sensitivity" and
    # "specificity" choose the threshold reaching threshold_target on the training patients
    threshold_rule: str = "youden"
    threshold_target: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    compare: list[list[str]] = Field(default_factory=list)
    risk_quantiles: list[float] = Field(default_factory=lambda: [0.5])
    dca_thresholds: list[float] = Field(default_factory=lambda: [0.05, 0.95, 0.05])  # start, stop, step
    folds: int = Field(default=5, ge=2)
    # survival endpoints: the horizons (study time unit) of risk, AUC(t), Brier(t) and calibration; the first is
    # the main one (decision curve); empty: the quartiles of the training patients' event times
    horizons: list[float] = Field(default_factory=list)
    # binary models on a censored endpoint: the label is "event by label_horizon" (study time unit); when set and
    # the cohort has time and event, binary models also get AUC(t) and Brier(t) at it with IPCW on every patient
    # with follow-up (beside the complete-case measures)
    label_horizon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # performance per subgroup of these cohort columns (TRIPOD+AI fairness): {column = {cuts = [...]}}
    subgroups: dict[str, Subgroup] = Field(default_factory=dict)
    # added value of a model over another, [[new, old], ...]: ΔAUC, NRI, IDI and, for nested unpenalised
    # logistic models, the likelihood-ratio test
    added_value: list[list[str]] = Field(default_factory=list)
    # predicted-risk cut-offs of the categorical NRI and the reclassification tables, e.g. [0.2, 0.5]
    risk_cutoffs: list[float] = Field(default_factory=list)

    @field_validator("threshold_rule")
    @classmethod
    def _threshold_rule(cls, v: str) -> str:
        if v not in THRESHOLD_RULES:
            raise ValueError(f"unknown rule {v!r}; use one of {', '.join(repr(r) for r in THRESHOLD_RULES)}")
        return v

    @model_validator(mode="after")
    def _threshold_target(self) -> ValidationSettings:
        needs = self.threshold_rule in ("sensitivity", "specificity")
        if needs and self.threshold_target is None:
            raise ValueError(f"threshold_rule = {self.threshold_rule!r} needs threshold_target, the {self.threshold_rule} "
                             "to reach on the training patients (e.g. threshold_target = 0.9)")
        if not needs and self.threshold_target is not None:
            raise ValueError(f"threshold_target applies only to threshold_rule = 'sensitivity' or 'specificity', "
                             f"not {self.threshold_rule!r}")
        return self

    @model_validator(mode="after")
    def _risk_cutoffs(self) -> ValidationSettings:
        if any(not 0 < c < 1 for c in self.risk_cutoffs):
            raise ValueError(f"risk_cutoffs must lie strictly between 0 and 1, got {self.risk_cutoffs}")
        if any(b <= a for a, b in zip(self.risk_cutoffs, self.risk_cutoffs[1:])):
            raise ValueError(f"risk_cutoffs must be strictly increasing, got {self.risk_cutoffs}")
        return self


class ExplainSection(_Strict):
    """Whether ``run`` explains the models, and the sample budget of the explanations.

    A budget left out takes the explain stage's default (see the README). The
    budget used is recorded with each model's explanations and shown in the report.
    """

    enabled: bool = True
    max_rows: int | None = Field(default=None, ge=1)  # held-out patients explained per model (a seeded sample above)
    background: int | None = Field(default=None, ge=1)  # k-means centres summarising the training patients (Kernel SHAP)
    nsamples: int | None = Field(default=None, ge=1)  # coalitions per explained patient (Kernel SHAP)
    max_background: int | None = Field(default=None, ge=1)  # training patients (tree and linear explainers)
    max_units: int | None = Field(default=None, ge=1)  # inputs above which an image block is one player
    top_k: int | None = Field(default=None, ge=1)  # tiles per attention gallery row


class Compute(_Strict):
    """Where the embedding stage runs, on every path (``cohortlab embed`` / ``run`` / ``demo``, ``Study.embed()`` /
    ``Study.run()``): ``ray`` = "local", "auto" or "ray://host:port" (unset: this process); ``--ray`` overrides it."""

    ray: str | None = None
    ray_retries: int = Field(default=2, ge=0)  # tries again of a source whose worker process was lost

    @field_validator("ray")
    @classmethod
    def _ray(cls, v: str | None) -> str | None:
        if v is not None and not (v in ("local", "auto") or v.startswith("ray://") or ":" in v):
            raise ValueError(f"ray {v!r}: use \"local\", \"auto\", \"ray://host:port\" or \"host:port\"")
        return v


_MEMORY = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


class SqlLimits(_Strict):
    """``[sql]``: limits of user SQL (cohort files, views, ``cohortlab sql``) on the sandbox connection."""

    timeout_s: float = Field(default=300, gt=0, allow_inf_nan=False)  # a statement running longer is stopped
    memory_limit: str = "4GB"  # DuckDB's memory limit for one statement's work, e.g. "512MB", "16GB"

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not _MEMORY.fullmatch(v.strip()):
            raise ValueError(f"{v!r} is not an amount of memory; write e.g. \"4GB\" or \"512MB\"")
        return v.strip()


class Report(_Strict):
    dir: str | None = None  # default: reports/<study name> beside study.toml
    title: str | None = None
    explain_patients: list[str] = Field(default_factory=list)


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
