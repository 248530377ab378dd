"""Internal validation end to end: fit's replicates -> Validation (summary, metrics.json/csv) -> the report's
rms-style table and bias-corrected calibration figure; cv and .632+; failed replicates; tampered files."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from internal_helpers import make, survival_study

from analytics.models.artifacts import FitRecord
from analytics.models.replicates import APPARENT, ReplicateError, load_apparent, load_replicates
from analytics.stats.internal import calibration_corrected, optimism
from analytics.validation import Validation
from pipeline.config import StudyConfig


def _record(study: StudyConfig, model: str) -> FitRecord:
    return FitRecord.from_json((study.models_dir / model / "manifest.json").read_bytes())


def _run(study: StudyConfig, report: bool = True) -> tuple[Validation, str]:
    from analytics.fit import fit
    from analytics.report import write_report
    from analytics.validation.stage import validate

    fit(study, progress=False)
    v = validate(study, force=True, progress=False).validation
    assert v is not None
    if not report:
        return v, ""
    write_report(study, force=True, progress=False)
    return v, (study.report_dir / "index.html").read_text(encoding="utf-8")


def _training(study: StudyConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The labelled training patients, their labels (from the cohort) and the saved final model's scores of them,
    made without the fit stage's apparent-scores code."""
    from analytics.cohort import load_cohort
    from analytics.models.data import assemble
    from analytics.models.persist import load_model

    cohort = load_cohort(study, features=[], bags=[], on_missing="keep")
    assembled = assemble(study.model("clin"), cohort, {})
    labels = cohort.frame["label"].to_numpy()
    train = np.flatnonzero((np.asarray(cohort.split) == "train") & assembled.available & np.isfinite(labels))
    model = load_model(study.models_dir / "clin", study.store_path)
    ids = [cohort.patient_ids[i] for i in train]
    return ids, labels[train].astype(np.int64), np.asarray(model.predict_score(assembled.data.take(train)))


@pytest.fixture(scope="module")
def boot(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, Validation, str]:
    """The tuned logistic regression with B = 5 bootstrap replicates: fitted, validated and reported."""
    study = make(tmp_path_factory.mktemp("boot"), B=5)
    v, html = _run(study)
    return study, v, html


def test_validation_equals_optimism_of_the_saved_replicates(boot: tuple) -> None:
    study, v, _ = boot
    record = _record(study, "clin")
    ids, y, score = _training(study)
    apparent = load_apparent(study.models_dir, record)
    # fit saved the final model's own scores of exactly its training patients, in the replicates' order
    assert apparent.patient_id.tolist() == ids
    np.testing.assert_array_equal(apparent.y, y)
    np.testing.assert_allclose(apparent.score, score, rtol=1e-12)
    reps = load_replicates(study.models_dir, record)
    ref = optimism(y, score, reps, "binary", method="bootstrap")
    iv = ref.interval(0.95)
    im = v.internal["clin"]
    assert (im.label, im.replicates, im.failed, im.n) == ("optimism-bootstrap B=5", 5, 0, len(ids))
    table = {r["index"]: r for r in ref.table.iter_rows(named=True)}
    lows = dict(zip(iv["index"], iv["low"]))
    for row in im.rows:
        want = table[row.index]
        for col in ("original", "training", "test", "optimism", "corrected"):
            assert getattr(row, col) == pytest.approx(want[col], rel=1e-10, abs=1e-12), (row.index, col)
        if np.isfinite(lows[row.index]):
            assert row.low == pytest.approx(lows[row.index], rel=1e-10)
    auc = im.row("auc")
    assert auc is not None and auc.index == "AUC" and auc.corrected == pytest.approx(auc.original - auc.optimism)
    # the summary: split train, existing metric names, the method label saying which estimate
    s = v.summary
    rows = {r["method"]: r for r in s.filter((s["model"] == "clin") & (s["measure"] == "auc")
                                             & s["method"].str.starts_with("optimism-bootstrap B=5")).iter_rows(named=True)}
    assert rows["optimism-bootstrap B=5: apparent"]["estimate"] == pytest.approx(table["AUC"]["original"], rel=1e-10)
    assert rows["optimism-bootstrap B=5: optimism"]["estimate"] == pytest.approx(table["AUC"]["optimism"], rel=1e-10)
    corrected = next(r for m, r in rows.items() if m.startswith("optimism-bootstrap B=5: corrected"))
    assert corrected["split"] == "train" and corrected["low"] == pytest.approx(lows["AUC"], rel=1e-10)
    assert "location-shifted" in corrected["method"]
    brier = s.filter((s["measure"] == "calibration_brier") & (s["method"] == "optimism-bootstrap B=5: optimism"))
    assert brier["estimate"][0] == pytest.approx(table["B"]["optimism"], rel=1e-10)
    # the bias-corrected calibration curve is rms::calibrate's on the same replicates
    cal = calibration_corrected(y, score, reps)
    curve = im.calibration[0]
    assert curve.horizon is None and curve.mae == pytest.approx(cal.mae, rel=1e-10)
    np.testing.assert_allclose(np.array(curve.corrected, dtype=float), cal.curve["corrected"].to_numpy(), rtol=1e-10)


