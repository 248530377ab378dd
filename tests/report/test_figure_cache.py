"""The report's figures cached under a digest of their data (analytics.report.figure_cache): a figure drawn again
from the same data comes from the cache with the same bytes (not drawn again); new scores of one model
redraw only that model's figure and the overlays; a damaged entry is drawn again, never trusted."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from analytics.report import plots
from analytics.report.figure_cache import FigureCache, figure_key
from analytics.stats.roc_band import BAND_SPECIFICITIES, auc_bootstrap_band
from analytics.validation import Validation

MODELS = ("alpha", "beta")


def _scored(shift: float = 0.0) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    n = 90
    y = (rng.random(n) < 0.4).astype(np.int8)
    frames = []
    for i, model in enumerate(MODELS):
        noise = rng.normal(size=n)  # drawn for every model: alpha's scores do not depend on ``shift``
        score = 1 / (1 + np.exp(-(y * (1.0 + i) + rng.normal(size=n) + (shift * noise if model == "beta" else 0.0))))
        frames.append(pl.DataFrame({"model": model, "patient_id": [f"P{j:02d}" for j in range(n)],
                                    "split": np.where(np.arange(n) < 60, "train", "external"),
                                    "score": score, "label": y}))
    return pl.concat(frames)


def _validation(scored: pl.DataFrame) -> Validation:
    """The ROC bands as validate stores them in curves.json (a model's band follows its scores)."""
    curves: dict[str, Any] = {}
    for (model, split), part in scored.group_by(["model", "split"]):
        _, low, high = auc_bootstrap_band(part["label"].to_numpy(), part["score"].to_numpy(), n_boot=40, seed=5)
        curves.setdefault(model, {})[split] = {"roc_band": {"specificity": BAND_SPECIFICITIES.tolist(),
                                                            "low": low.tolist(), "high": high.tolist()}}
    return Validation(study="s", cohort=None, cohort_hash=None, inputs_digest=None, code_version=None,
                      settings={"level": 0.95, "n_boot": 40}, models={}, curves=curves)


def _roc(scored: pl.DataFrame, cache: FigureCache | None) -> tuple[list[Any], list[Any]]:
    return plots.roc_figures(list(MODELS), scored, _validation(scored), 5, progress=False, cache=cache)


@pytest.fixture()
def band_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Per-model ROC figures drawn, one call per split drawn (the bands themselves come from validate)."""
    calls: list[int] = []
    original = plots.figures.roc_figure

    def counted(title: str, panels: Any, *args: Any, **kwargs: Any) -> Any:
        assert all(p.band_low is not None for p in panels)  # every panel has validate's band
        calls.extend(1 for _ in panels)
        return original(title, panels, *args, **kwargs)

    monkeypatch.setattr(plots.figures, "roc_figure", counted)
    return calls


def test_cached_figures_equal_fresh_ones_and_skip_the_bands(tmp_path: Path, band_calls: list[int]) -> None:
    fresh = _roc(_scored(), None)
    assert len(band_calls) == 4  # two models, two splits
    cache = FigureCache(tmp_path)
    assert _roc(_scored(), cache) == fresh
    assert (cache.hits, cache.misses) == (0, 4)  # two per-model figures, two overlays
    band_calls.clear()
    again = FigureCache(tmp_path)
    assert _roc(_scored(), again) == fresh
    assert (again.hits, again.misses) == (4, 0)
    assert band_calls == []


def test_new_scores_of_one_model_redraw_only_its_figures(tmp_path: Path, band_calls: list[int]) -> None:
    _roc(_scored(), FigureCache(tmp_path))
    band_calls.clear()
    cache = FigureCache(tmp_path)
    overlays, per_model = _roc(_scored(shift=0.3), cache)
    assert (cache.hits, cache.misses) == (1, 3)  # alpha's figure kept; beta's and both overlays (beta's ROC) drawn
    assert len(band_calls) == 2  # beta's two splits
    assert (overlays, per_model) == _roc(_scored(shift=0.3), None)
    cache.prune()  # beta's earlier figure and the earlier overlays are gone
    assert len(list(tmp_path.glob("*.json"))) == 4


@pytest.mark.parametrize("damage", ["garbage", "tampered", "not_png"])
def test_a_damaged_figure_is_drawn_again(tmp_path: Path, damage: str) -> None:
    fresh = _roc(_scored(), None)
    _roc(_scored(), FigureCache(tmp_path))
    for path in tmp_path.glob("*.json"):
        entry = json.loads(path.read_text())
        png = base64.b64decode(entry["png"])
        if damage == "garbage":
            path.write_bytes(b"\x00{not json")
            continue
        if damage == "tampered":  # other pixels under the old checksum
            entry["png"] = base64.b64encode(png[:-20] + bytes(20)).decode()
        else:  # a consistent checksum over something that is not a PNG
            other = b"GIF89a" + png[6:]
            entry["png"], entry["sha256"] = base64.b64encode(other).decode(), hashlib.sha256(other).hexdigest()
        path.write_text(json.dumps(entry))
    cache = FigureCache(tmp_path)
    assert _roc(_scored(), cache) == fresh
    assert (cache.hits, cache.misses) == (0, 4)


def test_the_key_follows_the_data() -> None:
    a = np.arange(5, dtype=float)
    assert figure_key("c", "f", a, "t") == figure_key("c", "f", a.copy(), "t")
    assert figure_key("c", "f", a, "t") != figure_key("c", "f", a + 1e-15 * (a > 3), "t")
    assert figure_key("c", "f", a, "t") != figure_key("c", "f", a.astype(np.float32), "t")
    assert figure_key("c", "f", a, "t") != figure_key("d", "f", a, "t")  # other drawing code
    assert figure_key("c", "f", [1, 2], "t") != figure_key("c", "f", [[1, 2]], "t")


def test_the_report_is_the_same_with_and_without_cached_figures(reported: tuple[Any, Path]) -> None:
    from analytics.report import write_report
    from pipeline.config import load_config

    study, path = reported
    first = path.read_bytes()  # drawn into an empty cache
    cached = study.root / "cache" / "figures"
    assert any(cached.glob("*.json"))
    assert write_report(load_config(study.root / "study.toml"), progress=False, force=True).path.read_bytes() == first
    for entry in cached.glob("*.json"):
        entry.unlink()
    assert write_report(load_config(study.root / "study.toml"), progress=False, force=True).path.read_bytes() == first
