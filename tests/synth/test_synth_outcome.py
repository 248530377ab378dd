"""The synthetic cohort: the outcome depends on the clinical variables and on the image signals."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import CoxPHFitter
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline import synth


def _matrix(patients: list[synth.Patient]) -> dict[str, np.ndarray]:
    igg = np.array([np.nan if p.igg is None else p.igg for p in patients])
    esr = np.array([np.nan if p.esr is None else p.esr for p in patients])
    return {
        "clinical": np.c_[
            [p.age for p in patients], [p.sex == "F" for p in patients],
            np.where(np.isnan(esr), np.nanmean(esr), esr),
            [p.anti_ssa == "positive" for p in patients],
            np.where(np.isnan(igg), np.nanmean(igg), igg),
        ].astype(float),
        "images": np.c_[[p.infiltration for p in patients], [p.lesion for p in patients]],
        "y": np.array([p.high_risk for p in patients]),
        "center": np.array([p.center for p in patients]),
    }


def _external_auc(x: np.ndarray, y: np.ndarray, center: np.ndarray) -> float:
    """Fit on centre A, score centre B (the demo's external validation)."""
    a = center == "A"
    mu, sd = x[a].mean(0), x[a].std(0) + 1e-9
    model = LogisticRegression(max_iter=1000).fit((x[a] - mu) / sd, y[a])
    return roc_auc_score(y[~a], model.decision_function((x[~a] - mu) / sd))


def test_demo_cohort_shape_and_balance() -> None:
    patients = synth.make_patients(60, 0)
    centers = np.array([p.center for p in patients])
    assert (centers == "A").sum() == 36 and (centers == "B").sum() == 24
    for c in ("A", "B"):
        share = np.mean([p.high_risk for p in patients if p.center == c])
        assert 0.30 <= share <= 0.45, (c, share)
    assert np.mean([p.sex == "F" for p in patients]) > 0.75
    assert any(p.esr is None for p in patients) and any(p.igg is None for p in patients)
    assert all(p.followup_months >= 0 and p.event in (0, 1) for p in patients)
    assert sum(p.age < 18 for p in patients) == 2
    assert any(p.n_slides == 2 for p in patients)
    age = {c: np.mean([p.age for p in patients if p.center == c and p.age >= 18]) for c in ("A", "B")}
    assert age["B"] > age["A"] + 4  # centre B is older


@pytest.mark.parametrize("n", [10, 16, 61])
def test_every_centre_has_both_classes(n: int) -> None:
    for seed in range(3):
        patients = synth.make_patients(n, seed)
        for c in ("A", "B"):
            y = [p.high_risk for p in patients if p.center == c]
            assert 0 < sum(y) < len(y)


def test_too_few_patients_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        synth.make_patients(9)


def test_clinical_images_and_fusion_each_beat_chance_and_fusion_is_best() -> None:
    """External AUC (train A, test B) of logistic regressions on the true components, over 10 demo-sized cohorts."""
    aucs = []
    for seed in range(10):
        m = _matrix(synth.make_patients(60, seed))
        aucs.append([
            _external_auc(m["clinical"], m["y"], m["center"]),
            _external_auc(m["images"], m["y"], m["center"]),
            _external_auc(np.c_[m["clinical"], m["images"]], m["y"], m["center"]),
        ])
    clinical, images, fusion = np.mean(aucs, 0)
    assert clinical > 0.6 and images > 0.65
    assert fusion > max(clinical, images) + 0.05


def test_risk_weights_are_recovered_in_a_large_cohort() -> None:
    """Every component pushes the outcome up: logistic coefficients on a 3000-patient cohort are all positive."""
    m = _matrix(synth.make_patients(3000, 1))
    x = np.c_[m["clinical"][:, 3:], m["images"]]  # anti_ssa, igg, infiltration, lesion
    coef = LogisticRegression(max_iter=1000, C=1e6).fit((x - x.mean(0)) / x.std(0), m["y"]).coef_[0]
    assert np.all(coef > 0.3), coef
    # a pure-noise column gets no weight
    noise = np.random.default_rng(0).standard_normal((len(x), 1))
    coef = LogisticRegression(max_iter=1000, C=1e6).fit(np.c_[(x - x.mean(0)) / x.std(0), noise], m["y"]).coef_[0]
    assert abs(coef[-1]) < 0.15


def test_survival_follows_the_exponential_model() -> None:
    """Cox regression on the latent risk recovers the simulated log hazard ratio 0.7 per unit of risk."""
    import pandas as pd

    patients = synth.make_patients(3000, 2)
    frame = pd.DataFrame({
        "time": [p.followup_months for p in patients],
        "event": [p.event for p in patients],
        "risk": [p.risk for p in patients],
    })
    cph = CoxPHFitter().fit(frame, "time", "event")
    assert cph.params_["risk"] == pytest.approx(0.7, abs=0.08)
    assert 0.3 < frame["event"].mean() < 0.6


def test_focus_score_tracks_infiltration() -> None:
    patients = synth.make_patients(500, 3)
    focus = np.array([p.focus_score for p in patients])
    infiltration = np.array([p.infiltration for p in patients])
    assert np.corrcoef(np.log(focus + 0.35), infiltration)[0, 1] > 0.7
    assert focus.min() >= 0
