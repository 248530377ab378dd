"""``[variables]`` of ``study.toml``: the dictionary entry of one clinical column.

Its type, unit, role and label; a categorical column's levels in the order to show them, and the
reference level of its treatment coding in regression models (R's ``contr.treatment``).
"""

from __future__ import annotations

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
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if self.reference is None:  # a variable without one dumps as before the key existed
            out.pop("reference", None)
        return out


__all__ = ["ROLES", "VAR_TYPES", "Variable"]
