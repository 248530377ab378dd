"""``[validation] internal = "ncv"``: fit's nested cross-validation replicates -> Validation rows equal to
:func:`analytics.stats.nested_cv.nested_cv` on the saved replicates and labels -> the report's table; the same bytes
with 1 and 2 workers; a survival model gets a note, not rows; the config's defaults and checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from internal_helpers import make, replicate_files, survival_study

from analytics.models.artifacts import FitRecord
from analytics.models.replicates import load_apparent, load_replicates
from analytics.stats.nested_cv import nested_cv, nested_cv_plan
from analytics.validation import Validation
from pipeline.config import StudyConfig
from pipeline.config_validation import ValidationSettings

K, REPEATS = 3, 2
FITS = REPEATS * (K + K * (K - 1) // 2)  # 3 outer + 3 inner fits per repeat


def _record(study: StudyConfig, model: str) -> FitRecord:
    return FitRecord.from_json((study.models_dir / model / "manifest.json").read_bytes())


def _run(study: StudyConfig) -> tuple[Validation, str]:
    from analytics.fit import fit
    from analytics.report import write_report
    from analytics.validation.stage import validate

    fit(study, progress=False)
    v = validate(study, force=True, progress=False).validation
    assert v is not None
    write_report(study, force=True, progress=False)
    return v, (study.report_dir / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def ncv(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, Validation, str]:
    """The tuned logistic regression with nested 3-fold cross-validation, 2 repeats: fitted, validated, reported."""
    study = make(tmp_path_factory.mktemp("ncv"), internal="ncv", extra=f"repeats = {REPEATS}")
    v, html = _run(study)
    return study, v, html


def test_validation_rows_equal_nested_cv_of_the_saved_replicates(ncv: tuple) -> None:
    study, v, _ = ncv
    record = _record(study, "clin")
    assert record.internal is not None
    assert (record.internal["method"], record.internal["folds"], record.internal["repeats"]) == ("ncv", K, REPEATS)
    reps = load_replicates(study.models_dir, record)
    y = load_apparent(study.models_dir, record).y.astype(np.int64)
    plan = nested_cv_plan(y, K, REPEATS, study.study.seed)
    assert len(reps) == len(plan.fits) == FITS
    # every replicate was fitted on its plan row set and scored all n training patients
    for i, r in enumerate(reps):
        np.testing.assert_array_equal(r.index, plan.train_rows(i))
        assert r.error is None and r.test.shape == (y.size,)
    ref = {r["index"]: r for r in nested_cv(y, reps, plan, 0.95).iter_rows(named=True)}
    im = v.internal["clin"]
    assert im.method == "ncv" and im.rows == () and (im.replicates, im.failed, im.n) == (FITS, 0, y.size)
    assert im.label == "nested CV 3×2 (Bates, Hastie & Tibshirani 2024)"
    assert {r.index for r in im.nested} == {"AUC", "Brier"}
    for row in im.nested:
        for col in ("estimate", "low", "high", "se", "cv", "ncv", "bias", "se_naive"):
            # metrics values are kept to 12 significant digits (analytics.validation.values.clean)
            assert getattr(row, col) == pytest.approx(ref[row.index][col], rel=1e-10, abs=1e-12), (row.index, col)
    # the summary's training-split rows carry the estimate and interval under the method label
    s = v.summary.filter((v.summary["model"] == "clin") & (v.summary["method"] == im.label))
    auc = s.filter(s["measure"] == "auc").row(0, named=True)
    assert auc["split"] == "train"
    assert (auc["estimate"], auc["low"], auc["high"]) == pytest.approx(
        (ref["AUC"]["estimate"], ref["AUC"]["low"], ref["AUC"]["high"]), rel=1e-10)
    brier = s.filter(s["measure"] == "calibration_brier").row(0, named=True)
    assert brier["estimate"] == pytest.approx(ref["Brier"]["estimate"], rel=1e-10)
    # metrics.json holds the block and reads back to the same thing
    data = json.loads((study.report_dir / "metrics.json").read_text())["internal"]["clin"]
    assert data["method"] == "ncv" and data["failed"] == 0
    assert {r["index"]: r["estimate"] for r in data["nested"]} == pytest.approx({k: r["estimate"] for k, r in ref.items()},
                                                                                rel=1e-10)
    assert Validation.from_json(study.report_dir / "metrics.json").internal == v.internal


def test_report_shows_the_nested_cv_table(ncv: tuple) -> None:
    _, v, html = ncv
    section = html[html.index('id="sec-internal"'):]
    section = section[:section.index("</section>")]
    table = re.search(r'<table class="internal-ncv" data-model="clin".*?</table>', section, re.S)
    assert table is not None and '<table class="internal"' not in section
    head = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table.group(0))
    assert head[0] == "Measure" and head[1:] == ["Estimate", "95% CI<sup>a</sup>", "SE", "CV estimate", "Bias",
                                               "Fits (failed)"]
    auc = next(r for r in v.internal["clin"].nested if r.index == "AUC")
    cell = re.search(r'data-internal="clin\|auc\|estimate">([^<]*)<', table.group(0))
    assert cell is not None and float(cell.group(1)) == pytest.approx(auc.estimate, abs=5e-4)
    assert f"<td class=\"num\">{FITS} (0)</td>" in table.group(0)
    assert "coverage measured by bench/coverage.py: 93.5-98% (AUC)" in section


def test_replicates_byte_identical_with_one_and_two_workers(ncv: tuple, tmp_path: Path) -> None:
    from analytics.fit import fit

    study, _, _ = ncv
    two = make(tmp_path / "two", internal="ncv", extra=f"repeats = {REPEATS}", n_jobs=2)
    fit(two, progress=False)
    one_files, two_files = replicate_files(study), replicate_files(two)
    assert len(one_files) == FITS and one_files == two_files


def test_survival_model_gets_a_note_and_no_rows(tmp_path: Path) -> None:
    from analytics.fit import fit
    from analytics.validation.stage import validate

    study = survival_study(tmp_path / "surv", internal="ncv")
    fit(study, progress=False)
    record = _record(study, "cox")
    assert record.internal is not None and record.internal["skipped"] == "nested cross-validation is for binary endpoints"
    assert not (study.models_dir / ".internal" / "cox").exists()
    v = validate(study, force=True, progress=False).validation
    assert v is not None
    im = v.internal["cox"]
    assert im.nested == () and im.rows == () and im.notes == ("nested cross-validation is for binary endpoints",)
    assert any("nested cross-validation is for binary endpoints" in n for n in v.notes)
    from analytics.report import write_report

    write_report(study, force=True, progress=False)
    html = (study.report_dir / "index.html").read_text(encoding="utf-8")
    assert re.search(r'data-ncv-note="cox">nested cross-validation is for binary endpoints<', html)
    # a second fit finds the record current: nothing is refitted
    assert fit(study, progress=False).model("cox").status == "up to date"


def test_config_defaults_and_checks() -> None:
    assert ValidationSettings(internal="ncv").repeats == 20
    assert ValidationSettings(internal="ncv", repeats=3).repeats == 3
    assert ValidationSettings(internal="cv").repeats == 1  # the other methods keep their default
    with pytest.raises(ValueError, match="needs folds >= 3"):
        ValidationSettings(internal="ncv", folds=2)
