"""``[imputation] from``: imputations made elsewhere fill the store's clinical table, the cohort SQL runs once per
imputation, and every model's inputs carry the m completed tables (``ModelData.completions``). Bad files are errors
naming the file, the patient and the imputation, and leave nothing written; the file lies inside the study. The round
trip: ``cohortlab impute`` writes ``imputations/long.csv``, a study whose ``from`` names a copy reads the same values
and ``cohortlab fit`` fits on them (``source = "from"``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml, write_study

from analytics.cli import main
from analytics.cohort import CohortError, load_cohort
from analytics.impute import ImputationError
from analytics.impute.from_file import from_record, with_imputations
from analytics.models.artifacts import FitRecord
from analytics.models.data import assemble
from analytics.report.missing import FROM_OPTIMISTIC, missing_context
from pipeline.config import ConfigError, StudyConfig, load_config

N = 40
M = 3
MODEL = '[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age", "marker", "grade"]\n'


def _patients() -> pl.DataFrame:
    rng = np.random.default_rng(5)
    label = (rng.random(N) < 0.4).astype(int)
    return pl.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(N)], "center": np.where(np.arange(N) < 30, "A", "B"),
        "age": rng.normal(55, 9, N).round(1),
        "marker": [None if i % 5 == 0 else float(v) for i, v in enumerate((label + rng.normal(0, 1, N)).round(3))],
        "grade": [None if i % 7 == 3 else v for i, v in enumerate(rng.choice(["low", "mid", "high"], N))],
        "label": label,
    })


def _long(patients: pl.DataFrame, m: int = M) -> pl.DataFrame:
    """mice's long format: .imp 0 (the incomplete data), then imputation k filling marker with 100 + k, grade mid."""
    parts = [patients.select(pl.lit(0).alias(".imp"), pl.int_range(1, patients.height + 1).alias(".id"),
                             "patient_id", "marker", "grade", "label")]
    for k in range(1, m + 1):
        parts.append(patients.select(pl.lit(k).alias(".imp"), pl.int_range(1, patients.height + 1).alias(".id"),
                                     "patient_id", pl.col("marker").fill_null(100.0 + k),
                                     pl.col("grade").fill_null("mid"), "label"))
    return pl.concat(parts)


def _toml(imputation: str) -> str:
    return study_toml("frm", 2, MODEL + imputation)


def _write_long(root: Path, long: pl.DataFrame, name: str = "manifests/imputed.csv") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    long.write_csv(path, null_value="NA")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    """One ingested study with a good ``from`` file (tests needing other files write their own names)."""
    root = tmp_path_factory.mktemp("from")
    _write_long(root, _long(_patients()))
    return build_study(root, _patients(), "c.label, c.age, c.marker, c.grade",
                       _toml('[imputation]\nfrom = "manifests/imputed.csv"\n'))


def _with(study: StudyConfig, imputation: str) -> StudyConfig:
    """The same study (store, cohort) with another ``[imputation]`` table."""
    (study.root / "study.toml").write_text(_toml(imputation), encoding="utf-8")
    return load_config(study.root / "study.toml")


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_imputation_fills_the_missing_cells_and_the_cohort_runs_once_per_imputation(study: StudyConfig) -> None:
    study = _with(study, '[imputation]\nfrom = "manifests/imputed.csv"\n')
    store = _digest(study.store_path)
    cohort = load_cohort(study)
    done = with_imputations(study, cohort)
    assert len(done.completions) == M and cohort.completions == ()
    for k, frame in enumerate(done.completions, start=1):
        assert frame.columns == cohort.frame.columns and frame["patient_id"].to_list() == cohort.patient_ids
        assert frame["split"].to_list() == cohort.frame["split"].to_list()
        missing = cohort.frame["marker"].is_null()
        assert (frame.filter(missing)["marker"] == 100.0 + k).all()
        assert frame.filter(~missing)["marker"].to_list() == cohort.frame.filter(~missing)["marker"].to_list()
        assert frame["grade"].null_count() == 0 and frame["age"].to_list() == cohort.frame["age"].to_list()
    # the store was read, never written; the imputations change the cohort's digest (a fit key), not its rows
    assert _digest(study.store_path) == store
    assert done.digest() != cohort.digest() and done.frame.equals(cohort.frame)
    # a subset takes the same rows of every completion
    train = done.subset("train")
    assert all(f["patient_id"].to_list() == train.patient_ids for f in train.completions)
    assert from_record(study) == {"files": {"all": "manifests/imputed.csv"}, "per_split": False}


