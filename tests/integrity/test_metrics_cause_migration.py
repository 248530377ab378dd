"""Schema 5: a store written before competing risks (no ``metrics.cause``) migrates, keeping its rows."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline import store


def test_schema_4_store_gains_a_cause_column_and_keeps_its_metrics(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store.connect(path).close()
    con = duckdb.connect(str(path))
    try:  # what schema 4 left: no cause column, one metric row
        con.execute("ALTER TABLE metrics DROP COLUMN cause")
        con.execute("INSERT INTO metrics VALUES ('m', 'external', 'auc', 0.7, 0.6, 0.8, 'DeLong')")
        con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    finally:
        con.close()
    con = store.connect(path)
    try:
        assert store._version(con) == store.SCHEMA_VERSION == 5
        cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'metrics' ORDER BY ordinal_position").fetchall()]
        assert cols[-1] == "cause"
        assert con.execute("SELECT model, metric, estimate, cause FROM metrics").fetchall() == [("m", "auc", 0.7, None)]
    finally:
        con.close()


def test_a_new_store_has_the_cause_column(tmp_path: Path) -> None:
    con = store.connect(tmp_path / "s.duckdb")
    try:
        cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'metrics'").fetchall()}
    finally:
        con.close()
    assert "cause" in cols
