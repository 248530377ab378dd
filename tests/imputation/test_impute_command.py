"""``[imputation]`` parsing, ``cohortlab impute`` (imputations/ in mice's long format, written whole or not at all)
and reading imputations made elsewhere (``from``) with the errors the issue lists."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from study_builders import study_toml, write_study

from analytics.cli import main
from analytics.impute import ImputationError
from analytics.impute.longformat import read_long
from pipeline.config import ConfigError, load_config

N = 60


def _patients() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    label = (rng.random(N) < 0.4).astype(int)
    age = rng.normal(55, 9, N).round(1)
    marker = (label * 1.2 + rng.normal(0, 1, N)).round(3)
    grade = rng.choice(["low", "mid", "high"], N)
    return pl.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(N)], "center": np.where(np.arange(N) < 45, "A", "B"),
        "age": age, "marker": [None if i % 5 == 0 else v for i, v in enumerate(marker)],
        "grade": [None if i % 7 == 3 else v for i, v in enumerate(grade)], "label": label,
    })


def _study(root: Path, imputation: str) -> Path:
    toml = study_toml("imp", 2, imputation)
    return write_study(root, _patients(), "c.label, c.age, c.marker, c.grade", toml)


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_impute_writes_mices_long_format_with_diagnostics(tmp_path: Path) -> None:
    toml = _study(tmp_path, '[imputation]\nmethod = "mice"\nm = 3\nmaxit = 4\nseed = 9\nmethods = { marker = "norm" }\n')
    assert _cli("ingest", str(toml))[0] == 0
    code, out, _ = _cli("impute", str(toml))
    assert code == 0, out
    folder = tmp_path / "imputations"
    assert sorted(p.name for p in folder.iterdir()) == ["long.csv", "md_pattern.csv", "summary.json", "trace.csv"]
    long = pl.read_csv(folder / "long.csv")
    assert long.columns == [".imp", "patient_id", "age", "marker", "grade"]
    assert long[".imp"].unique().sort().to_list() == [1, 2, 3]
    assert long.null_count().sum_horizontal().item() == 0
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["methods"] == {"marker": "norm", "grade": "polyreg"}
    assert summary["outcome_columns"] == ["label"] and summary["split"] == "train"
    assert "3 imputations of" in out and "marker norm" in out
    # the file reads back as `from` imputations of the same patients
    observed = _patients().filter(pl.col("patient_id").is_in(long["patient_id"].unique().to_list()))
    back = read_long(folder / "long.csv", observed.select("patient_id", "age", "marker", "grade"))
    assert back.m == 3 and back.completed[0]["marker"].null_count() == 0
    # the same seed writes the same bytes
    first = (folder / "long.csv").read_bytes()
    assert _cli("impute", str(toml))[0] == 0
    assert (folder / "long.csv").read_bytes() == first


def test_impute_refuses_an_unknown_auxiliary_column_and_leaves_no_folder(tmp_path: Path) -> None:
    toml = _study(tmp_path, '[imputation]\nm = 2\nauxiliary = ["bmi"]\n')
    assert _cli("ingest", str(toml))[0] == 0
    code, out, err = _cli("impute", str(toml))
    assert code == 1
    assert "[imputation] auxiliary: no column 'bmi'" in out + err and "all.sql" in out + err
    assert not (tmp_path / "imputations").exists()


def test_impute_without_an_imputation_table_is_a_clear_error(tmp_path: Path) -> None:
    toml = _study(tmp_path, "")
    assert _cli("ingest", str(toml))[0] == 0
    code, out, err = _cli("impute", str(toml))
    assert code == 1 and "needs an [imputation] table" in out + err
    assert not (tmp_path / "imputations").exists()


@pytest.mark.parametrize(("table", "message"), [
    ("m = 1", "key 'imputation.m': m = 1: multiple imputation needs at least 2"),
    ('methods = { age = "magic" }', "key 'imputation.methods.age'"),
    ('method = "single"\nfrom = "x.csv"', "needs method = \"mice\""),
    ("mm = 3", "key 'imputation.mm': unknown key"),
])
def test_imputation_table_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    toml = _study(tmp_path, f"[imputation]\n{table}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config(toml)


def test_a_study_without_the_table_has_no_imputation(tmp_path: Path) -> None:
    assert load_config(_study(tmp_path, "")).imputation is None
    s = load_config(_study(tmp_path, '[imputation]\nfrom = "manifests/imputed.csv"\n'))
    assert s.imputation is not None and s.imputation.from_ == "manifests/imputed.csv" and s.imputation.m == 20


OBS = pl.DataFrame({"patient_id": ["a", "b", "c"], "x": [1.0, None, 3.0], "g": ["u", None, "v"]})


@pytest.mark.parametrize(("text", "message"), [
    (".imp,patient_id,x,g\n1,a,1,u\n1,b,2,u\n1,c,3.5,v\n2,a,1,u\n2,b,2,u\n2,c,3,v\n",
     r"line 4: imputation 1 gives patient 'c' x = 3.5, contradicting the observed 3"),
    (".imp,patient_id,x,g\n1,a,1,u\n1,b,2,u\n1,c,3,v\n2,a,1,u\n2,b,2,u\n",
     r"unequal patient counts across imputations \(imputation 1: 3, imputation 2: 2\)"),
    (".imp,patient_id,x,g\n1,a,1,u\n1,b,2,u\n2,a,1,u\n2,c,3,v\n", r"patient 'b' is missing from imputation 2"),
    (".imp,patient_id,x,g\n1,a,1,u\n1,b,2,w\n1,c,3,z\n2,a,1,u\n2,b,2,u\n2,c,3,v\n",
     r"line 4: imputation 1 gives patient 'c' g = 'z', contradicting the observed 'v'"),
    (".imp,patient_id,x,g\n1,a,1,u\n1,b,,u\n1,c,3,v\n2,a,1,u\n2,b,2,u\n2,c,3,v\n",
     r"imputation 1 leaves patient 'b''s x missing"),
    (".imp,patient_id,x,g\n1,a,1,u\n1,q,2,u\n", r"line 3: patient 'q' is not among the observed patients"),
    (".imp,patient_id,bmi\n1,a,1\n", r"column\(s\) \['bmi'\] are not in the observed data"),
    (".imp,patient_id,x\n1,a,1\n1,b,2\n1,c,3\n", r"1 imputation\(s\); multiple imputation needs at least 2"),
    ("patient_id,x\na,1\n", r"no column '\.imp'"),
    (".imp,patient_id,x\none,a,1\n", r"line 2: \.imp is 'one'"),
])
def test_from_imputations_errors_name_the_file_line_patient_and_imputation(tmp_path: Path, text: str,
                                                                            message: str) -> None:
    path = tmp_path / "imputed.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImputationError, match=message) as info:
        read_long(path, OBS)
    assert str(path) in str(info.value)


def test_from_imputations_fill_missing_cells_ignore_imp_zero_and_flag_unseen_levels(tmp_path: Path) -> None:
    path = tmp_path / "imputed.csv"
    path.write_text(".imp,.id,patient_id,x,g\n0,1,a,1,u\n0,2,b,NA,NA\n0,3,c,3,v\n1,1,a,1,u\n1,2,b,2.5,w\n1,3,c,3,v\n"
                    "2,1,a,1,u\n2,2,b,2.7,u\n2,3,c,3,v\n", encoding="utf-8")
    r = read_long(path, OBS)
    assert r.m == 2
    assert r.completed[0]["x"].to_list() == [1.0, 2.5, 3.0] and r.completed[1]["g"].to_list() == ["u", "u", "v"]
    assert r.flags == ["g: level(s) ['w'] appear only in imputed values, never observed"]


def test_an_interrupted_impute_keeps_the_previous_folder_and_leaves_no_temporaries(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import analytics.impute.study as study_mod

    toml = _study(tmp_path, "[imputation]\nm = 2\nmaxit = 1\n")
    assert _cli("ingest", str(toml))[0] == 0
    assert _cli("impute", str(toml))[0] == 0
    before = (tmp_path / "imputations" / "long.csv").read_bytes()

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(study_mod, "trace_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        study_mod.impute_study(load_config(toml))
    assert (tmp_path / "imputations" / "long.csv").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "imputations").iterdir()) == ["long.csv", "md_pattern.csv", "summary.json",
                                                                             "trace.csv"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".imputations")]
