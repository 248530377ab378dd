"""SHAP figures: beeswarm, bar, grouped bar and per-patient waterfall (matplotlib, Agg, no pyplot state).

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg
canvas, so nothing depends on the interactive backend or on global pyplot
state, and saved as PNG without a software tag, so the same values give
byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analytics.explain.grouping import importance
from analytics.explain.shap_values import ShapExplanation
from analytics.figures import literal, new_figure, save_png
from pipeline import atomic

POSITIVE = "#c0392b"  # pushes towards the positive class
NEGATIVE = "#2471a3"
FONT = 9


def save(fig: Figure, path: Path, tight: bool = True) -> Path:
    """Write a PNG atomically, without metadata that would change between runs."""
    with atomic.staged(path) as tmp:
        save_png(fig, tmp, tight)
    return Path(path)


def axis_label(space: str) -> str:
    return f"SHAP value (change in {space})"


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _value_text(v: object) -> str:
    if v is None:
        return "missing"
    if isinstance(v, (float, np.floating)):
        return "missing" if not np.isfinite(v) else f"{float(v):.3g}"
    return str(v)


def _shown_value(column: np.ndarray, row: int) -> str:
    """`` = value`` for a single input; nothing for a block explained as a whole (no single value)."""
    if all(v is None for v in column):
        return ""
    return f" = {_value_text(column[row])}"


def _colour_values(column: np.ndarray) -> np.ndarray:
    """Feature values as [0, 1] by rank among the explained rows (categories by level order); NaN when not shown."""
    out = np.full(len(column), np.nan)
    numeric = [isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in column]
    if all(v is None for v in column):
        return out
    if all(numeric):
        x = np.array(column, dtype=np.float64)
    else:
        levels = sorted({str(v) for v in column if v is not None})
        pos = {lv: i for i, lv in enumerate(levels)}
        x = np.array([np.nan if v is None else pos[str(v)] for v in column], dtype=np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        out[ok] = 0.5
        return out
    from scipy.stats import rankdata

    r = rankdata(x[ok])
    out[ok] = (r - 1) / (len(r) - 1)
    return out


def _swarm(values: np.ndarray, width: float = 0.4, bins: int = 60) -> np.ndarray:
    """Vertical offsets that spread points sharing an x bin (deterministic: in row order)."""
    if len(values) == 0:
        return np.zeros(0)
    span = np.ptp(values) or 1.0
    b = np.floor((values - values.min()) / span * bins).astype(np.int64)
    offsets = np.zeros(len(values))
    counts: dict[int, int] = {}
    for i, k in enumerate(b):
        c = counts.get(int(k), 0)
        counts[int(k)] = c + 1
        offsets[i] = ((c + 1) // 2) * (1 if c % 2 else -1)
    peak = max(np.abs(offsets).max(), 1.0)
    return offsets / peak * width * min(1.0, peak / 8)


def _top(expl: ShapExplanation, max_display: int) -> np.ndarray:
    imp = importance(expl.values)
    order = np.argsort(-imp, kind="stable")
    return order[:max_display]


def beeswarm(expl: ShapExplanation, path: Path, title: str, max_display: int = 12) -> Path:
    """One row per feature (the most important first), one dot per patient at its SHAP value,
    coloured by the feature's value (low blue, high red; grey where not a single value)."""
    top = _top(expl, max_display)
    n_rows = len(top)
    fig = new_figure(7.2, 1.1 + 0.38 * max(n_rows, 1))
    ax = fig.add_subplot(1, 1, 1)
    cmap = _cmap()
    for r, j in enumerate(top):
        y = n_rows - 1 - r
        vals = expl.values[:, j]
        colour = _colour_values(expl.data[:, j])
        off = _swarm(vals)
        grey = ~np.isfinite(colour)
        if grey.any():
            ax.scatter(vals[grey], y + off[grey], s=14, c="#9a9a9a", linewidths=0, zorder=2)
        if (~grey).any():
            ax.scatter(vals[~grey], y + off[~grey], s=14, c=colour[~grey], cmap=cmap, vmin=0, vmax=1,
                       linewidths=0, zorder=3)
    ax.axvline(0, color="#555555", lw=0.8, zorder=1)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([literal(_short(expl.grouping.label(expl.features[j]))) for j in top[::-1]], fontsize=FONT)
    ax.set_xlabel(axis_label(expl.space), fontsize=FONT)
    ax.set_title(literal(title), fontsize=FONT + 1)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.set_ylim(-0.7, n_rows - 0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, fraction=0.03, pad=0.02, ticks=[0, 1])
    bar.ax.set_yticklabels(["low", "high"], fontsize=FONT - 1)
    bar.set_label("feature value", fontsize=FONT - 1)
    return save(fig, path)


