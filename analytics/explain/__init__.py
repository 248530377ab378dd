"""Explanations of fitted models: SHAP values (classical, fusion and ensemble models) and MIL attention.

``explain(study, models=None, patients=None) -> ExplainResult`` is what
``cohortlab explain`` calls; see :mod:`analytics.explain.study`.
"""

from __future__ import annotations

import importlib
from typing import Any

# imported on first use, so that a helper module (grouping, manifest) does not load torch, shap and the models
_EXPORTS = {"ExplainResult": "study", "ModelSummary": "study", "Settings": "study", "explain": "study"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
