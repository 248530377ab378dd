"""Fit speed without changing a result: vectorised patient-level inner folds (pinned for a seed), warm starts
along the logistic C path (the same choice as a cold search), and outer folds on local processes or Ray
with the same bytes as in this process."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config import Model

from model_helpers import make_study, write_cohort_store

Y20 = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0])
IDS20 = np.array([f"P{i:02d}" for i in range(20)], dtype=object)


def test_inner_folds_are_pinned_for_a_seed_and_stratified_within_one_patient() -> None:
    from analytics.models.tuning import stratified_folds

    fold = stratified_folds(Y20, IDS20, 3, 7)
    assert fold.tolist() == [2, 2, 2, 2, 1, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 1, 1, 1, 2, 1]
    # by hand: the 6 positives are dealt 2, 2, 2 and the 14 negatives 5, 5, 4 over the folds
    for label in (0, 1):
        sizes = np.bincount(fold[Y20 == label], minlength=3)
        assert sizes.max() - sizes.min() <= 1, (label, sizes)
    assert np.bincount(fold).tolist() == [7, 7, 6]
    assert stratified_folds(Y20, IDS20, 3, 8).tolist() != fold.tolist()  # the seed draws them


def test_inner_folds_keep_a_patient_together_whatever_the_row_order() -> None:
    from analytics.models.tuning import stratified_folds

    rng = np.random.default_rng(0)
    groups = np.repeat(IDS20, 3)  # three rows per patient
    y = np.repeat(Y20, 3)
    fold = dict(zip(groups, stratified_folds(y, groups, 3, 7)))
    order = rng.permutation(len(groups))
    shuffled = stratified_folds(y[order], groups[order], 3, 7)
    assert all(fold[g] == f for g, f in zip(groups[order], shuffled))
    assert Counter(fold.values()) == Counter([2, 2, 2, 2, 1, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 1, 1, 1, 2, 1])


def test_fit_key_holds_the_fold_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics.fit_plan import fit_key
    from analytics.models import tuning
    from analytics.outer_folds import OuterFolds

    spec = Model(name="m", kind="logistic", clinical=["a"])
    plan = OuterFolds(("a", "b"), (0, 1), 2, 0)
    before = fit_key(spec, "c", plan, 0, {})
    monkeypatch.setattr(tuning, "FOLDS_VERSION", tuning.FOLDS_VERSION + 1)
    assert fit_key(spec, "c", plan, 0, {}) != before  # fits tuned on other folds are refitted


class _CountingScaler(StandardScaler):
    fits = 0

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> _CountingScaler:
        type(self).fits += 1
        return super().fit(X, y, sample_weight)


def _logistic_data(n: int = 400, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)) * np.array([1, 3, 10, 1, 1, 0.5])
    y = (X @ np.array([0.8, -0.3, 0.05, 0.0, 0.4, 0.0]) + rng.logistic(size=n) > 0).astype(np.int64)
    return pd.DataFrame(X, columns=list("abcdef")), y, np.array([f"p{i}" for i in range(n)], dtype=object)


def test_warm_started_c_path_chooses_and_fits_as_a_cold_grid_search() -> None:
    from analytics.models.tuning import grid_search, inner_splits

    X, y, ids = _logistic_data()
    pipe = Pipeline([("prep", _CountingScaler()), ("clf", LogisticRegression(max_iter=5000, tol=1e-10))])
    grid = {"clf__C": [10.0, 0.001, 0.01, 1.0]}  # not in increasing order: the path sorts it
    _CountingScaler.fits = 0
    warm, chosen, auc, fits = grid_search(pipe, grid, X, y, ids, 3, 0)
    assert _CountingScaler.fits == 3 + 1  # preprocessing fitted once per inner fold, then for the refit
    assert fits == 4 * 3 + 1
    splits = inner_splits(y, ids, 3, 0)
    cold = GridSearchCV(pipe, grid, scoring="roc_auc", cv=splits, refit=True).fit(X, y)
    assert chosen == cold.best_params_
    assert auc == pytest.approx(cold.best_score_, abs=1e-9)
    np.testing.assert_allclose(warm[-1].coef_, cold.best_estimator_[-1].coef_, rtol=1e-12, atol=0)


def test_inner_tasks_on_two_processes_give_the_same_choice() -> None:
    from analytics.models.tuning import grid_search

    X, y, ids = _logistic_data(200)
    pipe = Pipeline([("prep", StandardScaler()), ("clf", LogisticRegression(max_iter=5000))])
    grid = {"clf__C": [0.01, 0.1, 1.0]}
    one = grid_search(pipe, grid, X, y, ids, 3, 0, n_jobs=1)
    two = grid_search(pipe, grid, X, y, ids, 3, 0, n_jobs=2)
    assert one[1:] == two[1:]
    assert one[0][-1].coef_.tobytes() == two[0][-1].coef_.tobytes()


MODELS = [
    {"name": "clin", "kind": "logistic", "clinical": ["age", "sex", "marker"]},  # the default C grid, tuned
    {"name": "boost", "kind": "xgboost", "clinical": ["age", "marker"], "params": {"n_estimators": 30}},
]


def _fitted_files(root: Path, compute: dict[str, Any]) -> dict[str, bytes]:
    """Every file fit writes under models/ (fitted afresh), the manifests without their times."""
    import json
    import shutil

    from analytics.fit import fit
    from pipeline.config_run import Compute

    shutil.rmtree(root / "models", ignore_errors=True)
    study = make_study(root, MODELS).model_copy(update={"compute": Compute(**compute)})
    result = fit(study, progress=False)
    # 3 outer folds and the final refit; each: every grid point on 3 inner folds, then the chosen one refitted
    assert {m.name: m.fits for m in result.models} == {"clin": 4 * (4 * 3 + 1), "boost": 4 * (2 * 3 + 1)}
    out = {}
    for path in sorted((root / "models").rglob("*")):
        if path.is_file() and ".crossfit" not in path.parts:
            raw = path.read_bytes()
            if path.name == "manifest.json":
                record = json.loads(raw)
                assert record["tuning"]["fits"] > 0 and record["tuning"]["fit_seconds"] >= 0
                record.pop("created_at")
                record["tuning"].pop("fit_seconds")
                raw = json.dumps(record, sort_keys=True).encode()
            out[str(path.relative_to(root))] = raw
    return out


def test_model_files_are_the_same_bytes_with_one_and_two_workers(
        tmp_path: Path, cohort_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import analytics.fit_engine as fit_module

    monkeypatch.setattr(fit_module, "PARALLEL_MIN_ROWS", 0)  # a tiny study: still send its fits to workers
    write_cohort_store(tmp_path, cohort_data)
    one = _fitted_files(tmp_path, {"n_jobs": 1})
    two = _fitted_files(tmp_path, {"n_jobs": 2})
    assert sorted(one) == sorted(two) and any(k.endswith("predictions.parquet") for k in one)
    differ = [k for k in one if hashlib.sha256(one[k]).digest() != hashlib.sha256(two[k]).digest()]
    assert differ == []


def _ray_children() -> list[str]:
    """Command lines of this process's descendants that belong to Ray (read from /proc)."""
    parent: dict[int, int] = {}
    command: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while listed
            continue
        parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    mine, out = os.getpid(), []
    for pid, cmd in command.items():
        p = pid
        while p in parent and p not in (0, 1, mine):
            p = parent[p]
        if p == mine and pid != mine and ("ray" in cmd or "gcs_server" in cmd):
            out.append(cmd[:80])
    return out


