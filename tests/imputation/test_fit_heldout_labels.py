"""The imputation never sees a held-out label (Hoogland et al. 2020; the issue's acceptance test).

Permuting the outcomes of the held-out patients (internal and external) changes none of their imputed values and
none of their predictions, on any completion; permuting those of one outer fold's patients changes none of that
fold's out-of-fold predictions. Binary and survival outcomes (event indicator and Nelson-Aalen in the chains).
With ``validation_imputation = "with_outcome"`` each held-out split is instead imputed on its own, with its own
outcomes, and nothing else.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.cohort import load_cohort
from analytics.fit import fit_model, outer_folds
from analytics.fit_plan import labels as cohort_labels
from analytics.fit_plan import survival as cohort_survival
from analytics.models import imputed
from analytics.models.data import assemble

N = 120
IMPUTATION = '[imputation]\nmethod = "mice"\nm = 3\nmaxit = 2\nauxiliary = ["helper"]\n'


def _frame() -> pl.DataFrame:
    rng = np.random.default_rng(21)
    x = rng.normal(size=N)
    label = (rng.random(N) < 1 / (1 + np.exp(-x))).astype(int)
    t_event = rng.exponential(20.0 / np.exp(0.8 * x))
    t_cens = rng.uniform(3, 40, N)
    return pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": np.where(np.arange(N) < 90, "A", "B"),
        "x": [None if i % 4 == 1 else round(float(v), 4) for i, v in enumerate(x)],
        "age": rng.normal(60, 8, N).round(1), "helper": (x + rng.normal(0, 0.7, N)).round(3),
        "label": label, "time": np.minimum(t_event, t_cens).round(3), "event": (t_event <= t_cens).astype(int),
    })


@pytest.fixture(scope="module", params=["binary", "survival"])
def setting(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    endpoint = request.param
    kind = 'kind = "logistic"\nparams = { penalty = "none" }' if endpoint == "binary" else 'kind = "cox"'
    body = f'[[models]]\nname = "m"\n{kind}\nclinical = ["x", "age"]\n[validation]\nfolds = 3\n' + IMPUTATION
    root = tmp_path_factory.mktemp(endpoint)
    study = build_study(root, _frame(), "c.label, c.time, c.event, c.x, c.age, c.helper",
                        study_toml("held", 3, body, study=f'endpoint = "{endpoint}"'))
    cohort = load_cohort(study)
    spec = study.model("m")
    inputs = imputed.with_auxiliary(spec, cohort.frame, assemble(spec, cohort, {}), "cohort")
    target = cohort_labels(cohort) if endpoint == "binary" else cohort_survival(cohort)
    strata = target if endpoint == "binary" else target[:, 1]
    train = np.asarray(cohort.split) == "train"
    plan = replace(outer_folds(np.asarray(cohort.patient_ids, dtype=object)[train], strata[train], 3, 3),
                   endpoint=endpoint)
    horizons = [8.0, 15.0] if endpoint == "survival" else []
    out = (spec, inputs, target, np.asarray(cohort.split), plan, horizons)
    return (*out, _fit(out, target))  # the fit on the true outcomes, shared by both tests


def _fit(setting, target: np.ndarray):
    spec, inputs, _, split, plan, horizons = setting[:6]
    return fit_model(spec, inputs, target, split, plan, 3, horizons=horizons)


def _permuted(target: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    out = target.copy()
    out[rows] = target[np.random.default_rng(seed).permutation(rows)]
    assert not np.array_equal(out, target)
    return out


def test_held_out_outcomes_reach_no_imputed_value_and_no_prediction(setting) -> None:
    spec, inputs, target, split, plan, _, base = setting
    held = np.flatnonzero(split != "train")
    other = _fit(setting, _permuted(target, held, 1))
    # the held-out patients' completed values, on every completion, are the same
    a = base.learner.completions(inputs.data.take(held))
    b = other.learner.completions(inputs.data.take(held))
    assert a is not None and len(a) == 3
    for ta, tb in zip(a, b, strict=True):
        assert ta.equals(tb)
    assert not a[0].equals(a[1])  # the completions do differ from one another
    if spec.traits.survival:  # absolute risks per completion too; their mean is the horizon risk
        risks = base.imputed_horizon_risks
        assert risks is not None and risks.columns == ["model", "patient_id", "imp", "horizon", "risk"]
        mean = risks.group_by("patient_id", "horizon").agg(pl.col("risk").mean()).sort("patient_id", "horizon")
        kept = base.horizon_risks.sort("patient_id", "horizon")
        np.testing.assert_allclose(mean["risk"].to_numpy(), kept["risk"].to_numpy(), rtol=0, atol=1e-12)
    # ... and so are their predictions, per completion and pooled
    for frame in ("predictions", "imputed_predictions", "imputed_horizon_risks"):
        fa, fb = getattr(base, frame), getattr(other, frame)
        if fa is None:
            assert fb is None
            continue
        assert fa.equals(fb), frame  # training labels are unchanged, so every row is the same


@pytest.mark.parametrize("setting", ["binary"], indirect=True)  # one endpoint is enough here (suite time)
def test_an_outer_folds_outcomes_reach_none_of_its_out_of_fold_predictions(setting) -> None:
    spec, inputs, target, split, plan, _, base = setting
    fold0 = {p for p, k in plan.fold_of().items() if k == 0}
    rows = np.flatnonzero([p in fold0 for p in inputs.data.patient_ids])
    other = _fit(setting, _permuted(target, rows, 2))
    ids = sorted(fold0)
    for frame in ("predictions", "imputed_predictions"):
        fa = getattr(base, frame).filter(pl.col("patient_id").is_in(ids)).sort("patient_id", *(
            ["imp"] if frame.startswith("imputed") else []))
        fb = getattr(other, frame).filter(pl.col("patient_id").is_in(ids)).sort("patient_id", *(
            ["imp"] if frame.startswith("imputed") else []))
        assert fa.height > 0 and fa.equals(fb), frame
    # the other folds' models did see these outcomes (as training labels): their predictions move
    rest = base.predictions.filter(~pl.col("patient_id").is_in(ids) & (pl.col("split") == "train"))
    moved = other.predictions.filter(~pl.col("patient_id").is_in(ids) & (pl.col("split") == "train"))
    assert not rest.equals(moved)


@pytest.mark.parametrize("setting", ["binary"], indirect=True)
def test_with_outcome_imputes_each_held_out_split_on_its_own_with_its_outcomes(setting) -> None:
    from analytics.impute import impute

    spec, inputs, target, split, plan, horizons, base = setting
    own = (spec.model_copy(), *setting[1:6])
    own[0]._imputation = spec.imputation.model_copy(update={"validation_imputation": "with_outcome"})
    own[0]._imputation_seed = spec.imputation_seed
    fitted = _fit(own, target)
    held = np.flatnonzero(split != "train")
    tables = fitted.learner.completions(inputs.data.take(held))
    # the internal split's completions are those of chains run on the internal patients alone, with their outcome
    internal = np.flatnonzero(split[held] == "internal")
    part = inputs.data.take(held[internal])
    frame = pl.concat([imputed._chain_frame(part.table, ["x", "age", "aux:helper"]),
                       imputed._outcome(target[held[internal]])], how="horizontal")
    seed = imputed.stream_seed(spec.imputation_seed, ("with_outcome", *part.patient_ids))
    direct = impute(frame, fitted.learner._settings(seed, frame.columns, {}))
    for i in range(3):
        np.testing.assert_array_equal(tables[i]["x"].to_numpy()[internal], direct.complete(i + 1)["x"].to_numpy())
    # out-of-fold predictions are untouched: they are imputed without outcome as before
    train = base.predictions.filter(pl.col("split") == "train")
    assert train.equals(fitted.predictions.filter(pl.col("split") == "train"))
    # held-out outcomes now shape held-out imputations: permuting them moves the held-out predictions
    moved = _fit(own, _permuted(target, held, 1))
    a = fitted.predictions.filter(pl.col("split") != "train")
    b = moved.predictions.filter(pl.col("split") != "train")
    assert not a.equals(b)
