"""No model file runs code, and no changed byte of a model folder is read: skops / XGBoost JSON / torch weights
only, each file checked against the sha256 the store recorded at fit time; through the CLI and the notebook API.

Attacks: a malicious pickle under the old name (``model.joblib``) and under the new one (``model.skops``); a
skops file that asks for ``os.system`` / ``builtins.eval``; a flipped byte; another model's file swapped in.
Each gives exit 1 and one line naming the file, and the pickle's marker file is never created. A folder an
older cohortlab wrote (a pickle, no digest) is never unpickled: readers say so, ``fit`` refits it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest
import skops.io as sio
from study_builders import build_study, study_toml

import cohortlab
from analytics.cli import main
from analytics.models import persist
from pipeline import store
from pipeline.config import SURVIVAL_KINDS, Model
from pipeline.errors import CohortlabError

N = 60

# --- a small clinical study (a logistic, an xgboost and a Cox model), fitted once; tests change copies of it


def _toml() -> str:
    return study_toml("sec", 3, """[[models]]
name = "clin"
kind = "logistic"
clinical = ["age", "marker"]
grid = { C = [1.0] }
[[models]]
name = "boost"
kind = "xgboost"
clinical = ["age", "marker"]
params = { n_estimators = 10 }
grid = { max_depth = [2] }
[[models]]
name = "surv"
kind = "cox"
clinical = ["age", "marker"]
[validation]
n_boot = 20
folds = 3
horizons = [5]
[explain]
max_rows = 10
background = 10
""")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study folder after ``cohortlab fit`` (do not change it: copy it)."""
    rng = np.random.default_rng(21)
    marker = rng.normal(size=N).round(3)
    label = (rng.random(N) < 1 / (1 + np.exp(-1.5 * marker))).astype(int)
    time = rng.exponential(8 / np.exp(marker)).round(3) + 0.01
    patients = pl.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(N)], "center": np.where(np.arange(N) < 45, "A", "B"),
        "age": rng.normal(60, 8, N).round(1), "marker": marker, "label": label, "time": time,
        "event": (rng.random(N) < 0.7).astype(int),
    })
    root = tmp_path_factory.mktemp("sec") / "study"
    root.mkdir()
    build_study(root, patients, "c.label, c.time, c.event, c.age, c.marker", _toml())
    assert main(["fit", str(root)]) == 0
    return root


@pytest.fixture()
def study(fitted: Path, tmp_path: Path) -> Path:
    root = tmp_path / "study"
    shutil.copytree(fitted, root)
    return root


