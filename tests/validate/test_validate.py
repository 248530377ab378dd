"""validate: metrics per model and split, threshold fixed on training, files equal the store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from study_builders import build_study, study_toml

from analytics import stats
from analytics.validation.stage import validate
from pipeline import store
from pipeline.config import ConfigError, load_config

N = 120


def _study(tmp_path: Path, compare: str = "") -> Path:
    rng = np.random.default_rng(7)
    centers = np.where(np.arange(N) < 80, "A", "B")
    label = (rng.random(N) < 0.4).astype(int)
    time = rng.exponential(30, N).round(2)
    event = (rng.random(N) < 0.6).astype(int)
    patients = pl.DataFrame(
        {"patient_id": [f"P{i:03d}" for i in range(N)], "center": centers, "age": rng.normal(55, 10, N).round(1),
         "label": label, "time": time, "event": event}
    )
    build_study(tmp_path, patients, "c.label, c.time, c.event, c.age", study_toml("val", 3, f"""[[models]]
name = "good"
kind = "logistic"
clinical = ["age"]
[[models]]
name = "weak"
kind = "logistic"
clinical = ["age"]
[validation]
n_boot = 200
{compare}
"""))
    return tmp_path


def _predict(tmp_path: Path, shift_test: float = 0.0) -> pl.DataFrame:
    """Scores for two models: 'good' tracks the label, 'weak' barely; test scores may be shifted."""
    from analytics.cohort import load_cohort

    cohort = load_cohort(load_config(tmp_path / "study.toml"))
    rng = np.random.default_rng(11)
    y = cohort.y.astype(float)
    split = cohort.split
    good = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.2, len(y)))))
    weak = 1 / (1 + np.exp(-(0.3 * y + rng.normal(0, 1.0, len(y)))))
    good = np.where(split == "train", good, np.clip(good + shift_test, 0.001, 0.999))
    rows = []
    for model, s in (("good", good), ("weak", weak)):
        for pid, sp, sc in zip(cohort.patient_ids, split, s):
            rows.append((model, pid, sp, float(sc), 0 if sp == "train" else None))
    con = store.connect(tmp_path / "store.duckdb")
    con.execute("DELETE FROM predictions")
    con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", rows)
    con.close()
    return pl.DataFrame(rows, schema=["model", "patient_id", "split", "score", "fold"], orient="row").join(
        cohort.frame.select("patient_id", "label", "time", "event"), on="patient_id"
    )


def test_metrics_agree_with_independent_computation(tmp_path: Path) -> None:
    _study(tmp_path, 'compare = [["good", "weak"]]')
    preds = _predict(tmp_path)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    for model in ("good", "weak"):
        for split in ("train", "internal", "external"):
            part = preds.filter((pl.col("model") == model) & (pl.col("split") == split))
            y, s = part["label"].to_numpy(), part["score"].to_numpy()
            got = metrics["models"][model]["splits"][split]
            assert got["n"] == len(y) and got["n_positive"] == int(y.sum())
            assert got["auc"]["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert got["auc"]["method"] == "delong"
            d = stats.auc_ci(y, s)
            assert (got["auc"]["low"], got["auc"]["high"]) == pytest.approx((d.low, d.high), abs=1e-11)
    cmp = [c for c in metrics["comparisons"] if c["split"] == "external"][0]
    part = preds.filter(pl.col("split") == "external")
    a = part.filter(pl.col("model") == "good").sort("patient_id")
    b = part.filter(pl.col("model") == "weak").sort("patient_id")
    ref = stats.compare_auc(a["label"].to_numpy(), a["score"].to_numpy(), b["score"].to_numpy())
    assert cmp["p"] == pytest.approx(ref.p, abs=1e-11) and cmp["difference"] == pytest.approx(ref.difference, abs=1e-11)
    # metrics.csv and the store's metrics table hold the same numbers as metrics.json
    csv = pl.read_csv(study.report_dir / "metrics.csv")
    row = csv.filter((pl.col("model") == "good") & (pl.col("split") == "external") & (pl.col("metric") == "auc"))
    assert row["estimate"][0] == pytest.approx(metrics["models"]["good"]["splits"]["external"]["auc"]["estimate"], abs=1e-6)
    con = store.connect(study.store_path, read_only=True)
    db = con.execute("SELECT estimate FROM metrics WHERE model='good' AND split='external' AND metric='auc'").fetchone()[0]
    con.close()
    assert db == pytest.approx(metrics["models"]["good"]["splits"]["external"]["auc"]["estimate"], abs=1e-12)
    # survival: C-index present and equal to an independent Harrell's C
    from lifelines.utils import concordance_index

    ext = preds.filter((pl.col("model") == "good") & (pl.col("split") == "external"))
    c = metrics["models"]["good"]["splits"]["external"]["c_index"]["estimate"]
    assert c == pytest.approx(concordance_index(ext["time"].to_numpy(), -ext["score"].to_numpy(), ext["event"].to_numpy()), abs=1e-9)


def test_threshold_is_chosen_on_training_and_reused(tmp_path: Path) -> None:
    """Shift the held-out scores: a test-optimised threshold would move, ours must not."""
    _study(tmp_path)
    preds = _predict(tmp_path, shift_test=0.3)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    m = json.loads((study.report_dir / "metrics.json").read_text())["models"]["good"]
    train = preds.filter((pl.col("model") == "good") & (pl.col("split") == "train"))
    thr = stats.threshold(train["label"].to_numpy(), train["score"].to_numpy(), rule="youden")
    assert m["threshold"]["value"] == pytest.approx(thr, abs=1e-12)
    ext = preds.filter((pl.col("model") == "good") & (pl.col("split") == "external"))
    y, s = ext["label"].to_numpy(), ext["score"].to_numpy()
    assert stats.threshold(y, s) != pytest.approx(thr)  # a test set would pick another one
    tp = int(((s >= thr) & (y == 1)).sum())
    assert m["splits"]["external"]["sensitivity"]["estimate"] == pytest.approx(tp / y.sum(), abs=1e-12)


def test_rerun_is_skipped_and_byte_identical(tmp_path: Path) -> None:
    _study(tmp_path)
    _predict(tmp_path)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    first = {p.name: p.read_bytes() for p in study.report_dir.iterdir()}
    again = validate(study, progress=False)
    assert again.skipped
    forced = validate(study, force=True, progress=False)
    assert not forced.skipped
    assert {p.name: p.read_bytes() for p in study.report_dir.iterdir()} == first


def test_no_predictions_is_a_clear_error(tmp_path: Path) -> None:
    _study(tmp_path)
    with pytest.raises(ValueError, match="no predictions yet"):
        validate(load_config(tmp_path / "study.toml"), progress=False)


def test_tiny_split_gets_point_estimates_and_notes(tmp_path: Path) -> None:
    """One case and two controls: DeLong has no variance, so the AUC comes without a CI and a note says why."""
    from analytics.validation.stage import _split_metrics
    from pipeline.config import parse_study

    study = parse_study({"study": {"name": "t"}, "manifests": {"patients": "p.csv"}, "validation": {"n_boot": 50}}, tmp_path)
    y = np.array([1, 0, 0])
    s = np.array([0.9, 0.2, 0.95])
    out, _, notes = _split_metrics(y, s, 0.5, study, 0, None, None, None)
    auc = out.get("auc")
    assert auc is not None and auc.estimate == pytest.approx(roc_auc_score(y, s))
    assert auc.low is None and auc.method == "no CI"
    assert any("without a CI" in n for n in notes)


def test_curves_hold_the_roc(tmp_path: Path) -> None:
    _study(tmp_path)
    preds = _predict(tmp_path)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    curves = json.loads((study.report_dir / "curves.json").read_text())
    roc = curves["good"]["external"]["roc"]
    ext = preds.filter((pl.col("model") == "good") & (pl.col("split") == "external"))
    y, s = ext["label"].to_numpy(), ext["score"].to_numpy()
    # trapezoidal area under the stored curve equals the Mann-Whitney AUC
    order = np.lexsort((roc["tpr"], roc["fpr"]))
    fpr, tpr = np.asarray(roc["fpr"])[order], np.asarray(roc["tpr"])[order]
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_a_sensitivity_rule_reaches_its_target_on_training(tmp_path: Path) -> None:
    _study(tmp_path, compare='threshold_rule = "sensitivity"\nthreshold_target = 0.9')
    preds = _predict(tmp_path)
    study = load_config(tmp_path / "study.toml")
    validate(study, progress=False)
    m = json.loads((study.report_dir / "metrics.json").read_text())["models"]["good"]
    train = preds.filter((pl.col("model") == "good") & (pl.col("split") == "train"))
    y, s = train["label"].to_numpy(), train["score"].to_numpy()
    thr = m["threshold"]["value"]
    assert thr == pytest.approx(stats.threshold(y, s, rule="sensitivity", target=0.9), abs=1e-12)
    assert ((s >= thr) & (y == 1)).sum() / y.sum() >= 0.9  # the target holds where it was chosen
    assert m["threshold"]["rule"] == "sensitivity >= 0.9"


@pytest.mark.parametrize(("lines", "expected"), [
    ('threshold_rule = "best"', "key 'validation.threshold_rule': unknown rule 'best'"),
    ('threshold_rule = "sensitivity"', "needs threshold_target"),
    ('threshold_rule = "youden"\nthreshold_target = 0.8', "threshold_target applies only to"),
    ('threshold_rule = "specificity"\nthreshold_target = 1.5', "validation.threshold_target"),
])
def test_a_threshold_rule_that_cannot_be_used_is_a_config_error(tmp_path: Path, lines: str, expected: str) -> None:
    _study(tmp_path)
    toml = tmp_path / "study.toml"
    toml.write_text(toml.read_text().replace("[validation]\n", f"[validation]\n{lines}\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(toml)
