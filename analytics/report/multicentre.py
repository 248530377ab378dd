"""The report's multi-centre section: per model, each external centre's measures beside the mean and SD
of its linear predictor, the meta-analysis of every pooled measure (estimate, CI, prediction intervals, tau²,
I²), a forest plot per measure (centres, the pooled diamond, the prediction interval), and the models
updated for each centre with the warning that their performance is apparent."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analytics import figures
from analytics.report.cells import Embedded
from analytics.report.figure_cache import FigureCache
from analytics.validation.multicentre import ModelMulticentre
from analytics.validation.result import Validation
from analytics.validation.values import Estimate, fmt_number

# measure: (label, the line of no miscalibration / no discrimination, log x axis)
MEASURES = {"auc": ("AUC", 0.5, False), "calibration_in_the_large": ("Calibration-in-the-large", 0.0, False),
            "calibration_recalibration_slope": ("Calibration slope", 1.0, False), "oe_ratio": ("O:E ratio", 1.0, True)}


@dataclass(frozen=True)
class ForestCentre:
    """One centre's estimate and CI in a forest plot (``low``/``high`` None without a CI)."""

    label: str
    estimate: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ForestPooled:
    """The pooled estimate (drawn as a diamond over its CI) and its prediction interval (None with two centres)."""

    label: str
    estimate: float
    low: float
    high: float
    pi_low: float | None
    pi_high: float | None


def meta_forest_figure(title: str, xlabel: str, centres: Sequence[ForestCentre], pooled: ForestPooled,
                       reference: float, log: bool = False) -> bytes:
    """Forest plot of one measure: a square and CI per centre, the pooled diamond, and the prediction interval
    as a line with end caps beneath it; a dashed line at ``reference``."""
    with figures._styled():
        rows = len(centres) + 2
        fig = figures.new_figure(7.2, 1.15 + 0.3 * rows)
        labels = [c.label for c in centres] + [pooled.label, "prediction interval"]
        figures._margins(fig, titled=True, left=0.25 + 0.065 * max(len(t) for t in labels), right=0.3, top=0.15,
                         bottom=0.55)
        ax = fig.subplots()
        y = np.arange(rows)[::-1].astype(float)
        color = figures.PALETTE[0]
        for yi, c in zip(y, centres):
            if c.low is not None and c.high is not None:
                ax.plot([c.low, c.high], [yi, yi], color=color, lw=1.4)
            ax.plot([c.estimate], [yi], "s", color=color, ms=5)
        yd = y[len(centres)]
        ax.fill([pooled.low, pooled.estimate, pooled.high, pooled.estimate], [yd, yd + 0.3, yd, yd - 0.3],
                color="#333333")
        yp = y[-1]
        if pooled.pi_low is not None and pooled.pi_high is not None:
            ax.plot([pooled.pi_low, pooled.pi_high], [yp, yp], color="#333333", lw=1.4)
            ax.plot([pooled.pi_low, pooled.pi_high], [yp, yp], "|", color="#333333", ms=9)
        ax.axvline(reference, color="#777777", lw=0.8, ls="--")
        if log:
            ax.set_xscale("log")
            # plain numbers (0.5, 1, 2) rather than powers of ten
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(y, [figures.literal(t) for t in labels])
        ax.set_ylim(-0.7, rows - 0.3)
        ax.set_xlabel(figures.literal(xlabel))
        ax.grid(axis="y", visible=False)
        fig.suptitle(figures.literal(title), fontsize=10, fontweight="bold")
        return figures.to_png(fig)


LABELS = {"c_index": "C (Harrell)", "lp_calibration_slope": "Calibration slope (Cox)", "calibration_brier": "Brier",
          "membership_c": "Membership c"}


def _label(measure: str) -> str:
    """A measure's column heading: ``oe_ratio_t5`` reads "O:E at 5"."""
    if measure in MEASURES:
        return MEASURES[measure][0]
    for prefix, text in (("oe_ratio_t", "O:E"), ("auc_t", "AUC"), ("brier_t", "Brier")):
        if measure.startswith(prefix):
            return f"{text} at {measure.removeprefix(prefix)}"
    return LABELS.get(measure, measure.replace("_", " "))


def _text(e: Estimate | None, decimals: int = 3) -> str:
    return "–" if e is None or e.estimate is None else e.text(decimals) if e.low is not None else fmt_number(e.estimate, decimals)


