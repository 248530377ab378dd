"""The SQL sandbox: every attack refused in both entry points (`cohortlab sql` and a cohort file), reads inside
the study still working, and misspelt parameters named as unknown."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from analytics.cli import main
from analytics.cohort import CohortError, load_cohort, read_only, run_sql, sandbox
from pipeline import store
from pipeline.config import StudyConfig

from cohort_helpers import DEMO_VARIABLES, add_instances, build_store, demo_patients, make_study, table_contents

SECRET = "s3cr3t-token-7f1c"
STUDY_TOML = """
[study]
name = "sandbox"

[manifests]
patients = "patients.csv"

[cohort]
name = "demo"
params = { %s = 18 }

[split]
external_centers = ["B"]
internal_fraction = 0.25
seed = 0
"""
# instances written per source: (source_id, patient_id, instance count)
SOURCES = [("P001-S1", "P001", 3), ("P002-S1", "P002", 2)]


def _first_passwd_line() -> str | None:
    try:
        return Path("/etc/passwd").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


@pytest.fixture()
def study(tmp_path: Path) -> StudyConfig:
    """A study in ``tmp_path/study`` with instance files, and secrets beside it in ``outside`` and ``study-evil``."""
    root = tmp_path / "study"
    root.mkdir()
    path = build_store(root / "store.duckdb", demo_patients(), DEMO_VARIABLES)
    rng = np.random.default_rng(0)
    for source, patient, n in SOURCES:
        add_instances(path, "tiles", source, patient, rng.normal(size=(n, 4)).astype(np.float32),
                      [(256 * i, 0) for i in range(n)])
    (root / "study.toml").write_text(STUDY_TOML % "min_age")
    for folder in (tmp_path / "outside", tmp_path / "study-evil"):
        folder.mkdir()
        (folder / "secret.csv").write_text(f"token\n{SECRET}\n")
        pl.DataFrame({"token": [SECRET]}).write_parquet(folder / "secret.parquet")
    return make_study(root, cohort={"name": "demo", "params": {"min_age": 18}},
                      split={"external_centers": ["B"], "internal_fraction": 0.25, "seed": 0})


def _instance_file(study: StudyConfig) -> Path:
    return store.instance_path(study.store_path, "tiles", "P001-S1")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


STATEMENT = r"nothing was run and the store is unchanged"
EXPLAIN_ANALYZE = r"is an EXPLAIN ANALYZE statement, which runs the statement it explains"
PERMISSION = r"Permission Error: Cannot access (file|directory) .*; SQL here reads files only below"

# name -> (SQL, what the refusal says); {out}: a file outside the study, {instance}: one of its instance files
ATTACKS = {
    "explain_analyze_copy": ("EXPLAIN ANALYZE COPY (SELECT 42 AS x) TO '{out}'", EXPLAIN_ANALYZE),
    "explain_analyse_after_comments": (
        "/* plan */ explain -- only a plan\n  analyse COPY (SELECT 42 AS x) TO '{out}'", EXPLAIN_ANALYZE),
    "explain_analyze_option": ("EXPLAIN (FORMAT json, ANALYZE) COPY (SELECT 42 AS x) TO '{out}'", EXPLAIN_ANALYZE),
    "explain_analyze_false_option": ("EXPLAIN (ANALYZE false) COPY (SELECT 42 AS x) TO '{out}'", EXPLAIN_ANALYZE),
    "explain_analyze_overwrites_instances": (
        "EXPLAIN ANALYZE COPY (SELECT 42 AS x) TO '{instance}' (FORMAT parquet)", EXPLAIN_ANALYZE),
    "explain_analyze_install": ("EXPLAIN ANALYZE INSTALL httpfs", EXPLAIN_ANALYZE),
    "explain_copy": ("EXPLAIN COPY (SELECT 42 AS x) TO '{out}'", r"is an EXPLAIN statement"),
    "copy_to": ("COPY (SELECT 42 AS x) TO '{out}'", r"is a COPY statement"),
    "copy_over_instances": ("COPY (SELECT 42 AS x) TO '{instance}' (FORMAT parquet)", r"is a COPY statement"),
    "install": ("INSTALL httpfs", r"is an INSTALL statement"),
    "force_install": ("FORCE INSTALL httpfs", r"is an INSTALL statement"),
    "load": ("LOAD httpfs", r"is a LOAD statement"),
    "attach": ("ATTACH '{outside}/other.duckdb' AS other", r"is an ATTACH statement"),
    "set_external_access": ("SET enable_external_access = true", r"is a SET statement"),
    "set_lock": ("SET lock_configuration = false", r"is a SET statement"),
    "reset_lock": ("RESET lock_configuration", r"is a RESET statement"),
    "use_memory": ("USE memory", r"is a USE statement"),
    "passwd": ("SELECT * FROM read_csv('/etc/passwd')", PERMISSION),
    "passwd_as_text": ("SELECT content FROM read_text('/etc/passwd')", PERMISSION),
    "csv_outside": ("SELECT * FROM read_csv('{outside}/secret.csv')", PERMISSION),
    "parquet_outside": ("SELECT * FROM read_parquet('{outside}/secret.parquet')", PERMISSION),
    "parquet_by_name_outside": ("SELECT * FROM '{outside}/secret.parquet'", PERMISSION),
    "dot_dot_out_of_study": ("SELECT * FROM read_csv('{root}/../outside/secret.csv')", PERMISSION),
    "sibling_with_study_prefix": ("SELECT * FROM read_csv('{root}-evil/secret.csv')", PERMISSION),
    "glob_root": ("SELECT * FROM glob('/*')", PERMISSION),
    "nested_query": ("SELECT * FROM query('SELECT * FROM read_csv(''{outside}/secret.csv'')')", PERMISSION),
    "summarize_outside": ("SUMMARIZE SELECT * FROM read_csv('{outside}/secret.csv')", PERMISSION),
    "https": ("SELECT * FROM read_csv('https://example.com/x.csv')", PERMISSION),
    "http_unroutable": ("SELECT * FROM read_csv('http://10.255.255.1/x.csv')", PERMISSION),
}


def _attack(study: StudyConfig, name: str) -> tuple[str, str]:
    sql, expected = ATTACKS[name]
    root = study.root
    text = sql.format(out=root.parent / "outside" / "x.csv", instance=_instance_file(study),
                      outside=root.parent / "outside", root=root)
    return text, expected


def _assert_harmless(study: StudyConfig, message: str, before: dict, instance_digest: str) -> None:
    assert not (study.root.parent / "outside" / "x.csv").exists()
    assert not (study.root.parent / "outside" / "other.duckdb").exists()
    assert _digest(_instance_file(study)) == instance_digest
    assert table_contents(study.store_path) == before
    assert SECRET not in message
    line = _first_passwd_line()
    assert line is None or line not in message


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_in_sql_verb_is_refused(study, name, capsys):
    text, expected = _attack(study, name)
    before, digest = table_contents(study.store_path), _digest(_instance_file(study))
    start = time.monotonic()
    assert main(["sql", str(study.root / "study.toml"), text]) == 1
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert captured.err.startswith("error: query: ")
    assert re.search(expected, captured.err), captured.err
    assert "Traceback" not in captured.err
    _assert_harmless(study, captured.out + captured.err, before, digest)
    assert elapsed < 10  # a URL is refused, not fetched (an unroutable address would hang)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_in_cohort_file_is_refused(study, name):
    text, expected = _attack(study, name)
    (study.root / "cohorts" / "evil.sql").write_text(text)
    before, digest = table_contents(study.store_path), _digest(_instance_file(study))
    start = time.monotonic()
    with pytest.raises(CohortError, match=r"evil\.sql: ") as info:
        load_cohort(study, "evil")
    assert re.search(expected, str(info.value)), str(info.value)
    assert time.monotonic() - start < 10
    _assert_harmless(study, str(info.value), before, digest)


def test_view_file_that_reads_outside_is_not_created(study, capsys):
    (study.root / "views").mkdir()
    outside = study.root.parent / "outside"
    (study.root / "views" / "leak.sql").write_text(f"SELECT * FROM read_csv('{outside}/secret.csv')")
    (study.root / "cohorts" / "uses_leak.sql").write_text(
        "SELECT patient_id, high_risk AS label FROM patient_clinical WHERE patient_id NOT IN (SELECT token FROM leak)")
    with pytest.raises(CohortError, match=r"(?s)uses_leak\.sql: Catalog Error.*views not available on this store: "
                                          r"leak: Permission Error") as info:
        load_cohort(study, "uses_leak")
    assert SECRET not in str(info.value)
    assert main(["sql", str(study.root / "study.toml"), "SELECT * FROM leak"]) == 1
    captured = capsys.readouterr()
    assert "leak: Permission Error" in captured.err and SECRET not in captured.out + captured.err


def test_the_connection_itself_refuses_what_the_statement_check_would(study):
    """Statements run straight on the session (no statement check) still cannot reach out or unlock."""
    out = study.root.parent / "outside" / "x.csv"
    with read_only(study.store_path, {}, [study.root]) as session:
        con = session.con
        for sql in (f"SELECT * FROM read_csv('{study.root.parent}/outside/secret.csv')",
                    f"COPY (SELECT 42 AS x) TO '{out}'", f"EXPLAIN ANALYZE COPY (SELECT 42 AS x) TO '{out}'",
                    f"ATTACH '{study.root.parent}/outside/other.duckdb' AS other",
                    "SELECT * FROM glob('/*')", "SELECT * FROM read_csv('https://example.com/x.csv')",
                    "INSTALL httpfs", "LOAD httpfs"):
            with pytest.raises(duckdb.Error) as info:
                con.execute(sql)
            assert isinstance(info.value, duckdb.PermissionException) or "disabled" in str(info.value), sql
        for sql in ("SET enable_external_access = true", "SET lock_configuration = false",
                    "RESET lock_configuration", "RESET enable_external_access", "SET allowed_directories = ['/']",
                    "SET autoload_known_extensions = true", "SET autoinstall_known_extensions = true"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(sql)
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration', "
            "'autoload_known_extensions', 'autoinstall_known_extensions')").fetchall())
        assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                            "autoload_known_extensions": "false", "autoinstall_known_extensions": "false"}
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM patients")
    assert not out.exists() and not (study.root.parent / "outside" / "other.duckdb").exists()


def test_the_sandbox_does_not_reach_other_connections_of_the_process(study):
    secret = f"{study.root.parent}/outside/secret.csv"
    with read_only(study.store_path, {}, [study.root]):
        other = store.connect(study.store_path, read_only=True)  # same store, same process, while the sandbox is open
        try:
            assert other.execute(f"SELECT token FROM read_csv('{secret}')").fetchall() == [(SECRET,)]
        finally:
            other.close()
    plain = duckdb.connect()
    try:
        assert plain.execute(f"SELECT token FROM read_csv('{secret}')").fetchall() == [(SECRET,)]
    finally:
        plain.close()


def test_reads_inside_the_study_still_work(study, capsys):
    n_instances = sum(n for _, _, n in SOURCES)
    assert run_sql(study, "SELECT count(*) AS n FROM instances")["n"].to_list() == [n_instances]
    per_source = run_sql(study, "SELECT source_id, count(*) AS n FROM instances GROUP BY 1 ORDER BY 1")
    assert per_source.rows() == [(s, n) for s, _, n in sorted(SOURCES)]
    # a CSV kept in the study folder, read by `sql` and joined by a cohort
    ids = demo_patients()["patient_id"].to_list()
    scores = pl.DataFrame({"patient_id": ids, "score": [i / 10 for i in range(len(ids))]})
    (study.root / "extra").mkdir()
    scores.write_csv(study.root / "extra" / "scores.csv")
    back = run_sql(study, f"SELECT * FROM read_csv('{study.root}/extra/scores.csv') ORDER BY patient_id")
    assert back.equals(scores)
    (study.root / "cohorts" / "scored.sql").write_text(
        f"SELECT c.patient_id, c.high_risk AS label, s.score FROM patient_clinical c "
        f"JOIN read_csv('{study.root}/extra/scores.csv') s USING (patient_id)")
    cohort = load_cohort(study, "scored", bags=["tiles"])
    assert cohort.frame.select("patient_id", "score").equals(scores)
    sizes = dict(zip(cohort.patient_ids, cohort.bags("tiles").sizes.tolist()))
    assert {p: sizes[p] for _, p, _ in SOURCES} == {p: n for _, p, n in SOURCES}
    assert sum(sizes.values()) == n_instances
    # plain EXPLAIN of a SELECT stays allowed in `sql`, with options, and ANALYZE inside a string is no keyword
    for text in ("EXPLAIN SELECT count(*) FROM patients", "EXPLAIN (FORMAT json) SELECT 1",
                 "EXPLAIN SELECT 'analyze' AS word -- analyze"):
        plan = run_sql(study, text)
        assert plan.height >= 1 and "explain_value" in plan.columns
    capsys.readouterr()


# --- misspelt parameters ----------------------------------------------------------------------------------------


def test_misspelt_sql_param_is_named_unknown(study, capsys):
    assert main(["sql", str(study.root / "study.toml"), "SELECT $min_age AS a", "--param", "min_agee=3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: query: unknown parameter(s) min_agee (did you mean $min_age?); "
                          "the SQL uses $min_age; $min_age not given")


def test_misspelt_cohort_param_in_study_toml_is_named_unknown(study, capsys):
    (study.root / "study.toml").write_text(STUDY_TOML % "min_agee")
    assert main(["cohort", str(study.root / "study.toml")]) == 1
    err = capsys.readouterr().err
    assert "demo.sql: unknown parameter(s) min_agee (did you mean $min_age?)" in err and "$min_age not given" in err


def test_misspelt_cohort_param_on_the_command_line_is_named_unknown(tmp_path, capsys):
    build_store(tmp_path / "store.duckdb", demo_patients(), DEMO_VARIABLES)
    toml = (STUDY_TOML % "min_age").replace("params = { min_age = 18 }\n", "")
    (tmp_path / "study.toml").write_text(toml)
    assert main(["cohort", str(tmp_path / "study.toml"), "--param", "minage=18"]) == 1
    assert "demo.sql: unknown parameter(s) minage (did you mean $min_age?)" in capsys.readouterr().err
    study = make_study(tmp_path, split={"external_centers": ["B"]})
    with pytest.raises(CohortError, match=r"unknown parameter\(s\) min_agee \(did you mean \$min_age\?\)"):
        load_cohort(study, "demo", params={"min_agee": 18})


# --- what a statement is --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "EXPLAIN ANALYZE SELECT 1", "explain analyse select 1", "EXPLAIN (ANALYZE) SELECT 1",
    "EXPLAIN (ANALYZE false) SELECT 1", "EXPLAIN (FORMAT json, ANALYZE) SELECT 1", "EXPLAIN /* c */ ANALYZE SELECT 1",
    "EXPLAIN -- c\nANALYZE SELECT 1", "/* analyze */ EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN SELECT 1", "EXPLAIN (FORMAT json) SELECT 1", "EXPLAIN SELECT 'analyze' AS a",
    "EXPLAIN SELECT 1 -- analyze", "EXPLAIN /* analyze */ SELECT 1", "EXPLAIN SELECT $$ analyze $$ AS a",
    "EXPLAIN SELECT $t$ it's analyze $t$ AS a", "EXPLAIN SELECT E'\\' analyze' AS a",
    "EXPLAIN SELECT 'it''s analyze' AS a",
    'EXPLAIN SELECT "analyze" FROM (SELECT 1 AS "analyze")',
])
def test_explain_analyze_is_found_where_duckdb_finds_it(text):
    """DuckDB itself is the judge: it answers an EXPLAIN ANALYZE with an analyzed plan."""
    con = duckdb.connect()
    try:
        analyzed = con.execute(text).fetchall()[0][0] == "analyzed_plan"
    finally:
        con.close()
    assert sandbox.is_explain_analyze(text) == analyzed
    assert len(sandbox.mask(text)) == len(text)
