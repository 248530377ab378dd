"""The report's competing-risk outcome: Aalen–Johansen cumulative incidence of every cause, overall and per
``[validation] subgroups`` variable, a table per horizon and Gray's test; the TRIPOD item 8a text.

With competing causes, 1 − Kaplan–Meier (other causes censored) overestimates the risk of a cause: it reads
the patients who died as if they could still have the event. Every curve and table here is the
Aalen–Johansen estimate (Aalen & Johansen, *Scand J Stat* 1978): its estimate and standard error equal
``summary(survfit(Surv(time, factor(status)) ~ g), times)``'s ``pstate`` and ``std.err`` (interval
``conf.type = "log"``; :func:`analytics.stats.cumulative_incidence`); Gray's K-sample test equals
``cmprsk::cuminc``'s ``Tests`` (Gray, *Ann Stat* 1988; :func:`analytics.stats.gray_test`). Every figure and
table is labelled "cause: X, competing: Y".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from analytics import figures, stats
from analytics.report.cells import SPLIT_NAMES, Embedded
from analytics.report.figure_cache import FigureCache
from analytics.validation.subgroups import subgroup_labels, subgroup_order
from pipeline.config import StudyConfig
from pipeline.config_variables import Causes

Curve = tuple[str, list[float], list[float]]  # label, times, cumulative incidence (steps)


def _followed(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("time").is_not_null() & pl.col("event").is_not_null())


def horizons_of(study: StudyConfig, time: np.ndarray, status: np.ndarray) -> list[float]:
    """``[validation] horizons``, else the quartiles of the event times of every cause."""
    if study.validation.horizons:
        return [float(t) for t in study.validation.horizons]
    times = time[status > 0]
    return [float(np.round(q, 6)) for q in np.quantile(times, [0.25, 0.5, 0.75])] if times.size else []


def cumulative_incidence_table(frame: pl.DataFrame, causes: Causes, times: Sequence[float], by: str | None = None,
                               cuts: Sequence[float] = (), level: float = 0.95) -> pl.DataFrame:
    """Aalen–Johansen cumulative incidence of every cause at ``times``, overall or by the cohort column ``by``.

    Parameters
    ----------
    frame
        A cohort's rows (``time``, ``event`` holding status codes, and ``by``); patients without follow-up are
        left out.
    causes
        The study's declared codes (labels the causes).
    times
        Horizons.
    by, cuts
        A cohort column to group by, cut at ``cuts`` when numeric (as ``[validation] subgroups``).
    level
        Confidence level of the log-type interval.

    Returns
    -------
    polars.DataFrame
        ``variable``, ``group``, ``cause`` (label), ``code``, ``time``, ``estimate``, ``se``, ``low``, ``high``,
        ``n``, ``n_risk``: :func:`analytics.stats.cumulative_incidence` (survfit's ``pstate``, ``std.err``,
        ``conf.type = "log"``).
    """
    rows = _followed(frame)
    time, status = rows["time"].to_numpy().astype(float), rows["event"].to_numpy().astype(int)
    groups = None if by is None else subgroup_labels(rows[by], cuts).to_numpy()
    table = stats.cumulative_incidence(time, status, times, by=groups, level=level).table
    labels = pl.DataFrame({"cause": list(causes.codes), "label": list(causes.codes.values())},
                          schema={"cause": table.schema["cause"], "label": pl.String})
    table = table.join(labels, on="cause", how="left").rename({"cause": "code", "label": "cause"})
    return table.select(pl.lit(by or "all").alias("variable"), "group", "cause", "code", "time", "estimate", "se",
                        "low", "high", "n", "n_risk")


def _curves(time: np.ndarray, status: np.ndarray, codes: Mapping[int, str], prefix: str = "") -> list[Curve]:
    out: list[Curve] = []
    for code, label in codes.items():
        if not (status == code).any():
            continue
        c = stats.cif_curve(time, status, cause=code)
        out.append((f"{prefix}{label}", [0.0, *c["time"].to_list()], [0.0, *c["estimate"].to_list()]))
    return out


def cif_figure(title: str, panels: Sequence[tuple[str, Sequence[Curve]]], subtitle: str,
               time_label: str = "Time") -> bytes:
    """Aalen–Johansen cumulative incidence curves (steps), one panel per cause or grouping."""
    width, height = 3.6 * len(panels) + 0.5, 3.5
    fig = figures.new_figure(width, height)
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.85 / height,
                        wspace=0.3)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for j, (ax, (name, curves)) in enumerate(zip(axes, panels)):
        for i, (label, x, y) in enumerate(curves):
            ax.step(x, y, where="post", color=figures.PALETTE[i % len(figures.PALETTE)], label=label)
        ax.set(ylim=(-0.02, 1.02), xlabel=time_label, title=name,
               ylabel="Cumulative incidence (Aalen–Johansen)" if j == 0 else "")
        if curves:
            ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"{title}\n{subtitle}", fontsize=8.5)
    return figures.to_png(fig)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _group_figures(models: Sequence[str], curves: Mapping[str, Any], heading: str, time_label: str,
                   draw: Any) -> list[Embedded]:
    """Per model and split: the Aalen–Johansen cumulative incidence of the cause in each risk group (validation's
    ``cif_groups``), where a single event type gets Kaplan–Meier curves."""
    out = []
    for model in models:
        for split, c in (curves.get(model) or {}).items():
            rows = (c or {}).get("cif_groups") if isinstance(c, Mapping) else None
            if not rows:
                continue
            lines = [(f"{r['group']} risk ({r['n']}, {r['events']} events)", r["time"], r["estimate"]) for r in rows]
            png = draw(cif_figure, f"{model} · {SPLIT_NAMES.get(split, split)}", [("risk groups", lines)], heading,
                       time_label)
            out.append(Embedded(f"fig-cif-groups-{model}-{split}", figures.data_uri(png),
                                f"Aalen-Johansen cumulative incidence by risk group of {model}, {split}",
                                f"{heading}. {model}, {SPLIT_NAMES.get(split, split)}: Aalen–Johansen cumulative "
                                "incidence of the cause in each risk group (cut at quantiles of the training "
                                "scores), competing events counted as events."))
    return out


def competing_context(study: StudyConfig, frame: pl.DataFrame | None, level: float,
                      time_label: str = "Time", cache: FigureCache | None = None, models: Sequence[str] = (),
                      curves: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report's ``competing`` block: figures, the per-horizon table, Gray's tests and the models' risk
    groups (None: no competing causes, or a cohort without follow-up)."""
    causes = study.causes
    if (causes is None or not causes.is_competing or frame is None
            or not {"time", "event"} <= set(frame.columns)):
        return {"competing": None}
    rows = _followed(frame)
    time, status = rows["time"].to_numpy().astype(float), rows["event"].to_numpy().astype(int)
    times = horizons_of(study, time, status)
    heading = causes.heading
    named = {c: lab for c, lab in causes.codes.items() if c != 0}
    draw = cache.png if cache is not None else (lambda fn, *a, **k: fn(*a, **k))
    figs: list[Embedded] = []
    overall = [("every cause", _curves(time, status, named))]
    figs.append(Embedded("fig-cif-all", figures.data_uri(draw(cif_figure, "Cumulative incidence, all patients",
                                                              overall, heading, time_label)),
                         "Aalen-Johansen cumulative incidence of every cause",
                         f"{heading}. Aalen–Johansen cumulative incidence of every cause (competing events are "
                         "events, not censored; 1 − Kaplan–Meier would overstate each cause's risk)."))
    tables = [cumulative_incidence_table(rows, causes, times, level=level)] if times else []
    gray: list[dict[str, Any]] = []
    for var, group in study.validation.subgroups.items():
        if var not in rows.columns:
            continue
        labels = subgroup_labels(rows[var], group.cuts).to_numpy().astype(str)
        order = [g for g in subgroup_order(labels.tolist(), group.cuts) if g != "missing"]
        panels = [(f"cause: {lab}", [c for g in order for c in _curves(time[labels == g], status[labels == g],
                                                                          {code: g})])
                  for code, lab in named.items()]
        figs.append(Embedded(f"fig-cif-{var}", figures.data_uri(draw(cif_figure, f"Cumulative incidence by {var}",
                                                                     panels, heading, time_label)),
                             f"Aalen-Johansen cumulative incidence by {var}",
                             f"{heading}. Aalen–Johansen cumulative incidence of each cause by {var}."))
        if times:
            tables.append(cumulative_incidence_table(rows, causes, times, by=var, cuts=group.cuts, level=level))
        known = labels != "missing"
        if len(set(labels[known].tolist())) < 2:
            continue
        for code, lab in named.items():
            try:
                g = stats.gray_test(time[known], status[known], labels[known], cause=code)
            except ValueError as exc:
                gray.append({"variable": var, "cause": lab, "statistic": "–", "df": "–", "p": f"not computed ({exc})"})
                continue
            gray.append({"variable": var, "cause": lab, "statistic": _fmt(g.statistic, 2), "df": str(g.df),
                         "p": _fmt(g.p, 4)})
    table = pl.concat(tables) if tables else None
    return {"competing": {
        "heading": heading, "figures": figs, "gray": gray, "level": level,
        "groups": _group_figures(models, curves or {}, heading, time_label, draw),
        "rows": [] if table is None else [
            {**r, "estimate": _fmt(r["estimate"]), "se": _fmt(r["se"]), "low": _fmt(r["low"]), "high": _fmt(r["high"]),
             "time": f"{r['time']:g}"} for r in table.to_dicts()],
    }}


def tripod_outcome_text(causes: Causes | None) -> str | None:
    """TRIPOD+AI item 8a: how competing events were handled (None: a single event type)."""
    if causes is None or not causes.is_competing:
        return None
    return (f"Competing risks: the event of interest is {causes.label}; {', '.join(causes.competing.values())} "
            "compete with it and count as competing events, not censoring. Cumulative incidence is the "
            "Aalen–Johansen estimate (never 1 − Kaplan–Meier); models predict the cumulative incidence of "
            f"{causes.label} (cause-specific Cox with absolute risk, or Fine–Gray), validated at the horizons as "
            "riskRegression's Score with the cause (AUC(t) with competing events among the controls, Brier(t), "
            "IPA against the Aalen–Johansen null model, calibration against Aalen–Johansen observed risk).")


__all__ = ["cif_figure", "competing_context", "cumulative_incidence_table", "horizons_of", "tripod_outcome_text"]
