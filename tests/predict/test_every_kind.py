"""Every model kind is used as it was developed: ``cohortlab predict`` on a study's internal and external patients
gives their stored predictions exactly (the score, and a survival model's absolute risk at each horizon), and
``cohortlab export`` then ``predict --bundle``, away from the study, gives the in-study predictions.

test_predict.py and test_bundle.py prove it for logistic, svm, xgboost, voting (binary), cox and fixed (logistic);
test_image_predict.py for pooled-feature svm and ComBat-harmonised logistic. This module takes the other kinds, in
four tiny studies fitted once each: single-event survival learners, stacking, soft voting of survival members,
a fusion model of another model's score, a published Cox model; competing risks (cause-specific Cox, Fine–Gray,
a model imputed by chained equations (``[imputation] method = "mice"``); and the
multiple-instance kinds on slides (``mil``, ``mil_cox``).

A chained-equations model imputes each new patient from a random stream of its own (keyed by its id), so its
held-out patients get their stored predictions whether scored together, alone or in another order.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import pytest
from image_study import FEATURE_SET, write_slides, write_weights
from image_study import patients as image_patients
from predict_helpers import COLUMNS, VARIABLES, patients
from study_builders import study_toml, write_study

import cohortlab
from analytics.cli import main
from analytics.predict import predict_frame
from pipeline.model_kinds import KINDS

_FOOT = "[explain]\nenabled = false\n"
CLINICAL = """[[models]]
name = "glm"
kind = "logistic"
formula = "age + sex + grade"
params = { penalty = "none" }
[[models]]
name = "svm"
kind = "svm"
clinical = ["age", "sex", "grade"]
grid = { C = [1.0] }
[[models]]
name = "stack"
kind = "stacking"
members = ["glm", "svm"]
[[models]]
name = "fused"
kind = "svm"
scores = ["glm"]
clinical = ["sex"]
grid = { C = [1.0] }
[[models]]
name = "cox"
kind = "cox"
formula = "age + sex + grade"
[[models]]
name = "cnet"
kind = "coxnet"
clinical = ["age", "sex", "grade"]
[[models]]
name = "forest"
kind = "rsf"
clinical = ["age", "sex", "grade"]
params = { n_estimators = 10 }
[[models]]
name = "xcox"
kind = "xgboost_cox"
clinical = ["age", "sex", "grade"]
params = { n_estimators = 5 }
[[models]]
name = "sstack"
kind = "stacking"
members = ["cox", "forest"]
[[models]]
name = "svote"
kind = "voting"
members = ["cox", "cnet"]
[[models]]
name = "fcox"
kind = "fixed"
formula = "age + sex + grade"
coefficients = { age = 0.05, sexM = 0.4, grademid = 0.3, gradehigh = 0.8 }
baseline_survival = { 50 = 0.9, 80 = 0.8 }
lp_centre = 3.5
[validation]
folds = 2
n_boot = 0
horizons = [50, 80]
""" + _FOOT
COMPETING = """[[models]]
name = "csc"
kind = "cause_specific_cox"
formula = "age + sex"
[[models]]
name = "fg"
kind = "fine_gray"
clinical = ["age", "sex"]
[validation]
cause = "relapse"
folds = 2
n_boot = 0
horizons = [50, 80]
""" + _FOOT
CODES = '\nstatus = { role = "event", codes = { "0" = "censored", "1" = "relapse", "2" = "death" } }\n'
IMPUTED = """[[models]]
name = "mi_glm"
kind = "logistic"
formula = "age + sex + grade"
params = { penalty = "none" }
[[models]]
name = "mi_svm"
kind = "svm"
clinical = ["age", "sex", "grade"]
grid = { C = [1.0] }
[imputation]
method = "mice"
m = 2
maxit = 1
seed = 4
auxiliary = ["helper"]
[validation]
folds = 2
n_boot = 0
""" + _FOOT
IMAGES = """[[models]]
name = "mil"
kind = "mil"
features = ["tiny"]
params = { hidden = 8, attention_dim = 4, max_epochs = 3, lr = 0.01 }
[[models]]
name = "milcox"
kind = "mil_cox"
features = ["tiny"]
params = { hidden = 8, attention_dim = 4, max_epochs = 3, lr = 0.01 }
[validation]
folds = 2
n_boot = 0
horizons = [5]
""" + _FOOT


class Case(NamedTuple):
    study: str  # the fixture of its study
    model: str
    kind: str


CASES = (
    Case("clinical", "stack", "stacking"), Case("clinical", "fused", "svm"), Case("clinical", "cnet", "coxnet"),
    Case("clinical", "forest", "rsf"), Case("clinical", "xcox", "xgboost_cox"), Case("clinical", "sstack", "stacking"),
    Case("clinical", "svote", "voting"), Case("clinical", "fcox", "fixed"),
    Case("competing", "csc", "cause_specific_cox"), Case("competing", "fg", "fine_gray"),
    Case("imputed", "mi_glm", "logistic"), Case("imputed", "mi_svm", "svm"),
    Case("images", "mil", "mil"), Case("images", "milcox", "mil_cox"),
)
ELSEWHERE = frozenset({"logistic", "svm", "xgboost", "voting", "cox", "fixed"})
"""The kinds whose round trips test_predict.py and test_bundle.py prove on their shared study."""


def _fitted(root: Path, toml: Path) -> cohortlab.Study:
    s = cohortlab.load_study(toml)
    s.ingest(progress=False)
    if s.config.feature_sets:
        s.embed(device="cpu", progress=False)
    s.fit(progress=False)
    return s


@pytest.fixture(scope="module")
def clinical(tmp_path_factory: pytest.TempPathFactory) -> cohortlab.Study:
    root = tmp_path_factory.mktemp("every-clinical")
    return _fitted(root, write_study(root, patients(), COLUMNS, study_toml("every", 7, CLINICAL, sections=VARIABLES)))


@pytest.fixture(scope="module")
def competing(tmp_path_factory: pytest.TempPathFactory) -> cohortlab.Study:
    """The clinical patients with two causes: an event is a relapse, every third patient's a death instead."""
    root = tmp_path_factory.mktemp("every-competing")
    frame = patients().with_row_index("i").with_columns(
        status=pl.col("event") * pl.when(pl.col("i") % 3 == 0).then(2).otherwise(1)).drop("i", "event")
    toml = study_toml("every_cr", 7, COMPETING, study='endpoint = "survival"', sections=VARIABLES + CODES)
    return _fitted(root, write_study(root, frame, "c.time, c.status AS event, c.age, c.sex, c.grade", toml))


