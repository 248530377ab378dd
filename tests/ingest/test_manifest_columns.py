"""Manifests typed column-wide: the same columns, types, values, problems and row numbers as the cell-by-cell
rules (kept for non-ASCII text and quoted CSV), and the same table differences as the row-by-row comparison."""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import duckdb
import polars as pl
import pytest

import pipeline.ingest as ingest_module
import pipeline.manifest as mf

TOKENS = ["0", "1", "2", "-3", "+4", "5.", "-.5", "+.5", "1e3", "1E-2", "1e999", "007", "x", "NA", "n/a", " 12 ", "",
          "2020-01-05", "2021-02-29", "0000-01-01", "20200105", "3.0", "1.5", "-0", "abc", "None", ".", " ", "inf",
          "nan", "1_0", "\x1c7\x1f"]
DECLARED = [None, None, "numeric", "integer", "binary", "date", "categorical", "text"]


def _typed(cells: list[str | None], declared: str | None, column_wide: bool,
           monkeypatch: pytest.MonkeyPatch) -> object:
    m = mf.Manifest(Path("p.csv"), pl.DataFrame({"c": pl.Series(cells, dtype=pl.String)}), True,
                    tuple(range(2, len(cells) + 2)))
    with monkeypatch.context() as patch:
        if not column_wide:
            patch.setattr(mf, "_ascii_text", lambda series: False)
        col, errors = mf.infer_column(m, "c", declared)
        if col is not None and col.type == "categorical" and declared is None:
            col, more = mf.apply_levels(m, col, sorted(col.levels or [])[:2])
            errors += more
    out = None if col is None else (col.type, col.values.dtype, col.values.to_list(), col.levels)
    return out, [str(e) for e in errors]


def test_column_wide_typing_equals_the_cell_by_cell_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1)
    for _ in range(200):
        pool = rng.sample(TOKENS, rng.randint(1, 6))
        cells = [rng.choice(pool) if rng.random() > 0.1 else None for _ in range(rng.randint(0, 25))]
        declared = rng.choice(DECLARED)
        fast = _typed(cells, declared, True, monkeypatch)
        assert fast == _typed(cells, declared, False, monkeypatch), (cells, declared)


def _read(text: str, plain: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as patch:
        if not plain:
            patch.setattr(mf, "_split_plain", lambda *args: None)
        try:
            m = mf._read_csv(Path("p.csv"), text, ",")
        except mf.ManifestError as exc:
            return str(exc)
    return m.frame.columns, m.frame.to_dict(as_series=False), m.lines


def test_a_csv_without_quotes_splits_column_wide_as_the_csv_module_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    cells = ["a", " b ", "", " ", "1", "2.5", "x y", "NA", "é", "\t7 ", "\u30007"]
    split = 0
    for _ in range(300):
        width = rng.randint(1, 4)
        header = ",".join(rng.choice(["c", "d", " e ", "f"]) + str(i) for i in range(width))
        rows = [",".join(rng.choice(cells) for _ in range(width if rng.random() > 0.1 else rng.randint(0, 5)))
                if rng.random() > 0.05 else "" for _ in range(rng.randint(1, 6))]
        text = "\n".join([header, *rows]) + ("\n" if rng.random() < 0.5 else "")
        split += mf._split_plain(Path("p.csv"), text, ",") is not None
        assert _read(text, True, monkeypatch) == _read(text, False, monkeypatch), repr(text)
    assert split > 100  # most of these texts took the column-wide path
    tsv = "a\tb\n1\t x \n2\t\n"
    assert mf._split_plain(Path("p.tsv"), tsv, "\t") is not None
    with monkeypatch.context() as patch:
        plain = mf._read_csv(Path("p.tsv"), tsv, "\t")
        patch.setattr(mf, "_split_plain", lambda *args: None)
        assert plain.frame.equals(mf._read_csv(Path("p.tsv"), tsv, "\t").frame) and plain.lines == (2, 3)


def test_problems_keep_their_lines_and_every_one_is_reported(tmp_path: Path) -> None:
    text = "patient_id,center,label,marker\nP1,A,0,1.5\nP2,A,1,high\nP1,,2,3\n,B,1,4\n"
    path = tmp_path / "patients.csv"
    path.write_text(text)
    m = mf.read_manifest(path)
    ids, problems = ingest_module._unique_ids(m, "patient_id")
    assert ids.to_list() == ["P1", "P2", "P1", None]
    assert [str(p) for p in problems] == [
        f"{path}, line 4, column 'patient_id': duplicate id 'P1' (first seen at line 2)",
        f"{path}, line 5, column 'patient_id': id is empty"]
    assert m.row_numbers().to_list() == [2, 3, 4, 5]
    _, errors = mf.infer_column(m, "marker")
    assert [str(e) for e in errors] == [
        f"{path}, line 3, column 'marker': 'high' is not a number, but 3 of 4 values in this column are: fix the "
        "cell, leave it empty for missing, or declare the column's type in study.toml [variables]"]


def _stored(frame: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("frame", frame.to_arrow())
    con.execute("CREATE TABLE t AS SELECT * FROM frame")
    con.unregister("frame")
    return con


def test_column_wide_table_difference_equals_the_row_by_row_one(monkeypatch: pytest.MonkeyPatch) -> None:
    day = datetime.date(2020, 1, 1)
    old = pl.DataFrame({"id": ["a", "b", "c", "d", "e"], "x": pl.Series([1, 2, None, 4, 5], dtype=pl.Int32),
                        "d": [day, None, None, day, day], "s": ["u", None, "w", "z", "v"],
                        "l": [["a"], None, ["b", "c"], [], ["q"]]})
    news = [
        pl.DataFrame({"id": ["b", "c", "d", "f"], "x": [2, None, 5, 1], "d": [None, None, day, None],
                      "s": [None, "w", "z", "q"], "l": [None, ["b", "c"], [], ["x"]]}),
        old.with_columns(pl.col("x").cast(pl.String)),  # a column that became text: only null == null holds
        old.with_columns(pl.col("x").cast(pl.Float64)),  # 1 == 1.0
    ]
    for new in news:
        con = _stored(old)
        try:
            row_by_row = ingest_module._diff(con, "t", "id", new)
            monkeypatch.setattr(ingest_module, "_DIFF_BY_ROWS", 0)
            column_wide = ingest_module._diff(con, "t", "id", new)
            monkeypatch.undo()
        finally:
            con.close()
        assert str(column_wide) == str(row_by_row)
