"""Declared category order: ``[variables] size = { type = "categorical", levels = [...] }`` orders the store's
levels, Table 1 and the one-hot encoding; a value outside the declared levels is an ingest error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import store
from pipeline.config import ConfigError, load_config
from pipeline.ingest import IngestError, ingest

# declared order; sorted as text it would be "20-50", "<=20", ">50"
LEVELS = ["<=20", "20-50", ">50"]
N = 60


def _write(root: Path, sizes: list[str], variables: str | None = None, models: str = "") -> Path:
    rng = np.random.default_rng(4)
    label = (np.arange(N) % 2).astype(int)
    pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": ["A"] * 40 + ["B"] * 20,
        "size": sizes, "age": rng.normal(55, 8, N).round(1), "label": label,
    }).write_csv(root / "patients.csv")
    (root / "cohorts").mkdir(exist_ok=True)
    (root / "cohorts" / "all.sql").write_text(
        "SELECT p.patient_id, p.center, c.label, c.size, c.age FROM patients p JOIN clinical c USING (patient_id)\n")
    size = variables or f'{{ type = "categorical", levels = {LEVELS!r} }}'.replace("'", '"')
    (root / "study.toml").write_text(f"""
[study]
name = "levels"
seed = 1
[manifests]
patients = "patients.csv"
[variables]
size = {size}
label = {{ type = "binary", role = "outcome" }}
[cohort]
name = "all"
[split]
external_centers = ["B"]
internal_fraction = 0.25
seed = 0
{models}
""", encoding="utf-8")
    return root / "study.toml"


def _sizes() -> list[str]:
    # every level present, in an order that is neither declared nor sorted
    cycle = [">50", "20-50", "<=20", "20-50"]
    return [cycle[i % 4] for i in range(N)]


def test_store_keeps_the_declared_order(tmp_path: Path) -> None:
    study = load_config(_write(tmp_path, _sizes()))
    ingest(study, progress=False)
    con = store.connect(study.store_path, read_only=True)
    try:
        levels = con.execute("SELECT levels FROM variables WHERE name = 'size'").fetchone()[0]
    finally:
        con.close()
    assert levels == LEVELS and sorted(LEVELS) != LEVELS


def test_table1_rows_follow_the_declared_order(tmp_path: Path) -> None:
    from analytics.cohort import load_cohort

    study = load_config(_write(tmp_path, _sizes()))
    ingest(study, progress=False)
    frame = load_cohort(study).table1().frame
    rows = frame.get_column("level").to_list()
    start = frame.get_column("variable").to_list().index("size")
    assert rows[start + 1: start + 4] == LEVELS
    # and the counts are the counts of each level (n of the whole cohort, first column)
    col = next(c for c in frame.columns if c.endswith("| all"))
    for lv, text in zip(LEVELS, frame.get_column(col).to_list()[start + 1: start + 4]):
        assert text.startswith(f"{_sizes().count(lv)} ("), (lv, text)


def test_one_hot_columns_follow_the_declared_order(tmp_path: Path) -> None:
    from analytics.fit import fit
    from analytics.models import load_model

    toml = _write(tmp_path, _sizes(), models='[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["size", "age"]\n'
                                             'grid = { C = [1.0] }\n')
    study = load_config(toml)
    ingest(study, progress=False)
    fit(study, progress=False)
    pipe = load_model(study.models_dir / "clin", study.store_path).learner.pipeline_
    onehot = pipe.named_steps["prep"].named_transformers_["categorical"].named_steps["onehot"]
    assert [list(c) for c in onehot.categories_] == [LEVELS]
    names = [n for n in pipe.named_steps["prep"].get_feature_names_out() if n.startswith("categorical__")]
    assert names == [f"categorical__size_{lv}" for lv in LEVELS]


def test_undeclared_levels_stay_sorted(tmp_path: Path) -> None:
    study = load_config(_write(tmp_path, _sizes(), variables='{ type = "categorical" }'))
    ingest(study, progress=False)
    con = store.connect(study.store_path, read_only=True)
    try:
        levels = con.execute("SELECT levels FROM variables WHERE name = 'size'").fetchone()[0]
    finally:
        con.close()
    assert levels == sorted(LEVELS)


def test_a_value_outside_the_levels_is_an_error_naming_file_line_column_and_value(tmp_path: Path) -> None:
    sizes = _sizes()
    sizes[6] = ">60"  # line 8 of the CSV (the header is line 1)
    study = load_config(_write(tmp_path, sizes))
    with pytest.raises(IngestError) as info:
        ingest(study, progress=False)
    text = str(info.value)
    assert "patients.csv, line 8, column 'size'" in text and "'>60'" in text and "<=20" in text
    assert len(info.value.errors) == 1
    assert not study.store_path.exists() or _count(study.store_path) == 0  # nothing written


def _count(path: Path) -> int:
    con = store.connect(path, read_only=True)
    try:
        return con.execute("SELECT count(*) FROM patients").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize("decl, message", [
    ('{ type = "numeric", levels = ["1", "2"] }', "levels apply to categorical variables"),
    ('{ type = "categorical", levels = ["a", "b", "a"] }', "listed more than once"),
    ('{ type = "categorical", levels = [] }', "non-empty"),
])
def test_bad_level_declarations_name_the_key(tmp_path: Path, decl: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(_write(tmp_path, _sizes(), variables=decl))
    assert "variables.size" in str(info.value)


def test_levels_alone_make_the_column_categorical_and_numbers_are_text(tmp_path: Path) -> None:
    """Codes written as numbers (levels = [3, 1, 2]) read as the manifest's text, in that order."""
    codes = [str(1 + i % 3) for i in range(N)]
    study = load_config(_write(tmp_path, codes, variables="{ levels = [3, 1, 2] }"))
    ingest(study, progress=False)
    con = store.connect(study.store_path, read_only=True)
    try:
        kind, levels = con.execute("SELECT type, levels FROM variables WHERE name = 'size'").fetchone()
    finally:
        con.close()
    assert (kind, levels) == ("categorical", ["3", "1", "2"])
