"""Cohort SQL: parameter binding, read-only enforcement, views, and the row checks."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from analytics.cohort import CohortError, load_cohort, read_only, run_sql

from cohort_helpers import build_store, demo_patients, make_study, table_contents

INJECTION = "x'; DROP TABLE patients; --"
PLAIN = "SELECT patient_id, high_risk AS label FROM patient_clinical"


def test_demo_cohort_binds_min_age_from_study(demo_study):
    cohort = load_cohort(demo_study)
    truth = demo_patients().filter(pl.col("age") >= 18).sort("patient_id")
    assert cohort.patient_ids == truth["patient_id"].to_list()
    assert "P005" not in cohort.patient_ids and "P011" not in cohort.patient_ids  # ages 16 and 17
    assert cohort.frame.columns[:6] == ["patient_id", "label", "time", "event", "center", "split"]
    assert cohort.clinical_columns == ["age", "sex", "esr", "anti_ssa", "igg", "focus_score"]
    row = cohort.frame.filter(pl.col("patient_id") == "P007").to_dicts()[0]
    src = truth.filter(pl.col("patient_id") == "P007").to_dicts()[0]
    assert (row["label"], row["time"], row["event"], row["center"]) == (
        src["high_risk"], src["followup_months"], src["event"], src["center"])
    assert cohort.params == {"min_age": 18}


def test_cli_param_overrides_study_param(demo_study):
    cohort = load_cohort(demo_study, params={"min_age": 60})
    expected = demo_patients().filter(pl.col("age") >= 60)["patient_id"].sort().to_list()
    assert cohort.patient_ids == expected
    assert cohort.params == {"min_age": 60}


def test_missing_and_unknown_parameters(tmp_path):
    build_store(tmp_path / "store.duckdb", demo_patients())
    study = make_study(tmp_path, split={"external_centers": ["B"]})  # no [cohort] params
    with pytest.raises(CohortError, match=r"demo\.sql: parameter\(s\) \$min_age not given"):
        load_cohort(study, "demo")
    with pytest.raises(CohortError, match=r"demo\.sql: unknown parameter\(s\) max_age; the SQL uses \$min_age"):
        load_cohort(study, "demo", params={"min_age": 18, "max_age": 3})


def test_positional_parameters_are_refused(tmp_path):
    build_store(tmp_path / "store.duckdb", demo_patients())
    study = make_study(tmp_path, cohorts={"pos": PLAIN + " WHERE age >= ?"})
    with pytest.raises(CohortError, match="positional parameters"):
        load_cohort(study, "pos")


def test_injection_string_is_a_value(tmp_path):
    path = build_store(tmp_path / "store.duckdb", demo_patients())
    study = make_study(tmp_path, cohorts={"by_sex": PLAIN + " WHERE sex <> $sex"})
    before = table_contents(path)
    cohort = load_cohort(study, "by_sex", params={"sex": INJECTION})
    assert len(cohort) == 60  # no patient has that sex, so none is excluded
    assert run_sql(study, "SELECT $v AS v", params={"v": INJECTION})["v"].to_list() == [INJECTION]
    assert table_contents(path) == before


def test_list_parameters(demo_study):
    only_b = load_cohort(demo_study, "demo_centers", params={"min_age": 18, "centers": ["B"]},
                         split=demo_study.split.model_copy(update={"external_centers": []}))
    truth = demo_patients().filter((pl.col("age") >= 18) & (pl.col("center") == "B"))
    assert only_b.patient_ids == truth["patient_id"].sort().to_list()
    ids = ["P001", "P002", "P003", "P004", "P006", "P007", "P008", "P009", "P010"]
    (demo_study.root / "cohorts" / "some.sql").write_text(PLAIN + " WHERE patient_id IN (SELECT unnest($ids))")
    some = load_cohort(demo_study, "some", params={"ids": ids},
                       split=demo_study.split.model_copy(update={"external_centers": [], "internal_fraction": 0.3}))
    assert some.patient_ids == ids


WRITES = {
    "insert": "INSERT INTO patients VALUES ('Z1', 'A', NULL, NULL)",
    "create": "CREATE TABLE evil AS SELECT * FROM patients",
    "create_temp": "CREATE TEMP TABLE evil AS SELECT * FROM patients",
    "drop": "DROP TABLE patients",
    "update": "UPDATE clinical SET age = 0",
    "delete": "DELETE FROM patients",
    "copy": "COPY (SELECT * FROM patients) TO '{out}'",
    "attach": "ATTACH '{out}' AS other",
    "set": "SET threads = 1",
    "two_statements": "SELECT patient_id, high_risk AS label FROM patient_clinical; DROP TABLE patients",
}


@pytest.mark.parametrize("kind", sorted(WRITES))
def test_cohort_that_writes_fails_and_changes_nothing(tmp_path, kind):
    path = build_store(tmp_path / "store.duckdb", demo_patients())
    out = tmp_path / "leak.out"
    study = make_study(tmp_path, cohorts={"evil": WRITES[kind].format(out=out)})
    before = table_contents(path)
    with pytest.raises(CohortError, match=r"evil\.sql: .*(nothing was run)"):
        load_cohort(study, "evil")
    assert table_contents(path) == before
    assert not out.exists()


def test_the_connection_itself_is_read_only(tmp_path):
    path = build_store(tmp_path / "store.duckdb", demo_patients())
    before = table_contents(path)
    with read_only(path) as session:
        with pytest.raises(duckdb.Error, match="read-only"):
            session.con.execute("DELETE FROM patients")
    assert table_contents(path) == before


def _study_with(tmp_path: Path, sql: str):
    build_store(tmp_path / "store.duckdb", demo_patients())
    return make_study(tmp_path, cohorts={"c": sql})


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT patient_id FROM patients", r"c\.sql: no column\(s\) label"),
        ("SELECT high_risk AS label FROM clinical", r"c\.sql: no column\(s\) patient_id"),
        ("SELECT patient_id, high_risk AS label FROM clinical WHERE age > 1000", r"c\.sql: the cohort has no patients"),
        ("SELECT 'P001' AS patient_id, 1 AS label FROM clinical",
         r"c\.sql: column patient_id repeats \(one row per patient\): row 1 \(P001\), row 2 \(P001\)"),
        ("SELECT patient_id, CASE WHEN patient_id = 'P003' THEN 2 ELSE high_risk END AS label FROM clinical",
         r"c\.sql: column label must be 0, 1 or NULL; found \[2\] in row 4 \(P003\)"),
        ("SELECT patient_id, sex AS label FROM clinical", r"c\.sql: column label must be 0, 1 or NULL, not String"),
        ("SELECT CASE WHEN patient_id = 'P002' THEN NULL ELSE patient_id END AS patient_id, 0 AS label "
         "FROM clinical", r"c\.sql: column patient_id is NULL in row 3"),
        ("SELECT patient_id || 'x' AS patient_id, high_risk AS label FROM clinical",
         r"c\.sql: column patient_id names patients that are not in the store's patients table: row 1 \(P000x\)"),
        ("SELECT patient_id, high_risk AS label, 3 AS event FROM clinical", r"c\.sql: column event must be 0, 1"),
        ("SELECT patient_id, high_risk AS label, -followup_months AS time FROM clinical",
         r"c\.sql: column time must not be negative"),
        ("SELECT patient_id, high_risk AS label, 'train' AS split FROM clinical",
         r"c\.sql: returns a 'split' column but study.toml \[split\] does not set column"),
        ("SELECT patient_id, high_risk AS label FROM no_such_table", r"c\.sql: Catalog Error"),
        ("SELEC patient_id", r"c\.sql: the SQL does not parse"),
        ("SELECT p.patient_id, c.patient_id, c.high_risk AS label FROM patients p JOIN clinical c USING (patient_id)",
         r"c\.sql: the result has duplicate column names"),
    ],
)
def test_row_checks_name_file_column_and_rows(tmp_path, sql, message):
    with pytest.raises(CohortError, match=message):
        load_cohort(_study_with(tmp_path, sql), "c")


def test_labels_may_be_null_or_boolean(tmp_path):
    sql = ("SELECT patient_id, CASE WHEN patient_id IN ('P000', 'P001') THEN NULL ELSE high_risk = 1 END AS label "
           "FROM clinical")
    cohort = load_cohort(_study_with(tmp_path, sql), "c")
    assert cohort.frame["label"].dtype == pl.Int8
    assert cohort.frame["label"].null_count() == 2
    with pytest.raises(CohortError, match="column label is NULL for 2 patients"):
        _ = cohort.y
    truth = demo_patients().filter(~pl.col("patient_id").is_in(["P000", "P001"])).sort("patient_id")
    assert cohort.labelled().y.tolist() == truth["high_risk"].to_list()


def test_rows_come_back_in_patient_order_whatever_the_sql_order(tmp_path):
    study = _study_with(tmp_path, PLAIN + " ORDER BY patient_id DESC")
    (study.root / "cohorts" / "asc.sql").write_text(PLAIN + " ORDER BY patient_id")
    assert load_cohort(study, "c").frame.equals(load_cohort(study, "asc").frame)
    assert load_cohort(study, "c").patient_ids == sorted(demo_patients()["patient_id"].to_list())


def test_study_cohort_wins_over_repository_cohort(demo_study):
    (demo_study.root / "cohorts" / "demo.sql").write_text(
        "SELECT patient_id, center, high_risk AS label FROM patient_clinical "
        "WHERE age >= $min_age AND patient_id NOT IN ('P007', 'P008')")
    cohort = load_cohort(demo_study)
    assert cohort.file == (demo_study.root / "cohorts" / "demo.sql").resolve()
    truth = demo_patients().filter((pl.col("age") >= 18) & ~pl.col("patient_id").is_in(["P007", "P008"]))
    assert cohort.patient_ids == truth["patient_id"].sort().to_list()


def test_unknown_cohort_lists_the_known_ones(demo_study):
    with pytest.raises(CohortError, match=r"no cohort named 'nope'.*known: .*demo"):
        load_cohort(demo_study, "nope")


def test_cohort_by_path(demo_study, tmp_path):
    file = tmp_path / "elsewhere.sql"
    file.write_text(PLAIN)
    no_external = demo_study.split.model_copy(update={"external_centers": []})
    assert len(load_cohort(demo_study, str(file), split=no_external)) == 60


def test_views_from_the_study_and_views_that_do_not_bind(tmp_path):
    study = _study_with(tmp_path, "SELECT patient_id, label FROM adults")
    (study.root / "views").mkdir()
    (study.root / "views" / "adults.sql").write_text(
        "-- adults\nSELECT patient_id, high_risk AS label FROM patient_clinical WHERE age >= 18; -- closing comment\n")
    (study.root / "views" / "broken.sql").write_text("SELECT no_such_column FROM clinical")
    cohort = load_cohort(study, "c")
    assert cohort.patient_ids == demo_patients().filter(pl.col("age") >= 18)["patient_id"].sort().to_list()
    (study.root / "cohorts" / "b.sql").write_text("SELECT patient_id, 1 AS label FROM broken")
    with pytest.raises(CohortError, match=r"(?s)b\.sql: Catalog Error.*views not available on this store: broken"):
        load_cohort(study, "b")


def test_a_view_file_must_be_a_select(tmp_path):
    study = _study_with(tmp_path, PLAIN)
    (study.root / "views").mkdir()
    (study.root / "views" / "evil.sql").write_text("DROP TABLE patients")
    with pytest.raises(CohortError, match=r"evil\.sql: a view file holds exactly one SELECT"):
        load_cohort(study, "c")
