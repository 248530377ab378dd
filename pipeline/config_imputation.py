"""``[imputation]`` of ``study.toml``: how missing clinical values are handled.

``method = "mice"`` imputes by chained equations (:mod:`analytics.impute`), ``m`` times with ``maxit`` iterations,
the outcome in the models; ``"single"`` is one median / mode fill inside each training fold (kept for comparison:
it understates every standard error); ``"complete_case"`` drops incomplete patients. ``from`` reads imputations
made elsewhere, in ``mice::complete(imp, "long")`` format. A study without the table behaves as before.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config_base import Strict

FROM_SPLITS = ("train", "internal", "external")
"""The keys of ``from = { train = ..., internal = ..., external = ... }``."""
IMPUTATION_METHODS = ("mice", "single", "complete_case")
"""The ``[imputation] method`` values."""
VARIABLE_METHODS = ("pmm", "norm", "logreg", "polyreg", "polr")
"""The per-variable methods of ``[imputation.methods]`` (mice's names)."""


def _relative_inside(path: str, key: str) -> None:
    """Refuse a ``from`` file that is empty, absolute or climbs out of the study folder (``..``); the reader checks
    again after following symbolic links (:mod:`analytics.impute.from_file`)."""
    if not path.strip():
        raise ValueError(f"{key} = \"\": give the imputations file, e.g. {key} = \"manifests/imputed.csv\"")
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if PurePosixPath(path.replace("\\", "/")).is_absolute() or PureWindowsPath(path).drive or ".." in parts:
        raise ValueError(f"{key} = {path!r}: the imputations file is named relative to the study folder and lies "
                         "inside it (no absolute path, no '..')")


class ImputationSettings(Strict):
    """The ``[imputation]`` table.

    Attributes
    ----------
    method : {"mice", "single", "complete_case"}
    m : int
        Imputations (at least 2; default 20).
    maxit : int
        Iterations of each chain (default 10).
    seed : int or None
        Seed of the chains (default: the study's seed).
    auxiliary : list of str
        Cohort columns used only to impute, never by a model.
    methods : dict
        Column → method overriding mice's default for its type.
    from_ : str, dict or None
        ``from = "manifests/imputed.csv"``: imputations made elsewhere (long format), relative to the study folder
        and inside it; or one file per split, ``from = { train = "...", internal = "...", external = "..." }``,
        each filling only its split's patients (held-out patients then imputed apart from the development ones).
    validation_imputation : {"without_outcome", "with_outcome"}
        Held-out patients imputed by a second set of chained equations fitted on the development data without the
        outcome (Hoogland et al. 2020), or each validation split imputed on its own with its outcomes.
    m_boot : int
        Imputations inside each bootstrap replicate of the internal validation (default 5).
    donors : int
        Donors of predictive mean matching (default 5, as mice).
    """

    method: Literal["mice", "single", "complete_case"] = "mice"
    m: int = 20
    maxit: int = Field(default=10, ge=1)
    seed: int | None = None
    auxiliary: list[str] = Field(default_factory=list)
    methods: dict[str, Literal["pmm", "norm", "logreg", "polyreg", "polr"]] = Field(default_factory=dict)
    from_: str | dict[str, str] | None = Field(default=None, alias="from")
    validation_imputation: Literal["without_outcome", "with_outcome"] = "without_outcome"
    m_boot: int = 5
    donors: int = Field(default=5, ge=1)

    @field_validator("m")
    @classmethod
    def _m(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"m = {v}: multiple imputation needs at least 2 imputations (mice's default is 5; "
                             "20 or more for published estimates)")
        return v

    @field_validator("m_boot")
    @classmethod
    def _m_boot(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"m_boot = {v}: each bootstrap replicate needs at least 2 imputations")
        return v

    @field_validator("auxiliary")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"auxiliary names {dup} more than once")
        return v

    @field_validator("from_")
    @classmethod
    def _from_files(cls, v: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if isinstance(v, dict):
            if not v:
                raise ValueError("from = {}: name one file per split, e.g. from = { train = \"manifests/train.csv\", "
                                 "internal = \"manifests/internal.csv\" }")
            unknown = [k for k in v if k not in FROM_SPLITS]
            if unknown:
                raise ValueError(f"from: unknown split(s) {unknown}; the keys are {', '.join(FROM_SPLITS)}")
            for k, path in v.items():
                _relative_inside(path, f"from.{k}")
        elif v is not None:
            _relative_inside(v, "from")
        return v

    @model_validator(mode="after")
    def _from_is_a_file(self) -> ImputationSettings:
        if self.from_ is not None and self.method != "mice":
            raise ValueError(f"from = {self.from_!r} gives multiple imputations; it needs method = \"mice\", "
                             f"not {self.method!r}")
        return self

    def from_files(self) -> dict[str | None, str]:
        """``from`` as ``split -> file`` (``None -> file`` for one file filling every split); empty without it."""
        if self.from_ is None:
            return {}
        return {None: self.from_} if isinstance(self.from_, str) else {k: self.from_[k] for k in FROM_SPLITS
                                                                       if k in self.from_}

    def check_columns(self, columns: list[str], source: str) -> None:
        """Every column that ``auxiliary`` and ``methods`` name is among ``columns`` (those of ``source``, the cohort
        file); a ValueError naming the key otherwise."""
        known = set(columns)
        for key, names in (("auxiliary", self.auxiliary), ("methods", list(self.methods))):
            unknown = [c for c in names if c not in known]
            if unknown:
                raise ValueError(f"[imputation] {key}: no column {', '.join(repr(c) for c in unknown)} in {source} "
                                 f"(its columns: {', '.join(sorted(known))})")


__all__ = ["FROM_SPLITS", "IMPUTATION_METHODS", "VARIABLE_METHODS", "ImputationSettings"]
