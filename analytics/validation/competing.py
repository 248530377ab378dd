"""The measures and curves of a model at its horizons when competing causes exist: the cumulative incidence of
the cause of interest, validated as ``riskRegression::Score(..., cause, cens.model = "km")``.

* AUC(t): cases have the cause of interest by ``t``; controls are everyone else, including patients with a
  competing event by ``t`` (Blanche, Dartigues & Jacqmin-Gadda, *Stat Med* 2013), IPCW with a Kaplan–Meier
  censoring model, influence-function intervals (:func:`analytics.stats.time_auc` with ``cause``).
* Brier(t) and IPA against the null (Aalen–Johansen) model (Kattan & Gerds, *Diagn Progn Res* 2018;
  :func:`analytics.stats.competing_score.brier_ipa`).
* Calibration at each horizon: observed (Aalen–Johansen) against mean predicted cumulative incidence by tenth
  of predicted risk, and a smooth curve from pseudo-observations with ICI, E50 and E90 (Austin, Putter,
  Giardiello & van Klaveren, *Diagn Progn Res* 2022; :func:`analytics.stats.calibration_competing`).
* The decision curve at the main horizon with the Aalen–Johansen risk among the treated
  (:func:`analytics.stats.net_benefit_competing`).

A single-event model of the cause-specific hazard (``competing = "cause_specific"``) predicts no cumulative
incidence: it gets AUC(t) (which reads only the order of its risks) and no absolute-risk measure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from analytics import stats
from analytics.stats.competing_score import brier_ipa, observed_by_group
from analytics.validation.values import Estimate, clean
from pipeline.config import StudyConfig


class SplitInputs(Protocol):
    """What these measures read of :class:`analytics.validation.measures.SplitInputs` (which calls them)."""

    level: float
    dca_thresholds: np.ndarray
    survival: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    horizons: tuple[float, ...]
    horizon_risk: np.ndarray | None
    notes: list[str]
    shared: dict[str, Any]
    cause: int | None
    status: np.ndarray | None
    discrimination_only: bool
    cut: np.ndarray | None

    def call(self, fn: Callable[..., Any], *args: Any, key: str | None = None, note: str = "{}",
             **kwargs: Any) -> Any: ...

DISCRIMINATION_ONLY = ("a single-event model of the cause-specific hazard (competing = \"cause_specific\") predicts "
                       "no cumulative incidence of the cause: discrimination only (C, AUC(t)); no calibration, "
                       "Brier(t), IPA or decision curve")


NO_KM_GROUPS = ("no Kaplan-Meier curves or log-rank test of the risk groups with competing causes (the report "
                "shows their Aalen-Johansen cumulative incidence of the cause instead)")
NO_OPTIMISM = ("no internal validation (optimism) with competing causes: a model of the cause-specific hazard only "
               "(competing = \"cause_specific\") predicts no cumulative incidence of the cause")
NO_632 = ("no .632+ internal validation with competing causes (its no-information rate is of one event type); "
          "internal = \"bootstrap\" or \"cv\" validate AUC(t) and Brier(t) of the cause")


def internal_cause(study: StudyConfig, name: str, method: str | None) -> tuple[int | None, str | None]:
    """How a survival model's internal validation (``method``, from its fit record) goes with competing causes:
    the cause of interest's code for :func:`analytics.validation.internal.internal_metrics` (None: a single event
    type, or a binary model), or why there is none (the second item; the validation is then skipped)."""
    causes = study.causes
    if causes is None or not causes.is_competing or study.endpoint(name) != "survival":
        return None, None
    if study.model(name).competing is not None:
        return None, NO_OPTIMISM
    if method == ".632+":
        return None, NO_632
    return causes.cause, None


def competing_setup(study: StudyConfig, name: str, has_surv: bool, is_surv: bool, label_horizon: float | None,
                    notes: list[str]) -> tuple[int | None, float | None]:
    """The cause of interest's code for a model's follow-up measures (None: a single event type) and its label
    horizon (none with competing causes: its IPCW is single-event); why, in ``notes``."""
    causes = study.causes
    cause = causes.cause if has_surv and causes is not None and causes.is_competing else None
    if cause is not None and is_surv and study.model(name).competing is not None:
        notes.append(f"{name}: {DISCRIMINATION_ONLY}")
    if cause is not None and label_horizon is not None:
        label_horizon = None
        notes.append(f"{name}: no IPCW evaluation at the label horizon with competing causes (single-event IPCW)")
    return cause, label_horizon


def cause_label(study: StudyConfig) -> str | None:
    """The label of the cause of interest when causes compete (every measure is of it); None otherwise."""
    causes = study.causes
    return causes.label if causes is not None and causes.is_competing else None


def _name(measure: str, t: float) -> str:
    return f"{measure}_t{t:g}"


def usable_horizons(d: SplitInputs, time: np.ndarray, what: str) -> np.ndarray:
    """Which of ``d.horizons`` lie before the last follow-up: one at or past it has no controls (AUC(t)) and no
    censoring weight (Brier(t)); the others are noted in ``d.notes`` as having no ``what``."""
    times = np.asarray(d.horizons, dtype=np.float64)
    usable = times < time.max()
    if not usable.all():
        d.notes.append(f"horizons {times[~usable].tolist()} at or past the last follow-up ({time.max():g}): "
                       f"no {what} there")
    return usable


def competing_measures(d: SplitInputs) -> dict[str, Estimate]:
    """AUC(t), Brier(t), IPA, ICI/E50/E90 of the cause of interest at each usable horizon (see the module)."""
    assert d.survival is not None and d.horizon_risk is not None and d.status is not None and d.cause is not None
    time, _, _ = d.survival
    status, cause = d.status, d.cause
    out: dict[str, Estimate] = {}
    times = np.asarray(d.horizons, dtype=np.float64)
    usable = usable_horizons(d, time, "AUC(t), Brier(t) or calibration")
    if not usable.any():
        return out
    risk = d.horizon_risk[:, usable]
    auc = d.call(stats.time_auc, time, status, risk, times[usable], level=d.level, cause=cause, key="time_auc",
                 note="AUC(t) of the cause not computed ({})")
    if d.discrimination_only:  # the validation stage notes why, once per model
        bi = None
    else:
        bi = d.call(brier_ipa, time, status, risk, times[usable], cause=cause, level=d.level, key="brier_ipa",
                    note="Brier(t) and IPA of the cause not computed ({})")
    for j, t in enumerate(times[usable]):
        if auc is not None:
            out[_name("auc", t)] = Estimate.of(auc.at(t))
        if bi is not None:
            out[_name("brier", t)] = Estimate.of(bi.brier.at(t))
            out[_name("ipa", t)] = Estimate(clean(float(bi.ipa[j])), None, None,
                                            "IPA = 1 - Brier / Brier of the null (Aalen-Johansen) model "
                                            "(Kattan & Gerds 2018; riskRegression Score)", clean(d.level))
        if d.discrimination_only:
            continue
        cal = d.call(stats.calibration_competing, time, status, risk[:, j], t, cause=cause,
                     key=f"calibration_at_{t:g}", note=f"calibration of the cause at {t:g} not computed ({{}})")
        if cal is not None:
            for k in ("ici", "e50", "e90"):
                out[_name(k, t)] = Estimate(clean(getattr(cal, k)), None, None,
                                            "smooth calibration of the cumulative incidence at t by pseudo-"
                                            "observations (Austin, Putter, Giardiello & van Klaveren 2022)",
                                            clean(d.level))
    return out


def risk_group_curves(d: SplitInputs) -> dict[str, Any]:
    """``cif_groups``: the Aalen–Johansen cumulative incidence of the cause in each risk group (cut at the training
    cut-points), where a single event type gets Kaplan–Meier curves; empty without cut-points."""
    assert d.survival is not None and d.status is not None and d.cause is not None
    if d.cut is None:
        return {}
    time, _, score = d.survival
    group = np.searchsorted(d.cut, score, side="right")
    labels = stats.survival.group_labels(len(d.cut) + 1)
    rows = []
    for g, label in enumerate(labels):
        sel = group == g
        if not sel.any():
            continue
        hit = d.status[sel] == d.cause
        curve = stats.cif_curve(time[sel], d.status[sel], cause=d.cause) if hit.any() else None
        rows.append({"group": label, "n": int(sel.sum()), "events": int(hit.sum()),
                     "time": [0.0, *([] if curve is None else curve["time"].to_list())],
                     "estimate": [0.0, *([] if curve is None else curve["estimate"].to_list())]})
    return {"cif_groups": rows}


def competing_curves(d: SplitInputs) -> dict[str, Any]:
    """Per horizon: observed (Aalen–Johansen) vs predicted cumulative incidence by tenth of predicted risk and
    the smooth pseudo-observation curve; the decision curve at the main horizon (none: discrimination only)."""
    assert d.survival is not None and d.horizon_risk is not None and d.status is not None and d.cause is not None
    by_group = risk_group_curves(d)
    if d.discrimination_only:
        return by_group
    time, _, _ = d.survival
    status, cause = d.status, d.cause
    out: dict[str, Any] = {}
    for j, t in enumerate(d.horizons):
        if t >= time.max():
            continue
        r = d.horizon_risk[:, j]
        groups = d.call(observed_by_group, time, status, r, t, cause=cause, level=d.level,
                        note=f"calibration of the cause at {t:g} not drawn ({{}})")
        smooth = d.shared.get(f"calibration_at_{t:g}")
        out[f"t{t:g}"] = {
            "horizon": float(t), "time_roc": None,
            "calibration_at": None if groups is None else {
                "predicted": groups["predicted"].to_list(), "observed": groups["observed"].to_list(),
                "n": groups["n"].to_list(), "observed_by": "Aalen-Johansen"},
            "calibration_smooth": None if smooth is None else smooth.curve.to_dict(as_series=False)}
    result: dict[str, Any] = {**by_group, "horizons": out} if out else by_group
    main = d.horizons[0]
    if main < time.max():
        nb = d.call(stats.net_benefit_competing, time, status, d.horizon_risk[:, 0], main, cause=cause,
                    thresholds=d.dca_thresholds, note=f"decision curve at {main:g} not drawn ({{}})")
        if nb is not None:
            result["decision_at"] = {"horizon": float(main), **nb.to_dict(as_series=False)}
    return result


__all__ = ["DISCRIMINATION_ONLY", "NO_632", "NO_KM_GROUPS", "NO_OPTIMISM", "SplitInputs", "cause_label",
           "internal_cause", "competing_curves", "competing_measures", "competing_setup"]
