"""The `cohortlab cohort` and `cohortlab sql` verbs on a small store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics.cli import main

from cohort_helpers import DEMO_VARIABLES, add_features, build_store, demo_patients, table_contents

STUDY_TOML = """
[study]
name = "clidemo"

[manifests]
patients = "patients.csv"

[[feature_sets]]
name = "tiles"
modality = "wsi"
encoder = "resnet18"
weights = "random"
pooling = ["mean", "max"]

[cohort]
name = "demo"
params = { min_age = 18 }

[split]
external_centers = ["B"]
internal_fraction = 0.25
seed = 0
"""


@pytest.fixture()
def study_file(tmp_path: Path) -> Path:
    build_store(tmp_path / "store.duckdb", demo_patients(), DEMO_VARIABLES)
    ids = demo_patients()["patient_id"].to_list()[:40]
    add_features(tmp_path / "store.duckdb", "tiles", "mean", ids, np.ones((40, 3), np.float32))
    (tmp_path / "study.toml").write_text(STUDY_TOML)
    return tmp_path / "study.toml"


def test_cohort_verb_prints_counts_missing_features_and_table1(study_file, capsys):
    assert main(["cohort", str(study_file), "demo"]) == 0
    out = capsys.readouterr().out
    truth = demo_patients().filter(pl.col("age") >= 18)
    assert f"{truth.height} patients" in out
    n_ext = truth.filter(pl.col("center") == "B").height
    assert any(line.split("┆")[0].strip("│ ") == "external" and line.split("┆")[-1].strip("│ ") == str(n_ext)
               for line in out.splitlines())
    with_tiles = demo_patients()["patient_id"][:40].to_list()
    missing = truth.height - truth.filter(pl.col("patient_id").is_in(with_tiles)).height
    assert any("tiles:mean" in line and f"┆ {missing} " in line for line in out.splitlines())
    assert any("tiles:max" in line and f"┆ {truth.height} " in line for line in out.splitlines())
    for group in ("cohort", "train", "internal", "external"):
        assert f"Table 1, {group}:" in out
    assert "Age (years)" in out and "Anti-SSA" in out


def test_cohort_verb_binds_cli_params(study_file, capsys):
    assert main(["cohort", str(study_file), "--param", "min_age=60"]) == 0
    n = demo_patients().filter(pl.col("age") >= 60).height
    assert f"{n} patients" in capsys.readouterr().out


def test_cohort_verb_errors_are_one_line(study_file, capsys):
    assert main(["cohort", str(study_file), "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no cohort named 'nope'") and "Traceback" not in err
    assert main(["cohort", str(study_file), "demo", "--param", "max_age=3"]) == 1
    assert "unknown parameter(s) max_age" in capsys.readouterr().err


def test_sql_verb_prints_and_writes(study_file, tmp_path, capsys):
    assert main(["sql", str(study_file), "SELECT count(*) AS n FROM patients WHERE center = $c",
                 "--param", "c=B"]) == 0
    assert f"│ {demo_patients().filter(pl.col('center') == 'B').height} " in capsys.readouterr().out
    query = "SELECT patient_id, age FROM patient_clinical WHERE age >= $a ORDER BY patient_id"
    truth = demo_patients().filter(pl.col("age") >= 50).select("patient_id", "age").sort("patient_id")
    for suffix in ("csv", "parquet"):
        out = tmp_path / f"res.{suffix}"
        assert main(["sql", str(study_file), query, "--param", "a=50", "--out", str(out)]) == 0
        back = pl.read_csv(out) if suffix == "csv" else pl.read_parquet(out)
        assert back.equals(truth)


def test_sql_verb_refuses_writes(study_file, capsys):
    before = table_contents(study_file.parent / "store.duckdb")
    assert main(["sql", str(study_file), "DROP TABLE patients"]) == 1
    err = capsys.readouterr().err
    assert "is a DROP statement" in err and "nothing was run" in err
    assert main(["sql", str(study_file), "SELECT 1; DELETE FROM patients"]) == 1
    assert table_contents(study_file.parent / "store.duckdb") == before
    assert main(["sql", str(study_file), "SELECT 1 AS x", "--out", "x.txt"]) == 1
    assert "write .csv or .parquet" in capsys.readouterr().err
