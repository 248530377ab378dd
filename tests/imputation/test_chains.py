"""The chained-equations engine: mice's defaults, its md.pattern and Nelson-Aalen hazard, seeding, the model for
new patients, diagnostics and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics import impute
from analytics.impute.categorical import multinomial_fit, polr_fit
from analytics.impute.linear import match_donors

HERE = Path(__file__).parent


def _pbc(n: int | None = None) -> pl.DataFrame:
    """survival::pbc as the fixtures use it; ``n`` keeps the last n patients (those with missing categories)."""
    f = pl.DataFrame(json.loads((HERE / "mice_m100.json").read_text(encoding="utf-8"))["incomplete"])
    f = f.with_columns(pl.col("stage").cast(pl.String))
    return f if n is None else f.tail(n)


def _toy(n: int = 120, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = a + rng.normal(scale=0.5, size=n)
    g = np.where(rng.random(n) < 0.5, "x", "y")
    lab = (a + rng.normal(size=n) > 0).astype(np.int64)
    b_miss = rng.random(n) < 0.3
    g_miss = rng.random(n) < 0.2
    return pl.DataFrame({"label": lab, "a": a, "b": np.where(b_miss, np.nan, b),
                         "g": [None if m else v for v, m in zip(g, g_miss, strict=True)]}).with_columns(
        pl.col("b").fill_nan(None))


def test_defaults_are_mices_and_imputed_values_fill_only_missing_cells() -> None:
    f = _pbc(150)
    imp = impute.impute(f, impute.Settings(m=2, maxit=2, seed=3))
    assert imp.methods == {"dead": "", "age": "", "sex": "", "bili": "", "albumin": "", "chol": "pmm",
                           "platelet": "pmm", "ascites": "logreg", "stage": "polyreg"}
    c = imp.complete(2)
    assert c.null_count().sum_horizontal().item() == 0
    assert c.schema == f.schema
    observed = f.select(pl.all().is_not_null())
    for col in f.columns:
        keep = observed[col].to_numpy()
        assert c[col].to_numpy()[keep].tolist() == f[col].to_numpy()[keep].tolist()
    # predictive mean matching only ever imputes observed values
    assert set(c["chol"].to_list()) <= set(f["chol"].drop_nulls().to_list())
    assert set(c["stage"].to_list()) <= {"1", "2", "3", "4"}


def test_same_seed_gives_byte_identical_imputations_with_one_or_two_workers() -> None:
    f = _toy()
    one = impute.impute(f, impute.Settings(m=3, maxit=3, seed=11, n_jobs=1)).long()
    two = impute.impute(f, impute.Settings(m=3, maxit=3, seed=11, n_jobs=2)).long()
    assert one.equals(two)
    assert one.write_csv() == two.write_csv()
    other = impute.impute(f, impute.Settings(m=3, maxit=3, seed=12)).long()
    assert not one.equals(other)
    # imputation i does not depend on m: chains are seeded per imputation
    fewer = impute.impute(f, impute.Settings(m=2, maxit=3, seed=11)).long()
    assert fewer.equals(one.filter(pl.col(".imp") <= 2))


def test_long_format_is_mices() -> None:
    f = _toy(30)
    long = impute.impute(f, impute.Settings(m=2, maxit=1, seed=1), ids=[f"P{i}" for i in range(30)]).long()
    assert long.columns == [".imp", "patient_id", "label", "a", "b", "g"]
    assert long.height == 60 and long[".imp"].unique().sort().to_list() == [1, 2]
    assert long["patient_id"].head(2).to_list() == ["P0", "P1"]


def test_new_patients_are_imputed_without_their_outcome_and_without_shaping_the_models() -> None:
    dev = _toy(150, seed=1)
    new = _toy(40, seed=2)
    s = impute.Settings(m=2, maxit=3, seed=5)
    base = impute.impute_new(dev, new.drop("label"), s, outcome=["label"])
    assert base.columns == ["a", "b", "g"]
    assert base.complete(1).height == 40
    # the new patients' outcome is never read: permuted (or absent) labels change no imputed value
    permuted = new.with_columns(pl.Series("label", np.random.default_rng(0).permutation(new["label"].to_numpy())))
    assert impute.impute_new(dev, permuted, s, outcome=["label"]).long().equals(base.long())
    # observed values of the new patients are kept
    kept = new["a"].to_numpy()
    assert np.allclose(base.complete(1)["a"].to_numpy(), kept)


def test_new_patients_values_do_not_change_the_development_models() -> None:
    """Rows that are imputed but not fitted (mice's ``ignore``): a new patient's own observed value does not
    change another new patient's imputation once the random streams agree."""
    dev = _toy(150, seed=1).drop("label")
    new = _toy(3, seed=2).drop("label").with_columns(pl.Series("b", [None, None, 0.1]))
    s = impute.Settings(m=2, maxit=2, seed=5)
    first = impute.impute_new(dev, new, s).complete(1)
    changed = impute.impute_new(dev, new.with_columns(pl.Series("b", [None, None, 50.0])), s).complete(1)
    assert first["b"].head(2).to_list() == changed["b"].head(2).to_list()



def test_a_new_patients_imputed_values_do_not_depend_on_who_else_is_imputed() -> None:
    """Scored alone, in a batch, or in another order, a new patient gets the same imputed values: its draws come
    from its own stream (keyed by its id), the models' from streams keyed by chain, iteration and variable."""
    dev = _toy(150, seed=1)
    new = _toy(40, seed=2).drop("label")
    ids = [f"N{i}" for i in range(40)]
    s = impute.Settings(m=2, maxit=3, seed=5)
    batch = impute.impute_new(dev, new, s, outcome=["label"], ids=ids)
    incomplete = [r for r in range(40) if any(v is None for v in new.row(r))]
    assert len(incomplete) >= 3
    for r in incomplete[:3]:
        alone = impute.impute_new(dev, new[r:r + 1], s, outcome=["label"], ids=[ids[r]])
        for i in (1, 2):
            assert alone.complete(i).row(0) == batch.complete(i).row(r)
    backwards = impute.impute_new(dev, new.reverse(), s, outcome=["label"], ids=ids[::-1])
    for i in (1, 2):
        assert backwards.complete(i).reverse().equals(batch.complete(i))
    # the development rows' chains are those of impute: the imputations still differ between imputations
    assert not batch.complete(1).equals(batch.complete(2))

def test_md_pattern_equals_mices() -> None:
    ref = json.loads((HERE / "md_pattern.json").read_text(encoding="utf-8"))
    lung = ref["lung"]
    assert lung["columns"][-1] == ""
    rows = np.array(lung["rows"])
    counts = [int(c) for c in lung["counts"][:-1]]
    cols = lung["columns"][:-1]
    # expand mice's patterns into a frame, in scrambled row order, and ask for its pattern
    records = []
    for pattern, count in zip(rows[:-1, :-1], counts, strict=True):
        records += [[None if v == 0 else 1.0 for v in pattern]] * count
    order = np.random.default_rng(0).permutation(len(records))
    frame = pl.DataFrame([records[i] for i in order], schema=cols, orient="row")
    # columns in a different input order: md.pattern sorts them by missingness, ties in input order
    pat = impute.md_pattern(frame)
    assert pat.columns == cols
    assert pat.counts.tolist() == counts
    assert pat.observed.tolist() == rows[:-1, :-1].tolist()
    assert pat.missing_per_pattern.tolist() == rows[:-1, -1].tolist()
    assert pat.missing_per_column.tolist() == rows[-1, :-1].tolist() and pat.total == rows[-1, -1]


def test_md_pattern_of_nhanes2_equals_mices() -> None:
    ref = json.loads((HERE / "md_pattern.json").read_text(encoding="utf-8"))["nhanes2"]
    # nhanes2 (mice's data): age complete; bmi, hyp, chl missing as recorded in the fixture's patterns
    rows = np.array(ref["rows"])
    counts = [int(c) for c in ref["counts"][:-1]]
    input_order = ["age", "bmi", "hyp", "chl"]
    recs = []
    for pattern, count in zip(rows[:-1, :-1], counts, strict=True):
        by = dict(zip(ref["columns"][:-1], pattern, strict=True))
        recs += [[None if by[c] == 0 else 1.0 for c in input_order]] * count
    pat = impute.md_pattern(pl.DataFrame(recs[::-1], schema=input_order, orient="row"))
    assert pat.columns == ref["columns"][:-1]
    assert pat.observed.tolist() == rows[:-1, :-1].tolist() and pat.counts.tolist() == counts


def test_nelson_aalen_equals_mices() -> None:
    rows = json.loads((HERE / "rubin_cox.json").read_text(encoding="utf-8"))["completed"]
    first = [r for r in rows if r[".imp"] == 1]
    h = impute.nelson_aalen([r["time"] for r in first], [r["status"] for r in first])
    assert np.max(np.abs(h - np.array([r["H"] for r in first]))) < 1e-12


def test_trace_rhat_and_out_of_range_flags() -> None:
    f = _toy(100)
    imp = impute.impute(f, impute.Settings(m=3, maxit=6, seed=2, methods={"b": "norm"}))
    assert imp.methods["b"] == "norm" and imp.chain_mean.shape == (4, 6, 3)
    trace = impute.trace_table(imp)
    assert trace.height == 2 * 6 * 3 and set(trace["variable"]) == {"b", "g"}
    d = impute.diagnose(imp)
    assert set(d.rhat) == {"b", "g"} and all(np.isfinite(v) for v in d.rhat.values())
    # norm draws from a normal model and can leave the observed range; the count is what the flag reports
    assert d.out_of_range["b"] >= 0
    assert all(("split-R̂" in fl) or ("outside the observed range" in fl) for fl in d.flags)
    # chains stuck apart are flagged
    stuck = np.stack([np.linspace(0, 0.01, 8) + c for c in range(3)], axis=1)
    assert impute.split_rhat(stuck) > 1.1
    assert impute.split_rhat(stuck[:3]) != impute.split_rhat(stuck[:3])  # NaN below 4 iterations


@pytest.mark.parametrize(("settings", "frame_change", "message"), [
    (impute.Settings(m=1), None, r"m = 1: multiple imputation needs m >= 2"),
    (impute.Settings(m=2, methods={"nope": "pmm"}), None, r"unknown column\(s\) \['nope'\]"),
    (impute.Settings(m=2, methods={"g": "norm"}), None, r"column 'g' \(binary\): method 'norm' is not one of"),
    (impute.Settings(m=2, predictors={"b": ["zz"]}), None, r"unknown column\(s\) \['zz'\]"),
    (impute.Settings(m=2), "all_missing", r"column 'b': every value is missing"),
])
def test_refusals_name_the_key(settings: impute.Settings, frame_change: str | None, message: str) -> None:
    f = _toy(20)
    if frame_change == "all_missing":
        f = f.with_columns(pl.lit(None, dtype=pl.Float64).alias("b"))
    with pytest.raises(impute.ImputationError, match=message):
        impute.impute(f, settings)


def test_a_level_only_new_patients_have_is_refused() -> None:
    dev = _toy(60)
    new = _toy(5, seed=3).with_columns(pl.Series("g", ["x", "z", None, "y", "x"]))
    with pytest.raises(impute.ImputationError, match=r"column 'g': level\(s\) \['z'\]"):
        impute.impute_new(dev, new, impute.Settings(m=2, maxit=1), outcome=["label"])


def test_donor_matching_takes_one_of_the_k_nearest() -> None:
    rng = np.random.default_rng(0)
    obs = np.arange(20, dtype=np.float64)
    picks = {int(match_donors(obs, np.array([10.2]), 5, rng)[0]) for _ in range(300)}
    assert picks == {8, 9, 10, 11, 12}


def test_multinomial_and_proportional_odds_fits_recover_their_models() -> None:
    rng = np.random.default_rng(4)
    n = 4000
    x = rng.normal(size=n)
    eta = np.column_stack([np.zeros(n), 0.5 + 1.0 * x, -0.5 - 1.0 * x])
    p = np.exp(eta) / np.exp(eta).sum(axis=1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1).astype(np.float64)
    coef = multinomial_fit(np.column_stack([np.ones(n), x]), y, np.ones(n), 3)
    assert np.allclose(coef[:, 1:], [[0.5, -0.5], [1.0, -1.0]], atol=0.15)
    latent = 1.2 * x + rng.logistic(size=n)
    yo = np.digitize(latent, [-1.0, 1.0]).astype(np.float64)
    beta, zeta = polr_fit(x[:, None], yo, np.ones(n), 3)
    assert beta[0] == pytest.approx(1.2, abs=0.1) and np.allclose(zeta, [-1.0, 1.0], atol=0.1)


def test_survival_outcome_enters_as_event_and_nelson_aalen_never_raw_time() -> None:
    from analytics.impute.study import outcome_columns

    frame = pl.DataFrame({"time": [5.0, 3.0, 3.0, 8.0, 1.0], "event": [1, 1, 0, 2, 1], "label": [1, 1, 0, 1, 1]})
    out = outcome_columns(frame)
    assert out.columns == ["event_1", "nelson_aalen_1", "event_2", "nelson_aalen_2"]
    assert out["event_2"].to_list() == [0, 0, 0, 1, 0]
    # cause 1's hazard: 1/5 at t=1, then 1/4 at t=3 (one event of cause 1 among 4 at risk), 1/2 at t=5
    assert np.allclose(out["nelson_aalen_1"].to_numpy(), [0.2 + 0.25 + 0.5, 0.45, 0.45, 0.95, 0.2])
    single = outcome_columns(frame.with_columns(pl.col("event").clip(0, 1)))
    assert single.columns == ["event", "nelson_aalen"]
    assert outcome_columns(frame.drop("time", "event")).columns == ["label"]


def test_declared_levels_order_a_text_column_for_proportional_odds() -> None:
    rng = np.random.default_rng(8)
    n = 300
    x = rng.normal(size=n)
    grade = np.array(["low", "mid", "high"])[np.digitize(1.5 * x + rng.logistic(size=n), [-1.0, 1.0])]
    f = pl.DataFrame({"x": x, "grade": [None if i % 6 == 0 else g for i, g in enumerate(grade)]})
    s = impute.Settings(m=2, maxit=2, seed=1, methods={"grade": "polr"}, levels={"grade": ["low", "mid", "high"]})
    imp = impute.impute(f, s)
    assert imp.variables[1].levels == ("low", "mid", "high") and imp.methods["grade"] == "polr"
    c = imp.complete(1)
    filled = c.filter(f["grade"].is_null())
    # high x goes with a high grade: the imputations follow the declared order, not the alphabet
    assert filled.filter(pl.col("x") > 1.5)["grade"].to_list().count("low") == 0
    assert filled.filter(pl.col("x") < -1.5)["grade"].to_list().count("high") == 0
