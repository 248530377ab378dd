"""The kind table: every model ``kind`` of ``study.toml`` and the traits the stages read.

A stage never compares a model's kind with a name; it reads the kind's :class:`KindTraits`
(``Model.traits``). This table is the one place kinds are listed; the learner that fits each
kind comes from :mod:`analytics.models.registry`. Adding a kind is one record here (or
:func:`analytics.models.registry.register_kind`) and one learner factory in the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Endpoint = Literal["binary", "survival", "inputs"]
Reads = Literal["table", "bags", "members"]
Saved = Literal["pipeline", "learner", "meta", "weights", "none"]
Explainer = Literal["shap-pipeline", "shap-kernel", "attention"]


@dataclass(frozen=True)
class KindTraits:
    """What a model kind is, as the stages see it.

    Attributes
    ----------
    endpoint
        ``"binary"`` (a 0/1 label; its score is a probability), ``"survival"`` (time to event; its score is
        a risk, higher = worse), or ``"inputs"``: an ensemble predicts the endpoint its members agree on.
    reads
        How its inputs are assembled: ``"table"`` (pooled image features, clinical columns and input models'
        scores as one table), ``"bags"`` (the instance bags of its one feature set), ``"members"`` (its
        members' scores).
    trainable
        Whether it fits anything of its own (soft voting averages its members' scores and fits nothing, so
        its inputs need no nested cross-fitting and it has no parameters to count).
    linear_predictor
        For a survival endpoint: whether its risk score is a Cox linear predictor (log relative hazard), so
        calibration of the linear predictor applies.
    regression
        ``"logit"``: a logistic regression (``params.penalty = "none"``: a maximum-likelihood fit, equal to R's
        ``glm``, whose nested models the likelihood-ratio test compares); ``"cox"``: a Cox regression; None:
        neither. Both get coefficient tables (``models/<name>/coefficients.csv``).
    flexible
        A flexible learner: sample-size criteria derived for regression models are only a lower bound.
    saved
        What its model folder holds: the fitted ``"pipeline"``, the whole ``"learner"`` or the ensemble's
        ``"meta"``-learner (skops), network ``"weights"`` (torch), or ``"none"`` (the manifest describes it).
    explainer
        How ``cohortlab explain`` explains it: SHAP of its fitted pipeline (``"shap-pipeline"``: tree,
        linear or kernel by its classifier), a kernel explainer on its members' scores (``"shap-kernel"``),
        the network's ``"attention"`` over instances, or None (not explained).
    harmonisable
        Whether ComBat harmonisation of its image features (``harmonize = "combat"``) applies.
    nomogram
        Whether the report draws a nomogram of it (clinical variables and scores only).
    grid_keys
        Keys it tunes besides its estimator's own parameters (e.g. ``pca``).
    published
        A model taken as published (its coefficients are given in ``study.toml``): never fitted, so it has no
        out-of-fold scores to choose a threshold on; it takes an explicit ``threshold`` or none.
    competing
        A competing-risk model, fitted on status codes (0 censored, one code per cause) and predicting the
        cumulative incidence of the study's cause of interest (``[validation] cause``), by what it models:
        ``"cause_specific"`` (one Cox model per cause) or ``"subdistribution"`` (the Fine–Gray hazard); None:
        a single event type.
    """

    endpoint: Endpoint
    reads: Reads
    saved: Saved
    trainable: bool = True
    linear_predictor: bool = False
    regression: Literal["logit", "cox"] | None = None
    flexible: bool = False
    explainer: Explainer | None = None
    harmonisable: bool = False
    nomogram: bool = False
    grid_keys: frozenset[str] = field(default_factory=frozenset)
    published: bool = False
    competing: Literal["cause_specific", "subdistribution"] | None = None

    @property
    def artifact(self) -> Literal["skops", "torch", "none"]:
        """The format of its model file."""
        return "torch" if self.saved == "weights" else "none" if self.saved == "none" else "skops"

    @property
    def inputs(self) -> frozenset[str]:
        """The ``study.toml`` keys that name its inputs."""
        return {"table": frozenset({"features", "clinical", "scores"}), "bags": frozenset({"features"}),
                "members": frozenset({"members"})}[self.reads]

    @property
    def bags(self) -> bool:
        """Whether it reads instance bags (multiple-instance learning) rather than pooled features."""
        return self.reads == "bags"

    @property
    def ensemble(self) -> bool:
        """Whether it combines member models (``members``) rather than reading inputs of its own."""
        return self.reads == "members"

    @property
    def survival(self) -> bool:
        """Whether it always predicts time to event."""
        return self.endpoint == "survival"

    @property
    def binary(self) -> bool:
        """Whether it always predicts a 0/1 label."""
        return self.endpoint == "binary"


_PCA = frozenset({"pca"})

_TABLE: dict[str, KindTraits] = {
    "logistic": KindTraits(endpoint="binary", reads="table", saved="pipeline", linear_predictor=True,
                           regression="logit", explainer="shap-pipeline", harmonisable=True, nomogram=True,
                           grid_keys=frozenset({"pca", "penalty"})),
    "svm": KindTraits(endpoint="binary", reads="table", saved="pipeline", flexible=True, explainer="shap-pipeline",
                      harmonisable=True, grid_keys=_PCA),
    "xgboost": KindTraits(endpoint="binary", reads="table", saved="pipeline", flexible=True,
                          explainer="shap-pipeline", harmonisable=True, grid_keys=_PCA),
    "mil": KindTraits(endpoint="binary", reads="bags", saved="weights", flexible=True, explainer="attention"),
    # an ensemble's score combines its members' scores (linear predictors when they are)
    "voting": KindTraits(endpoint="inputs", reads="members", saved="none", trainable=False, linear_predictor=True,
                         explainer="shap-kernel"),
    "stacking": KindTraits(endpoint="inputs", reads="members", saved="meta", linear_predictor=True,
                           explainer="shap-kernel"),
    # survival learners are saved whole: preprocessing, estimator and Breslow baseline in one file
    "cox": KindTraits(endpoint="survival", reads="table", saved="learner", linear_predictor=True, regression="cox",
                      nomogram=True),
    "coxnet": KindTraits(endpoint="survival", reads="table", saved="learner", linear_predictor=True),
    "rsf": KindTraits(endpoint="survival", reads="table", saved="learner", flexible=True),
    "xgboost_cox": KindTraits(endpoint="survival", reads="table", saved="learner", linear_predictor=True,
                              flexible=True),
    "mil_cox": KindTraits(endpoint="survival", reads="bags", saved="learner", linear_predictor=True, flexible=True,
                          explainer="attention"),
    # a published model: formula + coefficients (logistic), with baseline_survival a Cox model; its entry sets
    # its endpoint and describes it whole, so nothing is saved beside the manifest
    "fixed": KindTraits(endpoint="inputs", reads="table", saved="none", trainable=False, linear_predictor=True,
                        published=True),
    # competing risks: one Cox model per cause (riskRegression::CSC) and the subdistribution hazard (cmprsk::crr);
    # the score is the absolute risk of the cause of interest at the main horizon
    "cause_specific_cox": KindTraits(endpoint="survival", reads="table", saved="learner", regression="cox",
                                     competing="cause_specific"),
    "fine_gray": KindTraits(endpoint="survival", reads="table", saved="learner", regression="cox",
                            competing="subdistribution"),
}
_BUILTIN = frozenset(_TABLE)

KINDS: Mapping[str, KindTraits] = MappingProxyType(_TABLE)
"""Every model kind and its traits (read-only; :func:`add` extends it)."""


def add(name: str, traits: KindTraits) -> None:
    """Add a model kind to :data:`KINDS` (the learner is registered in ``analytics.models.registry``).

    Raises
    ------
    ValueError
        ``name`` is already a kind, or not a plain lower-case name.
    """
    if name in _TABLE:
        raise ValueError(f"model kind {name!r} exists already")
    if not name.isidentifier() or name.lower() != name:
        raise ValueError(f"model kind {name!r}: use a lower-case name of letters, digits and '_'")
    _TABLE[name] = traits


def remove(name: str) -> None:
    """Take a kind added by :func:`add` out of :data:`KINDS` again (nothing when it is not there).

    Raises
    ------
    ValueError
        ``name`` is one of the kinds cohortlab ships.
    """
    if name in _BUILTIN:
        raise ValueError(f"model kind {name!r} ships with cohortlab and cannot be removed")
    _TABLE.pop(name, None)


def kinds_where(**wanted: object) -> tuple[str, ...]:
    """The kinds whose traits (attributes or properties) equal ``wanted``, in table order."""
    return tuple(k for k, t in _TABLE.items() if all(getattr(t, a) == v for a, v in wanted.items()))


def traits_of(kind: str) -> KindTraits | None:
    """The traits of ``kind``; None for a kind no longer (or not yet) in the table, e.g. an old manifest's."""
    return _TABLE.get(kind)
