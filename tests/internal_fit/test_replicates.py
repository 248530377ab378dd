"""Internal validation, compute side: each replicate refits the model's whole procedure on its resample,
byte-identical for 1 and 2 workers, cached and resumed after an interruption, blind to patients outside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from internal_helpers import make, replicate_files, survival_study

from analytics import internal_fit
from analytics.internal_fit import Resampling, Task, fit_replicate
from analytics.models.artifacts import FitRecord
from analytics.models.replicates import ReplicateError, decode, encode, load_replicates
from analytics.stats.resampling import Replicate
from pipeline.config import StudyConfig


def _record(study: StudyConfig) -> FitRecord:
    return FitRecord.from_json((study.models_dir / "clin" / "manifest.json").read_bytes())


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    """The study fitted with B = 6 replicates in this process (n_jobs = 1)."""
    from analytics.fit import fit

    study = make(tmp_path_factory.mktemp("serial"), n_jobs=1)
    fit(study, progress=False)
    return study


def _task(study: StudyConfig, labels: np.ndarray | None = None) -> Task:
    """The model's replicate task on its training patients, as fit builds it (``labels`` replaces theirs)."""
    from analytics.cohort import load_cohort
    from analytics.models.data import assemble

    spec = study.model("clin")
    cohort = load_cohort(study, features=[], bags=[], on_missing="keep")
    assembled = assemble(spec, cohort, {})
    train = np.flatnonzero((np.asarray(cohort.split) == "train") & assembled.available)
    y = cohort.frame["label"].to_numpy()[train].astype(np.int64) if labels is None else labels
    plan = internal_fit.resampling_of(study)
    assert plan is not None
    return Task(spec, assembled.data.take(train), y, plan)


def test_the_manifest_records_the_replicates_and_validation_reads_them_back(serial: StudyConfig) -> None:
    record = _record(serial)
    internal = record.internal
    assert internal is not None
    assert (internal["method"], internal["B"], internal["replicates"], internal["done"], internal["failed"]) == (
        "bootstrap", 6, 6, 6, 0)
    reps = load_replicates(serial.models_dir, record)
    n = internal["n"]
    assert n == record.counts["train"] and len(reps) == 6
    for b, rep in enumerate(reps):
        # the documented draw: replicate b's rows are default_rng([seed, b]).integers(0, n, n)
        np.testing.assert_array_equal(rep.index, np.random.default_rng([3, b]).integers(0, n, n))
        assert rep.error is None and rep.test.shape == (n,) and rep.apparent.shape == (n,)
        # a resample's apparent scores are the replicate model's scores of those rows
        np.testing.assert_allclose(rep.apparent, rep.test[rep.index], rtol=1e-12)  # BLAS blocking: ulps
        assert ((rep.test > 0) & (rep.test < 1)).all()
    # different resamples make different models
    assert not np.array_equal(reps[0].test, reps[1].test)


def test_a_rerun_reads_the_saved_model_and_a_tampered_file_is_refused(serial: StudyConfig, tmp_path: Path) -> None:
    from analytics.fit import fit

    before = replicate_files(serial)
    assert fit(serial, progress=False).model("clin").status == "up to date"
    assert replicate_files(serial) == before
    record = _record(serial)
    lost = serial.models_dir / record.internal["folder"] / "rep_0004.npz"  # type: ignore[index]
    lost.unlink()  # a replicate file removed since: the next fit makes it again
    assert fit(serial, progress=False).model("clin").status == "fitted"
    assert replicate_files(serial) == before
    record = _record(serial)
    copy = tmp_path / "models"
    import shutil

    shutil.copytree(serial.models_dir, copy)
    target = copy / record.internal["folder"] / "rep_0002.npz"  # type: ignore[index]
    rep = decode(target.read_bytes())
    target.write_bytes(encode(Replicate(rep.index, rep.apparent, rep.test * 0.5)))
    with pytest.raises(ReplicateError, match="sha256 differs"):
        load_replicates(copy, record)


