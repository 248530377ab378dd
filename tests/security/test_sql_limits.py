"""Limits of user SQL: ``[sql] timeout_s`` and ``memory_limit``, Ctrl-C, bounded size, hints that never say SET.

A statement over the timeout is interrupted (DuckDB's own interrupt, so the query stops) and named in one line
with the key to change; Ctrl-C does the same for ``cohortlab sql`` in a subprocess; DuckDB's out-of-memory and
expression-depth hints, which suggest a refused ``SET``, point at study.toml instead; a cohort file of thousands
of ``UNION ALL`` arms or over a megabyte is refused before it is planned.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from study_builders import build_study, study_toml

import cohortlab
from analytics.cli import main
from pipeline.errors import CohortlabError

PATIENTS = pl.DataFrame({
    "patient_id": [f"P{i:02d}" for i in range(8)],
    "center": ["A"] * 6 + ["B"] * 2,
    "age": [50 + i for i in range(8)],
    "label": [i % 2 for i in range(8)],
})
ENDLESS = "SELECT count(*) AS n FROM range(10000000000000)"  # 1e13 rows: hours of counting


def _study(root: Path, sql_section: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    build_study(root, PATIENTS, "c.label, c.age", study_toml("limits", 0, sql_section))
    return root / "study.toml"


def _one_line_error(code: int, err: str) -> str:
    assert code == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- timeout --------------------------------------------------------------------------------------------------


def test_timeout_stops_a_long_query_in_sql_and_cohort(tmp_path, capsys):
    toml = _study(tmp_path / "study", "[sql]\ntimeout_s = 1\n")
    start = time.monotonic()
    err = _one_line_error(main(["sql", str(toml), ENDLESS]), capsys.readouterr().err)
    assert time.monotonic() - start < 8
    assert "stopped after 1 s" in err and "[sql] timeout_s" in err
    (tmp_path / "study" / "cohorts" / "slow.sql").write_text(
        "SELECT patient_id, label FROM clinical WHERE (SELECT count(*) FROM range(10000000000000)) > 0")
    start = time.monotonic()
    err = _one_line_error(main(["cohort", str(toml), "slow"]), capsys.readouterr().err)
    assert time.monotonic() - start < 8
    assert "slow.sql: stopped after 1 s" in err and "[sql] timeout_s" in err


def test_timeout_through_the_notebook_api(tmp_path):
    study = cohortlab.load_study(_study(tmp_path / "study", "[sql]\ntimeout_s = 1.5\n"))
    start = time.monotonic()
    with pytest.raises(CohortlabError, match=r"query: stopped after 1\.5 s, the limit set by \[sql\] timeout_s"):
        study.sql(ENDLESS)
    assert time.monotonic() - start < 8
    assert study.sql("SELECT count(*) AS n FROM clinical")["n"].to_list() == [8]  # a fresh connection runs


def test_ctrl_c_stops_the_query_and_exits_with_one_line(tmp_path):
    toml = _study(tmp_path / "study")  # the default timeout (300 s) is far away
    log = tmp_path / "study" / "logs" / "cohortlab.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "analytics.cli", "sql", str(toml), ENDLESS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "query: running" in log.read_text()):
            time.sleep(0.1)
        time.sleep(2)  # the query has run for about 2 s
        assert proc.poll() is None, proc.communicate()
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert elapsed < 10
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "interrupted (Ctrl-C)" in err and "stopped" in err


# --- memory ---------------------------------------------------------------------------------------------------


def test_out_of_memory_names_the_study_toml_key_not_set(tmp_path, capsys):
    toml = _study(tmp_path / "study", '[sql]\nmemory_limit = "64MB"\n')
    code = main(["sql", str(toml), "SELECT list(range) AS l FROM range(200000000)"])
    err = _one_line_error(code, capsys.readouterr().err)
    assert "Out of Memory" in err and "[sql] memory_limit" in err and "'64MB'" in err
    assert "SET " not in err


def test_memory_limit_is_applied(tmp_path, capsys):
    toml = _study(tmp_path / "study", '[sql]\nmemory_limit = "512MB"\n')
    frame = cohortlab.load_study(toml).sql("SELECT current_setting('memory_limit') AS m")
    assert frame["m"].to_list()[0].startswith("488")  # 512 MB in MiB


def test_expression_depth_hint_does_not_suggest_set(tmp_path, capsys):
    toml = _study(tmp_path / "study")
    deep = "SELECT " + "(" * 1100 + "1" + ")" * 1100 + " AS x"
    err = _one_line_error(main(["sql", str(toml), deep]), capsys.readouterr().err)
    assert "depth" in err and "SET" not in err


@pytest.mark.parametrize(("body", "key", "why"), [
    ("timeout_s = 0", "sql.timeout_s", "greater than 0"),
    ('timeout_s = "soon"', "sql.timeout_s", "valid number"),
    ('memory_limit = "lots"', "sql.memory_limit", "not an amount of memory"),
    ("memory = 3", "sql.memory", "unknown key"),
])
def test_bad_sql_keys_are_named(tmp_path, capsys, body, key, why):
    toml = _study(tmp_path / "study")
    toml.write_text(toml.read_text() + f"\n[sql]\n{body}\n")
    err = _one_line_error(main(["sql", str(toml), "SELECT 1"]), capsys.readouterr().err)
    assert f"key '{key}'" in err and why in err


# --- size -----------------------------------------------------------------------------------------------------


def test_thousands_of_union_arms_are_refused_before_planning(tmp_path, capsys):
    """The issue's 20,000-line cohort took 284 s and 10.7 GB; 2,500 arms is enough to cross the bound."""
    toml = _study(tmp_path / "study")
    arms = "\nUNION ALL ".join(f"SELECT 'P{i % 8:02d}' AS patient_id, {i % 2} AS label" for i in range(2500))
    (tmp_path / "study" / "cohorts" / "huge.sql").write_text(arms)
    start = time.monotonic()
    err = _one_line_error(main(["cohort", str(toml), "huge"]), capsys.readouterr().err)
    assert time.monotonic() - start < 3
    assert re.search(r"huge\.sql: holds 2,50\d SELECT blocks and set operations, over the 2,000", err), err
    start = time.monotonic()
    err = _one_line_error(main(["sql", str(toml), arms]), capsys.readouterr().err)
    assert time.monotonic() - start < 3 and re.search(r"query: holds 2,50\d SELECT blocks", err), err


def test_sql_text_over_a_megabyte_is_refused(tmp_path, capsys):
    toml = _study(tmp_path / "study")
    text = "SELECT patient_id, label FROM clinical -- " + "x" * 1_100_000
    (tmp_path / "study" / "cohorts" / "long.sql").write_text(text)
    err = _one_line_error(main(["cohort", str(toml), "long"]), capsys.readouterr().err)
    assert "long.sql: 1,100,042 bytes of SQL, over the 1,000,000" in err
    with pytest.raises(CohortlabError, match=r"query: 1,100,042 bytes of SQL"):
        cohortlab.load_study(toml).sql(text)