def test_metrics_files_hold_the_internal_rows_and_read_back(boot: tuple) -> None:
    study, v, _ = boot
    data = json.loads((study.report_dir / "metrics.json").read_text())
    table = {r["index"]: r for r in data["internal"]["clin"]["table"]}
    assert table["AUC"]["corrected"] == v.internal["clin"].row("AUC").corrected  # type: ignore[union-attr]
    back = Validation.from_json(study.report_dir / "metrics.json")
    assert back.internal == v.internal
    rows = list(csv.DictReader(io.StringIO((study.report_dir / "metrics.csv").read_text())))
    mine = [r for r in rows if r["method"].startswith("optimism-bootstrap B=5")]
    summary = v.summary.filter(v.summary["method"].str.starts_with("optimism-bootstrap B=5"))
    assert len(mine) == summary.height == 3 * len(v.internal["clin"].rows) + 2
    auc = next(r for r in mine if r["metric"] == "auc" and r["method"].startswith("optimism-bootstrap B=5: corrected"))
    assert float(auc["estimate"]) == v.internal["clin"].row("auc").corrected  # type: ignore[union-attr]
    failed = next(r for r in mine if r["metric"] == "replicates_failed")
    assert float(failed["estimate"]) == 0.0
    # the store's metrics table, keyed by (model, split, metric), keeps the out-of-fold training AUC only
    from pipeline import store

    con = store.connect(study.store_path, read_only=True)
    try:
        stored = con.execute("SELECT metric, estimate, method FROM metrics WHERE model = 'clin' AND split = 'train'"
                             ).fetchall()
    finally:
        con.close()
    assert not [m for m in stored if m[2].startswith("optimism-bootstrap")]
    oof = v.get("clin", "train", "auc")
    assert oof is not None and [(e, m) for k, e, m in stored if k == "auc"] == [(oof.estimate, oof.method)]


def test_the_report_shows_the_rms_table_the_figure_and_honest_labels(boot: tuple) -> None:
    _, v, html = boot
    im = v.internal["clin"]
    section = html[html.index('id="sec-internal"'):]
    section = section[:section.index("</section>")]
    assert 'data-internal-method="optimism-bootstrap B=5"' in section
    for row in im.rows:
        for col in ("original", "training", "test", "optimism", "corrected"):
            x = getattr(row, col)
            cell = re.search(rf'data-internal="clin\|{row.measure}\|{col}">([^<]*)<', section)
            assert cell is not None and cell.group(1) == ("–" if x is None else f"{x:.3f}"), (row.index, col)
    auc = im.row("AUC")
    assert auc is not None and auc.low is not None
    assert f'data-internal="clin|auc|interval">{auc.low:.3f}–{auc.high:.3f}<' in section
    assert 'id="fig-internal-calibration-clin"' in section and "data:image/png;base64," in section
    assert "location-shifted bootstrap CI (Noma et al. 2021)" in section and "68-93%" in section
    # the training out-of-fold interval and the best of the grid are labelled for what they are
    assert "conditional on the fitted procedure; too narrow for the estimate of future performance" in html
    assert "best of grid (optimistic)" in html


