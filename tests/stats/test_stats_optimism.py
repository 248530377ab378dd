"""Optimism-corrected bootstrap (Harrell 2015; Steyerberg 2019)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from analytics import stats

FITS: list[np.ndarray] = []


class Recording:
    """Logistic regression on columns 1.. that records the ids (column 0) it was fit on."""

    def fit(self, X, y):
        FITS.append(np.asarray(X)[:, 0].astype(int))
        self.model = LogisticRegression(C=1e6, max_iter=5000).fit(np.asarray(X)[:, 1:], y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(np.asarray(X)[:, 1:])


def overfit_data(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    y = rng.binomial(1, expit(0.8 * X[:, 0] - 0.3))
    return X, y


def slope(y, p):
    """Logistic recalibration slope by direct likelihood maximisation (scipy)."""
    lp = np.log(p / (1 - p))

    def nll(b):
        eta = b[0] + b[1] * lp
        return np.sum(np.logaddexp(0, eta) - y * eta)

    def grad(b):
        r = expit(b[0] + b[1] * lp) - y
        return np.array([r.sum(), (r * lp).sum()])

    return minimize(nll, np.array([0.0, 1.0]), jac=grad, method="BFGS",
                    options={"gtol": 1e-10}).x[1]


def test_bookkeeping_against_recorded_fits() -> None:
    X, y = overfit_data(120, 6, 0)
    Xid = np.column_stack([np.arange(120), X])
    FITS.clear()
    res = stats.optimism_corrected(Recording, Xid, y, n_boot=15, seed=1)
    assert len(FITS) == 16
    full = Recording().fit(Xid, y)
    FITS.pop()
    p_app = full.predict_proba(Xid)[:, 1]
    opt_auc, opt_brier, opt_slope = [], [], []
    for ids in FITS[1:]:
        m = LogisticRegression(C=1e6, max_iter=5000).fit(X[ids], y[ids])
        pb, po = m.predict_proba(X[ids])[:, 1], m.predict_proba(X)[:, 1]
        opt_auc.append(roc_auc_score(y[ids], pb) - roc_auc_score(y, po))
        opt_brier.append(np.mean((pb - y[ids]) ** 2) - np.mean((po - y) ** 2))
        opt_slope.append(slope(y[ids], pb) - slope(y, po))
    rows = {r["metric"]: r for r in res.to_dicts()}
    assert rows["auc"]["apparent"] == pytest.approx(roc_auc_score(y, p_app), abs=1e-12)
    assert rows["auc"]["optimism"] == pytest.approx(np.mean(opt_auc), abs=1e-12)
    assert rows["brier"]["optimism"] == pytest.approx(np.mean(opt_brier), abs=1e-12)
    assert rows["slope"]["optimism"] == pytest.approx(np.mean(opt_slope), abs=1e-5)
    for r in rows.values():
        assert r["corrected"] == pytest.approx(r["apparent"] - r["optimism"], abs=1e-15)
        assert r["n_boot"] == 15


def test_overfit_model_is_corrected_towards_external_performance() -> None:
    X, y = overfit_data(150, 15, 2)
    factory = lambda: LogisticRegression(C=1e6, max_iter=5000)  # noqa: E731
    table = stats.optimism_corrected(factory, X, y, n_boot=25, seed=0)
    res = {r["metric"]: r for r in table.to_dicts()}
    # Unpenalised logistic regression is perfectly calibrated on its own data.
    assert res["slope"]["apparent"] == pytest.approx(1.0, abs=1e-4)
    assert res["slope"]["corrected"] < 0.9
    assert res["auc"]["corrected"] < res["auc"]["apparent"]
    assert res["brier"]["corrected"] > res["brier"]["apparent"]
    # External check on a large sample from the same model.
    Xe, ye = overfit_data(20_000, 15, 99)
    pe = factory().fit(X, y).predict_proba(Xe)[:, 1]
    assert abs(res["auc"]["corrected"] - roc_auc_score(ye, pe)) < abs(
        res["auc"]["apparent"] - roc_auc_score(ye, pe))


def test_deterministic_and_seed_dependent() -> None:
    X, y = overfit_data(80, 4, 3)
    est = LogisticRegression(C=1.0)
    a = stats.optimism_corrected(est, X, y, n_boot=10, seed=5)
    b = stats.optimism_corrected(est, X, y, n_boot=10, seed=5)
    c = stats.optimism_corrected(est, X, y, n_boot=10, seed=6)
    assert a.write_json() == b.write_json()
    assert a.write_json() != c.write_json()
    with pytest.raises(ValueError, match="unknown metric"):
        stats.optimism_corrected(est, X, y, n_boot=2, metrics=("auc", "r2"))
    with pytest.raises(ValueError, match="lengths differ"):
        stats.optimism_corrected(est, X[:-1], y, n_boot=2)
