"""Build an unfitted learner from a ``study.toml`` model entry."""

from __future__ import annotations

from analytics.models import classical, survival
from analytics.models.harmonize import HarmonizeSpec
from analytics.models.learners import (
    Learner,
    StackingLearner,
    TabularLearner,
    VotingLearner,
)
from analytics.models.mil_learner import MILLearner
from pipeline.config import Model
from pipeline.errors import CohortlabError


class ModelSpecError(CohortlabError, ValueError):
    """A model entry that cannot be built; the message names the model."""


def build_learner(spec: Model, seed: int) -> Learner:
    """A fresh learner for ``spec`` (kind, params and grid), seeded with ``seed``.

    Raises
    ------
    ModelSpecError
        Unknown parameters or values, named with the model.
    """
    try:
        if spec.kind in classical.KINDS:
            return TabularLearner(spec.kind, spec.params, spec.grid, seed, HarmonizeSpec.of(spec))
        if spec.kind == "mil":
            return MILLearner(spec.params, spec.grid, seed)
        if spec.kind == "mil_cox":
            return survival.MILCoxLearner(spec.params, spec.grid, seed)
        if spec.kind in survival.SURVIVAL_KINDS:
            return survival.SurvivalLearner(spec.kind, spec.params, spec.grid, seed)
        if spec.kind == "voting":
            if spec.grid:
                raise ValueError("a voting model has nothing to tune; remove its grid")
            return VotingLearner(list(spec.members), spec.params)
        if spec.kind == "stacking":
            return StackingLearner(list(spec.members), spec.params, spec.grid, seed)
    except (TypeError, ValueError) as exc:
        raise ModelSpecError(f"model '{spec.name}': {exc}") from None
    raise ModelSpecError(f"model '{spec.name}': unknown kind {spec.kind!r}")
