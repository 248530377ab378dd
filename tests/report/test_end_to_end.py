"""End to end: the tiny synthetic study through every stage (ingest → embed → cohort → fit → validate →
explain → report); the report holds every section and the numbers of metrics.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analytics.report import SECTIONS
from pipeline.config import load_config

from report_helpers import ReportParser

pytestmark = pytest.mark.slow


# the demo's Cox model on clinical variables (the survival section); a light ridge penalty keeps the folds stable
CLINICAL_COX = """[[models]]
name = "clinical_cox"
kind = "cox"
clinical = ["age", "esr", "anti_ssa", "igg"]
params = { penalizer = 0.1 }

[validation]
"""


def _shrink(toml: Path) -> None:
    """Keep the run fast on a CPU: smaller tiles and CT crops, fewer bootstrap resamples, and an
    internal hold-out large enough to hold two cases and two controls of the 16 patients; a split seed
    that leaves two events among the training patients, and the clinical Cox model."""
    text = toml.read_text(encoding="utf-8")
    for old, new in (("mpp = 1.0", "mpp = 2.0"), ("tile_size = 224", "tile_size = 112"), ("input_size = [16, 64, 64]", "input_size = [8, 32, 32]"),
                     ("n_boot = 500", "n_boot = 200"),
                     ("internal_fraction = 0.25\nseed = 0\n", "internal_fraction = 0.4\nseed = 5\n"),
                     ("\n[validation]\n", "\n" + CLINICAL_COX)):
        assert old in text, old
        text = text.replace(old, new)
    toml.write_text(text, encoding="utf-8")


def test_demo_run_report(tmp_path: Path) -> None:
    from analytics.run import run
    from pipeline.synth import make_study

    toml = make_study(tmp_path / "study", small=True)
    _shrink(toml)
    study = load_config(toml)
    result = run(study, device="cpu", progress=False)
    assert result.ok, str(result)
    assert result.report == study.report_dir / "index.html"
    text = result.report.read_text(encoding="utf-8")
    doc = ReportParser(text)
    assert {sid for sid, _ in SECTIONS} | {"flow", "table1", "missing-data", "centers", "shap", "attention"} <= doc.ids
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    models = list(metrics["models"])
    assert {m.name for m in study.models} == set(models)
    # every performance cell of every model is there and says what metrics.json says (an interval
    # that could not be estimated on so few patients is shown as its estimate alone)
    def interval(iv: dict) -> str:
        if iv.get("estimate") is None:
            return "–"
        if iv.get("low") is None or iv.get("high") is None:
            return f"{iv['estimate']:.3f}"
        return f"{iv['estimate']:.3f} ({iv['low']:.3f}–{iv['high']:.3f})"

    shown = dict(doc.metrics)
    n_checked = 0
    for model in models:
        for split, sm in metrics["models"][model]["splits"].items():
            if sm["n"] == 0 and "n_survival" in sm:  # a survival model: no complete-case (label) rows
                assert f"{model}|{split}|n" not in shown
                assert shown[f"{model}|{split}|n_survival"] == str(sm["n_survival"])
            else:
                assert shown[f"{model}|{split}|n"] == str(sm["n"])
            for k in ("auc", "auc_bootstrap", "sensitivity", "specificity", "accuracy", "ppv", "npv", "f1", "c_index"):
                if k in sm:
                    assert shown[f"{model}|{split}|{k}"] == interval(sm[k]), (model, split, k)
                    n_checked += 1
    assert n_checked >= 6 * 3 * 5
    # the survival section: the Cox model's C-index (every patient has follow-up), integrated Brier score
    # and time-dependent figures
    from analytics.cohort import load_cohort

    cohort_splits = load_cohort(study).frame.get_column("split").to_list()
    for split in ("train", "internal", "external"):
        sm = metrics["models"]["clinical_cox"]["splits"][split]
        assert sm["n"] == 0 and sm["n_survival"] == cohort_splits.count(split)
        assert shown[f"clinical_cox|{split}|c_index"] == interval(sm["c_index"])
    ext = metrics["models"]["clinical_cox"]["splits"]["external"]
    assert shown["clinical_cox|external|ibs"] == interval(ext["ibs"]) and "auc_t12" in ext
    assert "fig-horizons-clinical_cox-external" in doc.ids
    # random encoder weights are flagged; explanations of the run are embedded
    assert "random-weights" in doc.ids and doc.random_rows
    explain = json.loads((study.report_dir / "explain" / "manifest.json").read_text())
    figure_ids = {fid for fid, _ in doc.images}
    assert {f"fig-explain-{i}" for i in range(len(explain["figures"]))} <= figure_ids
    assert any(f["kind"].startswith("shap") for f in explain["figures"])
    assert not re.search(r'(src|href)="(https?:)?//', text)

    # re-running the finished study does no work again and gives identical outputs
    outputs = [study.report_dir / n for n in ("metrics.json", "metrics.csv", "curves.json", "index.html")]
    before = {p: p.read_bytes() for p in outputs}
    stamps = {p: p.stat().st_mtime_ns for d in ("models", "instances") for p in (study.root / d).rglob("*") if p.is_file()}
    again = run(study, device="cpu", progress=False)
    assert again.ok, str(again)
    summary = {s.name: s.summary for s in again.stages}
    assert "nothing written" in summary["ingest"]
    assert re.findall(r"(\d+) done", summary["embed"]) and set(re.findall(r"(\d+) done", summary["embed"])) == {"0"}
    assert "up to date" in summary["validate"]
    assert {p: p.read_bytes() for p in outputs} == before
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
