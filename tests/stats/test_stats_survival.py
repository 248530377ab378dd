"""Survival: Harrell's C vs R survival::concordance and lifelines; Cox vs R
coxph and lifelines; Kaplan-Meier/log-rank vs R survfit/survdiff; risk groups
cut at training quantiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from lifelines.utils import concordance_index

from analytics import stats
from analytics.stats.bootstrap import bootstrap_indices

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "survival_reference.json").read_text())
ROSSI = pd.read_csv(DATA / "rossi.csv")
RISK = np.array(REF["risk"])


def test_rossi_csv_is_lifelines_rossi() -> None:
    lr = load_rossi()
    for col in ROSSI.columns:
        np.testing.assert_array_equal(ROSSI[col].to_numpy(), lr[col].to_numpy())


def test_concordance_matches_r_and_lifelines() -> None:
    c = stats.concordance(ROSSI.week, ROSSI.arrest, RISK, n_boot=0)
    assert c.estimate == pytest.approx(REF["concordance"]["c"], abs=1e-12)
    k = REF["concordance"]["counts"]
    pairs = k["concordant"] + k["discordant"] + k["tied.x"]
    by_counts = (k["concordant"] + k["tied.x"] / 2) / pairs
    assert c.estimate == pytest.approx(by_counts, abs=1e-12)
    # lifelines expects predicted survival times: pass -risk.
    lifelines_c = concordance_index(ROSSI.week, -RISK, ROSSI.arrest)
    assert c.estimate == pytest.approx(lifelines_c, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_concordance_matches_lifelines_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    t = np.round(rng.exponential(size=n), 1)  # tied times
    e = rng.integers(0, 2, n)
    e[0] = 1
    r = np.round(rng.normal(size=n) - 0.5 * t, 1)  # tied risks
    got = stats.concordance(t, e, r, n_boot=0).estimate
    assert got == pytest.approx(concordance_index(t, -r, e), abs=1e-12)


def test_concordance_bootstrap_against_lifelines_loop() -> None:
    t, e = ROSSI.week.to_numpy(), ROSSI.arrest.to_numpy()
    ci = stats.concordance(t, e, RISK, n_boot=120, seed=3, level=0.9)
    reps = [concordance_index(t[row], -RISK[row], e[row])
            for idx in bootstrap_indices(np.zeros(t.size), 120, 3, stratified=False)
            for row in idx]
    lo, hi = np.quantile(reps, [0.05, 0.95])
    assert ci.low == pytest.approx(lo, abs=1e-12)
    assert ci.high == pytest.approx(hi, abs=1e-12)
    assert ci.method == "bootstrap-percentile" and ci.level == 0.9
    assert ci.as_dict() == stats.concordance(t, e, RISK, n_boot=120, seed=3, level=0.9).as_dict()


def test_cox_matches_r_coxph() -> None:
    res = stats.cox(ROSSI.week, ROSSI.arrest, ROSSI.prio,
                    covariates=ROSSI[["fin", "age"]], score_name="prio")
    ref = REF["cox"]
    s = res.summary
    assert s["term"].to_list() == ref["terms"]
    for col, key in (("coef", "coef"), ("se", "se"), ("z", "z"), ("p", "p"),
                     ("hr_low", "hr_low"), ("hr_high", "hr_high")):
        np.testing.assert_allclose(s[col].to_numpy(), ref[key], rtol=1e-5, atol=1e-7)
    assert res.fitter.log_likelihood_ == pytest.approx(ref["loglik"], abs=1e-6)
    assert res.n == 432 and res.events == int(ROSSI.arrest.sum())


def test_cox_matches_lifelines_directly() -> None:
    df = load_rossi()
    direct = CoxPHFitter().fit(df, duration_col="week", event_col="arrest")
    covs = df.drop(columns=["week", "arrest", "prio"])
    import polars as pl

    res = stats.cox(df.week, df.arrest, df.prio, covariates=pl.from_pandas(covs),
                    score_name="prio")
    want = direct.summary.loc[res.summary["term"].to_list()]
    np.testing.assert_allclose(res.summary["coef"].to_numpy(), want["coef"], rtol=1e-8)
    np.testing.assert_allclose(res.summary["se"].to_numpy(), want["se(coef)"], rtol=1e-8)
    np.testing.assert_allclose(res.summary["hr_low"].to_numpy(),
                               want["exp(coef) lower 95%"], rtol=1e-8)
    assert res.concordance == pytest.approx(direct.concordance_index_, abs=1e-12)
    with pytest.raises(ValueError, match="not numeric"):
        stats.cox(df.week, df.arrest, df.prio, covariates={"g": np.array(["a"] * len(df))})


def test_km_logrank_two_groups_matches_survdiff() -> None:
    ref = REF["logrank2"]
    assert stats.risk_cutpoints(RISK, (0.5,))[0] == pytest.approx(ref["cut"], abs=1e-12)
    g = stats.risk_groups(RISK, RISK, q=(0.5,))
    assert np.bincount(g).tolist() == ref["n"]
    km = stats.km_by_group(ROSSI.week, ROSSI.arrest, g)
    assert km.logrank["statistic"] == pytest.approx(ref["chisq"], abs=1e-6)
    assert km.logrank["p"] == pytest.approx(ref["p"], abs=1e-9)
    assert km.logrank["df"] == 1
    assert km.summary["group"].to_list() == ["low", "high"]
    assert km.summary["n"].to_list() == ref["n"]
    # Survival at 10, 26, 52 weeks vs R summary(survfit(...), times = ...).
    kmr = REF["km2"]
    for i, (time, stratum) in enumerate(zip(kmr["times"], kmr["strata"])):
        label = "low" if stratum.endswith("0") else "high"
        curve = km.curves.filter(km.curves["group"] == label)
        at = curve.filter(curve["time"] <= time)["survival"][-1]
        assert at == pytest.approx(kmr["surv"][i], abs=1e-12)
    assert set(km.curves.columns) == {"group", "time", "survival", "low", "high", "at_risk"}


def test_km_logrank_three_groups_matches_survdiff() -> None:
    ref = REF["logrank3"]
    np.testing.assert_allclose(stats.risk_cutpoints(RISK, (1 / 3, 2 / 3)), ref["cut"], atol=1e-12)
    g = stats.risk_groups(RISK, RISK, q=(1 / 3, 2 / 3))
    assert np.bincount(g).tolist() == ref["n"]
    km = stats.km_by_group(ROSSI.week, ROSSI.arrest, g)
    assert km.logrank["statistic"] == pytest.approx(ref["chisq"], abs=1e-6)
    assert km.logrank["df"] == 2
    assert km.summary["group"].to_list() == ["low", "intermediate", "high"]


def test_risk_groups_use_training_cutpoints() -> None:
    train = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])  # median 0.45
    test = np.array([0.40, 0.44, 0.45, 0.46, 0.9, 1.2])  # its own median would be 0.455
    assert stats.risk_groups(train, test).tolist() == [0, 0, 0, 1, 1, 1]
    assert stats.risk_groups(train, test, q=(0.25, 0.75)).tolist() == [1, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="q must"):
        stats.risk_groups(train, test, q=(0.7, 0.3))


def test_survival_validation() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        stats.concordance([1, 2, 3], [1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="non-negative"):
        stats.concordance([-1, 2, 3], [1, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="comparable"):
        stats.concordance([1, 2, 3], [0, 0, 0], [0.1, 0.2, 0.3], n_boot=0)
