"""Build an unfitted learner from a ``study.toml`` model entry: the one map from model kind to learner.

The kinds themselves and their traits are listed in :mod:`pipeline.model_kinds`; a new kind is one traits
record there and one learner factory here (:func:`register_kind` does both).
"""

from __future__ import annotations

from collections.abc import Callable

from analytics.models import imputed, survival
from analytics.models.competing import CompetingLearner
from analytics.models.fixed import fixed_learner
from analytics.models.harmonize import HarmonizeSpec
from analytics.models.learners import (
    Learner,
    StackingLearner,
    TabularLearner,
    VotingLearner,
)
from analytics.models.mil_learner import MILLearner
from pipeline import model_kinds
from pipeline.config import Model
from pipeline.errors import CohortlabError
from pipeline.model_kinds import KindTraits


class ModelSpecError(CohortlabError, ValueError):
    """A model entry that cannot be built; the message names the model."""


# one learner factory per model kind: (model entry, seed) -> unfitted learner; the kinds' traits are in
# pipeline/model_kinds.py
LearnerFactory = Callable[[Model, int], Learner]


def _voting(spec: Model, seed: int) -> Learner:
    if spec.grid:
        raise ValueError("a voting model has nothing to tune; remove its grid")
    return VotingLearner(list(spec.members), spec.params)


def _tabular(spec: Model, seed: int) -> Learner:
    return TabularLearner(spec.kind, spec.params, spec.grid, seed, HarmonizeSpec.of(spec))


def _competing(spec: Model, seed: int) -> Learner:
    causes = spec.causes
    if causes is None:
        raise ValueError(f"a {spec.kind} model needs an event with declared status codes "
                         '([variables] <event>.codes) and [validation] cause')
    return CompetingLearner(spec.kind, spec.params, spec.grid, seed, causes.cause, causes.codes)


def _survival(spec: Model, seed: int) -> Learner:
    return survival.SurvivalLearner(spec.kind, spec.params, spec.grid, seed)


_LEARNERS: dict[str, LearnerFactory] = {
    "logistic": _tabular,
    "svm": _tabular,
    "xgboost": _tabular,
    "mil": lambda spec, seed: MILLearner(spec.params, spec.grid, seed),
    "voting": _voting,
    "stacking": lambda spec, seed: StackingLearner(list(spec.members), spec.params, spec.grid, seed),
    "cox": _survival,
    "coxnet": _survival,
    "rsf": _survival,
    "xgboost_cox": _survival,
    "mil_cox": lambda spec, seed: survival.MILCoxLearner(spec.params, spec.grid, seed),
    "cause_specific_cox": _competing,
    "fine_gray": _competing,
    "fixed": fixed_learner,
}


def register_kind(name: str, traits: KindTraits, learner: LearnerFactory) -> None:
    """Add a model kind: its row of the kind table and the factory of its learner.

    After this, ``kind = "<name>"`` is valid in ``study.toml`` and every stage treats the kind by
    ``traits``. The learner follows :class:`analytics.models.learners.Learner`: ``fit(data, y)``,
    ``predict_score(data)`` (a probability for a binary endpoint, a risk for survival) and ``chosen``.

    Raises
    ------
    ValueError
        ``name`` is a kind already, or not a lower-case name.
    """
    if name in _LEARNERS:
        raise ValueError(f"model kind {name!r} exists already")
    model_kinds.add(name, traits)
    _LEARNERS[name] = learner


def unregister_kind(name: str) -> None:
    """Remove a kind added by :func:`register_kind` (the kinds cohortlab ships stay).

    Raises
    ------
    ValueError
        ``name`` ships with cohortlab.
    """
    model_kinds.remove(name)
    _LEARNERS.pop(name, None)


def _plain_learner(spec: Model, seed: int) -> Learner:
    """The kind's own learner (no imputation wrapper): each completed data set's fit."""
    return _LEARNERS[spec.kind](spec, seed)


def build_learner(spec: Model, seed: int, replicate: bool = False) -> Learner:
    """A fresh learner for ``spec`` (kind, params and grid), seeded with ``seed``.

    With ``[imputation] method = "mice"`` in the study (``spec.imputation``), a model reading clinical columns
    gets an :class:`analytics.models.imputed.ImputedLearner` around its kind's learner: the imputation is part
    of the procedure wherever the learner is fitted. ``replicate``: a learner for a bootstrap replicate of the
    internal validation, which imputes ``m_boot`` times instead of ``m``.

    Raises
    ------
    ModelSpecError
        Unknown parameters or values, named with the model.
    """
    factory = _LEARNERS.get(spec.kind)
    if factory is None:
        raise ModelSpecError(f"model '{spec.name}': unknown kind {spec.kind!r}")
    try:
        settings = spec.imputation
        if settings is not None and imputed.wraps(spec):
            return imputed.ImputedLearner(spec, seed, settings.m_boot if replicate else settings.m, _plain_learner)
        return factory(spec, seed)
    except (TypeError, ValueError) as exc:
        raise ModelSpecError(f"model '{spec.name}': {exc}") from None
