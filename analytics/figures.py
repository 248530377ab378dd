"""Report figures: ROC with confidence bands, calibration, decision curves (per model, and all models per
split), AUC-difference and subgroup forest plots and Kaplan-Meier curves with numbers at risk.

Every function takes plain data and returns PNG bytes. Figures are drawn on
:class:`matplotlib.figure.Figure` objects with the Agg canvas (no pyplot
state), under one shared style, and saved without the "Software" metadata
chunk, so the same data always give byte-identical PNGs.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

# every figure draws on its own Agg canvas: the process's backend (a notebook's inline one) is never changed
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analytics.thinning import PRE_THIN_ABOVE, THIN_TOLERANCE, thin, thin_rug, thin_steps  # noqa: F401

log = logging.getLogger("cohortlab.figures")

DPI = 110
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
SPLIT_COLORS = MappingProxyType({"train": "#6E6E6E", "internal": "#0072B2", "external": "#D55E00"})
SPLIT_TITLES = MappingProxyType(
    {"train": "Training (out-of-fold)", "internal": "Internal validation", "external": "External validation"}
)
GROUP_COLORS = MappingProxyType({"low": "#0072B2", "intermediate": "#E69F00", "high": "#D55E00"})
STYLE = MappingProxyType({
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    # a title at a fixed height: matplotlib's automatic placement measures every tick label of the axes
    # (a sixth of a figure's time) only to move titles over top ticks, which no figure here has
    "axes.titley": 1.0,
    "axes.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#D9D9D9",
    "grid.linewidth": 0.6,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
})


def literal(text: object) -> str:
    """``text`` as matplotlib must draw it: literally, never as mathtext.

    Every text a user chose (model, variable and centre names, labels,
    titles) goes through this before it is drawn: a ``$`` pair would start
    mathtext, and ``$x^{`` crashes the figure. An escaped ``\\$`` is drawn as
    ``$``; outside ``$...$`` no other character is special to matplotlib.
    """
    return str(text).replace("$", r"\$")


def model_color(index: int) -> str:
    """The colour of the ``index``-th model (cycling through :data:`PALETTE`)."""
    return PALETTE[index % len(PALETTE)]


@contextmanager
def _styled() -> Iterator[None]:
    with matplotlib.rc_context(dict(STYLE)):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A bare figure on the Agg canvas (no pyplot state), ``width`` x ``height`` inches at :data:`DPI`."""
    # fixed margins instead of a layout engine: cheaper, and identical from run to run
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _margins(fig: Figure, titled: bool, left: float = 0.55, bottom: float = 0.5, right: float = 0.15,
             top: float = 0.3, wspace: float = 0.32) -> None:
    """Margins in inches (the title adds a line at the top)."""
    w, h = fig.get_size_inches()
    top += 0.28 if titled else 0.0
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace)


