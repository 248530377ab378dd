"""Nested cross-fitting of second-stage models: what changes, what does not, what it costs, how it is reported."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from analytics.fit import fit, stored_predictions
from analytics.models import registry
from analytics.report import tripod
from pipeline.config import StudyConfig, parse_study

from model_helpers import COHORT_SQL, make_study, write_cohort_store

K = 3
BASE = [
    {"name": "clin", "kind": "logistic", "clinical": ["age", "sex", "marker"], "grid": {"C": [1.0]}},
    {"name": "img_svm", "kind": "svm", "features": ["img:mean"], "grid": {"C": [1.0]}, "params": {"kernel": "linear"}},
    {"name": "img_xgb", "kind": "xgboost", "features": ["img"], "grid": {"max_depth": [2]},
     "params": {"n_estimators": 20}},
]
SECOND = [
    {"name": "stack", "kind": "stacking", "members": ["clin", "img_svm", "img_xgb"]},
    {"name": "fusion", "kind": "logistic", "scores": ["img_svm", "img_xgb"], "clinical": ["marker"],
     "grid": {"C": [1.0]}},
]


def _study(root: Path, data: dict[str, Any], models: list[dict[str, Any]], cohort_sql: str = COHORT_SQL) -> StudyConfig:
    write_cohort_store(root, data)
    return make_study(root, models, folds=K, cohort_sql=cohort_sql)


def _count_fits(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every learner built, by model name."""
    built: Counter[str] = Counter()
    real = registry.build_learner

    def counting(spec: Any, seed: int) -> Any:
        built[spec.name] += 1
        return real(spec, seed)

    monkeypatch.setattr(registry, "build_learner", counting)
    return built


def _rows(study: StudyConfig, split_is_train: bool) -> pl.DataFrame:
    rows = stored_predictions(study.store_path)
    return rows.filter((pl.col("split") == "train") == split_is_train).sort("model", "patient_id")


def test_nested_is_the_default_and_can_be_switched_off(tmp_path: Path) -> None:
    base = {"study": {"name": "t"}, "manifests": {"patients": "p.csv"}}
    fusion = {"name": "fusion", "kind": "logistic", "scores": ["clin"], "clinical": ["marker"]}
    on = parse_study({**base, "models": [BASE[0], fusion]}, tmp_path)
    off = parse_study({**base, "models": [BASE[0], {**fusion, "nested": False}]}, tmp_path)
    assert on.model("fusion").nested is True and off.model("fusion").nested is False


