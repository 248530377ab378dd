"""Attention figures of one MIL model: slide heatmaps and top tiles (WSI), per-slice strips (2.5D CT).

The attention weights come from the model's saved ``attention.parquet``
(:mod:`analytics.models.persist`): every instance of every patient, from the
outer-fold model that did not see the patient (training patients) or the final
model (internal and external patients). Sources are located through the
store's ``slides`` / ``scans`` rows, and read with the feature set's own
parameters (its ``feature_sets.params`` record), so the tiles and slices shown
are the ones that were embedded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from analytics.explain.ct_slices import slice_strip
from analytics.explain.heatmaps import rank_normalise, slide_heatmap
from analytics.explain.manifest import FigureEntry, ModelOutputs, ValueEntry
from analytics.explain.shap_outputs import write_parquet
from analytics.explain.tiles import TileGeometry, gallery, read_tiles, top_bottom
from pipeline import ct, wsi
from pipeline.store import safe_name

log = logging.getLogger("cohortlab.explain.attention")

TOP_K = 8
MASK_KEYS = ("saturation_threshold", "min_saturation", "min_area_um2", "max_hole_um2")


@dataclass
class AttentionRun:
    outputs: ModelOutputs = field(default_factory=ModelOutputs)
    notes: list[str] = field(default_factory=list)


def default_patients(predictions: pl.DataFrame) -> dict[str, str]:
    """Highest- and lowest-scored external patient (internal when there is none)."""
    for split in ("external", "internal"):
        rows = predictions.filter(pl.col("split") == split).sort(["score", "patient_id"])
        if rows.height:
            out = {rows["patient_id"][-1]: f"highest-scored {split} patient"}
            out.setdefault(rows["patient_id"][0], f"lowest-scored {split} patient")
            return out
    return {}


def _slide_outputs(model: str, pid: str, sid: str, rows: pl.DataFrame, source: Mapping[str, Any],
                   params: dict[str, Any], out_dir: Path, why: str, top_k: int) -> list[FigureEntry]:
    geometry = TileGeometry.from_params(params)
    override = source.get("mpp") if source.get("mpp_source") == "manifest" else None
    detection = params.get("tissue_detection") or {}
    mask_options = {k: detection[k] for k in MASK_KEYS if k in detection}
    xs, ys = rows["x"].to_numpy(), rows["y"].to_numpy()
    att = rows["attention"].to_numpy()
    tag = f"{safe_name(pid)}_{safe_name(sid)}"
    with wsi.open_slide(source["path"], mpp=override) as slide:
        extent = geometry.extent0(slide)
        heat = f"attention_heatmap_{tag}.png"
        slide_heatmap(slide, xs, ys, att, extent, out_dir / heat,
                      f"{model}: attention over slide {sid} (patient {pid})", mask_options)
        top, bottom = top_bottom(att, top_k)
        tiles = read_tiles(slide, np.concatenate([xs[top], xs[bottom]]), np.concatenate([ys[top], ys[bottom]]),
                           geometry)
    gal = f"top_tiles_{tag}.png"
    gallery(tiles[: len(top)], att[top], tiles[len(top):], att[bottom], out_dir / gal,
            f"{model}: slide {sid} (patient {pid})",
            list(zip(xs[top].tolist(), ys[top].tolist())), list(zip(xs[bottom].tolist(), ys[bottom].tolist())))
    where = f"{len(att)} tiles of {geometry.tile} px at {geometry.mpp:g} um/px"
    return [
        FigureEntry(model, "attention_heatmap", pid, f"{model}/{heat}",
                    f"{model}: attention of each tile of slide {sid} (patient {pid}, {why}), rank-normalised within "
                    f"the slide (bright = most attended), over the slide thumbnail with the tissue outline; {where}."),
        FigureEntry(model, "top_tiles", pid, f"{model}/{gal}",
                    f"{model}: the {len(top)} most and {len(bottom)} least attended tiles of slide {sid} "
                    f"(patient {pid}), read back from the slide as embedded ({where}); titles give the attention "
                    "weight and the tile's level-0 corner."),
    ]


def _scan_outputs(model: str, pid: str, sid: str, rows: pl.DataFrame, source: Mapping[str, Any],
                  params: dict[str, Any], out_dir: Path, why: str) -> list[FigureEntry]:
    label = source.get("mask_label")
    vol = ct.load(source["image_path"], source.get("mask_path"), None if label is None else int(label))
    crop = ct.crop_roi(vol, params.get("spacing") or ct.DEFAULT_SPACING,
                       float(params.get("margin_mm", ct.DEFAULT_MARGIN_MM)))
    x0, y0, z0 = crop.start
    if (rows["x"] != x0).any() or (rows["y"] != y0).any():
        raise ValueError(f"{source['image_path']}: the ROI crop starts at ({x0}, {y0}) now but the instances were "
                         f"embedded from ({rows['x'][0]}, {rows['y'][0]}); the scan or mask changed since embedding")
    image = ct.apply_window(crop.image, params.get("window") or ct.DEFAULT_WINDOW)
    z = rows["z"].to_numpy() - z0
    name = f"ct_slice_attention_{safe_name(pid)}_{safe_name(sid)}.png"
    _, shown = slice_strip(image, crop.mask, z, rows["attention"].to_numpy(), out_dir / name,
                           f"{model}: attention per slice, scan {sid} (patient {pid})")
    return [FigureEntry(model, "ct_slice_attention", pid, f"{model}/{name}",
                        f"{model}: attention of each ROI slice of scan {sid} (patient {pid}, {why}); {len(shown)} of "
                        f"{len(z)} slices shown, cut to the ROI (outlined) and windowed as embedded; frame colour and "
                        "bar height give the slice's attention.")]


def mil_outputs(
    model: str,
    attention: pl.DataFrame,
    patients: Mapping[str, str],
    sources: Mapping[str, Mapping[str, Any]],
    modality: str,
    params: dict[str, Any],
    out_dir: Path,
    top_k: int = TOP_K,
) -> AttentionRun:
    """Figures for ``patients`` (``id -> why chosen``) and the attention rows they show.

    Parameters
    ----------
    model
        The model's name (path prefix in the manifest).
    attention
        The model's attention table (``patient_id, source_id, instance, x, y, z, attention``).
    patients
        Patients to draw.
    sources
        ``source_id -> slides/scans row`` (paths absolute).
    modality, params
        The feature set's modality and parameters.
    out_dir
        Folder to write into.
    top_k
        Tiles per row of the gallery.
    """
    run = AttentionRun()
    mode = params.get("mode")
    if modality == "ct" and mode != "2.5d":
        run.notes.append(f"{model}: one instance per scan ({mode} CT features); no per-slice attention to draw")
        return run
    shown = []
    for pid, why in patients.items():
        mine = attention.filter(pl.col("patient_id") == pid)
        if mine.height == 0:
            run.notes.append(f"{model}: patient {pid} has no attention weights (no instances or no prediction)")
            continue
        if "split" in mine.columns and mine["split"][0] == "train":
            why += "; out-of-fold model"
        for sid in sorted(set(mine["source_id"].to_list())):
            rows = mine.filter(pl.col("source_id") == sid).sort("instance")
            source = sources.get(sid)
            if source is None:
                run.notes.append(f"{model}: source {sid} of patient {pid} is not in the store")
                continue
            try:
                if modality == "wsi":
                    run.outputs.figures += _slide_outputs(model, pid, sid, rows, source, params, out_dir, why, top_k)
                else:
                    run.outputs.figures += _scan_outputs(model, pid, sid, rows, source, params, out_dir, why)
            except (wsi.SlideError, ct.ScanError, OSError, ValueError) as exc:
                log.warning("%s: %s / %s not drawn: %s", model, pid, sid, exc)
                run.notes.append(f"{model}: {pid} / {sid} not drawn: {exc}")
                continue
            shown.append(rows.with_columns(pl.Series("rank", rank_normalise(rows["attention"].to_numpy()))))
    if shown:
        cols = ["patient_id", "source_id", "instance", "x", "y", "z", "attention", "rank"]
        write_parquet(pl.concat([s.select(cols) for s in shown]), out_dir / "attention.parquet")
        run.outputs.values.append(ValueEntry(model, "attention", f"{model}/attention.parquet",
                                             "attention weight and within-source rank of every instance drawn"))
    return run


def sources_by_id(sources: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """``source_id -> row`` from :func:`pipeline.embed.list_sources` results (or :func:`pipeline.store.source_rows`)."""
    return {s.source_id: dict(s.row) for s in sources}