def _num(x: Any, decimals: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt_number(float(x), decimals)


def _figures(mc: ModelMulticentre, level: float, cache: FigureCache | None) -> list[Embedded]:
    out = []
    for p in mc.pooled:
        label, reference, log = MEASURES.get(p.measure, (_label(p.measure), 0.0, False))
        if p.measure.startswith("oe_ratio_t"):
            reference, log = 1.0, True
        elif p.measure in ("c_index", "lp_calibration_slope") or p.measure.startswith("auc_t"):
            reference = 1.0 if p.measure == "lp_calibration_slope" else 0.5
        centres = []
        for c in mc.centres:
            e = c.measures.get(p.measure)
            if c.center in p.centers and e is not None and e.estimate is not None:
                centres.append(ForestCentre(f"{c.center} ({c.n} / {c.events})", e.estimate, e.low, e.high))
        r = p.result
        pooled = ForestPooled(f"pooled ({r['method']}, k = {r['k']})", r["estimate"], r["low"], r["high"],
                              r.get("pi_low"), r.get("pi_high"))
        where = "" if mc.split == "external" else " (IECV)"
        png = (cache or FigureCache(None)).png(meta_forest_figure, f"{mc.model}: {label} by centre{where}",
                                               f"{label} ({level:.0%} CI)", centres, pooled, reference, log)
        pi = ("prediction interval for a new centre: metafor predict.rma (t, k − 1 df)" if pooled.pi_low is not None
              else "no prediction interval with two centres")
        prefix = "fig-meta" if mc.split == "external" else f"fig-meta-{mc.split}"
        out.append(Embedded(f"{prefix}-{mc.model}-{p.measure}", figures.data_uri(png),
                            f"Forest plot of {label} by centre, {mc.model}",
                            f"{label} per {'external' if mc.split == 'external' else 'left-out development'} centre "
                            f"(patients / events) with {level:.0%} CIs; diamond: pooled "
                            f"estimate ({p.result['method_text']}); {pi}."))
    return out


def multicentre_blocks(models: Sequence[str], validation: Validation, cache: FigureCache | None = None,
                       ) -> list[dict[str, Any]]:
    """One block per model validated on two or more external centres: its centre table, pooled table, forest
    plots and updated models."""
    out = []
    level = validation.level
    entries = [(model, mc) for model in models for mc in sorted(validation.multicentre.values(), key=lambda x: x.split)
               if mc.model == model]
    for model, mc in entries:
        # the measures any centre has, in the order written (a survival model's differ from a binary one's)
        shown = [k for k in dict.fromkeys(k for c in mc.centres for k in c.measures) if k not in ("lp_mean", "lp_sd")]
        headers = [_label(k) for k in shown]
        centres = [{"center": c.center, "n": c.n, "events": c.events, "note": c.note or "",
                    "cells": [_text(c.measures.get(k)) for k in shown],
                    "lp": (f"{_num(c.measures['lp_mean'].estimate, 2)} ({_num(c.measures['lp_sd'].estimate, 2)})"
                           if "lp_mean" in c.measures and "lp_sd" in c.measures else "–")}
                   for c in mc.centres]
        pooled = []
        for p in mc.pooled:
            r = p.result
            pooled.append({"measure": _label(p.measure), "k": r["k"],
                           "estimate": f"{_num(r['estimate'])} ({_num(r['low'])}–{_num(r['high'])})",
                           "pi": f"{_num(r.get('pi_low'))}–{_num(r.get('pi_high'))}" if r.get("pi_low") is not None else "–",
                           "pi_riley": (f"{_num(r.get('pi_riley_low'))}–{_num(r.get('pi_riley_high'))}"
                                        if r.get("pi_riley_low") is not None else "–"),
                           "tau2": _num(r.get("tau2"), 4), "i2": _num(r.get("i2"), 1), "method": r["method_text"],
                           "notes": "; ".join(r.get("notes") or [])})
        ushown = [k for k in dict.fromkeys(k for u in mc.updated for k in u.measures)
                  if k not in ("lp_mean", "lp_sd", "calibration_brier")]
        uheaders = [f"{_label(k)} (apparent)" for k in ushown]
        updated = [{"name": u.name, "center": u.center, "choice": u.choice.replace("_", " "),
                    "cells": [_text(u.measures.get(k)) for k in ushown],
                    "tests": "; ".join(f"{t['reduced']} vs {t['full']}: χ² {_num(t['statistic'], 2)} on {t['df']} df, "
                                       f"p {_num(t['p'], 3)}" for t in u.tests),
                    "warning": u.warning} for u in mc.updated]
        title = (model if mc.split == "external" else
                 f"{model}: internal-external cross-validation (each development centre left out in turn)")
        out.append({"headers": headers, "uheaders": uheaders, "model": model, "id": model if mc.split == "external" else f"{model}-{mc.split}", "title": title,
                    "centres": centres, "pooled": pooled, "figures": _figures(mc, level, cache),
                    "updated": updated, "notes": list(mc.notes)})
    return out


def multicentre_context(models: Sequence[str], validation: Validation | None,
                        cache: FigureCache | None = None) -> Mapping[str, Any]:
    """The section's context: ``multicentre`` blocks (empty without metrics or external centres)."""
    return {"multicentre": multicentre_blocks(models, validation, cache) if validation is not None else []}