def test_every_models_inputs_carry_the_completed_tables(study: StudyConfig) -> None:
    study = _with(study, '[imputation]\nfrom = "manifests/imputed.csv"\n')
    cohort = with_imputations(study, load_cohort(study))
    data = assemble(study.models[0], cohort, {}).data
    assert data.completions is not None and len(data.completions) == M
    table = data.table
    assert table is not None and table["marker"].isna().any()
    for k, filled in enumerate(data.completions, start=1):
        assert list(filled.columns) == list(table.columns) and len(filled) == len(table)
        assert not filled[["marker", "grade"]].isna().any().any()
        assert (filled.loc[table["marker"].isna(), "marker"] == 100.0 + k).all()
    assert table["marker"].isna().any()  # the observed table is untouched
    rows = np.array([0, 5, 7])
    taken = data.take(rows)
    assert taken.completions is not None
    assert taken.completions[1]["marker"].tolist() == data.completions[1]["marker"].iloc[rows].tolist()
    # without `from`, no completions
    plain = assemble(study.models[0], load_cohort(_with(study, "")), {}).data
    assert plain.completions is None


def _bad_long() -> dict[str, tuple[pl.DataFrame, str]]:
    good = _long(_patients())
    p05 = (pl.col("patient_id") == "P05")  # P05's marker is missing, P01's observed
    return {
        "contradiction": (good.with_columns(pl.when((pl.col(".imp") == 2) & (pl.col("patient_id") == "P01"))
                                            .then(9.5).otherwise(pl.col("marker")).alias("marker")),
                          r"imputation 2 gives patient 'P01' marker = 9\.5, contradicting the observed"),
        "missing_patient": (good.filter(~((pl.col(".imp") == 3) & p05)).vstack(
                            good.filter((pl.col(".imp") == 3) & p05).with_columns(pl.lit("P99").alias("patient_id"))),
                            r"patient 'P99' is not among the observed patients"),
        "unequal": (good.filter(~((pl.col(".imp") == 2) & p05)),
                    r"unequal patient counts across imputations \(.*imputation 2: 39.*\); patient 'P05' is missing "
                    r"from imputation 2"),
        "unknown_column": (good.with_columns(pl.lit(1.0).alias("bmi")), r"column\(s\) \['bmi'\] are not in"),
        "left_missing": (good.with_columns(pl.when((pl.col(".imp") == 1) & p05).then(None)
                                           .otherwise(pl.col("marker")).alias("marker")),
                         r"imputation 1 leaves patient 'P05''s marker missing"),
        "outcome_changed": (good.with_columns(pl.when((pl.col(".imp") == 1) & p05).then(1 - pl.col("label"))
                                              .otherwise(pl.col("label")).alias("label")),
                            r"imputation 1 gives patient 'P05' label = \d, contradicting the observed \d"),
    }


@pytest.mark.parametrize("case", list(_bad_long()))
def test_a_bad_file_is_an_error_naming_file_patient_and_imputation_and_fit_writes_nothing(
        study: StudyConfig, case: str) -> None:
    long, message = _bad_long()[case]
    name = f"manifests/bad_{case}.csv"
    path = _write_long(study.root, long, name)
    study = _with(study, f'[imputation]\nfrom = "{name}"\n')
    with pytest.raises(ImputationError, match=message) as info:
        with_imputations(study, load_cohort(study))
    assert str(path) in str(info.value)
    store = _digest(study.store_path)
    code, out = _cli("fit", str(study.root / "study.toml"))
    assert code == 1 and str(path) in out and len(out.strip().splitlines()) == 1
    assert not (study.root / "models").exists() and _digest(study.store_path) == store


@pytest.mark.parametrize(("value", "message"), [
    ('"../outside.csv"', "lies inside it (no absolute path, no '..')"),
    ('"manifests/../../outside.csv"', "no '..'"),
    ('"/etc/passwd"', "no absolute path"),
    ('{ train = "/tmp/x.csv" }', r"from\.train = '/tmp/x\.csv'"),
    ('{ test = "a.csv" }', r"unknown split\(s\) \['test'\]"),
])
def test_a_path_leaving_the_study_is_refused_when_the_study_is_read(study: StudyConfig, value: str,
                                                                    message: str) -> None:
    (study.root / "study.toml").write_text(_toml(f"[imputation]\nfrom = {value}\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)") if "\\" not in message
                       else message):
        load_config(study.root / "study.toml")
    code, out = _cli("fit", str(study.root / "study.toml"))
    assert code == 1 and "imputation.from" in out and not (study.root / "models").exists()