def save_png(fig: Figure, target: str | Path | BinaryIO, tight: bool = False) -> None:
    """Write ``fig`` as PNG at :data:`DPI` to a path or binary file, without the version-bearing "Software" chunk.

    ``tight`` crops the canvas to what is drawn.
    """
    fig.savefig(target, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight" if tight else None)


def to_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` (:func:`save_png`)."""
    buf = io.BytesIO()
    save_png(fig, buf)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a PNG in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# thinning lives in analytics.thinning; re-exported for the report's figure code


def _panels(fig: Figure, n: int) -> list:
    axes = fig.subplots(1, max(n, 1), squeeze=False)[0]
    return list(axes)


# --- ROC -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocPanel:
    """One ROC curve with an optional pointwise band of sensitivity at fixed specificities.

    ``fpr``/``tpr`` are the empirical curve; ``band_specificity``, ``band_low``
    and ``band_high`` the bootstrap interval of sensitivity (pROC ``ci.se``).
    """

    split: str
    fpr: np.ndarray
    tpr: np.ndarray
    label: str
    band_specificity: np.ndarray | None = None
    band_low: np.ndarray | None = None
    band_high: np.ndarray | None = None


def roc_figure(title: str, panels: Sequence[RocPanel], level: float = 0.95) -> bytes:
    """One ROC panel per split, each with its bootstrap confidence band (shaded)."""
    with _styled():
        fig = new_figure(3.4 * max(len(panels), 1), 3.75)
        _margins(fig, titled=True)
        for ax, p in zip(_panels(fig, len(panels)), panels):
            color = SPLIT_COLORS.get(p.split, PALETTE[0])
            ax.plot([0, 1], [0, 1], color="#A0A0A0", lw=0.8, ls="--")
            if p.band_specificity is not None and p.band_low is not None and p.band_high is not None:
                order = np.argsort(1 - p.band_specificity)
                ax.fill_between((1 - p.band_specificity)[order], p.band_low[order], p.band_high[order],
                                color=color, alpha=0.18, lw=0, label=f"{level:.0%} CI of sensitivity")
            ax.plot(*thin(p.fpr, p.tpr), color=color, drawstyle="default", label=literal(p.label))
            ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 − specificity", ylabel="Sensitivity",
                   title=literal(SPLIT_TITLES.get(p.split, p.split)), aspect="equal")
            ax.legend(loc="lower right")
        fig.suptitle(literal(title), fontsize=10, fontweight="bold")
        return to_png(fig)


def roc_split_figure(split: str, curves: Sequence[tuple[str, np.ndarray, np.ndarray, str]]) -> bytes:
    """All models' ROC curves on one split, overlaid: ``[(model, fpr, tpr, legend label), ...]``."""
    with _styled():
        fig = new_figure(4.6, 4.4)
        _margins(fig, titled=False, right=0.2)
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="#A0A0A0", lw=0.8, ls="--")
        for i, (_, fpr, tpr, label) in enumerate(curves):
            ax.plot(*thin(fpr, tpr), color=model_color(i), label=literal(label))
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 − specificity", ylabel="Sensitivity",
               title=literal(SPLIT_TITLES.get(split, split)), aspect="equal")
        ax.legend(loc="lower right")
        return to_png(fig)


# --- calibration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationPanel:
    """Smoothed (loess) and binned calibration of one split, with the predictions for a rug."""

    split: str
    smooth_prob: np.ndarray
    smooth_observed: np.ndarray
    bin_prob: np.ndarray
    bin_observed: np.ndarray
    bin_low: np.ndarray
    bin_high: np.ndarray
    predictions: np.ndarray
    label: str


def calibration_figure(title: str, panels: Sequence[CalibrationPanel]) -> bytes:
    """Observed against predicted risk: loess line, decile points with Wilson CIs, ideal diagonal, rug."""
    with _styled():
        fig = new_figure(3.4 * max(len(panels), 1), 3.75)
        _margins(fig, titled=True)
        for ax, p in zip(_panels(fig, len(panels)), panels):
            color = SPLIT_COLORS.get(p.split, PALETTE[0])
            ax.plot([0, 1], [0, 1], color="#A0A0A0", lw=0.8, ls="--", label="ideal")
            if p.smooth_prob.size:
                ax.plot(*thin(p.smooth_prob, p.smooth_observed), color=color, label="loess")
            if p.bin_prob.size:
                err = np.vstack([np.clip(p.bin_observed - p.bin_low, 0, None), np.clip(p.bin_high - p.bin_observed, 0, None)])
                ax.errorbar(p.bin_prob, p.bin_observed, yerr=err, fmt="o", ms=3.5, color=color, ecolor=color,
                            elinewidth=0.8, capsize=2, alpha=0.8, label="risk groups (95% CI)")
            rug = thin_rug(p.predictions)
            if rug.size:
                ax.plot(rug, np.full(rug.shape, -0.035), "|", color=color, ms=6, alpha=0.5)
            ax.set(xlim=(-0.01, 1.01), ylim=(-0.06, 1.04), xlabel="Predicted probability",
                   ylabel="Observed proportion", title=literal(SPLIT_TITLES.get(p.split, p.split)), aspect="equal")
            ax.text(0.03, 0.97, literal(p.label), transform=ax.transAxes, va="top", ha="left", fontsize=7.5)
        fig.suptitle(literal(title), fontsize=10, fontweight="bold")
        return to_png(fig)


# --- decision curves ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionPanel:
    """Net benefit of the model, treat-all and treat-none over threshold probabilities."""

    split: str
    threshold: np.ndarray
    net_benefit: np.ndarray
    treat_all: np.ndarray
    treat_none: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def decision_figure(title: str, panels: Sequence[DecisionPanel], level: float = 0.95) -> bytes:
    """Decision curves (Vickers & Elkin, Med Decis Making 2006) per split."""
    with _styled():
        fig = new_figure(3.4 * max(len(panels), 1), 3.3)
        _margins(fig, titled=True)
        for ax, p in zip(_panels(fig, len(panels)), panels):
            color = SPLIT_COLORS.get(p.split, PALETTE[0])
            if p.low is not None and p.high is not None:
                ax.fill_between(p.threshold, p.low, p.high, color=color, alpha=0.18, lw=0, label=f"{level:.0%} CI")
            ax.plot(p.threshold, p.net_benefit, color=color, label="model")
            ax.plot(p.threshold, p.treat_all, color="#444444", lw=1.0, label="treat all")
            ax.plot(p.threshold, p.treat_none, color="#444444", lw=1.0, ls=":", label="treat none")
            top = float(np.nanmax(np.concatenate([p.net_benefit, p.treat_all, p.high if p.high is not None else p.net_benefit])))
            ax.set(xlim=(float(p.threshold.min()), float(p.threshold.max())), ylim=(-0.05, max(top, 0.05) * 1.1),
                   xlabel="Threshold probability", ylabel="Net benefit", title=literal(SPLIT_TITLES.get(p.split, p.split)))
            ax.legend(loc="upper right")
        fig.suptitle(literal(title), fontsize=10, fontweight="bold")
        return to_png(fig)


def decision_split_figure(split: str, threshold: np.ndarray, curves: Sequence[tuple[str, np.ndarray]],
                          treat_all: np.ndarray, treat_none: np.ndarray, note: str = "") -> bytes:
    """All models' decision curves on one split, overlaid, with treat-all and treat-none:
    ``curves`` is ``[(legend label, net benefit), ...]`` over ``threshold``."""
    with _styled():
        fig = new_figure(5.2, 3.8)
        _margins(fig, titled=False, right=0.2)
        ax = fig.subplots()
        for i, (label, nb) in enumerate(curves):
            ax.plot(threshold, nb, color=model_color(i), label=literal(label))
        ax.plot(threshold, treat_all, color="#444444", lw=1.0, label="treat all")
        ax.plot(threshold, treat_none, color="#444444", lw=1.0, ls=":", label="treat none")
        top = float(np.nanmax(np.concatenate([treat_all, *(nb for _, nb in curves)]))) if curves else 0.05
        ax.set(xlim=(float(threshold.min()), float(threshold.max())), ylim=(-0.05, max(top, 0.05) * 1.1),
               xlabel="Threshold probability", ylabel="Net benefit", title=literal(SPLIT_TITLES.get(split, split)))
        if note:
            ax.text(0.02, 0.02, literal(note), transform=ax.transAxes, ha="left", va="bottom", fontsize=7)
        ax.legend(loc="upper right")
        return to_png(fig)


@dataclass(frozen=True)
class SubgroupRow:
    """One model's AUC in one subgroup, with its CI and what the right margin says (n, events)."""

    label: str
    estimate: float
    low: float | None
    high: float | None
    text: str
    color: str = PALETTE[0]


def subgroup_forest_figure(title: str, rows: Sequence[SubgroupRow], level: float = 0.95) -> bytes:
    """Forest plot of AUCs by subgroup, with a line at 0.5 (chance); rows without a CI are drawn as a point."""
    with _styled():
        fig = new_figure(7.2, 1.05 + 0.3 * max(len(rows), 1))
        _margins(fig, titled=bool(title), left=0.2 + 0.062 * max([len(r.label) for r in rows] + [4]),
                 right=1.1, top=0.15, bottom=0.55)
        ax = fig.subplots()
        y = np.arange(len(rows))[::-1]
        for yi, r in zip(y, rows):
            if r.low is not None and r.high is not None:
                ax.plot([r.low, r.high], [yi, yi], color=r.color, lw=1.6)
            ax.plot([r.estimate], [yi], "s", color=r.color, ms=5)
        ax.axvline(0.5, color="#777777", lw=0.8, ls="--")
        ax.set_yticks(y, [literal(r.label) for r in rows])
        ax.set_xlim(-0.02, 1.02)  # an AUC of 0 or 1 stays whole
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(f"AUC ({level:.0%} CI, DeLong)")
        ax.grid(axis="y", visible=False)
        ax2 = ax.twinx()
        ax2.set_ylim(ax.get_ylim())
        ax2.set_yticks(y, [literal(r.text) for r in rows])
        ax2.grid(False)
        ax2.spines["right"].set_visible(False)
        ax2.tick_params(axis="y", length=0)
        if title:
            fig.suptitle(literal(title), fontsize=10, fontweight="bold")
        return to_png(fig)


# --- model comparison ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForestRow:
    """One paired comparison: AUC(a) − AUC(b) with its CI and p-value on one split."""

    label: str
    split: str
    difference: float
    low: float
    high: float
    p_text: str


def forest_figure(rows: Sequence[ForestRow], level: float = 0.95) -> bytes:
    """Forest plot of AUC differences (paired DeLong) with a zero line."""
    with _styled():
        labels = [f"{r.label} · {r.split}" for r in rows]
        fig = new_figure(7.2, 0.95 + 0.34 * max(len(rows), 1))
        _margins(fig, titled=False, left=0.2 + 0.065 * max(len(t) for t in labels), right=0.75, top=0.15, bottom=0.55)
        ax = fig.subplots()
        y = np.arange(len(rows))[::-1]
        for yi, r in zip(y, rows):
            color = SPLIT_COLORS.get(r.split, PALETTE[0])
            ax.plot([r.low, r.high], [yi, yi], color=color, lw=1.6)
            ax.plot([r.difference], [yi], "s", color=color, ms=5)
        ax.axvline(0, color="#777777", lw=0.8, ls="--")
        ax.set_yticks(y, [literal(t) for t in labels])
        ax.set_xlabel(f"Difference in AUC ({level:.0%} CI), paired DeLong")
        ax.grid(axis="y", visible=False)
        lim = max([abs(v) for r in rows for v in (r.low, r.high) if np.isfinite(v)] + [0.05]) * 1.15
        ax.set_xlim(-lim, lim)
        ax2 = ax.twinx()
        ax2.set_ylim(ax.get_ylim())
        ax2.set_yticks(y, [literal(f"p {r.p_text}") for r in rows])
        ax2.grid(False)
        ax2.spines["right"].set_visible(False)
        ax2.tick_params(axis="y", length=0)
        return to_png(fig)


# --- survival ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KMGroup:
    """Kaplan-Meier curve of one risk group with its pointwise band."""

    name: str
    time: np.ndarray
    survival: np.ndarray
    low: np.ndarray
    high: np.ndarray


def at_risk_times(max_time: float, n_ticks: int = 6) -> np.ndarray:
    """Tick times for the numbers-at-risk table: matplotlib's "nice" steps from 0 to ``max_time``."""
    ticks = MaxNLocator(nbins=n_ticks - 1, steps=[1, 2, 2.5, 5, 10], integer=False).tick_values(0.0, max_time)
    return ticks[(ticks >= 0) & (ticks <= max_time + 1e-9)]


def km_figure(title: str, groups: Sequence[KMGroup], times: np.ndarray, at_risk: Mapping[str, Sequence[int]],
              subtitle: str, time_label: str = "Time") -> bytes:
    """Kaplan-Meier curves by risk group, shaded pointwise CIs, and the numbers at risk beneath."""
    with _styled():
        fig = new_figure(5.2, 3.4 + 0.22 * len(groups))
        _margins(fig, titled=False, left=0.65, bottom=0.45, top=0.3, right=0.2)
        ax, tab = fig.subplots(2, 1, height_ratios=[4, 0.45 + 0.3 * len(groups)], sharex=True,
                               gridspec_kw={"hspace": 0.32})
        right = max([float(times[-1])] + [float(np.nanmax(g.time)) for g in groups if g.time.size]) or 1.0
        for i, g in enumerate(groups):
            color = GROUP_COLORS.get(g.name, PALETTE[i % len(PALETTE)])
            # the steps drawn as thinned polylines: a group of a million patients draws as fast as one of a hundred
            sx, sy, lx, ly, hx, hy = thin_steps(g.time, g.survival, g.low, g.high, span=(right, 1.0))
            ax.plot(sx, sy, color=color, label=literal(f"{g.name} risk" if g.name in GROUP_COLORS else g.name))
            band = np.isfinite(ly) & np.isfinite(lx)
            upper = np.isfinite(hy) & np.isfinite(hx)
            if band.any() and upper.any():
                ax.fill(np.concatenate([lx[band], hx[upper][::-1]]), np.concatenate([ly[band], hy[upper][::-1]]),
                        color=color, alpha=0.10, lw=0)
        ax.set(ylim=(-0.02, 1.02), ylabel="Event-free probability", title=literal(title))
        ax.text(0.98, 0.97, literal(subtitle), transform=ax.transAxes, ha="right", va="top", fontsize=7.5)
        ax.legend(loc="lower left")
        tab.set_ylim(-0.5, len(groups) - 0.5)
        tab.set_yticks(range(len(groups))[::-1], [literal(g.name) for g in groups])
        for i, g in enumerate(groups):
            color = GROUP_COLORS.get(g.name, PALETTE[i % len(PALETTE)])
            for t, n in zip(times, at_risk[g.name]):
                tab.text(t, len(groups) - 1 - i, str(int(n)), ha="center", va="center", fontsize=7.5, color=color)
        tab.set_xticks(times, [f"{t:g}" for t in times])
        tab.set_xlim(-0.03 * right, right * 1.03)
        tab.set_xlabel(literal(time_label))
        tab.set_title("Number at risk", fontsize=7.5, loc="left")
        tab.grid(False)
        for side in ("left", "bottom"):
            tab.spines[side].set_visible(False)
        tab.tick_params(axis="y", length=0)
        return to_png(fig)


# --- survival models at fixed horizons ----------------------------------------------------------------


def horizon_figure(title: str, rocs: Sequence[tuple[str, Sequence[float], Sequence[float]]],
                   calibration: Sequence[tuple[str, Sequence[float], Sequence[float]]],
                   smooth: Sequence[tuple[str, Sequence[float], Sequence[float]]] = (),
                   decision: tuple[str, Sequence[float], Sequence[float], Sequence[float]] | None = None) -> bytes:
    """Time-dependent ROC curves, observed vs predicted risk, and the decision curve at the main horizon.

    ``rocs``: ``[(legend label, fpr, tpr), ...]`` per horizon; ``calibration``: grouped points
    ``[(label, predicted, observed Kaplan-Meier), ...]``; ``smooth``: smooth calibration curves, same
    form; ``decision``: ``(label, threshold, net benefit, treat all)``.
    """
    with _styled():
        panels = 3 if decision is not None else 2
        fig = new_figure(4.2 * panels, 4.2)
        _margins(fig, titled=True, right=0.2)
        fig.suptitle(literal(title))
        axes = fig.subplots(1, panels)
        left, right = axes[0], axes[1]
        left.plot([0, 1], [0, 1], color="#A0A0A0", lw=0.8, ls="--")
        for i, (label, fpr, tpr) in enumerate(rocs):
            left.plot(*thin(np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)), color=model_color(i),
                      label=literal(label))
        left.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 − specificity at t",
                 ylabel="Sensitivity at t", title="Time-dependent ROC (IPCW)", aspect="equal")
        if rocs:
            left.legend(loc="lower right")
        right.plot([0, 1], [0, 1], color="#A0A0A0", lw=0.8, ls="--")
        for i, (label, pred, obs) in enumerate(calibration):
            right.plot(pred, obs, color=model_color(i), marker="o", ms=3, ls="none", label=literal(label))
        for i, (_, pred, obs) in enumerate(smooth):
            right.plot(pred, obs, color=model_color(i), lw=1.2)
        right.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="Predicted risk by t",
                  ylabel="Observed risk by t (Kaplan-Meier)", title="Calibration at t", aspect="equal")
        if calibration:
            right.legend(loc="upper left")
        if decision is not None:
            label, thr, nb, treat_all = decision
            ax = axes[2]
            ax.plot(thr, nb, color=model_color(0), label="model")
            ax.plot(thr, treat_all, color="#707070", lw=0.9, label="treat all")
            ax.axhline(0.0, color="#A0A0A0", lw=0.8, ls="--", label="treat none")
            finite = [x for x in list(nb) + list(treat_all) if x is not None and np.isfinite(x)]
            top = max(finite) if finite else 0.1
            ax.set(ylim=(-0.05 * max(top, 0.05), 1.1 * max(top, 0.05)), xlabel="Threshold risk by t",
                   ylabel="Net benefit", title=literal(label))
            ax.legend(loc="upper right")
        return to_png(fig)


# --- harmonisation --------------------------------------------------------------------------------

SPLIT_MARKERS = MappingProxyType({"train": "o", "internal": "s", "external": "^"})


@dataclass(frozen=True)
class HarmonizationPanel:
    """Patients' first two principal components at one stage (before or after ComBat).

    ``coords`` is ``(n, 2)``; ``variance`` the share of variance of each component; ``centre_r2`` the
    mean share of feature variance explained by the centre.
    """

    title: str
    coords: np.ndarray
    variance: Sequence[float]
    centre_r2: float


def harmonization_figure(title: str, centres: Sequence[str], splits: Sequence[str],
                         panels: Sequence[HarmonizationPanel]) -> bytes:
    """PCA scatter of the patients, coloured by centre and shaped by split, one panel per stage.

    The centre effect shows as centres apart before harmonisation and mixed after.
    """
    centres = [str(c) for c in centres]
    order = sorted(set(centres))
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(order)}
    with _styled():
        fig = new_figure(3.5 * max(len(panels), 1) + 1.1, 3.6)
        _margins(fig, titled=True, right=1.25)
        cs, sp = np.asarray(centres, dtype=object), np.asarray(list(splits), dtype=object)
        for ax, p in zip(_panels(fig, len(panels)), panels):
            xy = np.asarray(p.coords, dtype=np.float64).reshape(len(centres), 2)
            for split, marker in SPLIT_MARKERS.items():
                for c in order:
                    rows = (cs == c) & (sp == split)
                    if rows.any():
                        ax.scatter(xy[rows, 0], xy[rows, 1], s=16, marker=marker, color=colour[c], alpha=0.75,
                                   linewidths=0.3, edgecolors="white")
            var = list(p.variance) + [0.0, 0.0]
            ax.set(xlabel=f"PC1 ({var[0]:.0%})", ylabel=f"PC2 ({var[1]:.0%})",
                   title=literal(f"{p.title}: centre R² {p.centre_r2:.2f}"))
        handles = [ax.scatter([], [], s=16, marker="o", color=colour[c], label=literal(f"centre {c}")) for c in order]
        handles += [ax.scatter([], [], s=16, marker=m, color="#6E6E6E", label=s) for s, m in SPLIT_MARKERS.items()
                    if (sp == s).any()]
        fig.legend(handles=handles, loc="center right", frameon=False)
        fig.suptitle(literal(title), fontsize=10, fontweight="bold")
        return to_png(fig)


# --- proportional hazards: scaled Schoenfeld residuals ----------------------------------------------------------

PH_FLAG_COLOR = "#C00000"  # a term whose proportional-hazards test rejects at 5%


@dataclass(frozen=True)
class SchoenfeldPanel:
    """One term's scaled Schoenfeld residuals against transformed time, its smooth with the +-2 SE band, and the
    term's Grambsch-Therneau test p-value (``x``/``time``: the events' transformed and real times)."""

    term: str
    x: np.ndarray
    time: np.ndarray
    residuals: np.ndarray
    smooth_x: np.ndarray
    fit: np.ndarray
    band: np.ndarray
    p: float
    alpha: float = 0.05

    @property
    def flagged(self) -> bool:
        """Whether proportional hazards is rejected for this term (``p < alpha``)."""
        return bool(self.p < self.alpha)

    @property
    def title(self) -> str:
        """The panel title: term and p, marked when flagged."""
        p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
        return f"{self.term}: {p}" + (" (non-proportional)" if self.flagged else "")


def schoenfeld_panels(zph: object, alpha: float = 0.05) -> list[SchoenfeldPanel]:
    """One :class:`SchoenfeldPanel` per term of an :class:`analytics.stats.zph.Zph` (smooth as ``plot.cox.zph``)."""
    from analytics.stats.zph import Zph, smooth

    if not isinstance(zph, Zph):
        raise TypeError("schoenfeld_panels needs the result of analytics.stats.zph.cox_zph")
    out = []
    for i, test in enumerate(zph.tests[:-1]):
        s = smooth(zph, i)
        out.append(SchoenfeldPanel(test.term, zph.x, zph.time, zph.residuals[:, i], s.x, s.fit, s.band, test.p,
                                   alpha))
    return out


def _time_ticks(x: np.ndarray, time: np.ndarray, n: int = 5) -> tuple[np.ndarray, list[str]]:
    """Tick positions on the transformed-time axis labelled with real times (as ``plot.cox.zph`` labels them)."""
    order = np.argsort(x, kind="stable")
    xs, ts = x[order], time[order]
    nice = MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]).tick_values(ts.min(), ts.max())
    nice = nice[(nice >= ts.min()) & (nice <= ts.max())]
    _, first = np.unique(ts, return_index=True)
    return np.interp(nice, ts[first], xs[first]), [f"{t:g}" for t in nice]


def schoenfeld_axes(fig: Figure, panels: Sequence[SchoenfeldPanel], time_label: str = "Time") -> list:
    """Draw the panels on ``fig`` (a grid, up to 3 per row); returns the axes (their titles carry the p-values)."""
    cols = min(3, max(len(panels), 1))
    rows = -(-len(panels) // cols)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, p in zip(axes, panels):
        color = PH_FLAG_COLOR if p.flagged else "#222222"
        ax.scatter(p.x, p.residuals, s=6, color="#8C8C8C", alpha=0.6, lw=0)
        ax.fill_between(p.smooth_x, p.fit - p.band, p.fit + p.band, color=PALETTE[0], alpha=0.15, lw=0)
        ax.plot(p.smooth_x, p.fit, color=PALETTE[0])
        finite = np.isfinite(p.residuals)
        if finite.any():  # the band can dwarf the residuals: show the residuals' range and the smooth
            lo = min(np.nanmin(p.residuals), float((p.fit - p.band).min()))
            hi = max(np.nanmax(p.residuals), float((p.fit + p.band).max()))
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        ax.set_title(literal(p.title), color=color, fontweight="bold" if p.flagged else "normal")
        ax.set_ylabel(literal(f"Beta(t) for {p.term}"))
        if not np.array_equal(p.x, p.time):
            ticks, labels = _time_ticks(p.x, p.time)
            ax.set_xticks(ticks, labels)
        ax.set_xlabel(literal(time_label))
        if p.flagged:
            for side in ("left", "bottom"):
                ax.spines[side].set_color(PH_FLAG_COLOR)
    return axes


def schoenfeld_figure(title: str, panels: Sequence[SchoenfeldPanel], time_label: str = "Time") -> bytes:
    """Scaled Schoenfeld residuals per term with the smooth and its +-2 SE band (``plot.cox.zph``); a term whose
    test has p < alpha gets a red, bold title."""
    cols = min(3, max(len(panels), 1))
    rows = -(-max(len(panels), 1) // cols)
    with _styled():
        fig = new_figure(2.7 * cols + 0.4, 2.3 * rows + 0.5)
        _margins(fig, titled=bool(title), left=0.6, bottom=0.45, top=0.35)
        fig.subplots_adjust(hspace=0.7)  # room for the x label and the next row's title
        schoenfeld_axes(fig, panels, time_label)
        if title:
            fig.suptitle(literal(title), fontsize=10, fontweight="bold")
        return to_png(fig)


# --- bias-corrected calibration (internal validation) ----------------------------------------------------


@dataclass(frozen=True)
class CorrectedCalibrationPanel:
    """One bias-corrected calibration curve (``rms::calibrate``): apparent and corrected against predicted.

    ``survival``: points per Kaplan-Meier group on the survival scale at one horizon (``title`` names it); else
    lines on the probability scale. ``label``: the text in the corner (the mean absolute error).
    """

    title: str
    predicted: np.ndarray
    apparent: np.ndarray
    corrected: np.ndarray
    label: str
    survival: bool = False


def corrected_calibration_figure(title: str, panels: Sequence[CorrectedCalibrationPanel]) -> bytes:
    """Apparent and bias-corrected calibration with the ideal diagonal, one panel per curve (Harrell 2015, 10.11)."""
    with _styled():
        fig = new_figure(max(3.4 * len(panels), 4.6), 3.75)  # one panel: room for the title
        _margins(fig, titled=True)
        for ax, p in zip(_panels(fig, len(panels)), panels):
            ax.plot([0, 1], [0, 1], color="#A0A0A0", lw=0.8, ls="--", label="ideal")
            style = {"marker": "o", "ms": 3.5} if p.survival else {}
            ax.plot(p.predicted, p.apparent, color=PALETTE[0], lw=1.0, label="apparent", **style)
            ax.plot(p.predicted, p.corrected, color=PALETTE[1], lw=1.4, label="bias-corrected",
                    **({"marker": "x", "ms": 5} if p.survival else {}))
            what = "survival" if p.survival else "probability"
            ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.04), xlabel=f"Predicted {what}",
                   ylabel="Observed (Kaplan–Meier)" if p.survival else "Observed proportion",
                   title=literal(p.title), aspect="equal")
            ax.text(0.03, 0.97, literal(p.label), transform=ax.transAxes, va="top", ha="left", fontsize=7.5)
            ax.legend(loc="lower right", fontsize=7, frameon=False)
        fig.suptitle(literal(title), fontsize=10, fontweight="bold")
        return to_png(fig)
