"""Time-to-event models: Cox (lifelines), elastic-net Cox and random survival forests (scikit-survival),
XGBoost with the Cox objective, and attention-MIL trained with the Cox partial likelihood.

Every learner is fitted on ``y`` of shape ``(n, 2)``: follow-up time and event
(1 = event, 0 = censored). Its score (:meth:`predict_score`) is a risk, higher =
worse: the linear predictor of the Cox-type models and the ensemble cumulative
hazard of a random survival forest. :meth:`risk_at` gives the absolute risk
``1 - S(t | x)`` at horizons; the Cox-type models use a Breslow baseline
cumulative hazard estimated on their training patients' linear predictors
(Breslow 1972).

Hyper-parameters in a ``grid`` are chosen by Harrell's C over seeded inner folds
of the training patients, stratified on the event (the same rows the learner is
given, nothing else).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from analytics.models import classical, tuning
from analytics.models.data import ModelData, uninformative
from analytics.models.mil import MILClassifier, MILNet, deterministic
from analytics.models.mil_learner import MILLearner
from analytics.stats.cox_validation import breslow
from pipeline.config import SURVIVAL_KINDS
from pipeline.device import resolve_device
from pipeline.model_kinds import KINDS

log = logging.getLogger("cohortlab.models.survival")

TUNING_CRITERION = "Harrell's C averaged over seeded inner folds of the training patients, stratified on the event"

# defaults per kind (a study's params override them); cox is unpenalised unless a penalizer is given
DEFAULTS: dict[str, dict[str, Any]] = {
    "cox": {"penalizer": 0.0, "l1_ratio": 0.0},
    "coxnet": {"alpha": 0.05, "l1_ratio": 0.5},
    "rsf": {"n_estimators": 200, "min_samples_leaf": 5, "max_features": "sqrt", "max_depth": None},
    "xgboost_cox": {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8,
                    "colsample_bytree": 0.8, "min_child_weight": 1.0, "reg_lambda": 1.0},
}


def as_survival(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an ``(n, 2)`` target into float64 times and int64 events, checked."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"a survival model is fitted on (time, event) pairs, not an array of shape {y.shape}")
    time, event = y[:, 0], y[:, 1]
    if not (np.isfinite(time).all() and np.isfinite(event).all()):
        raise ValueError("a survival model's training patients need a time and an event each")
    if (time < 0).any() or not np.isin(event, (0.0, 1.0)).all():
        raise ValueError("times must be >= 0 and events 0 or 1")
    if event.sum() < 1:
        raise ValueError(f"its {len(time)} training patients hold no event")
    return time, event.astype(np.int64)


# --- the Cox partial likelihood and the Breslow baseline ------------------------------------------


def cox_partial_loglik(eta: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Cox partial log-likelihood with Breslow's handling of ties.

    ``sum over events i of [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)]``
    (Cox 1972; Breslow 1974): tied event times share one risk set, which holds
    every patient whose time is at least theirs. Differentiable in ``eta``.

    Parameters
    ----------
    eta
        Linear predictors (log relative hazards), shape ``(n,)``.
    time, event
        Follow-up times and 0/1 events, shape ``(n,)``.
    """
    order = torch.argsort(time, descending=True, stable=True)
    eta_s, time_s, event_s = eta[order], time[order], event[order].to(eta.dtype)
    # log of the risk-set sums, from the longest time down; ties take the value at their last member
    cum = torch.logcumsumexp(eta_s, dim=0)
    # index of the last patient (in descending order) with the same time: the full risk set of a tie
    n = len(time_s)
    idx = torch.arange(n, device=eta.device)
    same_next = torch.zeros(n, dtype=torch.bool, device=eta.device)
    same_next[:-1] = time_s[1:] == time_s[:-1]
    last = idx.clone()
    for i in range(n - 2, -1, -1):  # small n (one per patient); a loop keeps it obvious
        if same_next[i]:
            last[i] = last[i + 1]
    return torch.sum(event_s * (eta_s - cum[last]))