def test_a_symbolic_link_out_of_the_study_is_refused(study: StudyConfig, tmp_path: Path) -> None:
    outside = _write_long(tmp_path, _long(_patients()), "elsewhere.csv")
    link = study.root / "manifests" / "link.csv"
    link.unlink(missing_ok=True)
    os.symlink(outside, link)
    study = _with(study, '[imputation]\nfrom = "manifests/link.csv"\n')
    with pytest.raises(ImputationError, match="leads outside the study folder") as info:
        with_imputations(study, load_cohort(study))
    assert str(link) in str(info.value)
    # a link that stays inside is read
    link.unlink()
    os.symlink(study.root / "manifests" / "imputed.csv", link)
    assert len(with_imputations(study, load_cohort(study)).completions) == M
    # a folder, and a file that is not there
    study = _with(study, '[imputation]\nfrom = "manifests"\n')
    with pytest.raises(ImputationError, match="is a folder, not a CSV file"):
        with_imputations(study, load_cohort(study))
    study = _with(study, '[imputation]\nfrom = "manifests/none.csv"\n')
    with pytest.raises(ImputationError, match="no such imputations file"):
        with_imputations(study, load_cohort(study))


def test_one_file_per_split_fills_only_its_splits_patients(study: StudyConfig) -> None:
    study = _with(study, '[imputation]\nfrom = "manifests/imputed.csv"\n')
    split = dict(zip(load_cohort(study).patient_ids, load_cohort(study).split.tolist()))
    good = _long(_patients())
    held = good.with_columns(pl.when(pl.col(".imp") > 0).then(pl.col("marker").replace(
        {100.0 + k: 200.0 + k for k in range(1, M + 1)})).otherwise(pl.col("marker")))
    _write_long(study.root, good, "manifests/train.csv")
    _write_long(study.root, held, "manifests/held.csv")
    study = _with(study, '[imputation]\nfrom = { train = "manifests/train.csv", internal = "manifests/held.csv", '
                         'external = "manifests/held.csv" }\n')
    cohort = with_imputations(study, load_cohort(study))
    frame = cohort.completions[1]
    missing = cohort.frame["marker"].is_null().to_list()
    for pid, miss, value in zip(frame["patient_id"], missing, frame["marker"]):
        if miss:
            assert value == (102.0 if split[pid] == "train" else 202.0)
    assert from_record(study) == {"files": {"train": "manifests/train.csv", "internal": "manifests/held.csv",
                                            "external": "manifests/held.csv"}, "per_split": True}
    # a split without a file whose patients lack a value
    study = _with(study, '[imputation]\nfrom = { train = "manifests/train.csv" }\n')
    with pytest.raises(ImputationError, match=r"names no file for the (internal|external) split, and its patient "
                                              r"'P\d\d' lacks marker; add from\.(internal|external)"):
        with_imputations(study, load_cohort(study))
    # per-split files with different m
    _write_long(study.root, _long(_patients(), m=2), "manifests/two.csv")
    study = _with(study, '[imputation]\nfrom = { train = "manifests/train.csv", internal = "manifests/two.csv", '
                         'external = "manifests/two.csv" }\n')
    with pytest.raises(ImputationError, match="different numbers of imputations"):
        with_imputations(study, load_cohort(study))


def test_a_cohort_that_selects_by_an_imputed_value_or_reads_store_clinical_is_refused(study: StudyConfig) -> None:
    study = _with(study, '[imputation]\nfrom = "manifests/imputed.csv"\n')
    sql = study.root / "cohorts" / "all.sql"
    original = sql.read_text(encoding="utf-8")
    try:
        sql.write_text(original + " WHERE c.marker IS NULL OR c.marker < 50", encoding="utf-8")
        with pytest.raises(CohortError, match=r"all\.sql: on imputation 1 the cohort leaves out patient 'P00'"):
            with_imputations(study, load_cohort(study))
        sql.write_text(original.replace("JOIN clinical c", "JOIN store.clinical c"), encoding="utf-8")
        with pytest.raises(CohortError, match=r"all\.sql: reads store\.clinical, which \[imputation\] from cannot"):
            with_imputations(study, load_cohort(study))
    finally:
        sql.write_text(original, encoding="utf-8")