def test_nesting_changes_only_the_second_stage_training_predictions(
    tmp_path: Path, cohort_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = _study(tmp_path / "nested", cohort_data, BASE + SECOND)
    plain = _study(tmp_path / "plain", cohort_data, BASE + [{**m, "nested": False} for m in SECOND])
    built = _count_fits(monkeypatch)
    fit(nested, progress=False)
    nested_fits = Counter(built)
    built.clear()
    fit(plain, progress=False)
    # the final models and everything they predict are those of a fit without nesting ...
    assert _rows(nested, False).equals(_rows(plain, False))
    for m in BASE + SECOND:
        a = (nested.models_dir / m["name"] / "model.skops").read_bytes()
        assert a == (plain.models_dir / m["name"] / "model.skops").read_bytes(), m["name"]
    # ... as are the first-stage models' training predictions; the second stages' out-of-fold ones differ
    a, b = _rows(nested, True), _rows(plain, True)
    for name in ("clin", "img_svm", "img_xgb"):
        assert a.filter(pl.col("model") == name).equals(b.filter(pl.col("model") == name)), name
    for name in ("stack", "fusion"):
        assert a.filter(pl.col("model") == name)["patient_id"].to_list() == \
            b.filter(pl.col("model") == name)["patient_id"].to_list()
        assert not a.filter(pl.col("model") == name)["score"].equals(b.filter(pl.col("model") == name)["score"]), name
    # cost: each input model is fitted K more times in each of the K outer folds, once for both second stages
    # (the refit on an outer fold's training patients is the input model's own outer-fold model)
    assert dict(built) == {m["name"]: K + 1 for m in BASE + SECOND}
    assert dict(nested_fits) == {"clin": K + 1 + K * K, "img_svm": K + 1 + K * K, "img_xgb": K + 1 + K * K,
                                 "stack": K + 1, "fusion": K + 1}
    man = json.loads((nested.models_dir / "stack" / "manifest.json").read_text())
    assert man["nesting"]["nested"] is True and man["nesting"]["optimistic"] is False
    assert man["nesting"]["fits"] + man["nesting"]["cached"] > 0
    off = json.loads((plain.models_dir / "stack" / "manifest.json").read_text())["nesting"]
    assert off == {"needed": True, "nested": False, "optimistic": True, "reason": "nested = false"}
    assert json.loads((nested.models_dir / "clin" / "manifest.json").read_text())["nesting"]["needed"] is False


def test_later_runs_read_the_input_fits_from_the_cache(
    tmp_path: Path, cohort_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _study(tmp_path / "first", cohort_data, BASE + SECOND[:1])
    fit(study, progress=False)
    # a new second-stage model on the same inputs: no input model is fitted again
    more = make_study(study.root, BASE + SECOND, folds=K)
    built = _count_fits(monkeypatch)
    fit(more, progress=False)
    assert dict(built) == {"fusion": K + 1}
    # and the cached fits give the bytes a run without the cache gives
    fresh = tmp_path / "fresh"
    shutil.copytree(study.root, fresh)
    shutil.rmtree(fresh / "models")
    fit(make_study(fresh, BASE + SECOND, folds=K), progress=False)
    assert _rows(more, True).equals(stored_predictions(fresh / "store.duckdb").filter(
        pl.col("split") == "train").sort("model", "patient_id"))


def test_too_few_patients_for_inner_folds_falls_back_and_says_so(
    tmp_path: Path, cohort_data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # 4 controls and 2 cases in training: 2 outer folds whose training part holds a single case
    keep = ["P00", "P02", "P04", "P06", "P01", "P03"] + [f"P{i}" for i in range(24, 48)]
    sql = COHORT_SQL + " WHERE p.patient_id IN (" + ", ".join(f"'{p}'" for p in keep) + ")"
    study = _study(tmp_path, cohort_data, [BASE[0], {**BASE[0], "name": "clin2", "clinical": ["marker"]},
                                           {"name": "stack", "kind": "stacking", "members": ["clin", "clin2"]}], sql)
    with caplog.at_level(logging.WARNING, logger="cohortlab.fit"):
        result = fit(study, progress=False)
    assert result.outer_folds == 2
    nesting = json.loads((study.models_dir / "stack" / "manifest.json").read_text())["nesting"]
    assert nesting["nested"] is False and nesting["optimistic"] is True
    assert "1 of label 1" in nesting["reason"] and "at least 2 of each" in nesting["reason"]
    assert any("'stack' is not nested" in r.getMessage() for r in caplog.records)
    assert re.search(r"warning: model 'stack': training estimate not nested, optimistic \(\d+ training patients",
                     str(result))
    assert stored_predictions(study.store_path, "stack").filter(pl.col("split") == "train").height == 6


def test_the_progress_bar_shows_the_nested_work_and_its_time(
    tmp_path: Path, cohort_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fit(_study(tmp_path, cohort_data, BASE + SECOND[:1]), progress=True)
    err = capsys.readouterr().err
    assert re.search(r"stack nested cross-fitting: 100%.*\d\d:\d\d<\d\d:\d\d.*\d+ fits, \d+ cached", err), err[-2000:]


def test_tripod_flags_in_red_the_training_estimates_that_are_not_nested() -> None:
    facts = tripod.RunFacts(models="m", has_metrics=True, nested=("stack",), not_nested=("fusion",))
    rows = {r.item.number: r for r in tripod.checklist(facts)}
    assert rows["12c"].flags == rows["23a"].flags == ("fusion: training estimate not nested: optimistic",)
    assert "(stack) by nested cross-fitting" in rows["12c"].text
    assert [n for n, r in rows.items() if r.flags] == ["12c", "23a"]
    assert not any(r.flags for r in tripod.checklist(tripod.RunFacts(models="m", has_metrics=True)))


def test_the_report_marks_training_estimates_that_are_not_nested(
    tmp_path: Path, cohort_data: dict[str, Any]
) -> None:
    from analytics.report import write_report
    from analytics.validation.stage import validate

    study = _study(tmp_path, cohort_data, BASE + [SECOND[0], {**SECOND[1], "nested": False}])
    study = study.model_copy(update={"validation": study.validation.model_copy(update={"n_boot": 50})})
    fit(study, progress=False)
    validate(study, progress=False)
    html = write_report(study, progress=False).path.read_text(encoding="utf-8")
    headline = re.search(r'<table class="headline">.*?</table>', html, re.S).group(0)
    rows = {re.match(r"<tr><td>([\w-]+)", r).group(1): r for r in re.findall(r"<tr><td>.*?</tr>", headline)}
    assert 'data-not-nested="true"' in rows["fusion"] and "not nested: optimistic" in rows["fusion"]
    assert 'class="num flag" data-metric="fusion|train|auc"' in rows["fusion"]
    assert 'data-nested="true"' in rows["stack"] and "flag" not in rows["stack"]
    assert "nested" not in rows["clin"]
    tripod = re.search(r'<tr id="tripod-12c".*?</tr>', html, re.S).group(0)
    assert '<span class="flag" data-not-nested="true">fusion: training estimate not nested: optimistic</span>' in tripod
    assert "stack" in tripod and "nested cross-fitting" in tripod
    assert "fusion" not in re.search(r'<tr id="tripod-12a".*?</tr>', html, re.S).group(0)
    # the marks are outside the numbers: every training cell still says what metrics.json says
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    auc = metrics["models"]["fusion"]["splits"]["train"]["auc"]
    shown = re.search(r'data-metric="fusion\|train\|auc">([^<]*)<', html).group(1)
    assert shown == f"{auc['estimate']:.3f} ({auc['low']:.3f}–{auc['high']:.3f})"
    assert np.isfinite(auc["estimate"])


def test_the_fit_cache_keeps_one_identity_per_model_and_survives_a_broken_file(tmp_path: Path) -> None:
    from analytics.crossfit import FitCache

    cache = FitCache(tmp_path)
    cache.put("m", "id1", "s1", {"P1": 0.25, "P2": 0.5})
    cache.flush()
    again = FitCache(tmp_path)
    assert again.get("m", "id1", "s1") == {"P1": 0.25, "P2": 0.5} and again.get("m", "id1", "s2") is None
    assert again.get("m", "id2", "s1") is None  # another config or cohort: nothing
    again.put("m", "id2", "s1", {"P1": 0.75})
    again.flush()
    assert pl.read_parquet(tmp_path / "m.parquet")["identity"].unique().to_list() == ["id2"]
    (tmp_path / "m.parquet").write_bytes(b"not parquet")
    broken = FitCache(tmp_path)
    assert broken.get("m", "id2", "s1") is None
    broken.put("m", "id2", "s1", {"P1": 0.75})
    broken.flush()
    assert FitCache(tmp_path).get("m", "id2", "s1") == {"P1": 0.75}
