"""Survival models: Cox against lifelines and scikit-survival, the Cox loss against lifelines' partial
likelihood, mil_cox on a planted signal, and out-of-fold risks that never see their own fold's outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch
from lifelines import CoxPHFitter

from analytics.fit import OuterFolds, fit_model
from analytics.models.data import Assembled, Columns, ModelData
from analytics.models.survival import (
    MILCox,
    SurvivalLearner,
    SurvivalModel,
    cox_loss,
    cox_partial_loglik,
    harrell_c,
)
from pipeline.config import Model


def _cox_data(n: int = 300, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    beta = np.array([0.8, -0.5, 0.0])
    t_event = rng.exponential(1.0 / np.exp(X @ beta))
    t_cens = rng.exponential(1.5, size=n)
    time = np.minimum(t_event, t_cens)
    if ties:
        time = np.ceil(time * 4) / 4
    return X, time, (t_event <= t_cens).astype(np.int64)


def test_cox_coefficients_match_scikit_survival_and_risk_matches_lifelines() -> None:
    X, time, event = _cox_data()
    model = SurvivalModel("cox", {}, 0).fit(X, time, event)
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    y = np.empty(len(time), dtype=[("event", bool), ("time", float)])
    y["event"], y["time"] = event.astype(bool), time
    ref = CoxPHSurvivalAnalysis(ties="efron").fit(X, y)
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-4)
    # absolute risk at horizons from the Breslow baseline = lifelines' survival function
    # lifelines run to convergence (its default precision stops 2e-5 short of coxph's coefficients)
    cph = CoxPHFitter().fit(pd.DataFrame(X, columns=["a", "b", "c"]).assign(T=time, E=event), "T", "E",
                            fit_options={"precision": 1e-12})
    horizons = [0.3, 0.8, 1.5]
    full = cph.predict_survival_function(pd.DataFrame(X[:20], columns=["a", "b", "c"]))  # step function, rows = times
    surv = np.array([full.loc[full.index <= t].iloc[-1].to_numpy() for t in horizons]).T
    np.testing.assert_allclose(model.risk_at(X[:20], horizons), 1.0 - surv, atol=1e-6)


def test_penalised_cox_shrinks_coefficients() -> None:
    X, time, event = _cox_data()
    free = SurvivalModel("cox", {}, 0).fit(X, time, event).coef_
    shrunk = SurvivalModel("cox", {"penalizer": 1.0}, 0).fit(X, time, event).coef_
    assert np.abs(shrunk).sum() < 0.7 * np.abs(free).sum()


def test_cox_loss_equals_lifelines_partial_likelihood() -> None:
    X, time, event = _cox_data(n=40, seed=3)  # continuous times: no ties, so Efron = Breslow
    assert len(np.unique(time)) == len(time)
    cph = CoxPHFitter().fit(pd.DataFrame(X, columns=["a", "b", "c"]).assign(T=time, E=event), "T", "E")
    eta = torch.tensor(X @ cph.params_.to_numpy(), dtype=torch.float64)
    ll = cox_partial_loglik(eta, torch.tensor(time), torch.tensor(event))
    assert float(ll) == pytest.approx(cph.log_likelihood_, abs=1e-8)
    loss = cox_loss(eta, torch.tensor(time), torch.tensor(event))
    assert float(loss) == pytest.approx(-cph.log_likelihood_ / event.sum(), abs=1e-10)


def test_cox_loss_breslow_ties_by_hand() -> None:
    # times 1, 1, 2, 3; events 1, 1, 0, 1; eta 0.1, 0.2, 0.3, 0.4
    eta = np.array([0.1, 0.2, 0.3, 0.4])
    e = np.exp(eta)
    by_hand = (0.1 - np.log(e.sum())) + (0.2 - np.log(e.sum())) + (0.4 - np.log(e[3]))
    ll = cox_partial_loglik(torch.tensor(eta), torch.tensor([1.0, 1.0, 2.0, 3.0]), torch.tensor([1, 1, 0, 1]))
    assert float(ll) == pytest.approx(by_hand, abs=1e-12)
    # order of the patients does not matter
    perm = [3, 1, 0, 2]
    ll2 = cox_partial_loglik(torch.tensor(eta[perm]), torch.tensor([1.0, 1.0, 2.0, 3.0])[perm],
                             torch.tensor([1, 1, 0, 1])[perm])
    assert float(ll2) == pytest.approx(by_hand, abs=1e-12)


def _bags(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Bags of 20 noise instances; a bag holding the planted instance has a 4x hazard."""
    rng = np.random.default_rng(seed)
    dim = 8
    planted = np.zeros(dim, dtype=np.float32)
    planted[0] = 4.0
    bags, has = [], rng.random(n) < 0.5
    for h in has:
        b = rng.normal(size=(20, dim)).astype(np.float32)
        if h:
            b[rng.integers(20)] = planted + rng.normal(scale=0.1, size=dim).astype(np.float32)
        bags.append(b)
    t_event = rng.exponential(1.0 / np.exp(np.log(4.0) * has))
    t_cens = rng.exponential(2.0, size=n)
    return bags, np.minimum(t_event, t_cens), (t_event <= t_cens).astype(np.int64)


