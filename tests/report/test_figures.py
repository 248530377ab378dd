"""Report figures: byte-identical PNGs without software metadata; at-risk numbers from KM tables."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
from PIL import Image

from analytics import figures
from analytics.report import km_at_risk
from analytics.stats import km_by_group


def _roc_png() -> bytes:
    rng = np.random.default_rng(0)
    fpr = np.sort(np.concatenate([[0, 1], rng.random(20)]))
    tpr = np.sqrt(fpr)
    spec = np.linspace(0, 1, 11)
    panel = figures.RocPanel("external", fpr, tpr, "AUC 0.800 (0.700–0.900)", spec, np.sqrt(1 - spec) * 0.8,
                             np.minimum(np.sqrt(1 - spec) * 1.2, 1))
    return figures.roc_figure("m: ROC curves", [panel])


def test_png_is_deterministic_and_has_no_software_chunk() -> None:
    a, b = _roc_png(), _roc_png()
    assert a == b
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in a and b"matplotlib" not in a
    im = Image.open(io.BytesIO(a))
    assert im.size == (round(3.4 * figures.DPI), round(3.75 * figures.DPI))
    assert figures.data_uri(a).startswith("data:image/png;base64,iVBORw0KGgo")


def test_km_numbers_at_risk_equal_direct_counts() -> None:
    """At-risk numbers read off lifelines' KM table equal the count of subjects with time >= t."""
    rng = np.random.default_rng(3)
    time = np.round(rng.exponential(20, 60), 1)
    time[:5] = time[5]  # ties
    event = (rng.random(60) < 0.7).astype(int)
    group = (rng.random(60) < 0.5).astype(int)
    km = km_by_group(time, event, group)
    times = figures.at_risk_times(float(time.max()))
    assert times[0] == 0 and times[-1] <= time.max() and np.all(np.diff(times) > 0)
    for g, name in enumerate(("low", "high")):
        rows = km.curves.filter(pl.col("group") == name).sort("time")
        t_group = time[group == g]
        expected = [int((t_group >= t).sum()) for t in np.concatenate([times, [time.max(), time.max() + 1]])]
        assert km_at_risk(rows, np.concatenate([times, [time.max(), time.max() + 1]])) == expected


def test_every_figure_kind_renders() -> None:
    t = np.linspace(0.05, 0.95, 19)
    dec = figures.decision_figure("d", [figures.DecisionPanel("train", t, 0.3 - 0.3 * t, 0.4 - 0.5 * t, 0 * t, 0.2 - 0.3 * t, 0.4 - 0.3 * t)])
    p = np.linspace(0.05, 0.95, 10)
    cal = figures.calibration_figure("c", [figures.CalibrationPanel("internal", p, p, p, p, p - 0.1, p + 0.1, p, "slope 1.000")])
    forest = figures.forest_figure([figures.ForestRow("a − b", "external", 0.1, -0.05, 0.25, "0.210")])
    g = figures.KMGroup("low", np.array([0, 1, 2.0]), np.array([1, 0.8, 0.5]), np.array([1, 0.6, 0.3]), np.array([1, 0.9, 0.7]))
    km = figures.km_figure("k", [g], np.array([0, 1, 2.0]), {"low": [3, 2, 1]}, "log-rank p 0.5")
    for png in (dec, cal, forest, km):
        assert Image.open(io.BytesIO(png)).format == "PNG"


def test_explanation_figures_are_embedded_grouped_and_confined(tmp_path) -> None:
    """SHAP and attention kinds land in their sections; a path leaving explain/ or a missing file is named, not read."""
    import base64
    import json

    from analytics.report import explanation_figures

    explain = tmp_path / "explain"
    explain.mkdir()
    png = figures.to_png(figures.Figure(figsize=(1, 1)))
    (explain / "a.png").write_bytes(png)
    (tmp_path / "secret.png").write_bytes(png)
    manifest = {"figures": [
        {"model": "m", "kind": "shap_bar", "patient_id": None, "path": "a.png", "caption": "bar"},
        {"model": "m", "kind": "attention_heatmap", "patient_id": "P1", "path": "a.png", "caption": "map"},
        {"model": "m", "kind": "top_tiles", "patient_id": "P1", "path": "a.png", "caption": "tiles"},
        {"model": "m", "kind": "shap_bar", "patient_id": None, "path": "../secret.png", "caption": "x"},
        {"model": "m", "kind": "shap_bar", "patient_id": None, "path": "gone.png", "caption": "y"},
    ]}
    (explain / "manifest.json").write_text(json.dumps(manifest))
    got = explanation_figures(tmp_path, manifest)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert [f["uri"] for f in got["shap"]] == [uri]
    assert [f["kind"] for f in got["attention"]] == ["attention_heatmap", "top_tiles"]
    assert len(got["problems"]) == 2 and "figures[3]" in got["problems"][0] and "figures[4]" in got["problems"][1]
    assert explanation_figures(tmp_path, None)["computed"] is False
