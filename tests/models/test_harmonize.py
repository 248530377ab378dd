"""ComBat harmonisation (harmonize = "combat"): agreement with neuroCombat, removal of a planted centre
effect for seen and new centres, no use of labels or held-out patients, config errors, a fit of a study."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from neuroCombat import neuroCombat

from analytics.cohort import load_cohort
from analytics.fit import FitError, fit, predict, required_inputs, stored_predictions
from analytics.models.harmonize import BATCH_COLUMN, ComBat, _eb_batch, covariate_column
from pipeline.config import ConfigError, parse_study
from pipeline.errors import CohortlabError

from model_helpers import make_study, write_cohort_store
from model_leakage import artefacts, differing, perturb_held_out

COLS = [f"img:mean:{j}" for j in range(12)]
BASE = {"study": {"name": "t"}, "manifests": {"patients": "p.csv"},
        "feature_sets": [{"name": n, "modality": "wsi", "encoder": "resnet18", "weights": "random"} for n in ("img", "tiles")]}
SHIFT = {"A": 0.0, "B": 3.0, "C": -2.0, "D": 5.0}
SCALE = {"A": 1.0, "B": 2.5, "C": 0.5, "D": 3.0}


def _table(rng: np.random.Generator, sizes: dict[str, int], p: int = len(COLS)) -> tuple[pd.DataFrame, np.ndarray]:
    """Features with a planted additive and multiplicative effect per centre, an age and a sex effect."""
    batch = np.concatenate([[c] * n for c, n in sizes.items()]).astype(object)
    n = len(batch)
    age = np.round(rng.normal(50, 10, n), 1)
    sex = rng.choice(["F", "M"], n).astype(object)
    base = rng.normal(size=(n, p)) + 0.04 * (age[:, None] - 50) + 0.5 * (sex == "M")[:, None]
    shift = np.array([SHIFT[b] for b in batch])[:, None]
    scale = np.array([SCALE[b] for b in batch])[:, None]
    X = pd.DataFrame(base * scale + shift, columns=COLS[:p])
    X[BATCH_COLUMN] = batch
    X[covariate_column("age")] = age
    X[covariate_column("sex")] = sex
    return X, base


def _reference(X: pd.DataFrame, covariates: bool) -> np.ndarray:
    covars = pd.DataFrame({"site": X[BATCH_COLUMN].to_numpy()})
    kwargs: dict[str, Any] = {}
    if covariates:
        covars["age"] = X[covariate_column("age")].to_numpy()
        covars["sex"] = X[covariate_column("sex")].to_numpy()
        kwargs = {"categorical_cols": ["sex"], "continuous_cols": ["age"]}
    with contextlib.redirect_stdout(io.StringIO()):
        out = neuroCombat(dat=X[COLS].to_numpy(dtype=np.float64).T, covars=covars, batch_col="site", **kwargs)
    return out["data"].T


@pytest.mark.parametrize("covariates", [False, True])
def test_applying_the_fit_to_its_training_rows_reproduces_neurocombat(covariates: bool) -> None:
    X, _ = _table(np.random.default_rng(0), {"A": 30, "B": 20, "C": 12})
    cov = (covariate_column("age"), covariate_column("sex")) if covariates else ()
    step = ComBat(COLS, cov).fit(X)
    out = step.transform(X)
    # the apply step is written from the estimates; neuroCombat's own harmonised output is the truth
    assert np.max(np.abs(out[COLS].to_numpy() - _reference(X, covariates))) < 1e-8
    assert not any(c.startswith("harmonize:") for c in out.columns)


def test_the_new_centre_estimator_is_combats_empirical_bayes() -> None:
    """Estimating a training centre as if it were new, from its rows, gives neuroCombat's gamma* and delta*."""
    X, _ = _table(np.random.default_rng(1), {"A": 25, "B": 25, "C": 15})
    step = ComBat(COLS, (covariate_column("age"),)).fit(X)
    _, s, _ = step._standardise(X)
    batch = X[BATCH_COLUMN].to_numpy()
    for i, b in enumerate(step.batches_):
        gamma, delta, source = _eb_batch(s[batch == b], step.prior_)
        assert source == "own features"
        np.testing.assert_allclose(gamma, step.gamma_star_[i], rtol=0, atol=1e-10)
        np.testing.assert_allclose(delta, step.delta_star_[i], rtol=0, atol=1e-10)


