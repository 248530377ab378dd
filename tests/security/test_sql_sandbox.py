"""User SQL cannot write: COPY and data changes hidden in CTEs, subqueries and set operations are refused.

Every attack of the corpus goes through each entry point (``cohortlab sql``, a cohort file under ``cohortlab
cohort``, a view file, and the notebook's ``Study.sql`` / ``Study.cohort``); each must exit 1 (or raise) with one
line naming what was found, and leave every file of the study, and the target outside it, as it was. The second
layer (the plan check) is tested by calling it straight, past the parse-tree check; view files named like a
store table are refused.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from study_builders import build_study, study_toml

import cohortlab
from analytics.cli import main
from analytics.cohort import CohortError, read_only, sandbox
from pipeline.config import load_config
from pipeline.errors import CohortlabError

PATIENTS = pl.DataFrame({
    "patient_id": [f"P{i:02d}" for i in range(12)],
    "center": ["A"] * 8 + ["B"] * 4,
    "age": [40 + i for i in range(12)],
    "label": [i % 2 for i in range(12)],
})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sql_sandbox") / "study"
    root.mkdir()
    build_study(root, PATIENTS, "c.label, c.age", study_toml("sandbox", 0, ""))
    return root


@pytest.fixture()
def root(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the small ingested study, with an ``outside`` folder beside it."""
    dest = tmp_path / "study"
    shutil.copytree(template, dest)
    (tmp_path / "outside").mkdir()
    return dest


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """(size, sha256) of every file below ``folder`` but the log, which each command appends to."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file() and "logs" not in p.relative_to(folder).parts}


COPY = "COPY (SELECT '[study]' AS x) TO '{target}' (HEADER false)"
COPY_NODE = r"COPY_QUERY_NODE"
# name -> (SQL with {copy}: a COPY to {target}; the node the refusal names)
ATTACKS: dict[str, tuple[str, str]] = {
    "cte_copy": ("WITH a AS ({copy}) SELECT 1 AS x", COPY_NODE),
    "cte_copy_from_first": ("WITH a AS ({copy}) FROM patients", COPY_NODE),
    "materialized_cte_copy": ("WITH a AS MATERIALIZED ({copy}) SELECT 1 AS x", COPY_NODE),
    "second_cte_copy": ("WITH b AS (SELECT 1 AS x), a AS ({copy}) SELECT * FROM b", COPY_NODE),
    "nested_cte_copy": ("WITH a AS (WITH b AS ({copy}) SELECT 1 AS x) SELECT * FROM a", COPY_NODE),
    "subquery_cte_copy": ("SELECT * FROM (WITH a AS ({copy}) SELECT 1 AS x)", COPY_NODE),
    "union_arm_cte_copy": ("SELECT 1 AS x UNION ALL (WITH a AS ({copy}) SELECT 2)", COPY_NODE),
    "intersect_arm_cte_copy": ("SELECT 1 AS x INTERSECT (WITH a AS ({copy}) SELECT 1)", COPY_NODE),
    "except_arm_cte_copy": ("SELECT 1 AS x EXCEPT (WITH a AS ({copy}) SELECT 2)", COPY_NODE),
    "where_scalar_subquery_cte_copy": ("SELECT 1 AS x WHERE 1 = (WITH a AS ({copy}) SELECT 1)", COPY_NODE),
    "in_subquery_cte_copy": ("SELECT patient_id FROM patients WHERE patient_id IN (WITH a AS ({copy}) SELECT 'P01')",
                             COPY_NODE),
    "lateral_cte_copy": ("SELECT * FROM range(1) r, LATERAL (WITH a AS ({copy}) SELECT r.range AS y)", COPY_NODE),
    "describe_cte_copy": ("DESCRIBE WITH a AS ({copy}) SELECT 1 AS x", COPY_NODE),
    "cte_insert": ("WITH a AS (INSERT INTO patients VALUES ('X', 'A', 'f.csv', 1) RETURNING *) SELECT 1 AS x",
                   r"INSERT_QUERY_NODE"),
    "cte_update": ("WITH a AS (UPDATE clinical SET label = 1 RETURNING *) SELECT 1 AS x", r"UPDATE_QUERY_NODE"),
    "cte_delete": ("WITH a AS (DELETE FROM patients RETURNING *) SELECT 1 AS x", r"DELETE_QUERY_NODE"),
    "subquery_cte_delete": ("SELECT * FROM (WITH a AS (DELETE FROM clinical RETURNING *) SELECT 1 AS x)",
                            r"DELETE_QUERY_NODE"),
    "union_arm_cte_insert": ("SELECT 1 AS x UNION (WITH a AS (INSERT INTO variables (name) VALUES ('v') "
                             "RETURNING *) SELECT 2)", r"INSERT_QUERY_NODE"),
}
# where the COPY writes: the study's own files, a new file in it, a file outside it
TARGETS: dict[str, Callable[[Path], Path]] = {
    "study_toml": lambda root: root / "study.toml",
    "manifest": lambda root: root / "patients.csv",
    "new_file": lambda root: root / "exfil.csv",
    "outside": lambda root: root.parent / "outside" / "x.csv",
}


def _sql(name: str, root: Path, target: str = "study_toml") -> str:
    text, _ = ATTACKS[name]
    return text.format(copy=COPY.format(target=TARGETS[target](root)))


def _via_cli_sql(root: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["sql", str(root / "study.toml"), text])
    err = capsys.readouterr().err
    assert code == 1, err
    return err


def _via_cli_cohort(root: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    (root / "cohorts" / "evil.sql").write_text(text)
    code = main(["cohort", str(root / "study.toml"), "evil"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "evil.sql" in err
    return err


def _via_view_file(root: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    (root / "views").mkdir(exist_ok=True)
    (root / "views" / "evil.sql").write_text(text)
    code = main(["cohort", str(root / "study.toml")])  # the study's own, harmless cohort; the views come with it
    err = capsys.readouterr().err
    assert code == 1, err
    assert "views/evil.sql" in err
    return err


def _via_notebook_sql(root: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(CohortlabError) as info:
        cohortlab.load_study(root).sql(text)
    return f"error: {info.value}\n"


def _via_notebook_cohort(root: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    (root / "cohorts" / "evil.sql").write_text(text)
    with pytest.raises(CohortlabError) as info:
        cohortlab.load_study(root).cohort("evil")
    assert "evil.sql" in str(info.value)
    return f"error: {info.value}\n"


ENTRIES = {"cli_sql": _via_cli_sql, "cli_cohort": _via_cli_cohort, "view_file": _via_view_file,
           "notebook_sql": _via_notebook_sql, "notebook_cohort": _via_notebook_cohort}


def _assert_refused(err: str, node: str, before: dict, root: Path, extra: Path | None = None) -> None:
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    assert re.search(node, err), err
    assert "nothing was run" in err
    after = {k: v for k, v in snapshot(root).items() if not k.endswith("evil.sql")}
    assert after == {k: v for k, v in before.items() if not k.endswith("evil.sql")}
    assert not (root / "exfil.csv").exists()
    assert not (root.parent / "outside" / "x.csv").exists()
    if extra is not None:
        assert not extra.exists()


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_and_nothing_changes(root, name, entry, capsys):
    before = snapshot(root)
    err = ENTRIES[entry](root, _sql(name, root), capsys)
    _assert_refused(err, ATTACKS[name][1], before, root)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("entry", ["cli_sql", "cli_cohort", "notebook_sql"])
def test_cte_copy_reaches_no_target(root, target, entry, capsys):
    """The issue's reproduction: `WITH a AS (COPY ... TO '<root>/study.toml') SELECT 1` exited 0 and overwrote it."""
    before = snapshot(root)
    err = ENTRIES[entry](root, _sql("cte_copy", root, target), capsys)
    _assert_refused(err, COPY_NODE, before, root, TARGETS[target](root) if target in ("new_file", "outside") else None)