def _cmap():  # noqa: ANN202 - a matplotlib colormap
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("shap_lowhigh", [NEGATIVE, "#8e44ad", POSITIVE])


def bar(names: Sequence[str], values: np.ndarray, path: Path, title: str, xlabel: str, max_display: int = 15) -> Path:
    """Horizontal bars of mean |SHAP| per feature or group, largest at the top."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-values, kind="stable")[:max_display]
    n = len(order)
    fig = new_figure(7.2, 1.0 + 0.34 * max(n, 1))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n)[::-1]
    ax.barh(y, values[order], color=POSITIVE, height=0.65)
    for yy, v in zip(y, values[order]):
        ax.text(v, yy, f" {v:.3g}", va="center", fontsize=FONT - 1)
    ax.set_yticks(y)
    ax.set_yticklabels([literal(_short(names[i])) for i in order], fontsize=FONT)
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_title(literal(title), fontsize=FONT + 1)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.set_xlim(0, (values[order].max() if n else 1) * 1.18 or 1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return save(fig, path)


def waterfall(expl: ShapExplanation, row: int, path: Path, title: str, max_display: int = 10) -> Path:
    """One patient: from the base value, each feature's SHAP value in turn (largest |value| last,
    beside the output), the rest summed into one bar, ending at the model's output."""
    vals = expl.values[row]
    order = np.argsort(-np.abs(vals), kind="stable")
    shown = order[: max_display - 1] if len(order) > max_display else order
    rest = order[len(shown):]
    items = [(_short(expl.grouping.label(expl.features[j]), 40) + _shown_value(expl.data[:, j], row), vals[j])
             for j in shown[::-1]]
    if len(rest):
        items.insert(0, (f"{len(rest)} other features", float(vals[rest].sum())))
    base = float(expl.base_values[row])
    fig = new_figure(7.6, 1.3 + 0.4 * len(items))
    ax = fig.add_subplot(1, 1, 1)
    start = base
    for i, (_, v) in enumerate(items):
        ax.barh(i, v, left=start, color=POSITIVE if v >= 0 else NEGATIVE, height=0.6)
        ax.text(start + v, i, f" {v:+.3g} " if v >= 0 else f" {v:+.3g} ", va="center",
                ha="left" if v >= 0 else "right", fontsize=FONT - 1)
        start += v
    ax.axvline(base, color="#777777", lw=0.8, ls="--")
    ax.axvline(start, color="#222222", lw=0.8)
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels([literal(t) for t, _ in items], fontsize=FONT)
    ax.set_xlabel(f"{expl.space}: base value {base:.3g} -> output {start:.3g}", fontsize=FONT)
    ax.set_title(literal(title), fontsize=FONT + 1)
    ax.tick_params(axis="x", labelsize=FONT)
    lo = min(base, start, *(base + np.cumsum([v for _, v in items])))
    hi = max(base, start, *(base + np.cumsum([v for _, v in items])))
    pad = (hi - lo) * 0.25 or 0.1
    ax.set_xlim(lo - pad, hi + pad)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return save(fig, path)