def test_two_workers_give_the_same_bytes_as_one(serial: StudyConfig, tmp_path: Path) -> None:
    from analytics.fit import fit

    study = make(tmp_path / "two", n_jobs=2)
    fit(study, progress=False)
    assert replicate_files(study) == replicate_files(serial)
    assert _record(study).internal == _record(serial).internal


def test_an_interrupted_run_fits_only_the_missing_replicates(serial: StudyConfig, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics.fit import fit

    study = make(tmp_path / "resume", n_jobs=1)
    real = internal_fit.write_replicate
    written: list[int] = []

    def interrupt_after_two(folder: Path, b: int, rep: Replicate) -> Path:
        if len(written) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third replicate is saved
        written.append(b)
        return real(folder, b, rep)

    monkeypatch.setattr(internal_fit, "write_replicate", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        fit(study, progress=False)
    assert written == [0, 1] and not (study.models_dir / "clin" / "manifest.json").exists()

    fitted: list[int] = []
    real_fit = internal_fit.fit_replicate
    monkeypatch.setattr(internal_fit, "write_replicate", real)
    monkeypatch.setattr(internal_fit, "fit_replicate", lambda task, b, learner=None: fitted.append(b) or real_fit(task, b, learner))
    fit(study, progress=False)
    assert fitted == [2, 3, 4, 5]  # only the missing ones
    assert replicate_files(study) == replicate_files(serial)  # as an uninterrupted run, byte for byte


def test_raising_B_fits_only_the_new_replicates_and_a_changed_model_refits_all(
        serial: StudyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics.fit import fit

    study = make(tmp_path / "more", n_jobs=1, B=4)
    fit(study, progress=False)
    fitted: list[int] = []
    real_fit = internal_fit.fit_replicate
    monkeypatch.setattr(internal_fit, "fit_replicate", lambda task, b, learner=None: fitted.append(b) or real_fit(task, b, learner))
    toml = (study.root / "study.toml").read_text(encoding="utf-8").replace("B = 4", "B = 6")
    (study.root / "study.toml").write_text(toml, encoding="utf-8")
    from pipeline.config import load_config

    study = load_config(study.root / "study.toml")
    assert fit(study, progress=False).model("clin").status == "fitted"
    assert fitted == [4, 5] and replicate_files(study) == replicate_files(serial)
    old = _record(study).internal["key"]  # type: ignore[index]
    fitted.clear()
    toml = toml.replace('clinical = ["age", "marker"]', 'clinical = ["age"]')
    (study.root / "study.toml").write_text(toml, encoding="utf-8")
    study = load_config(study.root / "study.toml")
    fit(study, progress=False)
    assert fitted == list(range(6))
    assert [p.name for p in (study.models_dir / ".internal" / "clin").iterdir()] == [_record(study).internal["key"]]  # type: ignore[index]
    assert old != _record(study).internal["key"]  # type: ignore[index]


def test_flipping_labels_outside_a_resample_leaves_its_model_unchanged(serial: StudyConfig) -> None:
    task = _task(serial)
    n = len(task.data)
    for b in (0, 3):
        rows = task.plan.rows(b, n)
        outside = np.setdiff1d(np.arange(n), rows)
        assert len(outside) > 0
        flipped = task.y.copy()
        flipped[outside] = 1 - flipped[outside]
        same = fit_replicate(_task(serial, flipped), b)
        assert encode(same) == encode(fit_replicate(task, b))
        inside = task.y.copy()
        inside[rows[:10]] = 1 - inside[rows[:10]]  # the control: labels inside the resample do move it
        assert not np.array_equal(fit_replicate(_task(serial, inside), b).test, same.test)


def test_a_resample_with_one_class_is_a_failed_replicate_with_its_reason(serial: StudyConfig) -> None:
    task = _task(serial)
    n = len(task.data)
    y = np.zeros(n, dtype=np.int64)
    y[7] = 1  # one positive patient: many resamples leave it out
    rare = Task(task.spec, task.data, y, Resampling("bootstrap", 40, 1, 3, 3))
    without = [b for b in range(40) if 7 not in rare.plan.rows(b, n)]
    assert without
    rep = fit_replicate(rare, without[0])
    assert rep.error == "only label 0 in the resample" and rep.test.size == 0
    np.testing.assert_array_equal(rep.index, rare.plan.rows(without[0], n))
    assert decode(encode(rep)).error == rep.error


def test_cv_replicates_leave_out_each_fold_once_per_repeat() -> None:
    plan = Resampling("cv", 200, 2, 4, 9)
    n = 23
    assert plan.count == 8
    for r in range(2):
        left = [np.setdiff1d(np.arange(n), plan.rows(r * 4 + j, n)) for j in range(4)]
        np.testing.assert_array_equal(np.sort(np.concatenate(left)), np.arange(n))
        assert all(abs(len(part) - n / 4) < 1 for part in left)
    assert not np.array_equal(plan.rows(0, n), plan.rows(4, n))  # each repeat shuffles anew
    assert plan.key("k", ()) != Resampling("cv", 200, 2, 5, 9).key("k", ())
    assert Resampling("bootstrap", 10, 1, 5, 9).key("k", ()) == Resampling(".632+", 50, 1, 5, 9).key("k", ())


def test_cv_through_fit_records_the_left_out_rows(tmp_path: Path) -> None:
    from analytics.fit import fit

    study = make(tmp_path / "cv", internal="cv", extra="repeats = 2")
    fit(study, progress=False)
    record = _record(study)
    assert record.internal is not None
    assert (record.internal["method"], record.internal["repeats"], record.internal["folds"],
            record.internal["replicates"], record.internal["test_rows"]) == ("cv", 2, 3, 6, "complement of index")
    reps = load_replicates(study.models_dir, record)
    assert all(len(np.unique(r.index)) == len(r.index) < record.internal["n"] for r in reps)


@pytest.mark.parametrize(("body", "key"), [
    ('internal = "boot"', "validation.internal"),
    ("B = 0", "validation.B"),
    ("repeats = 0", "validation.repeats"),
])
def test_bad_internal_settings_name_their_key(tmp_path: Path, body: str, key: str) -> None:
    from pipeline.config import ConfigError, parse_study

    with pytest.raises(ConfigError, match=rf"key '{key}'"):
        parse_study({"study": {"name": "s"}, "validation": dict([_kv(body)])}, tmp_path)


def test_bad_n_jobs_names_its_key(tmp_path: Path) -> None:
    from pipeline.config import ConfigError, parse_study

    with pytest.raises(ConfigError, match=r"key 'compute.n_jobs': n_jobs = 0"):
        parse_study({"study": {"name": "s"}, "compute": {"n_jobs": 0}}, tmp_path)
    from pipeline.config import Compute, ValidationSettings

    assert (ValidationSettings().internal, ValidationSettings().B, Compute().n_jobs) == ("none", 200, -1)


def _kv(line: str) -> tuple[str, object]:
    import tomllib

    return next(iter(tomllib.loads(line).items()))


def test_a_survival_model_records_its_risks_at_the_horizons(tmp_path: Path) -> None:
    from analytics.fit import fit

    study = survival_study(tmp_path / "surv")
    fit(study, progress=False)
    record = FitRecord.from_json((study.models_dir / "cox" / "manifest.json").read_bytes())
    assert record.internal is not None and record.internal["done"] == 3
    n = record.internal["n"]
    for rep in load_replicates(study.models_dir, record):
        assert rep.test_risk is not None and rep.apparent_risk is not None
        assert rep.test_risk.shape == (n, 2) and rep.apparent_risk.shape == (n, 2)
        assert ((rep.test_risk >= 0) & (rep.test_risk <= 1)).all()
        assert (rep.test_risk[:, 1] >= rep.test_risk[:, 0]).all()  # absolute risk grows with the horizon
        np.testing.assert_allclose(rep.apparent_risk, rep.test_risk[rep.index], rtol=1e-12)
        # a higher score is a higher risk
        order = np.argsort(rep.test)
        assert (np.diff(rep.test_risk[order, 0]) >= -1e-12).all()