def _centre_moments(F: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per centre, the mean over features of the centre's feature means and of its feature SDs."""
    centres = sorted(set(batch))
    means = np.array([F[batch == c].mean(axis=0).mean() for c in centres])
    sds = np.array([F[batch == c].std(axis=0, ddof=1).mean() for c in centres])
    return means, sds


def test_a_planted_centre_effect_is_removed_for_seen_and_new_centres() -> None:
    rng = np.random.default_rng(2)
    train, _ = _table(rng, {"A": 80, "B": 80, "C": 80})
    new, _ = _table(rng, {"D": 80})
    step = ComBat(COLS).fit(train)
    both = pd.concat([train, new], ignore_index=True)
    batch = both[BATCH_COLUMN].to_numpy()
    before = both[COLS].to_numpy()
    after = np.vstack([step.transform(train)[COLS].to_numpy(), step.transform(new)[COLS].to_numpy()])
    m0, s0 = _centre_moments(before, batch)
    m1, s1 = _centre_moments(after, batch)
    assert np.ptp(m0) > 5 and s0.max() / s0.min() > 5  # the planted effect is there
    # after: every centre (D never seen in training) has the same location and scale, within sampling error
    assert np.ptp(m1) < 0.15
    assert s1.max() / s1.min() < 1.1
    assert step.new_batch_estimates(new)["D"]["n"] == 80


def test_the_transform_keeps_nothing_of_its_rows_and_is_row_stable_for_seen_centres() -> None:
    rng = np.random.default_rng(3)
    train, _ = _table(rng, {"A": 30, "B": 30})
    held, _ = _table(rng, {"A": 6, "B": 6, "D": 10})
    step = ComBat(COLS, (covariate_column("age"),)).fit(train)
    frozen = pickle.dumps(step)
    whole = step.transform(held)[COLS].to_numpy()
    assert pickle.dumps(step) == frozen  # a new centre's estimates are not kept in the fitted step
    seen = np.flatnonzero(held[BATCH_COLUMN].to_numpy() != "D")
    one_by_one = np.vstack([step.transform(held.iloc[[i]])[COLS].to_numpy() for i in seen])
    assert np.array_equal(one_by_one, whole[seen])


def test_labels_are_never_read() -> None:
    X, _ = _table(np.random.default_rng(4), {"A": 20, "B": 20})
    y = np.arange(40) % 2
    fits = [pickle.dumps(ComBat(COLS).fit(X, labels)) for labels in (None, y, 1 - y)]
    assert fits[0] == fits[1] == fits[2]


def test_small_centres_constant_features_and_too_little_data() -> None:
    rng = np.random.default_rng(5)
    X, _ = _table(rng, {"A": 20, "B": 20, "C": 1})
    X[COLS[3]] = 7.0  # constant on the training rows
    step = ComBat(COLS).fit(X)
    assert step.small_batches_ == {"C": 1} and step.constant_ == [COLS[3]]
    out = step.transform(X)
    assert np.isfinite(out[COLS].to_numpy()).all()
    assert (out[COLS[3]] == 7.0).all()  # passed through unchanged
    one, _ = _table(rng, {"D": 1})
    gamma_delta = step.new_batch_estimates(one)["D"]
    assert "training centres" in gamma_delta["priors"] and np.isfinite(gamma_delta["delta"]).all()
    with pytest.raises(ValueError, match="at least 2 training patients"):
        ComBat(COLS).fit(X.iloc[[0, 25]])
    with pytest.raises(ValueError, match="2 non-constant image features"):
        ComBat(COLS[:1]).fit(X)


# --- study.toml -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "message"), [
    ({"harmonize": "combat", "harmonize_covariates": ["label"]}, "harmonize_covariates cannot hold ['label']"),
    ({"harmonize": "combat", "batch": "label"}, "cannot be a batch"),
    ({"harmonize": "combat", "harmonize_covariates": ["age", "age"]}, "lists a column twice"),
    ({"batch": "site"}, "apply only with harmonize = \"combat\""),
    ({"harmonize_covariates": ["age"]}, "apply only with harmonize = \"combat\""),
    ({"harmonize": "combat", "features": [], "clinical": ["age"]}, "the model has none"),
    ({"harmonize": "combat", "kind": "mil", "features": ["tiles"]}, "not mil"),
])
def test_config_errors_name_the_file_and_the_model(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    model = {"name": "harm", "kind": "svm", "features": ["img"], **entry}
    with pytest.raises(ConfigError) as err:
        parse_study({**BASE, "models": [model]}, tmp_path)
    text = str(err.value)
    assert text.startswith("study.toml: key 'models[0]': model 'harm': ") and message in text


def test_a_model_without_harmonisation_dumps_as_before(tmp_path: Path) -> None:
    study = parse_study({**BASE, "models": [{"name": "m", "kind": "svm", "features": ["img"]},
                                            {"name": "h", "kind": "svm", "features": ["img"], "harmonize": "combat"}]},
                        tmp_path)
    plain, harmonised = (m.model_dump(mode="json") for m in study.models)
    assert not {"harmonize", "batch", "harmonize_covariates"} & set(plain)
    assert harmonised["harmonize"] == "combat" and harmonised["batch"] == "center"


# --- through the study machinery ---------------------------------------------------------------------------------------


def _cohort_data() -> dict[str, Any]:
    """60 patients: training and internal patients from centres A and C, external ones from centre B, each
    centre's image features shifted and scaled; the first two features carry the label."""
    rng = np.random.default_rng(12)
    n = 60
    ids = [f"H{i:02d}" for i in range(n)]
    label = np.array([i % 2 for i in range(n)], dtype=np.int64)
    split = np.array((["train"] * 16 + ["internal"] * 4) * 2 + ["external"] * 20, dtype=object)
    center = np.array(["A"] * 20 + ["C"] * 20 + ["B"] * 20, dtype=object)
    feats = rng.normal(size=(n, 10))
    feats[:, :2] += 1.2 * label[:, None]
    feats = feats * np.array([SCALE[c] for c in center])[:, None] + np.array([SHIFT[c] for c in center])[:, None]
    patients = pl.DataFrame({
        "patient_id": ids, "center": center.tolist(), "label": label, "split": split.tolist(),
        "age": np.round(rng.normal(50, 10, n), 1), "sex": rng.choice(["F", "M"], n).tolist(),
        "marker": np.round(rng.normal(0, 1, n), 3),
    })
    bags = {pid: rng.normal(size=(4, 3)).astype(np.float32) for pid in ids}
    return {"patients": patients, "features": feats.astype(np.float32), "bags": bags, "lacking": [], "ids": ids}


HARMONISED = [
    {"name": "harm", "kind": "logistic", "features": ["img"], "clinical": ["marker"], "harmonize": "combat",
     "harmonize_covariates": ["age", "sex"], "grid": {"C": [0.1, 1.0]}},
    {"name": "harm_svm", "kind": "svm", "features": ["img"], "harmonize": "combat", "grid": {"C": [1.0]},
     "params": {"pca": 3}},
]


@pytest.fixture(scope="module")
def harmonised_studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    data = _cohort_data()
    out = []
    for name, d in (("original", data), ("perturbed", perturb_held_out(data))):
        root = tmp_path_factory.mktemp(name)
        write_cohort_store(root, d)
        study = make_study(root, HARMONISED)
        fit(study, progress=False)
        out.append(study)
    return out[0], out[1]


def test_held_out_patients_change_no_artefact_of_a_harmonised_model(harmonised_studies: tuple[Any, Any]) -> None:
    original, perturbed = harmonised_studies
    a, b = artefacts(original), artefacts(perturbed)
    assert {"harm/model.skops", "harm_svm/model.skops", "harm/train predictions"} <= set(a)
    assert differing(a, b) == []
    held = lambda s: stored_predictions(s.store_path).filter(pl.col("split") != "train")  # noqa: E731
    assert not np.array_equal(held(original)["score"].to_numpy(), held(perturbed)["score"].to_numpy())


def test_a_harmonised_fit_records_its_centres_and_the_centre_effect(harmonised_studies: tuple[Any, Any]) -> None:
    study = harmonised_studies[0]
    rec = json.loads((study.models_dir / "harm" / "harmonize.json").read_text())
    assert rec["training_centres"] == {"A": 16, "C": 16} and rec["covariates"] == ["age", "sex"]
    assert list(rec["new_centres"]) == ["B"] and rec["new_centres"]["B"]["n"] == 20
    assert rec["centre_r2"]["before"]["all"] > 0.5 > 0.05 > rec["centre_r2"]["after"]["all"]
    assert len(rec["pca"]["patient_id"]) == len(rec["pca"]["after_pc1"]) == 60
    # the saved model scores the cohort as it did at fit time (a new centre harmonised from all its patients)
    cohort = load_cohort(study, features=required_inputs(study.models)[0], on_missing="keep")
    again = predict(study, "harm", cohort).sort("patient_id")
    saved = stored_predictions(study.store_path, "harm").sort("patient_id")
    held = saved.filter(pl.col("split") != "train")
    got = again.filter(pl.col("patient_id").is_in(held["patient_id"].to_list()))
    np.testing.assert_allclose(got["score"].to_numpy(), held["score"].to_numpy(), rtol=0, atol=1e-12)


def test_the_leakage_check_catches_a_combat_fitted_on_all_patients(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The deliberate mistake: ComBat estimated on every patient, held-out ones included."""
    real_fit = ComBat.fit
    runs = []
    for name, data in (("original", _cohort_data()), ("perturbed", perturb_held_out(_cohort_data()))):
        everyone = pd.DataFrame(data["features"].astype(np.float64), columns=[f"img:mean:{j}" for j in range(10)])
        everyone[BATCH_COLUMN] = data["patients"]["center"].to_list()

        def leaky_fit(self: ComBat, X: pd.DataFrame, y: Any = None, _all: pd.DataFrame = everyone) -> ComBat:
            return real_fit(self, _all[[*self.features, BATCH_COLUMN]])

        monkeypatch.setattr(ComBat, "fit", leaky_fit)
        write_cohort_store(tmp_path / name, data)
        study = make_study(tmp_path / name, [HARMONISED[1]])
        fit(study, progress=False)
        runs.append(artefacts(study))
    assert {"harm_svm/model.skops", "harm_svm/train predictions"} <= set(differing(*runs))


def test_a_batch_column_the_cohort_lacks_is_an_error_naming_the_model(tmp_path: Path) -> None:
    write_cohort_store(tmp_path, _cohort_data())
    study = make_study(tmp_path, [{**HARMONISED[1], "batch": "scanner"}])
    with pytest.raises(CohortlabError, match="model 'harm_svm'.*batch = \"scanner\" is not a column"):
        fit(study, progress=False)


def test_a_single_training_patient_in_every_centre_is_a_fit_error(tmp_path: Path) -> None:
    data = _cohort_data()
    ids = data["patients"]["patient_id"].to_list()
    patients = data["patients"].with_columns(pl.Series("center", [f"S{i}" for i in range(len(ids))]))
    write_cohort_store(tmp_path, {**data, "patients": patients})
    study = make_study(tmp_path, [HARMONISED[1]])
    with pytest.raises(FitError, match="model 'harm_svm', .*at least 2 training patients in a centre"):
        fit(study, progress=False)