def test_mil_cox_finds_a_planted_signal_instance() -> None:
    bags, time, event = _bags(160, seed=1)
    model = MILCox(hidden=32, attention_dim=16, max_epochs=40, patience=8, seed=0, device="cpu", lr=2e-3)
    model.fit(bags, np.column_stack([time, event]))
    test_bags, t_test, e_test = _bags(120, seed=2)
    assert harrell_c(t_test, e_test, model.risk(test_bags)) > 0.62
    # the planted instance carries the bag's attention
    w = model.attention(test_bags)
    hits = [int(np.argmax(wi) == np.argmax(b[:, 0])) for wi, b in zip(w, test_bags) if b[:, 0].max() > 3.0]
    assert np.mean(hits) > 0.8
    risk = model.risk_at(test_bags, [0.5, 1.0])
    assert ((risk >= 0) & (risk <= 1)).all() and (risk[:, 1] >= risk[:, 0]).all()


@pytest.mark.parametrize("kind", ["cox", "coxnet", "rsf", "xgboost_cox"])
def test_tabular_survival_learners_rank_a_real_signal(kind: str) -> None:
    X, time, event = _cox_data(n=300, seed=5)
    table = pd.DataFrame(X, columns=["a", "b", "c"])
    data = ModelData(tuple(f"p{i:03d}" for i in range(len(time))), table=table,
                     columns=Columns(numeric=("a", "b", "c")))
    tr, te = np.arange(200), np.arange(200, 300)
    params = {"n_estimators": 50} if kind in ("rsf", "xgboost_cox") else {}
    learner = SurvivalLearner(kind, params, {}, seed=0).fit(data.take(tr), np.column_stack([time, event])[tr])
    assert harrell_c(time[te], event[te], learner.predict_score(data.take(te))) > 0.65
    risk = learner.risk_at(data.take(te), [0.5, 1.0])
    assert ((risk >= 0) & (risk <= 1)).all() and (risk[:, 1] >= risk[:, 0] - 1e-12).all()