def cox_loss(eta: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow ties) per event; 0 when no event."""
    n_events = event.sum()
    if float(n_events) == 0:
        return eta.sum() * 0.0
    return -cox_partial_loglik(eta, time, event) / n_events


def risk_from_baseline(eta: np.ndarray, base_times: np.ndarray, base_hazard: np.ndarray,
                       horizons: Sequence[float]) -> np.ndarray:
    """``1 - exp(-H0(t) exp(eta))`` for every patient (rows) and horizon (columns)."""
    h0 = np.array([base_hazard[base_times <= t][-1] if (base_times <= t).any() else 0.0 for t in horizons])
    return 1.0 - np.exp(-np.outer(np.exp(np.asarray(eta, dtype=np.float64)), h0))


# --- tabular survival models ----------------------------------------------------------------------


def _cox(p: Mapping[str, Any], seed: int) -> Any:
    from lifelines import CoxPHFitter

    return CoxPHFitter(penalizer=float(p["penalizer"]), l1_ratio=float(p["l1_ratio"]))


def _coxnet(p: Mapping[str, Any], seed: int) -> Any:
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    return CoxnetSurvivalAnalysis(l1_ratio=float(p["l1_ratio"]), alphas=[float(p["alpha"])], max_iter=100000)


def _forest(p: Mapping[str, Any], seed: int) -> Any:
    from sksurv.ensemble import RandomSurvivalForest

    return RandomSurvivalForest(n_estimators=int(p["n_estimators"]), min_samples_leaf=int(p["min_samples_leaf"]),
                                max_features=p["max_features"], max_depth=p["max_depth"], random_state=seed,
                                n_jobs=1)


def _xgboost(p: Mapping[str, Any], seed: int) -> Any:
    import xgboost

    return xgboost.XGBRegressor(objective="survival:cox", n_estimators=int(p["n_estimators"]),
                                max_depth=int(p["max_depth"]), learning_rate=float(p["learning_rate"]),
                                subsample=float(p["subsample"]), colsample_bytree=float(p["colsample_bytree"]),
                                min_child_weight=float(p["min_child_weight"]), reg_lambda=float(p["reg_lambda"]),
                                random_state=seed, n_jobs=1, tree_method="hist")


def _fit_newton_cox(model: SurvivalModel, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
    """An unpenalised Cox regression by Newton-Raphson with step halving to convergence, Efron ties, as R's
    ``coxph`` (scikit-survival's solver): lifelines' step-size heuristic stalls short of the maximum on
    collinear columns such as a spline's basis (nwtco: log-likelihood -2011.8 where coxph reaches -1971.8)."""
    from sklearn.exceptions import ConvergenceWarning
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fitted = CoxPHSurvivalAnalysis(alpha=0.0, ties="efron", n_iter=200, tol=1e-12).fit(X, _structured(time, event))
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            log.warning("cox: %s", str(w.message).splitlines()[0])
    model.coef_ = np.asarray(fitted.coef_, dtype=np.float64)
    # centred as coxph centres (nocenter = c(-1, 0, 1)): a column of -1 / 0 / 1 values (a treatment-coded level)
    # keeps 0, so the linear predictor is R's predict(type = "lp"); absolute risks do not depend on it
    X = np.asarray(X, dtype=np.float64)
    coded = np.isin(X, (-1.0, 0.0, 1.0)).all(axis=0)
    model.mean_ = np.where(coded, 0.0, X.mean(axis=0))


def _fit_lifelines(model: SurvivalModel, est: Any, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> Any:
    import pandas as pd

    if float(est.penalizer) == 0.0:
        _fit_newton_cox(model, X, time, event)
        return None

    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])
    frame["_time"], frame["_event"] = time, event
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(frame, duration_col="_time", event_col="_event")
    model.coef_ = est.params_.to_numpy(dtype=np.float64)
    model.mean_ = est._norm_mean.to_numpy(dtype=np.float64)  # lifelines centres the covariates
    # the fitter keeps its training rows and a fit time stamp: keep only what predicts
    return None


