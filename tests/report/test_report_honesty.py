"""Reports that say exactly what was done: the tuning grid searched, calibration measures under their
rms::val.prob names, per-centre AUC per split, full-precision metrics.csv with p in its own column, and
predictors left out of a model."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score
from study_builders import build_study, study_toml

from pipeline import store
from pipeline.config import StudyConfig

N = 90


def _row_text(text: str, element_id: str) -> str:
    m = re.search(rf'<tr id="{re.escape(element_id)}"[^>]*>(.*?)</tr>', text, re.DOTALL)
    assert m, element_id
    return html.unescape(re.sub(r"<[^>]+>", " ", m.group(1)))


def _scored(study: StudyConfig) -> pl.DataFrame:
    from analytics.cohort import load_cohort

    con = store.connect(study.store_path, read_only=True)
    try:
        preds = store.read_predictions(con)
    finally:
        con.close()
    frame = load_cohort(study).frame.select("patient_id", "label", "center")
    return preds.join(frame, on="patient_id").filter(pl.col("label").is_not_null())


# --- a study fitted from study.toml (tuning, predictors left out) -----------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, str]:
    from analytics.fit import fit
    from analytics.report import write_report
    from analytics.validation.stage import validate

    root = tmp_path_factory.mktemp("tuned")
    rng = np.random.default_rng(21)
    label = (np.arange(N) % 2).astype(int)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": ["A"] * 60 + ["B"] * 30,
        "age": rng.normal(55, 8, N).round(1), "marker": (label * 1.2 + rng.normal(0, 1, N)).round(3),
        "const": [2.5] * N, "empty": pl.Series([None] * N, dtype=pl.Float64), "label": label,
    })
    study = build_study(root, patients, "c.label, c.age, c.marker, c.const, c.empty", study_toml("tuned", 4, """[[models]]