def test_outer_folds_as_ray_tasks_give_the_same_bytes_and_leave_no_ray_process(
        cohort_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    import analytics.fit_engine as fit_module
    from analytics.fit import Engine, fit_model
    from analytics.models.data import Assembled, Columns, ModelData
    from analytics.outer_folds import outer_folds

    monkeypatch.setattr(fit_module, "PARALLEL_MIN_ROWS", 0)
    X, y, ids = _logistic_data(120)
    data = ModelData(tuple(ids), table=X, columns=Columns(numeric=tuple(X.columns)))
    inputs = Assembled(data, np.ones(len(ids), dtype=bool), {})
    split = np.array(["train"] * 100 + ["internal"] * 20, dtype=object)
    plan = outer_folds(ids[:100], y[:100], 3, 0)
    labels = y.astype(np.float64)
    spec = Model(name="m", kind="logistic", clinical=list(X.columns))
    here = fit_model(spec, inputs, labels, split, plan, 0, engine=Engine(1))
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        with Engine(1, ray="local") as engine:  # the session opened here is reused, not stopped, by the engine
            remote = fit_model(spec, inputs, labels, split, plan, 0, engine=engine)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert here.predictions.equals(remote.predictions)
    assert here.predictions["score"].to_numpy().tobytes() == remote.predictions["score"].to_numpy().tobytes()
    assert here.fits == remote.fits == 4 * (4 * 3 + 1)
    deadline = time.monotonic() + 20
    while _ray_children() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_children() == [], "a Ray process outlived the test"
    assert os.environ.get("RAY_ADDRESS") is None


def test_the_report_states_a_models_fits_and_fit_time() -> None:
    from analytics.report.fitted import fit_cost

    assert fit_cost({"fits": 52, "fit_seconds": 1.234}) == "; 52 fits in 1.2 s"
    assert fit_cost({"grid": {"C": [1.0]}}) == ""  # a record written before fits were counted: nothing shown


class _Diverging:
    """A learner whose fit fails on some training sets, as a solver that does not converge would."""

    def __init__(self, spec: Model, seed: int) -> None:
        self.kind = spec.kind

    def fit(self, data: Any, y: np.ndarray) -> _Diverging:
        if len(y) > 90:
            raise ValueError("the solver did not converge")
        return self


def test_a_fit_that_fails_in_a_worker_is_the_fit_stages_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import analytics.fit_engine as fit_module
    from analytics.fit import Engine, FitError, fit_model
    from analytics.models.data import Assembled, Columns, ModelData
    from analytics.outer_folds import outer_folds

    monkeypatch.setattr(fit_module, "PARALLEL_MIN_ROWS", 0)
    X, y, ids = _logistic_data(120)
    data = ModelData(tuple(ids), table=X, columns=Columns(numeric=tuple(X.columns)))
    split = np.array(["train"] * 100 + ["internal"] * 20, dtype=object)
    spec = Model(name="m", kind="logistic", clinical=list(X.columns))
    with pytest.raises(FitError, match=r"^model 'm', final refit: the solver did not converge$"):
        fit_model(spec, Assembled(data, np.ones(120, dtype=bool), {}), y.astype(np.float64), split,
                  outer_folds(ids[:100], y[:100], 3, 0), 0, make=_Diverging, engine=Engine(2))