@pytest.mark.parametrize("kind", ["cox", "rsf", "mil_cox"])
def test_oof_risk_of_a_fold_ignores_that_folds_outcomes(kind: str) -> None:
    """Redrawing fold 0's times and events leaves fold 0's out-of-fold risks (and horizon risks) unchanged."""
    n = 60
    bags, time, event = _bags(n, seed=7)
    ids = tuple(f"p{i:03d}" for i in range(n))
    if kind == "mil_cox":
        inst = tuple(pl.DataFrame({"source_id": [f"s{i}"] * len(b), "instance": list(range(len(b))),
                                   "x": [0] * len(b), "y": [0] * len(b), "z": [0] * len(b)})
                     for i, b in enumerate(bags))
        data = ModelData(ids, bags=tuple(bags), instances=inst)
        spec = Model(name="m", kind=kind, features=["fs"], params={"max_epochs": 3, "hidden": 8,
                                                                     "attention_dim": 4, "device": "cpu"})
    else:
        table = pd.DataFrame(np.stack([b.mean(axis=0) for b in bags])[:, :3], columns=["a", "b", "c"])
        data = ModelData(ids, table=table, columns=Columns(numeric=("a", "b", "c")))
        spec = Model(name="m", kind=kind, clinical=["a", "b", "c"],
                     params={"n_estimators": 20} if kind == "rsf" else {})
    inputs = Assembled(data, np.ones(n, dtype=bool), {})
    split = np.array(["train"] * 48 + ["internal"] * 12, dtype=object)
    folds = tuple(i % 3 for i in range(48))
    plan = OuterFolds(ids[:48], folds, 3, 0, "survival")
    y = np.column_stack([time, event]).astype(np.float64)
    first = fit_model(spec, inputs, y, split, plan, seed=0, horizons=[0.5, 1.0])
    rng = np.random.default_rng(11)
    y2 = y.copy()
    in_fold0 = np.array([i < 48 and folds[i] == 0 for i in range(n)])
    y2[in_fold0, 0] = rng.exponential(1.0, size=in_fold0.sum())
    y2[in_fold0, 1] = rng.integers(0, 2, size=in_fold0.sum())
    second = fit_model(spec, inputs, y2, split, plan, seed=0, horizons=[0.5, 1.0])
    fold0 = {ids[i] for i in np.flatnonzero(in_fold0)}
    a = first.predictions.filter(first.predictions["patient_id"].is_in(list(fold0))).sort("patient_id")
    b = second.predictions.filter(second.predictions["patient_id"].is_in(list(fold0))).sort("patient_id")
    np.testing.assert_array_equal(a["score"].to_numpy(), b["score"].to_numpy())
    ra = first.horizon_risks.filter(first.horizon_risks["patient_id"].is_in(list(fold0))).sort("patient_id", "horizon")
    rb = second.horizon_risks.filter(second.horizon_risks["patient_id"].is_in(list(fold0))).sort("patient_id", "horizon")
    np.testing.assert_array_equal(ra["risk"].to_numpy(), rb["risk"].to_numpy())
    # and the check can fail: another fold's scores do change
    other = [p for p in ids[:48] if p not in fold0]
    a1 = first.predictions.filter(first.predictions["patient_id"].is_in(other)).sort("patient_id")["score"].to_numpy()
    b1 = second.predictions.filter(second.predictions["patient_id"].is_in(other)).sort("patient_id")["score"].to_numpy()
    assert not np.array_equal(a1, b1)


def test_mil_cox_pickles_to_the_same_bytes_and_predictions() -> None:
    import pickle

    bags, time, event = _bags(40, seed=4)
    model = MILCox(hidden=8, attention_dim=4, max_epochs=3, seed=0, device="cpu").fit(bags, np.column_stack([time, event]))
    again = MILCox(hidden=8, attention_dim=4, max_epochs=3, seed=0, device="cpu").fit(bags, np.column_stack([time, event]))
    assert pickle.dumps(model) == pickle.dumps(again)
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.risk(bags), model.risk(bags))
    np.testing.assert_array_equal(loaded.risk_at(bags, [1.0]), model.risk_at(bags, [1.0]))


def test_model_endpoints_from_kind_study_and_members() -> None:
    from pipeline.config import parse_study

    data = {"study": {"name": "e", "endpoint": "binary"}, "manifests": {"patients": "p.csv"},
            "models": [{"name": "cox", "kind": "cox", "clinical": ["a"]},
                       {"name": "lr", "kind": "logistic", "clinical": ["a"]},
                       {"name": "cox2", "kind": "rsf", "clinical": ["a"]},
                       {"name": "stack", "kind": "stacking", "members": ["cox", "cox2"]},
                       {"name": "fused", "kind": "cox", "scores": ["cox", "lr"]}]}
    study = parse_study(data, Path("."))
    assert [study.endpoint(m) for m in ("cox", "lr", "cox2", "stack", "fused")] == \
        ["survival", "binary", "survival", "survival", "survival"]
    with pytest.raises(ValueError, match="predicts a survival endpoint"):
        Model(name="m", kind="cox", clinical=["a"], endpoint="binary")
    with pytest.raises(ValueError, match="predicts a binary label"):
        Model(name="m", kind="svm", clinical=["a"], endpoint="survival")
