"""The report of a Cox study: the proportional-hazards section (ph.karno flagged, cox.zph p = 0.024), the Cox
nomogram, Riley's time-to-event sample size, and no "0 patients" rows in a survival model's table."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import CoxPHFitter

from analytics.cohort import load_cohort
from analytics.fit import stored_predictions
from analytics.report import write_report
from analytics.stats.sample_size_survival import sample_size_survival
from analytics.validation.stage import validate
from pipeline.config import StudyConfig


@pytest.fixture(scope="module")
def html(fitted_lung: StudyConfig) -> str:
    validate(fitted_lung, progress=False, force=True)
    write_report(fitted_lung, force=True, progress=False)
    return (fitted_lung.report_dir / "index.html").read_text(encoding="utf-8")


def _row(html: str, attr: str) -> str:
    m = re.search(rf"<tr {re.escape(attr)}[^>]*>.*?</tr>", html, flags=re.S)
    assert m, attr
    return m.group(0)


def test_ph_section_flags_the_non_proportional_term(html: str, lung: dict[str, Any]) -> None:
    assert 'id="proportional-hazards"' in html and 'id="ph-cox"' in html
    karno = _row(html, 'data-ph="cox|ph_karno"')
    assert 'class="short"' in karno and "non-proportional" in karno
    assert f">{lung['zph'][0]['p'][0]:.3f}<" in karno  # 0.024, R's cox.zph
    for term in ("ecog", "rcs(age, 4)", "sex", "GLOBAL"):
        assert "non-proportional" not in _row(html, f'data-ph="cox|{term}"')
    assert 'id="ph-flag-cox"' in html and 'id="fig-ph-cox"' in html
    assert 'data-ph-reason="cox_ridge"' in html and "penalised" in html


def test_cox_nomogram_is_drawn(html: str) -> None:
    assert 'id="fig-nomogram-cox_main"' in html
    # the spline model has no single linear axis for age: a note, no figure
    assert 'id="fig-nomogram-cox"' not in html and "cox: no nomogram" in html


def test_survival_sample_size_equals_pmsampsize(html: str, fitted_lung: StudyConfig) -> None:
    cohort = load_cohort(fitted_lung).frame.select("patient_id", "time", "event")
    oof = stored_predictions(fitted_lung.store_path, "cox_main").filter(pl.col("split") == "train").join(
        cohort, on="patient_id")
    time, event = oof["time"].to_numpy().astype(float), oof["event"].to_numpy().astype(float)
    # an independent likelihood-ratio statistic of the out-of-fold linear predictor (lifelines)
    cph = CoxPHFitter().fit(pd.DataFrame({"lp": oof["score"].to_numpy(), "T": time, "E": event}), "T", "E",
                            fit_options={"precision": 1e-12})
    lr = cph.log_likelihood_ratio_test().test_statistic
    r2 = 1 - np.exp(-lr / len(time))
    # cox_main: age + sex + ecog (3 levels): 4 coefficients; the main horizon 365 days
    req = sample_size_survival(4, event.sum() / time.sum(), 365.0, time.mean(), r2_cs=r2)
    row = _row(html, 'id="sample-size-survival-cox_main"')
    cells = re.findall(r'<td class="num[^"]*"[^>]*>([^<]*)</td>', row)
    assert cells[:3] == [str(len(time)), str(int(event.sum())), "4"]
    assert cells[6] == f"{r2:.3f}"
    assert cells[7:10] == [str(req.criterion_1), str(req.criterion_2), str(req.criterion_3)]
    assert cells[10] == str(req.n) and cells[11] == f"{req.events:.0f}"
    assert "out-of-fold" in row


def test_survival_table_has_no_zero_patient_rows(html: str) -> None:
    table = re.search(r'<table class="performance" data-model="cox_main">.*?</table>', html, flags=re.S)
    assert table
    text = table.group(0)
    assert "Patients with follow-up" in text and "ICI(365), smooth calibration" in text
    # a survival model has no labels: no complete-case rows (before: "Patients 0", "Events (label 1) 0")
    assert ">Patients<" not in text and "Events (label 1)" not in text