@pytest.fixture(scope="module")
def imputed(tmp_path_factory: pytest.TempPathFactory) -> cohortlab.Study:
    """The clinical patients with a fifth of ages and a seventh of grades missing; ``helper`` (auxiliary) tracks
    age."""
    root = tmp_path_factory.mktemp("every-mice")
    frame = patients().with_row_index("i").with_columns(
        helper=(pl.col("age") / 10).round(2),
        age=pl.when(pl.col("i") % 5 == 1).then(None).otherwise(pl.col("age")),
        grade=pl.when(pl.col("i") % 7 == 2).then(None).otherwise(pl.col("grade"))).drop("i")
    toml = study_toml("every_mi", 7, IMPUTED, sections=VARIABLES)
    return _fitted(root, write_study(root, frame, COLUMNS + ", c.helper", toml))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cohortlab.Study]:
    """The image study's slides, patients and weights with a follow-up, for ``mil`` and ``mil_cox``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the encoder's tiny batches gain nothing from more
    root = tmp_path_factory.mktemp("every-images")
    write_weights(root / "tiny.pth")
    frame = image_patients(20).with_row_index("i").with_columns(
        time=(pl.col("i") % 9 + 1).cast(pl.Float64), event=(pl.col("i") % 4 != 1).cast(pl.Int64)).drop("i")
    write_slides(root / "slides", frame["patient_id"].to_list()).write_csv(root / "slides.csv")
    sections = 'slides = "slides.csv"\n[variables]\nage = { type = "numeric", unit = "years" }\n' + FEATURE_SET
    toml = study_toml("every_img", 3, IMAGES, sections=sections)
    yield _fitted(root, write_study(root, frame, "c.label, c.age, c.time, c.event", toml))
    torch.set_num_threads(threads)


def _held_out(study: cohortlab.Study, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The model's stored internal and external predictions, and those patients as a new-patients file reads
    (text columns, no outcome)."""
    stored = pl.read_parquet(study.root / "models" / name / "predictions.parquet").filter(pl.col("split") != "train")
    frame = pl.read_csv(study.root / "patients.csv", infer_schema=False)
    frame = frame.drop([c for c in ("label", "time", "event", "status") if c in frame.columns])
    return stored, frame.filter(pl.col("patient_id").is_in(stored["patient_id"].to_list()))


