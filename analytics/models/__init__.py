"""Models on cohort features: classical pipelines, attention MIL, ensembles and score fusion.

* :mod:`~analytics.models.data`: a model's inputs (table, bags, member scores) for a cohort.
* :mod:`~analytics.models.classical`: SVM, XGBoost and penalised logistic regression as scikit-learn Pipelines.
* :mod:`~analytics.models.tuning`: hyper-parameters by grouped, stratified inner cross-validation.
* :mod:`~analytics.models.mil`: mean / max / attention / gated-attention MIL in torch.
* :mod:`~analytics.models.ensemble`: soft voting and stacking.
* :mod:`~analytics.models.fusion`: where second-stage models' input scores come from.
* :mod:`~analytics.models.learners` / :mod:`~analytics.models.registry`: one interface, built from study.toml.
* :mod:`~analytics.models.persist`: model folders, manifests, :func:`load_model`.

The fit / predict workflow is :mod:`analytics.fit`.
"""

from pipeline.lazy import lazy_exports

# imported on first use, so that reading a model's inputs does not load torch and xgboost
_LAZY = {"FittedModel": "persist", "load_model": "persist", "MILClassifier": "mil", "build_learner": "registry"}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