name = "clin"
kind = "logistic"
clinical = ["age", "marker", "const", "empty"]
[[models]]
name = "trees"
kind = "xgboost"
clinical = ["age", "marker"]
params = { n_estimators = 30 }
[[models]]
name = "fixed"
kind = "logistic"
clinical = ["age", "marker"]
params = { C = 1.0 }
[[models]]
name = "given"
kind = "logistic"
clinical = ["age", "marker"]
grid = { C = [0.5, 2.0] }
[validation]
n_boot = 0
""", sections='[variables]\nempty = { type = "numeric" }\nlabel = { type = "binary", role = "outcome" }',
        split='external_centers = ["B"]\ninternal_fraction = 0.25\nseed = 0'))
    fit(study, progress=False)
    validate(study, progress=False)
    return study, write_report(study, progress=False).path.read_text(encoding="utf-8")


def _manifest(study: StudyConfig, name: str) -> dict:
    return json.loads((study.models_dir / name / "manifest.json").read_text())


def test_manifest_records_the_default_grid_that_was_searched(fitted: tuple[StudyConfig, str]) -> None:
    study, _ = fitted
    clin, trees, fixed = (_manifest(study, m) for m in ("clin", "trees", "fixed"))
    assert clin["tuning"]["grid"] == {"C": [0.01, 0.1, 1.0, 10.0]} and clin["tuning"]["source"] == "default"
    assert trees["tuning"]["grid"] == {"max_depth": [2, 3]} and trees["tuning"]["source"] == "default"
    assert fixed["tuning"]["grid"] == {} and fixed["tuning"]["source"] == "none"
    # the search really ran (an inner AUC exists only then) and chose values from the grid, per fold too
    for man, key in ((clin, "C"), (trees, "max_depth")):
        assert man["tuning"]["searched"] and man["inner_auc"] is not None
        assert man["chosen"][key] in man["tuning"]["grid"][key]
        assert {f[key] for f in man["fold_chosen"]} <= set(man["tuning"]["grid"][key])


def test_models_table_shows_the_grid_searched_and_the_choice(fitted: tuple[StudyConfig, str]) -> None:
    study, text = fitted
    clin = _row_text(text, "model-clin")
    assert "none (fixed)" not in clin
    assert "C ∈ {0.01, 0.1, 1, 10}" in clin and "default grid" in clin and "inner cross-validation" in clin
    chosen = _manifest(study, "clin")["chosen"]["C"]
    assert f"chosen C = {chosen:g}" in clin
    trees = _row_text(text, "model-trees")
    assert "max_depth ∈ {2, 3}" in trees and f"chosen max_depth = {_manifest(study, 'trees')['chosen']['max_depth']}" in trees
    assert "none (fixed)" in _row_text(text, "model-fixed")
    assert "C ∈ {0.5, 2} (grid from study.toml" in _row_text(text, "model-given")


@pytest.mark.parametrize("item", ["9b", "12c"])
def test_tripod_items_name_the_grid(fitted: tuple[StudyConfig, str], item: str) -> None:
    _, text = fitted
    row = _row_text(text, f"tripod-{item}")
    assert "C ∈ {0.01, 0.1, 1, 10}" in row and "max_depth ∈ {2, 3}" in row
    assert "clin: logistic" in row and "tuning none (fixed)" not in row.split("fixed: logistic")[0]


def test_an_unfitted_model_shows_the_grid_it_will_search(fitted: tuple[StudyConfig, str]) -> None:
    from analytics.report import model_rows

    study, _ = fitted
    rows = {r["name"]: r for r in model_rows(study, ["clin", "fixed"], None, {})}
    assert rows["clin"]["grid"].startswith("C ∈ {0.01, 0.1, 1, 10} (default grid")
    assert "when fitted" in rows["clin"]["grid"]
    assert rows["fixed"]["grid"] == "none (fixed)"


def test_report_names_the_predictors_left_out(fitted: tuple[StudyConfig, str]) -> None:
    _, text = fitted
    m = re.search(r'<div class="banner" id="dropped-clin">(.*?)</div>', text, re.DOTALL)
    assert m, "no banner for the predictors left out of clin"
    banner = html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))
    assert "empty (all missing" in banner and "const (constant" in banner
    assert 'id="dropped-trees"' not in text
    # the fitted-model facts list only the columns used
    facts = text[text.index("clin: fitted model"):]
    facts = facts[:facts.index("</dl>")]
    assert "age, marker" in facts and "const" not in facts.split("Input columns")[1].split("</dd>")[0]


# --- validation outputs (the shared report study: predictions inserted, then validated) -------------


@pytest.fixture(scope="module")
def validated(reported: tuple[StudyConfig, Path]) -> tuple[StudyConfig, dict, str, pl.DataFrame]:
    study, path = reported
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    return study, metrics, path.read_text(encoding="utf-8"), _scored(study)


def test_calibration_names_as_rms_and_values_from_an_independent_fit(validated: tuple) -> None:
    study, metrics, text, scored = validated
    part = scored.filter((pl.col("model") == "good") & (pl.col("split") == "external"))
    y, p = part["label"].to_numpy(), part["score"].to_numpy()
    lp = logit(p)

    def nll(a: float, b: float) -> float:
        q = expit(a + b * lp)
        return float(-np.sum(y * np.log(q) + (1 - y) * np.log1p(-q)))

    citl = minimize(lambda t: nll(t[0], 1.0), [0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}).x[0]
    a, b = minimize(lambda t: nll(*t), [0.0, 1.0], method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10_000}).x
    cal = metrics["models"]["good"]["splits"]["external"]["calibration"]
    assert cal["in_the_large"] == pytest.approx(citl, abs=1e-5)
    assert cal["recalibration_intercept"] == pytest.approx(a, abs=1e-5)
    assert cal["recalibration_slope"] == pytest.approx(b, abs=1e-5)
    assert "intercept" not in cal and "slope" not in cal  # no ambiguous names
    # metrics.csv says how each was computed; the report labels them apart
    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO((study.report_dir / "metrics.csv").read_text()))
            if r["model"] == "good" and r["split"] == "external" and not r["center"]}
    assert "slope fixed at 1" in rows["calibration_in_the_large"]["method"]
    assert "rms::val.prob Intercept" in rows["calibration_recalibration_intercept"]["method"]
    assert "rms::val.prob Slope" in rows["calibration_recalibration_slope"]["method"]
    for label in ("Calibration-in-the-large", "Recalibration intercept", "Recalibration slope"):
        assert f"<td>{label}</td>" in text


def test_centre_auc_is_per_split(validated: tuple) -> None:
    study, metrics, text, scored = validated
    centers = metrics["models"]["good"]["centers"]
    # centre A holds training and internal patients: one entry each, never pooled
    assert set(centers["A"]) == {"train", "internal"} and set(centers["B"]) == {"external"}
    for center, per_split in centers.items():
        for split, e in per_split.items():
            part = scored.filter((pl.col("model") == "good") & (pl.col("center") == center) & (pl.col("split") == split))
            assert e["n"] == part.height and e["n_positive"] == int(part["label"].sum())
            assert e["auc"]["estimate"] == pytest.approx(roc_auc_score(part["label"], part["score"]), abs=1e-12)
            cell = re.search(rf'data-metric="good\|center:{center}/{split}\|auc">([^<]*)<', text)
            assert cell and cell.group(1).startswith(f"{e['auc']['estimate']:.3f}")
    pooled = scored.filter((pl.col("model") == "good") & (pl.col("center") == "A"))
    pooled_auc = roc_auc_score(pooled["label"], pooled["score"])
    assert all(e["auc"]["estimate"] != pytest.approx(pooled_auc, abs=1e-9) for e in centers["A"].values())
    # metrics.csv has the same centre x split rows
    table = pl.read_csv(study.report_dir / "metrics.csv")
    got = table.filter((pl.col("model") == "good") & (pl.col("center") == "A") & (pl.col("metric") == "auc"))
    assert sorted(got["split"].to_list()) == ["internal", "train"]


def test_metrics_csv_floats_round_trip_to_metrics_json(validated: tuple) -> None:
    study, metrics, _, _ = validated
    rows = list(csv.DictReader(io.StringIO((study.report_dir / "metrics.csv").read_text())))
    auc = next(r for r in rows if (r["model"], r["split"], r["metric"], r["center"]) == ("weak", "train", "auc", ""))
    ref = metrics["models"]["weak"]["splits"]["train"]["auc"]
    assert (float(auc["estimate"]), float(auc["low"]), float(auc["high"])) == (ref["estimate"], ref["low"], ref["high"])
    for c in metrics["comparisons"]:
        r = next(r for r in rows if r["model"] == f"{c['a']} vs {c['b']}" and r["split"] == c["split"])
        assert r["metric"] == "auc_difference" and r["method"] == "delong"
        assert (float(r["estimate"]), float(r["low"]), float(r["high"]), float(r["z"]), float(r["p"])) == (
            c["difference"], c["low"], c["high"], c["z"], c["p"])


def test_tiny_p_values_keep_their_digits(tmp_path: Path) -> None:
    """A DeLong p of order 1e-12 was written as 0.000000."""
    from analytics.validation.stage import validate

    from report_helpers import write_study

    study = write_study(tmp_path, n_boot=0)
    scored = _scored(study)
    y = {p: lab for p, lab in zip(scored["patient_id"], scored["label"])}
    rng = np.random.default_rng(1)
    con = store.connect(study.store_path)
    try:
        # 'good' separates the labels almost perfectly, 'weak' points the wrong way: they differ overwhelmingly
        for model, pid in con.execute("SELECT model, patient_id FROM predictions ORDER BY model, patient_id").fetchall():
            score = (0.3 + 0.4 * y[pid] + rng.normal(0, 0.12) if model == "good"
                     else 0.6 - 0.3 * y[pid] + rng.normal(0, 0.15))
            con.execute("UPDATE predictions SET score = ? WHERE model = ? AND patient_id = ?",
                        [float(np.clip(score, 0.01, 0.99)), model, pid])
    finally:
        con.close()
    validate(study, force=True, progress=False)
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    tiny = [c for c in metrics["comparisons"] if c["p"] < 5e-7]
    assert tiny, [c["p"] for c in metrics["comparisons"]]
    rows = list(csv.DictReader(io.StringIO((study.report_dir / "metrics.csv").read_text())))
    for c in tiny:
        r = next(r for r in rows if r["model"] == "good vs weak" and r["split"] == c["split"])
        assert float(r["p"]) == c["p"] > 0