def test_every_kind_is_round_tripped_here_or_beside() -> None:
    """A kind added to the table is untested here until it gets a case."""
    assert set(KINDS) == ELSEWHERE | {c.kind for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.model for c in CASES])
def test_held_out_patients_get_their_stored_predictions_in_the_study_and_from_its_bundle(
        case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    study: cohortlab.Study = request.getfixturevalue(case.study)
    assert study.config.model(case.model).kind == case.kind
    stored, new = _held_out(study, case.model)
    slides = study.root / "slides.csv" if case.study == "images" else None
    extra: dict[str, Any] = {}
    if slides is not None:  # the development patients' own slides, embedded again
        from analytics.predict.images import ImageFiles

        extra["images"] = ImageFiles(slides=slides, device="cpu")
    out = predict_frame(study.config, case.model, new, **extra)
    joined = stored.join(out, on="patient_id")
    assert joined.height == stored.height == new.height >= 5
    assert joined["reason"].null_count() == joined.height, joined["reason"].drop_nulls().to_list()[:1]
    # the stored score is the risk (binary), else the linear predictor where the kind has one; a survival model's
    # stored absolute risks are the risk columns at its horizons
    folder = study.root / "models" / case.model
    traits = study.config.model(case.model).traits
    survival = study.config.endpoint(study.config.model(case.model)) == "survival"
    checked = []
    if not survival:
        checked.append((joined["score"] - joined["risk"]).abs().max())
    elif traits.linear_predictor:
        checked.append((joined["score"] - joined["lp"]).abs().max())
    if (folder / "horizon_risks.parquet").exists():
        risks = pl.read_parquet(folder / "horizon_risks.parquet").join(out, on="patient_id")
        for t in risks["horizon"].unique().to_list():
            at = risks.filter(pl.col("horizon") == t)
            assert at.height == stored.height
            checked.append((at["risk"] - at[f"risk_{t:g}"]).abs().max())
    elif survival:  # soft voting of survival members averages relative scores: its score, and no absolute risk
        assert out["risk"].null_count() == out.height and out["lp"].null_count() == 0
    assert checked and all(d == 0.0 for d in checked), checked
    if case.study == "imputed":  # the patients with a missing predictor were imputed, and say so
        missing = new.filter(pl.col("age").is_null() | pl.col("grade").is_null())["patient_id"].to_list()
        flags = dict(zip(out["patient_id"].to_list(), out["flags"].to_list()))
        assert missing and all("missing (imputed)" in (flags[p] or "") for p in missing)
        # each patient draws its imputations from a stream of its own: scored alone, or in another order, it gets
        # its stored prediction
        score = dict(zip(stored["patient_id"].to_list(), stored["score"].to_list()))
        for p in missing[:2]:
            alone = predict_frame(study.config, case.model, new.filter(pl.col("patient_id") == p))
            assert alone["risk"].to_list() == [score[p]]
        backwards = predict_frame(study.config, case.model, new.reverse())
        assert dict(zip(backwards["patient_id"].to_list(), backwards["risk"].to_list())) == score

    # export, then predict from the bundle alone, in a folder of its own
    away = tmp_path / "away"
    away.mkdir()
    bundle, src, risks_csv = away / "model.cohortlab", away / "new.csv", away / "risks.csv"
    new.write_csv(src)
    toml = str(study.root / "study.toml")
    assert main(["export", toml, "--model", case.model, "--out", str(bundle),
                 *(["--with-weights"] if slides else [])]) == 0
    args = ["predict", "--bundle", str(bundle), "--patients", str(src), "--out", str(risks_csv)]
    assert main(args + (["--slides", str(slides), "--device", "cpu"] if slides else [])) == 0
    from_bundle = pl.read_csv(risks_csv, schema_overrides=out.schema)
    assert from_bundle.columns == out.columns
    assert from_bundle.equals(out)
    if case.study == "imputed":  # the new patients' chains travel with the model, without any outcome
        with zipfile.ZipFile(bundle) as zf:
            manifest = json.loads(zf.read(f"models/{case.model}/manifest.json"))
            state = json.loads(zf.read(f"models/{case.model}/imputation.json"))
            rows = pl.read_parquet(zf.open(f"models/{case.model}/imputation_rows.parquet"))
        assert manifest["imputation"]["auxiliary"] == ["helper"] and state["clinical"] == ["age", "sex", "grade"]
        assert "helper" in rows.columns and not {"label", "time", "event"} & set(rows.columns), rows.columns
