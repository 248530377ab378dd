"""``[validation]`` of ``study.toml``: how models are validated (the result is
:class:`analytics.validation.Validation`).

Bootstrap confidence intervals (``n_boot``), the threshold rule (pROC's ``coords``), decision curves
(Vickers & Elkin, *Med Decis Making* 2006), subgroups, added value (NRI, IDI; Pencina et al., *Stat Med*
2008) and internal validation of the whole procedure (optimism bootstrap as ``rms::validate``, .632+ of
Efron & Tibshirani, *JASA* 1997, or repeated cross-validation).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from pipeline.config_base import Strict


class Subgroup(Strict):
    """How one cohort column splits the patients into subgroups: by its levels (no ``cuts``), or at ``cuts``
    (a numeric column: ``< 60`` and ``>= 60`` for ``cuts = [60]``)."""

    cuts: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sorted(self) -> Subgroup:
        if any(b <= a for a, b in zip(self.cuts, self.cuts[1:])):
            raise ValueError("cuts must be strictly increasing, e.g. [60] or [40, 60]")
        return self


INTERNAL_METHODS = ("none", "bootstrap", "cv", ".632+", "ncv")
"""The ``[validation] internal`` values: no internal validation, optimism bootstrap, repeated k-fold, .632+, nested
cross-validation (Bates, Hastie & Tibshirani 2024; binary models)."""
NCV_REPEATS = 20  # the repeats of internal = "ncv" when study.toml does not set them (the measured coverage's)

THRESHOLD_RULES = ("youden", "closest_topleft", "closest.topleft", "topleft", "sensitivity", "specificity")
"""The ``[validation] threshold_rule`` values (:func:`analytics.stats.threshold`'s rules and pROC's spellings)."""


class ValidationSettings(Strict):
    """The ``[validation]`` settings of study.toml (the result of validation is :class:`analytics.validation.Validation`)."""

    n_boot: int = Field(default=2000, ge=0)
    level: float = Field(default=0.95, gt=0, lt=1)
    # how the classification threshold is chosen on training scores (analytics.stats.threshold); "sensitivity" and
    # "specificity" choose the threshold reaching threshold_target on the training patients
    threshold_rule: str = "youden"
    threshold_target: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    compare: list[list[str]] = Field(default_factory=list)
    risk_quantiles: list[float] = Field(default_factory=lambda: [0.5])
    dca_thresholds: list[float] = Field(default_factory=lambda: [0.05, 0.95, 0.05])  # start, stop, step
    folds: int = Field(default=5, ge=2)
    # survival endpoints: the horizons (study time unit) of risk, AUC(t), Brier(t) and calibration; the first is
    # the main one (decision curve); empty: the quartiles of the training patients' event times
    horizons: list[float] = Field(default_factory=list)
    # binary models on a censored endpoint: the label is "event by label_horizon" (study time unit); when set and
    # the cohort has time and event, binary models also get AUC(t) and Brier(t) at it with IPCW on every patient
    # with follow-up (beside the complete-case measures)
    label_horizon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # performance per subgroup of these cohort columns (TRIPOD+AI fairness): {column = {cuts = [...]}}
    subgroups: dict[str, Subgroup] = Field(default_factory=dict)
    # added value of a model over another, [[new, old], ...]: ΔAUC, NRI, IDI and, for nested unpenalised
    # logistic models, the likelihood-ratio test
    added_value: list[list[str]] = Field(default_factory=list)
    # predicted-risk cut-offs of the categorical NRI and the reclassification tables, e.g. [0.2, 0.5]
    risk_cutoffs: list[float] = Field(default_factory=list)
    # internal validation of the whole modelling procedure on the training patients (analytics.internal_fit):
    # "bootstrap" (optimism, rms::validate), ".632+" (the same resamples) or "cv" (repeats x folds-fold)
    internal: str = "none"
    B: int = Field(default=200, ge=1)  # bootstrap resamples ("bootstrap", ".632+")
    repeats: int = Field(default=1, ge=1)  # repetitions of the k-fold split ("cv"; "ncv": 20 unless set)
    # competing risks: the label (of [variables] <event>.codes) of the event of interest; required when the event
    # has more than one cause (checked against the variables by the study)
    cause: str | None = None
    # multi-centre studies: update each model for each external centre (binary: closed testing, Vergouwe et al.
    # 2017; Cox: baseline survival and slope) and report it as <model>-updated-<centre>, apparent only;
    # updating_centers: only these (empty: all)
    updating: bool = False
    updating_centers: list[str] = Field(default_factory=list)
    # internal-external cross-validation across the development centres (analytics.iecv); centres with fewer
    # events or non-events than iecv_min_events are left out together as one "small centres" group
    internal_external: bool = False
    iecv_min_events: int = Field(default=10, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _ncv_repeats(cls, data: object) -> object:
        # "ncv"'s interval was measured with 20 repeats; other methods keep their default of 1
        if isinstance(data, dict) and data.get("internal") == "ncv" and "repeats" not in data:
            return {**data, "repeats": NCV_REPEATS}
        return data

    @model_validator(mode="after")
    def _ncv_folds(self) -> ValidationSettings:
        if self.internal == "ncv" and self.folds < 3:
            raise ValueError(f"internal = 'ncv' (nested cross-validation) needs folds >= 3, got folds = {self.folds}")
        return self

    @field_validator("internal")
    @classmethod
    def _internal(cls, v: str) -> str:
        if v not in INTERNAL_METHODS:
            raise ValueError(f"unknown method {v!r}; use one of {', '.join(repr(m) for m in INTERNAL_METHODS)}")
        return v

    @field_validator("threshold_rule")
    @classmethod
    def _threshold_rule(cls, v: str) -> str:
        if v not in THRESHOLD_RULES:
            raise ValueError(f"unknown rule {v!r}; use one of {', '.join(repr(r) for r in THRESHOLD_RULES)}")
        return v

    @model_validator(mode="after")
    def _threshold_target(self) -> ValidationSettings:
        needs = self.threshold_rule in ("sensitivity", "specificity")
        if needs and self.threshold_target is None:
            raise ValueError(f"threshold_rule = {self.threshold_rule!r} needs threshold_target, the {self.threshold_rule} "
                             "to reach on the training patients (e.g. threshold_target = 0.9)")
        if not needs and self.threshold_target is not None:
            raise ValueError(f"threshold_target applies only to threshold_rule = 'sensitivity' or 'specificity', "
                             f"not {self.threshold_rule!r}")
        return self

    @model_validator(mode="after")
    def _risk_cutoffs(self) -> ValidationSettings:
        if any(not 0 < c < 1 for c in self.risk_cutoffs):
            raise ValueError(f"risk_cutoffs must lie strictly between 0 and 1, got {self.risk_cutoffs}")
        if any(b <= a for a, b in zip(self.risk_cutoffs, self.risk_cutoffs[1:])):
            raise ValueError(f"risk_cutoffs must be strictly increasing, got {self.risk_cutoffs}")
        return self


__all__ = ["INTERNAL_METHODS", "NCV_REPEATS", "THRESHOLD_RULES", "Subgroup", "ValidationSettings"]
