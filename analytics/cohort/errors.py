"""The one error of cohorts: :class:`CohortError`, whose message names the file, column and rows."""

from __future__ import annotations

from pipeline.errors import CohortlabError


class CohortError(CohortlabError, ValueError):
    """A cohort that cannot be run or breaks a rule; the message names the file, column and rows."""


__all__ = ["CohortError"]