def _fit_coxnet(model: SurvivalModel, est: Any, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> Any:
    est.fit(X, _structured(time, event))
    model.coef_ = np.asarray(est.coef_, dtype=np.float64)[:, -1]
    model.mean_ = np.zeros(X.shape[1])
    return est


def _fit_sksurv(model: SurvivalModel, est: Any, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> Any:
    est.fit(X, _structured(time, event))
    return est


def _fit_xgboost(model: SurvivalModel, est: Any, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> Any:
    est.fit(X, np.where(event == 1, time, -time))  # a negative time marks a censored patient
    return est


# the estimator of each tabular survival learner: how it is built from its params and seed, and how it is
# fitted (returning what is kept as ``estimator_``); the kinds' traits are in pipeline/model_kinds.py
_ESTIMATORS: dict[str, tuple[Callable[[Mapping[str, Any], int], Any], Callable[..., Any]]] = {
    "cox": (_cox, _fit_lifelines),
    "coxnet": (_coxnet, _fit_coxnet),
    "rsf": (_forest, _fit_sksurv),
    "xgboost_cox": (_xgboost, _fit_xgboost),
}


def _estimator(kind: str, params: Mapping[str, Any], seed: int) -> Any:
    build = _ESTIMATORS.get(kind, (None, None))[0]
    if build is None:
        raise ValueError(f"unknown survival kind {kind!r}")
    return build({**DEFAULTS.get(kind, {}), **params}, seed)


def _structured(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    out = np.empty(len(time), dtype=[("event", bool), ("time", np.float64)])
    out["event"], out["time"] = event.astype(bool), time
    return out


class SurvivalModel:
    """One fitted survival estimator on a numeric matrix: ``fit(X, time, event)``, ``risk(X)``, ``risk_at(X, t)``."""

    # a fitted Cox regression only (lifelines or coxnet): the linear predictor is (x - mean_) . coef_; other
    # estimators never set them, which is how :meth:`risk` tells them apart
    coef_: np.ndarray
    mean_: np.ndarray

    def __init__(self, kind: str, params: Mapping[str, Any], seed: int) -> None:
        known = set(DEFAULTS[kind])
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {kind}; known: {', '.join(sorted(known))}")
        self.kind, self.params, self.seed = kind, dict(params), seed
        _estimator(kind, params, seed)  # fails early on bad values

    @property
    def _cox_type(self) -> bool:
        """Whether the score is a Cox linear predictor with a Breslow baseline (the forest has its own)."""
        return KINDS[self.kind].linear_predictor

    def fit(self, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> SurvivalModel:
        est = _estimator(self.kind, self.params, self.seed)
        self.estimator_ = _ESTIMATORS[self.kind][1](self, est, X, time, event)
        if self._cox_type:
            self.base_times_, self.base_hazard_ = breslow(self.risk(X), time, event)
        return self

    # saved (analytics.models.persist) with an XGBoost booster as XGBoost's own JSON, rebuilt on load
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if hasattr(state.get("estimator_"), "get_booster"):
            state["estimator_"] = classical.xgboost_json(state["estimator_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(state.get("estimator_"), str):
            self.estimator_ = classical.from_xgboost_json(_estimator(self.kind, self.params, self.seed),
                                                          state["estimator_"])

    def risk(self, X: np.ndarray) -> np.ndarray:
        """Risk score: the linear predictor (Cox-type), the ensemble cumulative hazard (forest)."""
        if hasattr(self, "coef_"):  # a Cox regression: (x - mean) . beta
            return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.coef_
        if not self._cox_type:
            return np.asarray(self.estimator_.predict(X), dtype=np.float64)
        return np.asarray(self.estimator_.predict(X, output_margin=True), dtype=np.float64)

    def risk_at(self, X: np.ndarray, horizons: Sequence[float]) -> np.ndarray:
        """``1 - S(t | x)`` per row and horizon."""
        if not self._cox_type:
            fns = self.estimator_.predict_survival_function(X)
            lo = self.estimator_.unique_times_[0]
            return np.array([[1.0 - (fn(max(t, lo)) if t >= lo else 1.0) for t in horizons] for fn in fns])
        return risk_from_baseline(self.risk(X), self.base_times_, self.base_hazard_, horizons)


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of a risk (higher = earlier event), for choosing grid points."""
    from lifelines.utils import concordance_index

    return float(concordance_index(time, -np.asarray(risk), event))


def select_survival(fit_score: Callable[[dict[str, Any], np.ndarray, np.ndarray], np.ndarray],
                    grid: Mapping[str, Sequence[Any]], time: np.ndarray, event: np.ndarray, folds: int,
                    seed: int) -> tuple[dict[str, Any], float | None]:
    """The grid point with the best mean inner-fold Harrell's C (folds stratified on the event, seeded)."""
    points = tuning.grid_points(grid)
    k = int(min(folds, event.sum(), (1 - event).sum()))
    if len(points) <= 1 or k < 2:
        return (points[0] if points else {}), None
    splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(event)), event))
    best, best_c = points[0], -np.inf
    for point in points:
        cs = [harrell_c(time[te], event[te], fit_score(point, tr, te)) for tr, te in splits if event[te].sum() > 0]
        mean = float(np.mean(cs)) if cs else -np.inf
        if mean > best_c:
            best, best_c = point, mean
    return best, best_c


class SurvivalLearner:
    """A tabular survival model (``cox``, ``coxnet``, ``rsf``, ``xgboost_cox``) behind the learners' interface.

    The input table is imputed, scaled and one-hot encoded on the training rows
    (:func:`analytics.models.classical.preprocessor`), then the estimator is fitted. A Cox regression's
    clinical columns go through its formula's design instead (:func:`analytics.models.classical.
    regression_preprocessor`; ``a + b + c`` without a formula): treatment coding against a reference level,
    since a Cox model has no intercept and one column per level would sum to a constant; standardised only
    when penalised.
    """

    def __init__(self, kind: str, params: Mapping[str, Any], grid: Mapping[str, list[Any]], seed: int) -> None:
        self.kind = kind
        self.params = {k: v for k, v in params.items() if k not in ("inner_folds", "pca")}
        self.pca = params.get("pca")
        self.inner_folds = int(params.get("inner_folds", tuning.DEFAULT_INNER_FOLDS))
        self.grid = dict(grid)
        self.seed = seed
        SurvivalModel(kind, {**self.params, **tuning.first_point(self.grid)}, seed)

    def _fit_rows(self, data: ModelData, time: np.ndarray, event: np.ndarray, point: Mapping[str, Any]) -> tuple[Any, SurvivalModel]:
        params = {**self.params, **point}
        if KINDS[self.kind].regression == "cox":
            penalised = float(params.get("penalizer", DEFAULTS[self.kind]["penalizer"])) > 0
            prep = classical.regression_preprocessor(self.columns_, self.pca, self.seed, penalised)
        else:
            prep = classical.preprocessor(self.columns_, self.pca, self.seed,
                                          classical.one_hot_levels(data.table, self.columns_))
        X = np.asarray(prep.fit_transform(data.table), dtype=np.float64)
        # keep_: columns kept of a Cox model saved before its design (one-hot blocks less their first level)
        self.keep_ = None
        return prep, SurvivalModel(self.kind, params, self.seed).fit(X, time, event)

    def fit(self, data: ModelData, y: np.ndarray) -> SurvivalLearner:
        if data.table is None or data.columns is None:
            raise ValueError(f"a {self.kind} model needs an input table")
        time, event = as_survival(y)
        self.dropped_ = uninformative(data.table, data.columns)
        self.columns_ = data.columns.without(list(self.dropped_))
        if not self.columns_.all:
            raise ValueError(f"every input column is constant or missing on its {len(y)} training patients")

        def fit_score(point: dict[str, Any], tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            prep, model = self._fit_rows(data.take(tr), time[tr], event[tr], point)
            X = np.asarray(prep.transform(data.take(te).table), dtype=np.float64)
            return model.risk(X if self.keep_ is None else X[:, self.keep_])

        self.chosen_, self.inner_auc_ = select_survival(fit_score, self.grid, time, event, self.inner_folds,
                                                        self.seed)
        self.prep_, self.model_ = self._fit_rows(data, time, event, self.chosen_)
        return self

    def _X(self, data: ModelData) -> np.ndarray:
        X = np.asarray(self.prep_.transform(data.table), dtype=np.float64)
        return X if self.keep_ is None else X[:, self.keep_]

    def predict_score(self, data: ModelData) -> np.ndarray:
        return self.model_.risk(self._X(data))

    def risk_at(self, data: ModelData, horizons: Sequence[float]) -> np.ndarray:
        return self.model_.risk_at(self._X(data), horizons)

    @property
    def chosen(self) -> dict[str, Any]:
        return {**self.params, **self.chosen_}


# --- attention-MIL with the Cox partial likelihood ------------------------------------------------


class MILCox(MILClassifier):
    """Attention-MIL (:class:`~analytics.models.mil.MILClassifier`'s network) trained by the Cox partial likelihood.

    The bag's output is its log relative hazard. Each optimisation step uses a
    batch of ``batch_size`` bags and the Cox loss over that batch's risk sets
    (Breslow ties); early stopping on the loss of a held-out, event-stratified
    share of the bags. ``class_weight`` does not apply.
    """

    def __init__(self, batch_size: int = 32, class_weight: str | None = None, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, class_weight=class_weight, **kwargs)

    def fit(self, bags: Any, y: Any) -> MILCox:
        """Train on bags and an ``(n, 2)`` array of times and events."""
        data = list(bags)
        time, event = as_survival(np.asarray(y))
        if len(data) != len(time):
            raise ValueError(f"{len(data)} bags but {len(time)} outcomes")
        device = resolve_device(self.device)
        with deterministic(device, self.seed):
            self._fit_cox(data, time, event, device)
        return self

    def _fit_cox(self, bags: list[np.ndarray], time: np.ndarray, event: np.ndarray, device: torch.device) -> None:
        fit_idx, val_idx = self._split(event)
        if len(val_idx) and event[val_idx].sum() == 0:
            fit_idx, val_idx = np.arange(len(event)), np.zeros(0, dtype=np.int64)
        t_all = torch.from_numpy(time.astype(np.float32)).to(device)
        e_all = torch.from_numpy(event.astype(np.float32)).to(device)
        # a batch without an event has no risk set to compare
        self._train(bags, fit_idx, val_idx, device, lambda eta, idx: cox_loss(eta, t_all[idx], e_all[idx]),
                    usable=lambda rows: bool(event[rows].sum() > 0))
        self.base_times_, self.base_hazard_ = breslow(self.risk(bags), time, event)

    # pickled with the network's weights as numpy arrays: torch's own pickling writes a random
    # serialization id, so the bytes of two identical fits would differ
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state.get("net_") is not None:
            state["net_"] = {k: v.detach().cpu().numpy().copy() for k, v in state["net_"].state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.get("net_")
        self.__dict__.update(state)
        if isinstance(weights, dict):
            net = MILNet(int(state["dim_"]), self.hidden, self.attention_dim, self.pooling, self.dropout)
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
            net.eval()
            self.net_ = net

    def risk(self, bags: Any) -> np.ndarray:
        """Log relative hazard of each bag."""
        if self.net_ is None:
            raise RuntimeError("MILCox is not fitted")
        data = list(bags)
        device = resolve_device(self.device)
        with deterministic(device, self.seed):
            net = self.net_.to(device)
            out = self._logits(net, data, device).cpu().numpy().astype(np.float64)
            self.net_ = net.cpu()
        return out

    def risk_at(self, bags: Any, horizons: Sequence[float]) -> np.ndarray:
        return risk_from_baseline(self.risk(bags), self.base_times_, self.base_hazard_, horizons)


class MILCoxLearner(MILLearner):
    """:class:`MILCox` on instance bags behind the learners' interface, grid tuned by inner Harrell's C."""

    kind = "mil_cox"
    estimator = MILCox
    classifier_: MILCox

    def _make(self, point: Mapping[str, Any]) -> MILCox:
        return MILCox(**{"seed": self.seed, **self.params, **point})

    def fit(self, data: ModelData, y: np.ndarray) -> MILCoxLearner:
        if data.bags is None:
            raise ValueError("a mil_cox model needs instance bags")
        bags = data.bags
        time, event = as_survival(y)
        y = np.column_stack([time, event])

        def fit_score(point: dict[str, Any], tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            return self._make(point).fit([bags[i] for i in tr], y[tr]).risk([bags[i] for i in te])

        self.chosen_, self.inner_auc_ = select_survival(fit_score, self.grid, time, event, self.inner_folds,
                                                        self.seed)
        self.classifier_ = self._make(self.chosen_).fit(list(bags), y)
        return self

    def predict_score(self, data: ModelData) -> np.ndarray:
        return self.classifier_.risk(list(data.bags or ()))

    def risk_at(self, data: ModelData, horizons: Sequence[float]) -> np.ndarray:
        return self.classifier_.risk_at(list(data.bags or ()), horizons)


class CoxStacking:
    """Cox meta-learner on member risks (stacking of survival models): ``fit(scores, y)``, ``predict_score``.

    The members' out-of-fold scores (linear predictors or other risks) are the covariates of a Cox model
    with a ridge penalty ``1 / (C n)`` on the mean partial log-likelihood (lifelines ``penalizer``; the
    penalty of scikit-learn's logistic regression with the same ``C``); absolute risk from its Breslow baseline.
    """

    def __init__(self, members: Sequence[str], C: float = 1.0, seed: int = 0) -> None:
        self.members = list(members)
        self.C = C
        self.seed = seed

    def fit(self, scores: np.ndarray, y: np.ndarray) -> CoxStacking:
        time, event = as_survival(y)
        s = np.asarray(scores, dtype=np.float64)
        self.training_matrix_ = s.copy()
        # the ridge of a logistic meta-learner with the same C: lifelines penalises the mean log-likelihood
        penalizer = 1.0 / (float(self.C) * len(time))
        self.model_ = SurvivalModel("cox", {"penalizer": penalizer}, self.seed).fit(s, time, event)
        return self

    def predict_score(self, scores: np.ndarray) -> np.ndarray:
        return self.model_.risk(np.asarray(scores, dtype=np.float64))

    def risk_at(self, scores: np.ndarray, horizons: Sequence[float]) -> np.ndarray:
        return self.model_.risk_at(np.asarray(scores, dtype=np.float64), horizons)

    @property
    def coefficients(self) -> dict[str, float]:
        """Meta-learner log hazard ratio per member."""
        return dict(zip(self.members, map(float, self.model_.coef_)))


__all__ = ["SURVIVAL_KINDS", "CoxStacking", "MILCox", "MILCoxLearner", "SurvivalLearner", "SurvivalModel", "as_survival",
           "breslow", "cox_loss", "cox_partial_loglik", "harrell_c", "risk_from_baseline", "select_survival"]