def test_issue_reproduction_leaves_study_toml_loadable(root, capsys):
    text = f"WITH a AS (COPY (SELECT '[study]') TO '{root}/study.toml' (HEADER false)) SELECT 1"
    assert main(["sql", str(root / "study.toml"), text]) == 1
    capsys.readouterr()
    assert load_config(root).study.name == "sandbox"
    assert main(["cohort", str(root / "study.toml")]) == 0


# --- the second layer, reached past the first -----------------------------------------------------------------


def test_plan_check_refuses_a_write_the_parse_check_never_saw(root):
    """sandbox.run is called straight (no parse-tree check): the plan names COPY_TO_FILE and nothing runs."""
    before = snapshot(root)
    study = load_config(root)
    with read_only(study.store_path, {}, [study.root]) as session:
        for text in (f"WITH a AS (COPY (SELECT '[study]') TO '{root}/study.toml' (HEADER false)) SELECT 1",
                     f"WITH a AS MATERIALIZED (COPY (SELECT 1) TO '{root}/exfil.csv') SELECT 2"):
            with pytest.raises(CohortError, match=r"its plan writes \(COPY_TO_FILE\).*nothing was run"):
                sandbox.run(session.con, text)
        for text in (f"COPY (SELECT '[study]') TO '{root}/study.toml' (HEADER false)",
                     f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/exfil.csv'"):
            with pytest.raises(CohortError, match=r"not one SELECT"):
                sandbox.run(session.con, text)
        with pytest.raises(CohortError, match=r"not one SELECT"):  # EXPLAIN ANALYZE passed off as a plain EXPLAIN
            sandbox.run(session.con, f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/exfil.csv'", plan="SELECT 1")
        assert sandbox.run(session.con, "SELECT count(*) AS n FROM patients")["n"].to_list() == [12]
    assert snapshot(root) == before
    assert not (root / "exfil.csv").exists()


@pytest.mark.parametrize(("text", "operator"), [
    ("WITH a AS (COPY (SELECT 1) TO '{out}') SELECT 1", "COPY_TO_FILE"),
    ("WITH a AS (COPY (SELECT 1 AS x) TO '{out}' (FORMAT parquet)) SELECT 1", "COPY_TO_FILE"),
    ("WITH a AS (INSERT INTO t VALUES (1) RETURNING x) SELECT 1", "INSERT"),
    ("WITH a AS (DELETE FROM t RETURNING x) SELECT 1", "DELETE"),
    ("WITH a AS (UPDATE t SET x = 2 RETURNING x) SELECT 1", "UPDATE"),
])
def test_writing_operators_are_found_in_the_plan(tmp_path, text, operator):
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (x INTEGER)")
        found = sandbox.writing_operators(con, text.format(out=tmp_path / "x"))
        assert any(op.startswith(operator) for op in found), found
        assert sandbox.writing_operators(con, "SELECT * FROM t UNION ALL SELECT 1") == []
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []


# --- view files that would hide the store's tables ------------------------------------------------------------


@pytest.mark.parametrize(("view", "kind"), [("clinical", "table"), ("patients", "table"), ("Variables", "table"),
                                            ("instances", "view")])
def test_view_named_like_a_store_table_is_refused(root, view, kind, capsys):
    (root / "views").mkdir()
    (root / "views" / f"{view}.sql").write_text("SELECT 'P00' AS patient_id, 1 AS label")
    assert main(["sql", str(root / "study.toml"), "SELECT count(*) FROM patients"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"views/{view}.sql" in err and f"store's {kind} '{view}'" in err
    with pytest.raises(CohortError, match=rf"{view}\.sql: a view named '{view}' would hide the store's {kind}"):
        cohortlab.load_study(root).cohort()


# --- what stays allowed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "WITH a AS (SELECT patient_id, label FROM clinical) SELECT * FROM a",
    "WITH a AS MATERIALIZED (SELECT patient_id, label FROM clinical) SELECT * FROM a",
    "SELECT patient_id, label FROM clinical WHERE patient_id IN (SELECT patient_id FROM patients WHERE center = 'A') "
    "UNION ALL SELECT patient_id, label FROM clinical WHERE patient_id IN (SELECT patient_id FROM patients "
    "WHERE center = 'B')",
    "WITH RECURSIVE r(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM r WHERE n < 11) "
    "SELECT c.patient_id, c.label FROM r JOIN clinical c ON c.patient_id = printf('P%02d', r.n)",
    "SELECT c.patient_id, c.label, l.k FROM clinical c, LATERAL (SELECT c.age * 2 AS k) l",
    "FROM clinical SELECT patient_id, label",
])
def test_reading_queries_still_run(root, text, capsys):
    assert main(["sql", str(root / "study.toml"), text]) == 0
    capsys.readouterr()
    (root / "cohorts" / "ok.sql").write_text(text)
    cohort = cohortlab.load_study(root).cohort("ok")
    assert len(cohort) == 12
    assert cohortlab.load_study(root).sql(text).height == 12