class Marker:
    """A pickle that, when unpickled, creates a file (stands for any code an attacker runs)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _pickle(marker: Path) -> bytes:
    return pickle.dumps(Marker(marker))


def _crafted_skops(module: str, name: str, argument: str) -> bytes:
    """A skops archive whose one object is ``module.name(argument)``, built on load if the type were trusted."""
    arg = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(argument),
           "is_json": True, "__id__": 2}
    schema = {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
              "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": [arg],
                          "__id__": 1},
              "__id__": 0, "protocol": 2, "_skops_version": "0.16.0"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
    return buffer.getvalue()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """A command that fails with exit 1 and one ``error:`` line, no traceback; returns that line."""
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err, err
    assert err.count("error: ") == 1, err
    line = err[err.index("error: "):].strip()
    assert "\n" not in line, line
    return line


def _readers_refuse(root: Path, capsys: pytest.CaptureFixture[str], expected: str, marker: Path) -> None:
    """validate, explain and report (CLI) and the notebook's validation and report all stop on one line
    holding ``expected``; the marker file is never created."""
    for command in ("validate", "explain", "report"):
        line = _cli(capsys, command, str(root))
        assert expected in line, (command, line)
        assert not marker.exists(), command
    nb = cohortlab.load_study(root)
    for call in (lambda: nb.validation(progress=False), lambda: nb.report(progress=False)):
        with pytest.raises(CohortlabError) as info:
            call()
        assert expected in str(info.value) and "\n" not in str(info.value)
        assert not marker.exists()


# --- attacks -----------------------------------------------------------------------------------------


def test_a_pickle_under_the_old_name_is_never_unpickled(study: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    evil = study / "models" / "clin" / "model.joblib"
    evil.write_bytes(_pickle(marker))
    _readers_refuse(study, capsys, f"{evil}: not a file `cohortlab fit` wrote for model clin", marker)


def test_a_pickle_under_the_new_name_is_refused_by_its_digest(study: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    target = study / "models" / "clin" / "model.skops"
    target.write_bytes(_pickle(marker))
    _readers_refuse(study, capsys, f"{target}: its sha256 differs from the one recorded in the store", marker)


@pytest.mark.parametrize(("module", "name"), [("os", "system"), ("builtins", "eval")])
def test_a_skops_file_asking_for_an_untrusted_type_is_refused(study: Path, tmp_path: Path, module: str, name: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    argument = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w').close()"
    data = _crafted_skops(module, name, argument)
    target = study / "models" / "boost" / "model.skops"
    target.write_bytes(data)
    # first layer: the digest
    line = _cli(capsys, "explain", str(study))
    assert f"{target}: its sha256 differs" in line and not marker.exists()
    # second layer, should the digest be recorded anew: the file names a type cohortlab never loads
    con = store.connect(study / "store.duckdb")
    try:
        digests = store.model_artifacts(con, "boost")
        store.record_model_artifacts(con, "boost", {**digests, "model.skops": persist._sha256(data)})
    finally:
        con.close()
    line = _cli(capsys, "explain", str(study))
    assert line == f"error: {target}: holds type {module}.{name}, which cohortlab never loads; nothing loaded"
    assert not marker.exists()
    with pytest.raises(persist.ArtifactError, match=f"holds type {module}.{name}"):
        persist.load_model(study / "models" / "boost", study / "store.duckdb")
    assert not marker.exists()


def test_a_flipped_byte_is_named(study: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = study / "models" / "clin" / "model.skops"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    stat = target.stat()
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as bit rot keeps it
    _readers_refuse(study, capsys, f"{target}: its sha256 differs", tmp_path / "none")


def test_another_models_file_swapped_in_is_named(study: Path, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    target = study / "models" / "clin" / "model.skops"
    shutil.copyfile(study / "models" / "boost" / "model.skops", target)
    _readers_refuse(study, capsys, f"{target}: its sha256 differs", tmp_path / "none")


@pytest.mark.parametrize("name", ["manifest.json", "predictions.parquet", "horizon_risks.parquet"])
def test_every_file_read_back_is_checked(fitted: Path, tmp_path: Path, name: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "study"
    shutil.copytree(fitted, root)
    target = root / "models" / "surv" / name
    target.write_bytes(target.read_bytes() + b" ")
    line = _cli(capsys, "validate", str(root))
    assert line == (f"error: {target}: its sha256 differs from the one recorded in the store when model surv was "
                    "fitted; nothing in its folder is read (run `cohortlab fit` to refit it)")
    # a recorded file that is gone
    target.unlink()
    assert f"{target}: missing" in _cli(capsys, "validate", str(root))


def test_fit_refits_a_changed_model_and_then_it_loads(study: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    (study / "models" / "clin" / "model.skops").write_bytes(_pickle(marker))
    capsys.readouterr()
    assert main(["fit", str(study)]) == 0
    out = capsys.readouterr().out
    assert not marker.exists()
    fitted = persist.load_model(study / "models" / "clin", study / "store.duckdb")
    assert fitted.spec.name == "clin" and "up to date" in out  # the others were not refitted
    assert main(["validate", str(study)]) == 0


# --- a study written by the old code ------------------------------------------------------------------------


def _make_old(root: Path, marker: Path) -> None:
    """Turn the fitted study into what the previous cohortlab left: schema 3 (no model_artifacts table) and
    model folders of format 1 holding ``model.joblib`` (here a malicious pickle)."""
    con = duckdb.connect(str(root / "store.duckdb"))
    try:
        con.execute("DROP TABLE model_artifacts")
        con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    finally:
        con.close()
    for folder in (root / "models").iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        (folder / "model.skops").unlink()
        (folder / "model.joblib").write_bytes(_pickle(marker))
        manifest.update(format=1, artifact="model.joblib")
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_a_store_of_schema_3_migrates_with_no_recorded_digest(study: Path, tmp_path: Path) -> None:
    _make_old(study, tmp_path / "pwned")
    con = store.connect(study / "store.duckdb", read_only=True)
    try:
        assert store._version(con) == 3 and store.model_artifacts(con, "clin") == {}  # not migrated: no table
    finally:
        con.close()
    con = store.connect(study / "store.duckdb")
    try:
        assert store._version(con) == store.SCHEMA_VERSION == 5
        assert con.execute("SELECT count(*) FROM model_artifacts").fetchone() == (0,)
    finally:
        con.close()


def test_an_old_study_asks_to_refit_and_fit_refits_it(study: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    _make_old(study, marker)
    folder = study / "models" / "clin"
    line = _cli(capsys, "validate", str(study))
    assert line == (f"error: {folder / 'model.joblib'}: model clin was saved by an older cohortlab in a format "
                    "that can run code; run `cohortlab fit` to refit it")
    _readers_refuse(study, capsys, "was saved by an older cohortlab in a format that can run code; run "
                    "`cohortlab fit` to refit it", marker)
    with pytest.raises(persist.LegacyModelError, match="model boost was saved by an older cohortlab"):
        persist.load_model(study / "models" / "boost", study / "store.duckdb")

    # fit refits every such model (none is "up to date"), unpickling nothing
    capsys.readouterr()
    assert main(["fit", str(study)]) == 0
    out = capsys.readouterr().out
    assert "up to date" not in out and not marker.exists()
    for name in ("clin", "boost", "surv"):
        files = sorted(p.name for p in (study / "models" / name).iterdir())
        assert "model.joblib" not in files and "model.skops" in files
    assert main(["validate", str(study)]) == 0
    assert not marker.exists()


# --- every kind the project fits: only trusted types, bit-identical predictions after a round trip ----------


def _learners() -> dict[str, tuple[Any, Any, Any]]:
    """Every kind, fitted on a small table / bag set: name -> (model config, learner, inputs)."""
    from analytics.models.data import Columns, ModelData
    from analytics.models.harmonize import BATCH_COLUMN
    from analytics.models.registry import build_learner

    rng = np.random.default_rng(0)
    n = 40
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + rng.normal(size=n) > 0).astype(np.int64)
    surv = np.column_stack([rng.exponential(1, n), (rng.random(n) < 0.7).astype(float)])
    table = pd.DataFrame({"f1": x[:, 0], "f2": x[:, 1], "f3": x[:, 2], "age": x[:, 3],
                          "sex": rng.choice(["F", "M"], n).astype(object),
                          BATCH_COLUMN: rng.choice(["A", "C"], n).astype(object)})
    ids = tuple(f"p{i}" for i in range(n))
    tab = ModelData(ids, table=table, columns=Columns(features=("f1", "f2", "f3"), numeric=("age",),
                                                      categorical=("sex",)))
    bags = ModelData(ids, bags=tuple(rng.normal(size=(4, 3)).astype(np.float32) for _ in range(n)))
    scores = ModelData(ids, scores=rng.random((n, 2)), score_names=("a", "b"))
    small = {"hidden": 4, "attention_dim": 2, "max_epochs": 2, "device": "cpu"}
    entries = [
        ({"kind": "logistic", "clinical": ["age"], "grid": {"C": [1.0]}}, tab, y),
        ({"kind": "svm", "features": ["f"], "params": {"pca": 2}, "grid": {"C": [1.0]}}, tab, y),
        ({"kind": "xgboost", "features": ["f"], "params": {"n_estimators": 5}, "grid": {"max_depth": [2]}}, tab, y),
        ({"kind": "svm", "features": ["f"], "harmonize": "combat", "grid": {"C": [1.0]}}, tab, y),
        ({"kind": "mil", "features": ["f"], "params": small}, bags, y),
        ({"kind": "voting", "members": ["a", "b"]}, scores, y),
        ({"kind": "stacking", "members": ["a", "b"]}, scores, y),
        ({"kind": "stacking", "members": ["a", "b"]}, scores, surv),
        ({"kind": "cox", "clinical": ["age"]}, tab, surv),
        ({"kind": "coxnet", "clinical": ["age"]}, tab, surv),
        ({"kind": "rsf", "clinical": ["age"], "params": {"n_estimators": 3}}, tab, surv),
        ({"kind": "xgboost_cox", "clinical": ["age"], "params": {"n_estimators": 5}}, tab, surv),
        ({"kind": "mil_cox", "features": ["f"], "params": small}, bags, surv),
    ]
    out = {}
    for i, (entry, data, target) in enumerate(entries):
        spec = Model(name=f"m{i}_{entry['kind']}", **entry)
        out[spec.name] = (spec, build_learner(spec, 0).fit(data, target), data)
    return out


def test_every_kind_round_trips_with_trusted_types_only(tmp_path: Path) -> None:
    import torch

    from analytics.models.survival import CoxStacking

    torch.set_num_threads(1)
    store_path = tmp_path / "store.duckdb"
    store.connect(store_path).close()
    preds = pl.DataFrame({"model": ["m"], "patient_id": ["p0"], "split": ["train"], "score": [0.5], "fold": [0]},
                         schema={"model": pl.String, "patient_id": pl.String, "split": pl.String,
                                 "score": pl.Float64, "fold": pl.Int32})
    for name, (spec, learner, data) in _learners().items():
        folder = tmp_path / "models" / name
        manifest = {"name": name, "kind": spec.kind, "config": spec.model_dump(mode="json"), "chosen": learner.chosen}
        persist.save_model(folder, learner, manifest, preds, store_path=store_path)
        files = sorted(p.name for p in folder.iterdir())
        assert "model.joblib" not in files
        recorded = store.recorded_model_artifacts(store_path, name)
        assert sorted(recorded) == files, name
        if (folder / "model.skops").exists():
            data_bytes = (folder / "model.skops").read_bytes()
            assert set(sio.get_untrusted_types(data=data_bytes)) <= set(persist.TRUSTED_TYPES), name
            assert persist.dump_skops(pickle_free(learner, spec)) == data_bytes, f"{name}: not deterministic"
        loaded = persist.load_model(folder, store_path)
        assert np.array_equal(loaded.predict_score(data), learner.predict_score(data)), name
        if spec.kind in SURVIVAL_KINDS or isinstance(getattr(learner, "model_", None), CoxStacking):
            assert np.array_equal(loaded.learner.risk_at(data, [0.5, 1.0]), learner.risk_at(data, [0.5, 1.0])), name


def pickle_free(learner: Any, spec: Model) -> Any:
    """What a model.skops file of ``spec`` holds."""
    from analytics.models.learners import StackingLearner, TabularLearner

    if isinstance(learner, TabularLearner):
        return learner.pipeline_
    if isinstance(learner, StackingLearner):
        return learner.model_
    return learner


def test_verify_checks_every_model_folder(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["verify", str(study)]) == 0
    report = cohortlab.load_study(study).verify()
    assert report.ok and report.checked["model"] == 3
    target = study / "models" / "surv" / "model.skops"
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x80
    target.write_bytes(bytes(data))
    (study / "models" / "clin" / "model.joblib").write_bytes(b"old pickle")
    capsys.readouterr()
    assert main(["verify", str(study)]) == 1
    out = capsys.readouterr().out
    assert "models/surv/model.skops" in out and "models/clin/model.joblib" in out
    problems = {p.source: p for p in cohortlab.load_study(study).verify().problems if p.kind == "model"}
    assert set(problems) == {"surv", "clin"}
    assert "sha256 differs" in problems["surv"].reason
    assert problems["surv"].file == "models/surv/model.skops"
    assert problems["clin"].file == "models/clin/model.joblib" and "not a file `cohortlab fit` wrote" in problems["clin"].reason
