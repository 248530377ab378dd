"""Write one model's SHAP explanation: values as Parquet, beeswarm, bars and waterfalls as PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from analytics.explain import plots
from analytics.explain.grouping import importance
from analytics.explain.manifest import FigureEntry, ModelOutputs, ValueEntry
from analytics.explain.shap_values import ShapExplanation
from pipeline import atomic
from pipeline.store import safe_name


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    with atomic.staged(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=False)
    return path


def _who(expl: ShapExplanation) -> str:
    counts = {s: expl.splits.count(s) for s in dict.fromkeys(expl.splits)}
    return f"{len(expl)} patients (" + ", ".join(f"{s} {n}" for s, n in counts.items()) + ")"


def write_shap(
    expl: ShapExplanation,
    out_dir: Path,
    model: str,
    waterfalls: Mapping[str, str],
    background: str,
) -> ModelOutputs:
    """Values and figures of one model's explanation.

    Parameters
    ----------
    expl
        The explanation (feature level).
    out_dir
        Folder to write into (the model's folder under ``explain/``, or its temporary twin).
    model
        The model's name: the prefix of every path in the manifest.
    waterfalls
        ``patient_id -> why this patient`` for the per-patient waterfall plots.
    background
        How the background was formed (for captions).
    """
    out_dir = Path(out_dir)
    grouped = expl.grouped()
    out = ModelOutputs()
    who = _who(expl)
    space = expl.space

    def rel(name: str) -> str:
        return f"{model}/{name}"

    write_parquet(expl.frame("feature"), out_dir / "shap_values.parquet")
    out.values.append(ValueEntry(model, "shap_values", rel("shap_values.parquet"),
                                 f"SHAP values per patient and input ({space}), with base value and output"))
    write_parquet(expl.frame("group"), out_dir / "shap_groups.parquet")
    out.values.append(ValueEntry(model, "shap_groups", rel("shap_groups.parquet"),
                                 f"SHAP values summed per input block ({space})"))
    if len(expl) == 0:
        return out

    plots.beeswarm(expl, out_dir / "shap_beeswarm.png", f"{model}: SHAP values ({space})")
    out.figures.append(FigureEntry(
        model, "shap_beeswarm", None, rel("shap_beeswarm.png"),
        f"{model}: SHAP value of each input for {who}, one dot per patient, coloured by the input's value; "
        f"{expl.method}; output explained: {space}; background: {background}."))
    labels = [expl.grouping.label(f) for f in expl.features]
    plots.bar(labels, importance(expl.values), out_dir / "shap_bar.png", f"{model}: mean |SHAP| per input",
              f"mean |SHAP value| ({space})")
    out.figures.append(FigureEntry(
        model, "shap_bar", None, rel("shap_bar.png"),
        f"{model}: importance of each input (mean absolute SHAP value over {who}; {space})."))
    if not expl.grouping.trivial:
        glabels = [grouped.grouping.label(g) for g in grouped.features]
        plots.bar(glabels, importance(grouped.values), out_dir / "shap_grouped_bar.png",
                  f"{model}: mean |SHAP| per input block", f"mean |grouped SHAP value| ({space})")
        out.figures.append(FigureEntry(
            model, "shap_grouped_bar", None, rel("shap_grouped_bar.png"),
            f"{model}: importance of each input block (an image feature set, a model score or a clinical "
            f"variable): SHAP values summed within the block, then mean absolute value over {who}; {space}."))
    ids = list(expl.patient_ids)
    for pid, why in waterfalls.items():
        if pid not in ids:
            continue
        row = ids.index(pid)
        name = f"shap_waterfall_{safe_name(pid)}.png"
        plots.waterfall(grouped, row, out_dir / name, f"{model}: patient {pid} ({expl.splits[row]})")
        out.figures.append(FigureEntry(
            model, "shap_waterfall", pid, rel(name),
            f"{model}, patient {pid} ({expl.splits[row]}; {why}): contributions of each input block from the "
            f"base value {grouped.base_values[row]:.3g} to the model's output {grouped.output[row]:.3g} ({space})."))
    return out


def default_waterfall_patients(expl: ShapExplanation) -> dict[str, str]:
    """The highest- and lowest-scored external patient (internal when there is none)."""
    for split in ("external", "internal"):
        rows = [i for i, s in enumerate(expl.splits) if s == split]
        if rows:
            hi = max(rows, key=lambda i: (expl.output[i], expl.patient_ids[i]))
            lo = min(rows, key=lambda i: (expl.output[i], expl.patient_ids[i]))
            out = {expl.patient_ids[hi]: f"highest-scored {split} patient"}
            out.setdefault(expl.patient_ids[lo], f"lowest-scored {split} patient")
            return out
    return {}


def chosen_patients(expl: ShapExplanation, patients: Sequence[str] | None) -> dict[str, str]:
    """``patient_id -> why`` for waterfalls: the patients asked for, else :func:`default_waterfall_patients`."""
    if patients:
        return {p: "chosen" for p in patients}
    return default_waterfall_patients(expl)
