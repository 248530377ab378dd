"""What keeps the report fast, and its content the same: a report rendered again from unchanged inputs draws no
figure (nomograms and the Schoenfeld residual plot included), the ROC figures read the curves validate stored
rather than computing them again (to the same floats), and the Ramer-Douglas-Peucker thinning of the curves keeps
exactly the vertices of the recursive algorithm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics import figures, thinning
from analytics.report import plots, read_sources, scored_predictions, write_report
from analytics.splits import SPLITS
from analytics.stats.thresholds import roc_curve
from pipeline.config import StudyConfig

MODELS = """[[models]]
name = "glm"
kind = "logistic"
clinical = ["age", "marker", "sex"]
params = { penalty = "none" }
[[models]]
name = "cox"
kind = "cox"
clinical = ["age", "marker"]
[validation]
n_boot = 20
folds = 3
horizons = [2.0]
[explain]
enabled = false
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyConfig, Path]]:
    """A two-centre study of a maximum-likelihood logistic (a nomogram) and a Cox model (a nomogram and the
    proportional-hazards figure), fitted, validated and reported once."""
    from analytics.fit import fit
    from analytics.validation.stage import validate

    rng = np.random.default_rng(21)
    n = 160
    age, marker = rng.normal(60, 10, n).round(1), rng.normal(0, 1, n).round(3)
    lp = 0.04 * (age - 60) + 0.9 * marker
    event_time = rng.exponential(1 / (0.3 * np.exp(0.6 * lp)))
    censor = rng.uniform(0.5, 5.0, n)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(n)], "center": np.where(np.arange(n) < 110, "A", "B"),
        "label": (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int), "age": age, "marker": marker,
        "sex": rng.choice(["F", "M"], n), "time": np.minimum(event_time, censor).round(3),
        "event": (event_time <= censor).astype(int)})
    toml = study_toml("speed", 4, MODELS, sections='[variables]\nsex = { levels = ["F", "M"] }')
    study = build_study(tmp_path_factory.mktemp("speed"), patients,
                        "c.label, c.age, c.marker, c.sex, c.time, c.event", toml)
    fit(study, progress=False)
    validate(study, progress=False)
    yield study, write_report(study, progress=False).path


def test_a_report_rendered_again_draws_no_figure(fitted: tuple[StudyConfig, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    study, path = fitted
    first = path.read_text(encoding="utf-8")
    for fig in ("fig-nomogram-glm", "fig-nomogram-cox", "fig-ph-cox", "fig-roc-glm"):
        assert f'id="{fig}"' in first
    drawn: list[Any] = []
    original = figures.to_png

    def counted(fig: Any) -> bytes:
        drawn.append(fig)
        return original(fig)

    monkeypatch.setattr(figures, "to_png", counted)
    again = write_report(study, progress=False, force=True).path.read_text(encoding="utf-8")
    assert drawn == []  # every figure, nomograms and residual plot included, from the figure cache
    assert again == first


def test_roc_figures_read_the_stored_curves_to_the_same_floats(fitted: tuple[StudyConfig, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    study, _ = fitted
    src = read_sources(study)
    assert src.validation is not None and src.cohort is not None
    scored = scored_predictions(src.predictions, src.cohort.frame)
    expected = {}
    for split in SPLITS:
        part = scored.filter((pl.col("model") == "glm") & (pl.col("split") == split))
        roc = roc_curve(part["label"].to_numpy().astype(int), part["score"].to_numpy().astype(float))
        expected[split] = (1.0 - roc["specificity"].to_numpy()[::-1], roc["sensitivity"].to_numpy()[::-1])
    drawn: list[Any] = []
    monkeypatch.setattr(plots, "roc_curve", lambda *a: pytest.fail("the ROC curve was computed again"))
    monkeypatch.setattr(plots.figures, "roc_split_figure", lambda split, curves: drawn.append((split, curves)) or b"")
    plots.roc_figures(["glm"], scored, src.validation, study.study.seed, progress=False)
    assert [split for split, _ in drawn] == list(SPLITS)
    for split, [(model, fpr, tpr, _)] in drawn:
        assert model == "glm"
        np.testing.assert_array_equal(fpr, expected[split][0])  # bit for bit: counts recovered from curves.json
        np.testing.assert_array_equal(tpr, expected[split][1])


def _rdp_recursive(u: np.ndarray, v: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker one segment at a time (distance to the segment), the mask of kept vertices."""
    keep = np.zeros(u.size, dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, u.size - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        du, dv = u[b] - u[a], v[b] - v[a]
        pu, pv = u[a + 1:b] - u[a], v[a + 1:b] - v[a]
        length2 = du * du + dv * dv
        t = np.clip((pu * du + pv * dv) / length2, 0.0, 1.0) if length2 > 0 else np.zeros(pu.size)
        dist = np.hypot(pu - t * du, pv - t * dv)
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            keep[a + 1 + i] = True
            stack += [(a, a + 1 + i), (a + 1 + i, b)]
    return keep


@pytest.mark.parametrize("shape", ["walk", "steps", "ties", "loop"])
def test_thinning_keeps_the_vertices_of_the_recursive_algorithm(shape: str) -> None:
    rng = np.random.default_rng(len(shape))
    for _ in range(12):
        n = int(rng.integers(3, 600))
        x = np.sort(rng.random(n))
        y = np.cumsum(rng.normal(size=n)) / 25
        if shape == "steps":  # a survival curve's vertices: equal y in pairs, repeated x
            x, y = np.repeat(np.round(x, 2), 2)[1:], np.repeat(np.round(y, 2), 2)[:-1]
        elif shape == "ties":  # equal distances: the first vertex of the largest is kept
            y = np.round(rng.random(n), 1)
        elif shape == "loop":  # a curve that turns back on itself
            x = np.cos(np.linspace(0, 6 * np.pi, n)) * np.linspace(0.2, 1, n)
            y = np.sin(np.linspace(0, 6 * np.pi, n))
        for tolerance in (0.001, 0.02):
            kx, ky = thinning.thin(x, y, tolerance)
            keep = _rdp_recursive(x, y, tolerance)
            np.testing.assert_array_equal(kx, x[keep])
            np.testing.assert_array_equal(ky, y[keep])
