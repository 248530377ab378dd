"""The root of every error cohortlab raises on purpose: :class:`CohortlabError`.

Each stage derives its own errors from it (config, ingest, store, embed,
cohort, split, model, validate, report), so a caller (the CLI, a notebook)
catches one type for everything a user can fix, and anything else is a bug
that keeps its traceback. This module imports nothing, so every layer can
use it.
"""

from __future__ import annotations


class CohortlabError(Exception):
    """An error the user can act on; its message names the file, row, column or key where known."""


__all__ = ["CohortlabError"]
