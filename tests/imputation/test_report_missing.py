"""The report's missing-data section: md.pattern, missing % by split and centre, the method that ran (with the
single-imputation caveat), and ``imputations/`` diagnostics: trace plots, densities and red flags."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from study_builders import study_toml, write_study

from analytics.cli import main
from analytics.cohort import cohort_overview, load_cohort
from analytics.cohort.summary import read_summary
from analytics.impute import md_pattern
from analytics.report import write_report
from analytics.report.missing import SINGLE_WARNING, imputation_diagnostics, missing_context, pattern_table
from pipeline.config import StudyConfig, load_config

N = 60
MODEL = '[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age", "marker", "grade"]\n'


def _patients() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    label = (rng.random(N) < 0.4).astype(int)
    marker = (label * 1.2 + rng.normal(0, 1, N)).round(3)
    return pl.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(N)], "center": np.where(np.arange(N) < 45, "A", "B"),
        "age": rng.normal(55, 9, N).round(1), "marker": [None if i % 5 == 0 else v for i, v in enumerate(marker)],
        "grade": [None if i % 7 == 3 else v for i, v in enumerate(rng.choice(["low", "mid", "high"], N))],
        "label": label,
    })


def _study(root: Path, imputation: str = "") -> Path:
    return write_study(root, _patients(), "c.label, c.age, c.marker, c.grade",
                       study_toml("miss", 2, MODEL + imputation))


def _cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


def _ingested(root: Path, imputation: str = "") -> StudyConfig:
    toml = _study(root, imputation)
    assert _cli("ingest", str(toml)) == 0
    return load_config(toml)


def _section(html: str) -> str:
    start = html.index('<section id="sec-missing">')
    return html[start:html.index("</section>", start)]


MICE = '[imputation]\nmethod = "mice"\nm = 3\nmaxit = 4\nseed = 9\n'


def test_pattern_and_split_centre_counts_match_the_cohort(tmp_path: Path) -> None:
    study = _ingested(tmp_path)
    frame = load_cohort(study).frame
    ctx = missing_context(study, frame)["missingness"]
    expected = md_pattern(frame.select("age", "marker", "grade"))
    assert ctx["pattern"]["columns"] == expected.columns == ["age", "grade", "marker"]
    assert [r["count"] for r in ctx["pattern"]["rows"]] == expected.counts.tolist()
    assert ctx["pattern"]["totals"] == [0, int(frame["grade"].null_count()), int(frame["marker"].null_count())]
    assert sum(r["count"] for r in ctx["pattern"]["rows"]) == N
    # every split x centre group present, its own denominator
    groups = ctx["by_centre"]["groups"]
    assert "external · B" in groups and any(g.startswith("train") and g.endswith("· A") for g in groups)
    marker = next(r for r in ctx["by_centre"]["rows"] if r["variable"] == "marker")
    ext = frame.filter(pl.col("split") == "external")
    k = int(ext["marker"].null_count())
    assert marker["cells"][groups.index("external · B")] == f"{k} ({100 * k / ext.height:.1f}%)"
    assert marker["total"].startswith(f"{frame['marker'].null_count()} (")
    # no [imputation] table: today's in-pipeline median / mode, with the caveat; no imputations yet
    assert ctx["method"]["method"] == "none" and SINGLE_WARNING in ctx["method"]["notes"]
    assert ctx["imputations"] is None and ctx["complete_case"] is None


@pytest.mark.parametrize(("table", "method", "says"), [
    ('[imputation]\nmethod = "single"\n', "single", "understates uncertainty"),
    (MICE, "mice", "m = 3 imputations, maxit = 4 iterations, seed 9"),
    ('[imputation]\nfrom = "manifests/imputed.csv"\n', "mice", "may be optimistic"),
    ('[imputation]\nmethod = "mice"\nvalidation_imputation = "with_outcome"\n', "mice", "with its outcomes"),
])
def test_the_method_that_ran_is_stated(tmp_path: Path, table: str, method: str, says: str) -> None:
    study = load_config(_study(tmp_path, table))
    text = missing_context(study, _patients().with_columns(split=pl.lit("train")))["missingness"]["method"]
    assert text["method"] == method
    assert says in text["text"] + " ".join(text["notes"])
    # the models are fitted on every completed data set and pooled: the section says how, and the cost
    if method == "mice":
        assert "not fitted on these imputations" not in " ".join(text["notes"])
        assert "pooled by Rubin's rules" in text["text"] and "Cost: m fits of each model" in text["text"]


def test_complete_case_drops_incomplete_patients_in_the_cohort_stage_and_the_report_counts_them(
        tmp_path: Path) -> None:
    study = _ingested(tmp_path, '[imputation]\nmethod = "complete_case"\n')
    raw = _patients()
    gone = sorted(raw.filter(pl.col("marker").is_null() | pl.col("grade").is_null())["patient_id"].to_list())
    cohort = load_cohort(study)
    assert sorted(cohort.incomplete) == gone and len(gone) > 0
    assert len(cohort) == N - len(gone) and not set(gone) & set(cohort.patient_ids)
    assert cohort.frame.select("age", "marker", "grade").null_count().sum_horizontal().item() == 0
    # the summary the cohort stage leaves (as `run` runs it) keeps them for the report
    assert sorted(cohort_overview(study, leave_summary=True)[0].incomplete) == gone
    summary = read_summary(study)
    assert summary is not None and sorted(summary.cohort().incomplete) == gone
    section = _section(write_report(study, progress=False).path.read_text(encoding="utf-8"))
    assert 'id="missing-complete-case"' in section and "Complete-case analysis" in section
    assert f"<b>{len(gone)} of {N} patients ({100 * len(gone) / N:.1f}%)</b>" in section
    # a study without the table keeps every patient
    (tmp_path / "plain").mkdir()
    plain = _ingested(tmp_path / "plain")
    assert len(load_cohort(plain)) == N and load_cohort(plain).incomplete == ()


def test_report_shows_trace_plots_densities_and_no_flag_after_impute(tmp_path: Path) -> None:
    study = _ingested(tmp_path, MICE)
    before = write_report(study, progress=False)
    section = _section(before.path.read_text(encoding="utf-8"))
    assert "Multiple imputation" in section and "run `cohortlab impute study.toml`" in section
    assert 'id="missing-trace-' not in section
    assert _cli("impute", str(study.root / "study.toml")) == 0
    after = write_report(study, progress=False)
    assert not after.skipped  # imputations/ are among the report's inputs
    html = after.path.read_text(encoding="utf-8")
    section = _section(html)
    assert 'href="#sec-missing"' in html and 'id="md-pattern"' in section and 'id="missing-centre"' in section
    # one trace plot per imputed column (marker, grade), one density per imputed number (marker)
    assert len(re.findall(r'<figure id="missing-trace-\d+">', section)) == 2
    assert len(re.findall(r'<figure id="missing-density-\d+">', section)) == 1
    assert section.count("data:image/png;base64,") == 3
    assert 'id="missing-no-flags"' in section and "missing-flag" not in section
    assert re.search(r"<td>marker</td><td class=\"num\">\d\.\d{3}</td>", section)


def test_red_flags_for_out_of_range_values_and_unconverged_chains(tmp_path: Path) -> None:
    study = _ingested(tmp_path, MICE)
    assert _cli("impute", str(study.root / "study.toml")) == 0
    folder = study.root / "imputations"
    frame = load_cohort(study).frame
    # an imputed (not observed) marker pushed far outside the observed range
    missing_id = frame.filter((pl.col("split") == "train") & pl.col("marker").is_null())["patient_id"][0]
    long = pl.read_csv(folder / "long.csv")
    long = long.with_columns(pl.when((pl.col(".imp") == 2) & (pl.col("patient_id") == missing_id))
                             .then(999.0).otherwise(pl.col("marker")).alias("marker"))
    long.write_csv(folder / "long.csv", null_value="")
    # chains that drift apart: split-R-hat far above 1.1
    trace = pl.read_csv(folder / "trace.csv")
    trace = trace.with_columns(pl.when(pl.col("variable") == "marker")
                               .then(pl.col("chain") * 10.0 + pl.col("iteration")).otherwise(pl.col("mean"))
                               .alias("mean"))
    trace.write_csv(folder / "trace.csv")
    diag = imputation_diagnostics(study, frame)
    assert diag is not None and diag["stale"] is None
    assert any(f.startswith("marker: 1 imputed value(s) outside the observed range") for f in diag["flags"])
    assert any(f.startswith("marker: split-R̂") and "> 1.1" in f for f in diag["flags"])
    section = _section(write_report(study, progress=False).path.read_text(encoding="utf-8"))
    assert 'id="missing-flags"' in section and section.count('class="missing-flag"') == 2
    assert 'class="num flag"' in section


def test_imputations_of_another_cohort_are_reported_stale_not_drawn(tmp_path: Path) -> None:
    study = _ingested(tmp_path, MICE)
    folder = study.root / "imputations"
    folder.mkdir()
    (folder / "long.csv").write_text(".imp,patient_id,age,marker,grade\n1,Z99,50,1,low\n2,Z99,50,1,low\n",
                                     encoding="utf-8")
    diag = imputation_diagnostics(study, load_cohort(study).frame)
    assert diag is not None and "patient 'Z99' is not among the observed patients" in diag["stale"]
    assert "run `cohortlab impute` again" in diag["stale"] and not diag["trace"] and not diag["density"]
    section = _section(write_report(study, progress=False).path.read_text(encoding="utf-8"))
    assert 'id="missing-stale"' in section and "<figure" not in section


def test_pattern_table_keeps_the_most_frequent_patterns_and_counts_the_rest() -> None:
    frame = pl.DataFrame({"a": [1.0, None, 1.0, 1.0, None, 1.0], "b": [1.0, 1.0, None, 1.0, None, 1.0],
                          "c": ["x", "y", "x", None, "x", "y"]})
    table = pattern_table(frame, ["a", "b", "c"], limit=2)
    assert table is not None and table["patterns"] == 5 and table["hidden_patterns"] == 3
    assert table["rows"][0] == {"count": 2, "cells": [1, 1, 1], "missing": 0}
    assert sum(r["count"] for r in table["rows"]) + table["hidden_patients"] == 6
    assert table["totals"] == [1, 2, 2] and table["total"] == 5
    assert pattern_table(frame, []) is None


FS = '[[feature_sets]]\nname = "tiles"\nmodality = "wsi"\nencoder = "resnet18"\nweights = "random"\n'


def _config(root: Path, models: str, imputation: str, sections: str = "") -> StudyConfig:
    toml = root / "study.toml"
    toml.write_text(study_toml("miss", 2, models + imputation, sections=sections), encoding="utf-8")
    return load_config(toml)


def test_imputations_from_a_file_say_held_out_estimates_may_be_optimistic_unless_one_file_per_split(
        tmp_path: Path) -> None:
    from analytics.report.missing import FROM_OPTIMISTIC, method_text

    one = method_text(_config(tmp_path, MODEL, '[imputation]\nfrom = "manifests/imputed.csv"\n'))
    assert FROM_OPTIMISTIC in one["notes"] and "read from manifests/imputed.csv" in one["text"]
    assert "rows of the file's imputations" in one["text"] and "m_boot ×" not in one["text"]
    per_split = method_text(_config(tmp_path, MODEL, '[imputation]\nfrom = { train = "a.csv", internal = "b.csv", '
                                                     'external = "c.csv" }\n'))
    assert FROM_OPTIMISTIC not in per_split["notes"] and not per_split["warn"]
    assert "train: a.csv; internal: b.csv; external: c.csv" in per_split["text"]
    assert "each split's patients are filled from their split's file only" in per_split["text"]


def test_spline_and_interaction_terms_outside_the_chains_and_image_blocks_are_flagged(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from analytics.report.missing import IMAGE_BLOCKS, SMCFCS_MISSING, method_text

    models = ('[[models]]\nname = "reg"\nkind = "logistic"\nformula = "rcs(age, 3) + marker * grade"\n'
              'params = { penalty = "none" }\n'
              '[[models]]\nname = "img"\nkind = "logistic"\nfeatures = ["tiles"]\nclinical = ["age"]\n')
    # the fit records name the terms the chains leave out (analytics.models.imputed.not_in_imputation_model)
    records = {"reg": SimpleNamespace(imputation={"not_in_imputation_model": ["rcs(age, 3)", "marker:grade"]}),
               "img": SimpleNamespace(imputation={"not_in_imputation_model": []})}
    text = method_text(_config(tmp_path, models, MICE, sections=FS), records)  # type: ignore[arg-type]
    notes = " ".join(text["notes"])
    assert "Model reg:" in notes and "rcs(age, 3), marker:grade" in notes and SMCFCS_MISSING in notes
    assert "Model img:" not in notes and IMAGE_BLOCKS in text["notes"] and text["warn"]
    assert "not available yet" in SMCFCS_MISSING and "m_boot = 5 imputations" in text["text"]
    # a main-effects model without image features: no caveat at all
    plain = method_text(_config(tmp_path, MODEL, MICE))
    assert plain["notes"] == [] and not plain["warn"]
    assert plain["summary"] == "multiple imputation by chained equations (mice, m = 3, maxit = 4)"


def test_the_section_lists_each_models_pooling_and_cost_and_each_pooled_measures_fmi() -> None:
    from types import SimpleNamespace

    from analytics.report.missing import imputation_models, pooled_fmi

    record = SimpleNamespace(
        imputation={"method": "mice", "m": 20, "maxit": 10, "source": "chains", "pooled": "rubin", "seconds": 3.25,
                    "m_boot": 5, "not_in_imputation_model": ["rcs(age, 3)"]},
        internal={"method": "bootstrap", "B": 200, "imputation": {"m_boot": 5, "imputations": 1000}},
        tuning={"fits": 60})
    plain = SimpleNamespace(imputation=None, internal=None, tuning=None)
    rows = imputation_models({"reg": record, "svm": plain})  # type: ignore[dict-item]
    assert rows == [{"model": "reg", "source": "chained equations", "m": 20, "maxit": 10, "pooled": "Rubin's rules",
                     "fits": "60", "seconds": "3.2", "internal": "B = 200 × m_boot = 5",
                     "not_modelled": "rcs(age, 3)"}]
    read = SimpleNamespace(imputation={"m": 4, "source": "from", "pooled": "mean_risk"}, internal=None, tuning=None)
    assert imputation_models({"x": read}) == [{  # type: ignore[dict-item]
        "model": "x", "source": "read from file", "m": 4, "maxit": "–", "pooled": "mean of the m fits' risks",
        "fits": "–", "seconds": "–", "internal": "–", "not_modelled": ""}]
    rows_of = [
        {"model": "reg", "split": "external", "measure": "auc", "estimate": 0.8123, "low": 0.7, "high": 0.9,
         "center": None, "m": 20, "fmi": 0.1234},
        {"model": "reg", "split": "external", "measure": "sensitivity", "estimate": 0.7, "low": None, "high": None,
         "center": None, "m": 20, "fmi": None},
        {"model": "reg", "split": "external", "measure": "auc", "estimate": 0.8, "low": 0.7, "high": 0.9,
         "center": "B", "m": 20, "fmi": 0.2},
    ]
    validation = SimpleNamespace(rows=lambda: iter(rows_of))
    assert pooled_fmi(validation) == [{"model": "reg", "split": "external", "measure": "auc",  # type: ignore[arg-type]
                                       "estimate": "0.812 (0.700–0.900)", "m": 20, "fmi": "0.123"}]
    assert pooled_fmi(None) == []


def test_the_section_renders_the_pooling_and_fmi_tables_and_tripod_states_the_method() -> None:
    from analytics.report import tripod
    from analytics.report.writer import environment

    mm = {"method": {"name": "Multiple imputation", "text": "t", "notes": ["n"]}, "complete_case": None,
          "pattern": None, "by_centre": {"rows": []}, "imputations": None,
          "models": [{"model": "reg", "source": "read from file", "m": 4, "maxit": "–", "pooled": "Rubin's rules",
                      "fits": "12", "seconds": "0.5", "internal": "–", "not_modelled": "rcs(age, 3)"}],
          "fmi": [{"model": "reg", "split": "external", "measure": "auc", "estimate": "0.812 (0.700–0.900)", "m": 4,
                   "fmi": "0.123"}]}
    html = environment().get_template("sections/missing.html.j2").render(missingness=mm)
    assert '<table class="missing-models" id="missing-models">' in html and "<td>read from file</td>" in html
    assert '<td class="flag">rcs(age, 3)</td>' in html
    assert 'id="missing-fmi"' in html and '<td class="num">0.123</td>' in html
    facts = tripod.RunFacts(n_cohort=10, imputation="multiple imputations read from manifests/imputed.csv")
    item = {r.item.number: r for r in tripod.checklist(facts)}["11"]
    assert "missing clinical values: multiple imputations read from manifests/imputed.csv" in item.text
