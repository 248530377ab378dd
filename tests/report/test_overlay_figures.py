"""All models on one figure per split (ROC; decision curves with treat-all and treat-none), and the subgroup
section whose numbers are those of metrics.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_curve as sk_roc_curve

from analytics import figures, report
from analytics.splits import SPLITS
from pipeline.config import StudyConfig, load_config

from report_helpers import ReportParser, write_study

SUBGROUPS = 'subgroups = { sex = {}, age = { cuts = [60] } }'


@pytest.fixture(scope="module")
def with_subgroups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyConfig, Path]]:
    """The report test study, validated with subgroups by sex and age, and its report."""
    from analytics.validation.stage import validate

    study = write_study(tmp_path_factory.mktemp("subgroups"))
    toml = study.root / "study.toml"
    text = toml.read_text()
    assert 'compare = [["good", "weak"]]\n' in text
    toml.write_text(text.replace('compare = [["good", "weak"]]\n', f'compare = [["good", "weak"]]\n{SUBGROUPS}\n'))
    study = load_config(toml)
    validate(study, progress=False, force=True)
    yield study, report.write_report(study, progress=False).path


def _recorder(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    original = getattr(figures, name)

    def record(*args: Any) -> bytes:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(figures, name, record)
    return calls


def _scored(study: StudyConfig) -> tuple[report.Sources, pl.DataFrame]:
    src = report.read_sources(study)
    return src, report.scored_predictions(src.predictions, src.cohort.frame)


def test_one_roc_figure_per_split_with_every_model(with_subgroups: tuple[StudyConfig, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    study, path = with_subgroups
    calls = _recorder(monkeypatch, "roc_split_figure")
    src, scored = _scored(study)
    overlays, _ = report.roc_figures(["good", "weak"], scored, src.validation, study.study.seed, progress=False)
    assert [c[0] for c in calls] == list(SPLITS) and [f.id for f in overlays] == [f"fig-roc-split-{s}" for s in SPLITS]
    for split, curves in calls:
        assert [c[0] for c in curves] == ["good", "weak"]
        for model, fpr, tpr, label in curves:
            part = scored.filter((pl.col("model") == model) & (pl.col("split") == split))
            ref_fpr, ref_tpr, _ = sk_roc_curve(part["label"].to_numpy(), part["score"].to_numpy(), drop_intermediate=False)
            # the same step curve: every corner of scikit-learn's curve is on ours
            ours = set(zip(np.round(fpr, 12), np.round(tpr, 12)))
            assert set(zip(np.round(ref_fpr, 12), np.round(ref_tpr, 12))) <= ours
            auc = src.validation.get(model, split, "auc")
            assert label == f"{model}: {report.fmt(auc.estimate)}"
    doc = ReportParser(path.read_text(encoding="utf-8"))
    figs = {fig for fig, src_ in doc.images if src_.startswith("data:image/png;base64,")}
    assert {f"fig-roc-split-{s}" for s in SPLITS} <= figs


def test_one_decision_figure_per_split_with_every_model_and_the_references(
        with_subgroups: tuple[StudyConfig, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    study, path = with_subgroups
    calls = _recorder(monkeypatch, "decision_split_figure")
    src, scored = _scored(study)
    out = report.decision_overlays(["good", "weak"], scored, src.validation.settings, src.curves)
    assert [c[0] for c in calls] == list(SPLITS) and [f.id for f in out] == [f"fig-decision-split-{s}" for s in SPLITS]
    for split, thresholds, curves, treat_all, treat_none, note in calls:
        good = scored.filter((pl.col("model") == "good") & (pl.col("split") == split)).select("patient_id", "label", "score")
        weak = scored.filter((pl.col("model") == "weak") & (pl.col("split") == split)).select("patient_id", pl.col("score").alias("w"))
        both = good.join(weak, on="patient_id").sort("patient_id")  # the patients both models scored
        y = both["label"].to_numpy()
        n, prev = len(y), y.mean()
        assert note.startswith(f"{n} patients scored by all 2 models, {int(y.sum())} events")
        assert np.allclose(thresholds, np.round(np.arange(0.05, 0.9501, 0.05), 10))
        odds = thresholds / (1 - thresholds)
        assert treat_all == pytest.approx(prev - (1 - prev) * odds, abs=1e-12)
        assert np.all(treat_none == 0)
        assert [c[0] for c in curves] == ["good", "weak"]
        for (_, nb), s in zip(curves, (both["score"].to_numpy(), both["w"].to_numpy())):
            tp = np.array([((s >= t) & (y == 1)).sum() for t in thresholds])
            fp = np.array([((s >= t) & (y == 0)).sum() for t in thresholds])
            assert nb == pytest.approx(tp / n - fp / n * odds, abs=1e-12)
    doc = ReportParser(path.read_text(encoding="utf-8"))
    assert {f"fig-decision-split-{s}" for s in SPLITS} <= {fig for fig, _ in doc.images}


def test_subgroup_section_numbers_equal_metrics_json(with_subgroups: tuple[StudyConfig, Path]) -> None:
    study, path = with_subgroups
    doc = ReportParser(path.read_text(encoding="utf-8"))
    written = json.loads((study.report_dir / "metrics.json").read_text())["subgroups"]
    assert {(r["variable"], r["group"]) for r in written} == {("sex", "F"), ("sex", "M"), ("age", "< 60"), ("age", ">= 60")}
    cells = {k: t for k, t in doc.metrics if "|subgroup:" in k}
    for r in written:
        key = f"{r['model']}|subgroup:{r['variable']}={r['group']}/{r['split']}"
        assert cells[f"{key}|n"] == str(r["n"]) and cells[f"{key}|n_positive"] == str(r["n_positive"])
        auc = r["auc"]
        expected = ("–" if auc is None else f"{auc['estimate']:.3f}" if auc["low"] is None
                    else f"{auc['estimate']:.3f} ({auc['low']:.3f}–{auc['high']:.3f})")
        assert cells[f"{key}|auc"] == expected
        assert cells[f"{key}|in_the_large"] == ("–" if r["in_the_large"] is None else f"{r['in_the_large']:.3f}")
    assert len(cells) == 4 * len(written)
    assert {"sec-subgroups", *(f"fig-subgroups-{s}" for s in SPLITS)} <= doc.ids
    # the TRIPOD+AI fairness item cites the section
    assert doc.tripod["14"] == "partly"
    assert "#sec-subgroups" in doc.links
