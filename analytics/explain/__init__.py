"""Explanations of fitted models: SHAP values (classical, fusion and ensemble models) and MIL attention.

``explain(study, models=None, patients=None) -> ExplainResult`` is what
``cohortlab explain`` calls; see :mod:`analytics.explain.study`.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

# imported on first use, so that a helper module (grouping, manifest) does not load torch, shap and the models
_EXPORTS = {"ExplainResult": "study", "ModelSummary": "study", "Settings": "study", "explain": "study"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