def test_cv_and_632_plus_run_through_validation(tmp_path: Path) -> None:
    cv, _ = _run(make(tmp_path / "cv", internal="cv", extra="repeats = 2"), report=False)
    im = cv.internal["clin"]
    assert (im.method, im.label, im.replicates) == ("cv", "cv 3×2", 6)
    auc = im.row("AUC")
    assert auc is not None and auc.corrected is not None and auc.low is None  # no interval for cv
    study = make(tmp_path / "632", internal=".632+", B=4)
    v, _ = _run(study, report=False)
    im = v.internal["clin"]
    record = _record(study, "clin")
    a = load_apparent(study.models_dir, record)
    ref = optimism(a.y.astype(int), a.score, load_replicates(study.models_dir, record), "binary", method=".632+")
    want = dict(zip(ref.table["index"], ref.table["corrected"]))
    assert im.label == ".632+ B=4"
    assert im.row("AUC").corrected == pytest.approx(want["AUC"], rel=1e-10)  # type: ignore[union-attr]
    assert im.row("B").corrected == pytest.approx(want["B"], rel=1e-10)  # type: ignore[union-attr]
    methods = [r["method"] for r in v.summary.filter(v.summary["measure"] == "auc").iter_rows(named=True)
               if r["method"].startswith(".632+")]
    assert methods[:2] == [".632+ B=4: apparent", ".632+ B=4: optimism"] and methods[2].startswith(".632+ B=4: corrected")


def test_a_model_whose_replicates_all_fail_shows_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics import internal_fit

    class Failing:
        def fit(self, *_: object) -> Failing:
            raise ValueError("did not converge (test)")

    monkeypatch.setattr(internal_fit, "fresh_learner", lambda task, b: Failing())
    v, html = _run(make(tmp_path / "fail", B=3))
    im = v.internal["clin"]
    assert (im.replicates, im.failed, dict(im.reasons)) == (3, 3, {"ValueError: did not converge (test)": 3})
    assert im.row("AUC").corrected is None and im.row("AUC").original is not None  # type: ignore[union-attr]
    assert not im.calibration
    section = html[html.index('id="sec-internal"'):]
    assert "3 replicates, 3 failed" in section and "ValueError: did not converge (test) (3)" in section
    assert "Every replicate failed" in section


def test_a_tampered_replicate_or_apparent_file_is_named(boot: tuple) -> None:
    from analytics.validation.stage import validate

    study, _, _ = boot
    folder = study.models_dir / str(_record(study, "clin").internal["folder"])  # type: ignore[index]
    for name in ("rep_0002.npz", APPARENT):
        path = folder / name
        original = path.read_bytes()
        try:
            path.write_bytes(original[:-8] + b"tampered")
            with pytest.raises(ReplicateError, match=re.escape(str(folder if name != APPARENT else path))):
                validate(study, force=True, progress=False)
        finally:
            path.write_bytes(original)
    assert validate(study, force=True, progress=False).validation is not None


def test_a_survival_model_gets_validate_cph_and_a_curve_per_horizon(tmp_path: Path) -> None:
    study = survival_study(tmp_path / "surv")
    v, html = _run(study)
    im = v.internal["cox"]
    record = _record(study, "cox")
    a = load_apparent(study.models_dir, record)
    assert a.risk is not None and a.horizons.tolist() == [8.0, 15.0]
    ref = optimism(a.y, a.score, load_replicates(study.models_dir, record), "survival", [8.0, 15.0],
                   apparent_risk=a.risk)
    want = dict(zip(ref.table["index"], ref.table["corrected"]))
    got = {r.measure: r.corrected for r in im.rows}
    assert got["c_index"] == pytest.approx(want["C"], rel=1e-10)
    assert got["lp_calibration_slope"] == pytest.approx(want["Slope"], rel=1e-10)
    assert got["brier_t8"] == pytest.approx(want["Brier(t=8)"], rel=1e-10)
    assert [c.horizon for c in im.calibration] == [8.0, 15.0]
    assert 'id="fig-internal-calibration-cox"' in html and 'data-internal="cox|brier_t15|corrected"' in html
