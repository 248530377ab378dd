"""Added value between two competing-risk models: ΔAUC(t) and ΔBrier(t) of the cause of interest per split for
each ``[validation] added_value`` pair of survival models, as the contrasts of ``riskRegression::Score(list(old,
new), cause)`` (:func:`analytics.stats.competing_contrast.time_contrasts`). Binary pairs get ΔAUC, NRI and IDI
in :func:`analytics.validation.stage._added_value`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from analytics.splits import SPLITS
from analytics.stats.competing_contrast import TimeContrast, time_contrasts
from analytics.validation.records import AddedValue
from analytics.validation.values import jsonable, safe
from pipeline.config import StudyConfig

# a model's saved horizons and its absolute risk at each, by patient (analytics.validation.stage._horizon_risks)
HorizonRisks = Callable[[str], tuple[list[float], dict[str, list[float]]]]


def _contrast_row(c: TimeContrast, t: float) -> dict[str, Any]:
    return jsonable({**c.row(t), "level": c.level})


def competing_added_value(preds: pl.DataFrame, outcomes: pl.DataFrame, study: StudyConfig, models: list[str],
                          horizon_risks: HorizonRisks) -> tuple[list[AddedValue], list[str]]:
    """ΔAUC(t) and ΔBrier(t) of the cause of interest per split for each ``[validation] added_value`` pair of two
    survival models when causes compete (:func:`analytics.stats.competing_contrast.time_contrasts`, equal to
    ``riskRegression::Score(list(old, new), cause)``'s contrasts), on the patients with follow-up both models
    scored, at the horizons both saved risks for; notes on what is missing. Empty for a single event type.

    Parameters
    ----------
    preds : polars.DataFrame
        ``model``, ``patient_id``, ``split``, ``score``.
    outcomes : polars.DataFrame
        ``patient_id``, ``time``, ``event`` (status codes).
    study : StudyConfig
    models : list of str
        The validated models (a pair with another is left out: a partial validation lists it).
    horizon_risks : callable
        A model's saved horizons and its risks at each, by patient.
    """
    causes = study.causes
    if causes is None or not causes.is_competing or not {"time", "event"} <= set(outcomes.columns):
        return [], []
    cause, level = causes.cause, study.validation.level
    out: list[AddedValue] = []
    notes: list[str] = []
    for new, old in (tuple(p) for p in study.validation.added_value):
        if new not in models or old not in models:
            continue
        if study.endpoint(new) != "survival" or study.endpoint(old) != "survival":
            continue  # binary pairs: analytics.validation.stage._added_value
        where = f"added value {new} over {old}"
        single = [m for m in (new, old) if study.model(m).competing is not None]
        if single:  # no cumulative incidence to compare
            notes.append(f"{where}: not computed with competing causes: {' and '.join(single)} predicts no "
                         "cumulative incidence (competing = \"cause_specific\"); compare cause_specific_cox or "
                         "fine_gray models")
            continue
        (t_new, r_new), (t_old, r_old) = horizon_risks(new), horizon_risks(old)
        times = sorted(set(t_new) & set(t_old))
        if not times:
            notes.append(f"{where}: no horizon at which both models saved risks; refit them")
            continue
        k_new, k_old = [t_new.index(t) for t in times], [t_old.index(t) for t in times]
        both = (preds.filter(pl.col("model") == new).select("patient_id", "split")
                .join(preds.filter(pl.col("model") == old).select("patient_id", pl.col("split").alias("s_old")),
                      on="patient_id")
                .filter(pl.col("split") == pl.col("s_old"))
                .join(outcomes.select("patient_id", "time", "event"), on="patient_id")
                .filter(pl.col("time").is_not_null() & pl.col("event").is_not_null()
                        & pl.col("patient_id").is_in(list(r_new)) & pl.col("patient_id").is_in(list(r_old))))
        for split in SPLITS:
            part = both.filter(pl.col("split") == split)
            if part.height == 0:
                continue
            ids = part.get_column("patient_id").to_list()
            time = part.get_column("time").cast(pl.Float64).to_numpy()
            status = part.get_column("event").cast(pl.Int64).to_numpy()
            usable = [j for j, t in enumerate(times) if t < time.max()]
            if not usable:
                notes.append(f"{where} / {split}: every horizon at or past the last follow-up; not computed")
                continue
            hz = [times[j] for j in usable]
            old_risk = np.array([[r_old[p][k_old[j]] for j in usable] for p in ids], dtype=np.float64)
            new_risk = np.array([[r_new[p][k_new[j]] for j in usable] for p in ids], dtype=np.float64)
            res, err = safe(time_contrasts, time, status, old_risk, new_risk, hz, cause=cause, level=level)
            if res is None:
                notes.append(f"{where} / {split}: ΔAUC(t) and ΔBrier(t) not computed: {err}")
                continue
            auc, brier = res
            rows = tuple({"time": float(t), "cause": causes.label, "auc": _contrast_row(auc, t),
                          "brier": _contrast_row(brier, t)} for t in hz)
            out.append(AddedValue(new, old, split, int(part.height), int((status == cause).sum()), horizons=rows))
    return out, notes


__all__ = ["HorizonRisks", "competing_added_value"]