# --- the round trip: `cohortlab impute` writes the file `from` reads ------------------------------------------

# small and quick: no tuning grid, two outer folds, chains in this process
RT_MODEL = ('[[models]]\nname = "clin"\nkind = "logistic"\nclinical = ["age", "marker", "grade"]\nparams = { C = 1.0 }\n'
            '[validation]\nfolds = 2\n[compute]\nn_jobs = 1\n')


def _rt_patients() -> pl.DataFrame:
    """Held-out patients complete: `cohortlab impute` imputes the development (train) patients only."""
    rng = np.random.default_rng(11)
    label = (rng.random(40) < 0.45).astype(int)
    grp = ["train"] * 26 + ["internal"] * 6 + ["external"] * 8
    marker = (label + rng.normal(0, 1, 40)).round(3)
    grade = rng.choice(["low", "mid", "high"], 40)
    return pl.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(40)], "center": ["B" if g == "external" else "A" for g in grp],
        "grp": grp, "age": rng.normal(55, 9, 40).round(1),
        "marker": [None if g == "train" and i % 4 == 0 else float(v) for i, (g, v) in enumerate(zip(grp, marker))],
        "grade": [None if g == "train" and i % 5 == 2 else v for i, (g, v) in enumerate(zip(grp, grade))],
        "label": label,
    })


def _rt_toml(imputation: str) -> str:
    return study_toml("rt", 3, RT_MODEL + imputation, split='column = "split"')


def test_impute_then_from_reads_the_same_values_and_fit_uses_them(tmp_path: Path) -> None:
    toml = write_study(tmp_path, _rt_patients(), "c.label, c.grp AS split, c.age, c.marker, c.grade",
                       _rt_toml('[imputation]\nmethod = "mice"\nm = 3\nmaxit = 2\nseed = 4\n'))
    assert _cli("ingest", str(toml))[0] == 0
    code, out = _cli("impute", str(toml))
    assert code == 0, out
    (tmp_path / "manifests").mkdir()
    shutil.copy(tmp_path / "imputations" / "long.csv", tmp_path / "manifests" / "imputed.csv")
    toml.write_text(_rt_toml('[imputation]\nfrom = "manifests/imputed.csv"\n'), encoding="utf-8")
    study = load_config(toml)
    cohort = with_imputations(study, load_cohort(study))
    long = pl.read_csv(tmp_path / "imputations" / "long.csv")
    assert len(cohort.completions) == 3
    for k, frame in enumerate(cohort.completions, start=1):
        mine = long.filter(pl.col(".imp") == k).sort("patient_id")
        train = frame.filter(pl.col("split") == "train").sort("patient_id")
        assert train["patient_id"].to_list() == mine["patient_id"].to_list()
        assert np.allclose(train["marker"].to_numpy(), mine["marker"].to_numpy(), rtol=1e-12, atol=0)
        assert train["grade"].to_list() == mine["grade"].to_list()
        held = frame.filter(pl.col("split") != "train")
        assert held.equals(cohort.frame.filter(pl.col("split") != "train"))  # complete: left as observed
    code, out = _cli("fit", str(toml))
    assert code == 0, out
    record = json.loads((tmp_path / "models" / "clin" / "manifest.json").read_text(encoding="utf-8"))
    imputation = record.get("imputation")
    assert imputation is not None and imputation["source"] == "from" and imputation["m"] == 3
    assert imputation["imputations"] == 0  # no chain ran: the file's imputations were used
    # the report's missing-data section says where the imputations came from, and that held-out ones may be optimistic
    manifest = tmp_path / "models" / "clin" / "manifest.json"
    ctx = missing_context(study, cohort.frame, manifests={"clin": FitRecord.from_dict(record, manifest)})
    section = ctx["missingness"]
    assert section["models"][0]["model"] == "clin" and section["models"][0]["source"] == "read from file"
    assert section["models"][0]["m"] == 3 and FROM_OPTIMISTIC in section["method"]["notes"]
