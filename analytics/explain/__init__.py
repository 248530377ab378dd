"""Explanations of fitted models: SHAP values (classical, fusion and ensemble models) and MIL attention.

``explain(study, models=None, patients=None) -> ExplainResult`` is what
``cohortlab explain`` calls; see :mod:`analytics.explain.study`.
"""

from analytics.explain.study import ExplainResult, ModelSummary, Settings, explain

__all__ = ["ExplainResult", "ModelSummary", "Settings", "explain"]
