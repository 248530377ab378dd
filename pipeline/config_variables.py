"""``[variables]`` of ``study.toml``: the dictionary entry of one clinical column.

Its type, unit, role and label; a categorical column's levels in the order to show them, and the
reference level of its treatment coding in regression models (R's ``contr.treatment``). An event column may
declare its status codes: ``codes = { "0" = "censored", "1" = "progression", "2" = "death" }`` (0 is censoring;
two or more other codes make a competing-risk outcome).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import field_validator, model_serializer, model_validator

from pipeline.config_base import Strict

ROLES = ("predictor", "outcome", "time", "event", "id", "strata", "other")
VAR_TYPES = ("numeric", "integer", "binary", "categorical", "text", "date")


class Variable(Strict):
    """Dictionary entry for one clinical column (type is inferred when left out)."""

    type: Literal["numeric", "integer", "binary", "categorical", "text", "date"] | None = None
    unit: str | None = None
    role: Literal["predictor", "outcome", "time", "event", "id", "strata", "other"] | None = None
    label: str | None = None
    # the levels of a categorical column, in the order tables, one-hot encodings and figures show them;
    # every value in the manifest must be one of them
    levels: list[str] | None = None
    # the reference level of its treatment coding in regression models (default: the first of `levels`)
    reference: str | None = None
    # an event column's status codes and what each means: code 0 is censoring, every other code a cause
    codes: dict[str, str] | None = None

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        out: dict[str, str] = {}
        for key, label in v.items():
            k = key.strip()
            if not k.isdigit() or str(int(k)) != k:
                raise ValueError(f"codes: {key!r} is not a status code; codes are whole numbers written as text "
                                 '("0" = censored, "1", "2", ... the causes)')
            if not label.strip():
                raise ValueError(f"codes: code {k} has an empty label")
            out[k] = label.strip()
        if "0" not in out:
            raise ValueError('codes must declare "0", the censored patients (e.g. "0" = "censored")')
        if len(out) < 2:
            raise ValueError('codes must declare at least one cause besides "0" (e.g. "1" = "death")')
        labels = list(out.values())
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"codes: label(s) {dup} name more than one code")
        return dict(sorted(out.items(), key=lambda kv: int(kv[0])))

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
        if self.reference is not None:
            if self.type not in (None, "categorical", "binary"):
                raise ValueError(f"reference applies to categorical variables, not type '{self.type}'")
            if self.levels is not None and self.reference not in self.levels:
                raise ValueError(f"reference {self.reference!r} is not one of its levels ({', '.join(self.levels)})")
        if self.codes is not None:
            if self.role not in (None, "event"):
                raise ValueError(f"codes apply to event variables, not role '{self.role}'")
            if self.type not in (None, "integer", "numeric"):
                raise ValueError(f"codes apply to integer status columns, not type '{self.type}'")
        return self

    @property
    def causes(self) -> dict[int, str]:
        """The declared causes, ``code -> label`` without code 0 (empty: no codes declared)."""
        return {int(k): lab for k, lab in (self.codes or {}).items() if k != "0"}

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if self.reference is None:  # a variable without one dumps as before the key existed
            out.pop("reference", None)
        if self.codes is None:  # nor one without codes
            out.pop("codes", None)
        return out


@dataclass(frozen=True)
class Causes:
    """A study's declared status codes and its event of interest (``[validation] cause``).

    Attributes
    ----------
    codes
        Every declared code and its label, code 0 (censored) first.
    cause
        The code of the event of interest.
    """

    codes: dict[int, str]
    cause: int

    @property
    def label(self) -> str:
        """The label of the event of interest."""
        return self.codes[self.cause]

    @property
    def competing(self) -> dict[int, str]:
        """The other causes, ``code -> label`` (empty: a single event type)."""
        return {c: lab for c, lab in self.codes.items() if c not in (0, self.cause)}

    @property
    def is_competing(self) -> bool:
        """Whether another cause competes with the event of interest."""
        return bool(self.competing)

    @property
    def heading(self) -> str:
        """``"cause: progression, competing: death"``: how every competing-risk figure and table is labelled."""
        return f"cause: {self.label}, competing: {', '.join(self.competing.values()) or 'none'}"


def declared_codes(variables: Mapping[str, Variable]) -> dict[int, str]:
    """The status codes the event variables declare, ``code -> label`` (empty when none declares codes).

    Raises
    ------
    ValueError
        Two event variables declare different codes (the cohort's ``event`` could be either).
    """
    found = {name: v.codes for name, v in variables.items() if v.codes is not None}
    distinct = {tuple(c.items()) for c in found.values() if c is not None}
    if len(distinct) > 1:
        raise ValueError(f"variables {', '.join(sorted(found))} declare different codes; the event variables of a "
                         "study share one set of codes")
    codes = next(iter(found.values()), None) or {}
    return {int(k): lab for k, lab in codes.items()}


def study_causes(variables: Mapping[str, Variable], cause: str | None) -> Causes | None:
    """The study's :class:`Causes`, or None for a study whose event is 0/1 without declared codes.

    Raises
    ------
    ValueError
        ``cause`` without declared codes, ``cause`` not a declared label, or several causes and no ``cause``;
        the message names ``[validation] cause``.
    """
    codes = declared_codes(variables)
    if not codes:
        if cause is not None:
            raise ValueError(f"validation.cause = {cause!r}: no event variable declares codes "
                             '(e.g. status = { role = "event", codes = { "0" = "censored", "1" = ... } })')
        return None
    causes = {c: lab for c, lab in codes.items() if c != 0}
    if cause is None:
        if len(causes) > 1:
            raise ValueError(f"validation.cause is required: the event has {len(causes)} causes "
                             f"({', '.join(causes.values())}); name the event of interest, "
                             f"e.g. cause = {next(iter(causes.values()))!r}")
        return Causes(codes, next(iter(causes)))
    by_label = {lab: c for c, lab in causes.items()}
    if cause not in by_label:
        raise ValueError(f"validation.cause = {cause!r} is not a declared cause; the causes are "
                         f"{', '.join(repr(x) for x in by_label)}")
    return Causes(codes, by_label[cause])


def check_competing_models(models: Iterable[Any], causes: Causes | None) -> None:
    """Refuse single-event survival models on a competing-risk outcome unless they set
    ``competing = "cause_specific"``; refuse that setting where it does not apply. Each model learns the
    study's causes (``Model.causes``).

    Raises
    ------
    ValueError
        Naming the model and what to use instead.
    """
    competing = causes is not None and causes.is_competing
    for i, m in enumerate(models):
        m._causes = causes  # what a competing-risk learner is fitted for
        traits = m.traits
        single = traits.survival and not traits.competing
        if m.competing is not None and not single:
            raise ValueError(f"models[{i}] ('{m.name}'): competing = {m.competing!r} applies to single-event "
                             f"survival kinds, not kind {m.kind!r}")
        if m.competing is not None and not competing:
            raise ValueError(f"models[{i}] ('{m.name}'): competing = {m.competing!r} applies to an outcome with "
                             "competing causes; the event variables declare none")
        if competing and single and m.competing is None:
            assert causes is not None
            raise ValueError(
                f"models[{i}] ('{m.name}'): kind {m.kind!r} models one event type, but the outcome has competing "
                f"causes ({causes.heading}); use kind 'cause_specific_cox' or 'fine_gray', or set "
                f'competing = "cause_specific" to model the cause-specific hazard of {causes.label!r} '
                "(validated for discrimination only)")


__all__ = ["ROLES", "VAR_TYPES", "Causes", "Variable", "check_competing_models", "declared_codes", "study_causes"]
