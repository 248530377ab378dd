"""What every section of ``study.toml`` is built on: the strict, frozen base model and the names of things.

A study, feature set or model name is also a folder name, so it is a letter, then letters, digits, ``_``
and ``-`` (no separator, no line break, no leading dot).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# \Z, not $: "$" also matches before a final line break, so "t\n" would pass and name a folder "t\n"
NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_\-]*\Z")


def check_name(value: str) -> str:
    """``value`` when it is a valid study, feature-set or model name (a letter, then letters, digits, ``_``, ``-``)."""
    if not NAME.match(value):
        raise ValueError("must start with a letter and hold only letters, digits, '_' and '-'")
    return value


Name = Annotated[str, AfterValidator(check_name)]


class Strict(BaseModel):
    """A section of study.toml: unknown keys are errors (a misspelt key is named), and it is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


__all__ = ["NAME", "Name", "Strict", "check_name"]
