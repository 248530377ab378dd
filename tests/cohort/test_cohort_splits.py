"""Patient-level splits: the seeded stratified hold-out and every check that must fail loudly."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.cohort import load_cohort
from analytics.splits import SplitError, assign_splits, check_splits, split_counts, stratified_holdout
from pipeline.config import SplitSection

from cohort_helpers import demo_patients


def _frame(n_a: int = 40, n_b: int = 20, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"Q{i:03d}" for i in range(n_a + n_b)]
    return pl.DataFrame({
        "patient_id": ids,
        "label": pl.Series(np.r_[rng.permutation(np.arange(n_a) % 2), np.arange(n_b) % 2], dtype=pl.Int8),
        "center": ["A"] * n_a + ["B"] * n_b,
    })


def _centers(frame: pl.DataFrame) -> dict[str, str]:
    return dict(zip(frame["patient_id"], frame["center"]))


RULE = SplitSection(external_centers=["B"], internal_fraction=0.25, seed=0)


def test_centre_rule_gives_external_internal_train():
    frame = _frame()
    split = assign_splits(frame, RULE, _centers(frame))
    s = frame.with_columns(split)
    assert (s.filter(pl.col("center") == "B")["split"] == "external").all()
    dev = s.filter(pl.col("center") == "A")
    assert set(dev["split"]) == {"train", "internal"}
    for label in (0, 1):  # 20 development patients per class, a quarter held out: exactly 5
        part = dev.filter(pl.col("label") == label)
        assert (part["split"] == "internal").sum() == 5


def test_same_seed_same_split_other_seed_other_split_and_row_order_irrelevant():
    frame = _frame()
    a = assign_splits(frame, RULE, _centers(frame))
    assert a.equals(assign_splits(frame, RULE, _centers(frame)))
    b = assign_splits(frame, RULE.model_copy(update={"seed": 1}), _centers(frame))
    assert not a.equals(b)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=11)
    c = shuffled.with_columns(assign_splits(shuffled, RULE, _centers(frame))).sort("patient_id")
    assert c["split"].equals(a.alias("split"))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31),
)
def test_holdout_is_within_one_patient_of_target_per_stratum(sizes, fraction, seed):
    strata = [k for k, n in enumerate(sizes) for _ in range(n)]
    ids = [f"id{i}" for i in range(len(strata))]
    held = stratified_holdout(ids, strata, fraction, seed)
    for k, n in enumerate(sizes):
        got = int(held[np.array(strata) == k].sum()) if n else 0
        assert abs(got - fraction * n) <= 0.5 + 1e-9  # round half up: within half a patient, so within one
    assert np.array_equal(held, stratified_holdout(ids, strata, fraction, seed))


def test_unlabelled_patients_are_a_stratum_and_do_not_move_labelled_draws():
    ids = [f"u{i:02d}" for i in range(30)]
    labels = [0] * 10 + [1] * 10 + [None] * 10
    with_u = stratified_holdout(ids, labels, 0.3, 5)
    without_u = stratified_holdout(ids[:20], labels[:20], 0.3, 5)
    assert np.array_equal(with_u[:20], without_u)
    assert with_u[20:].sum() == 3


@pytest.mark.parametrize(
    ("rule", "mutate", "message"),
    [
        (dict(external_centers=["C"]), None, r"no centre named 'C' in the store or cohort; known centres: A, B"),
        (dict(external_centers=["b"]), None, r"no centre named 'b'.*did you mean 'B'\?"),
        (dict(external_centers=["B", "B"]), None, r"lists a centre twice"),
        (dict(external_centers=["B"]), lambda f: f.filter(pl.col("center") == "A"),
         r"external centre 'B' has no patients in cohort"),
        (dict(external_centers=["A", "B"]), None, r"every patient is at an external centre .*no development centre"),
        (dict(external_centers=["B"], internal_fraction=0.01), None, r"the internal split is empty"),
        (dict(external_centers=["B"]), lambda f: f.with_columns(
            label=pl.when(pl.col("center") == "B").then(0).otherwise(pl.col("label")).cast(pl.Int8)),
         r"the external split \(20 patients\) has only label 0"),
        (dict(), lambda f: f.with_columns(label=pl.lit(None, pl.Int8)), r"the train split .* no labelled patients"),
        (dict(external_centers=["B"]), lambda f: f.with_columns(center=pl.lit(None, pl.String)),
         r"column center is empty in rows 1, 2"),
    ],
)
def test_centre_rule_checks(rule, mutate, message):
    frame = _frame()
    store_centers = _centers(frame)
    if mutate is not None:
        frame = mutate(frame)
    with pytest.raises(SplitError, match=message):
        assign_splits(frame, SplitSection(**rule), store_centers, source="cohort")


def test_cohort_relabelling_an_external_centre_into_development_is_refused():
    frame = _frame()
    store_centers = _centers(frame)
    moved = frame.with_columns(center=pl.when(pl.col("patient_id") == "Q045").then(pl.lit("A"))
                               .otherwise(pl.col("center")))
    with pytest.raises(SplitError, match=r"leak an external centre into development: Q045 \(store: B, cohort: A\)"):
        assign_splits(moved, RULE, store_centers)


def _with_split(values: list[str | None]) -> pl.DataFrame:
    frame = _frame(6, 2)
    return frame.with_columns(split=pl.Series(values, dtype=pl.String))


def test_column_rule_takes_the_sql_split():
    values = ["train", "train", "internal", "train", "internal", "train", "external", "external"]
    frame = _frame(6, 2).with_columns(label=pl.Series([0, 1, 0, 1, 1, 0, 0, 1], dtype=pl.Int8),
                                      split=pl.Series(values))
    split = assign_splits(frame, SplitSection(column="split", external_centers=["B"]), _centers(frame))
    assert split.to_list() == values


@pytest.mark.parametrize(
    ("values", "rule", "message"),
    [
        (["train"] * 6 + ["test", "external"], {}, r"column split must be one of train, internal, external; "
                                                    r"found row 7 \(Q006\): 'test'"),
        (["train"] * 6 + [None, "external"], {}, r"found row 7 \(Q006\): None"),
        (["train"] * 7 + ["external"], {"external_centers": ["B"]},
         r"patients of external centres \['B'\] are not in the external split: Q006"),
        (["internal"] * 6 + ["external"] * 2, {}, r"the train split is empty"),
    ],
)
def test_column_rule_checks(values, rule, message):
    frame = _with_split(values)
    with pytest.raises(SplitError, match=message):
        assign_splits(frame, SplitSection(column="split", **rule), _centers(frame))


def test_column_rule_needs_the_column():
    with pytest.raises(SplitError, match="column = 'fold' but the cohort returns no such column"):
        assign_splits(_frame(), SplitSection(column="fold"), {})


def test_a_patient_in_two_splits_is_refused():
    with pytest.raises(SplitError, match=r"patients in more than one split: p1 \(external, train\)"):
        check_splits(["p1", "p2", "p1", "p3"], ["train", "train", "external", "train"], [0, 1, 1, 0])
    with pytest.raises(SplitError, match="patients listed more than once: p1"):
        check_splits(["p1", "p2", "p1"], ["train", "train", "train"], [0, 1, 1])


def test_split_counts_add_up():
    frame = _frame()
    split = assign_splits(frame, RULE, _centers(frame))
    counts = split_counts(split, frame["label"])
    assert counts["split"].to_list() == ["train", "internal", "external", "all"]
    assert counts.filter(pl.col("split") == "all").row(0) == ("all", 30, 30, 0, 60)
    assert counts["total"].to_list() == [30, 10, 20, 60]


def test_split_column_from_a_cohort_file(demo_study):
    sql = ("SELECT patient_id, high_risk AS label, "
           "CASE WHEN center = 'B' THEN 'external' WHEN age < 40 THEN 'internal' ELSE 'train' END AS split "
           "FROM patient_clinical")
    (demo_study.root / "cohorts" / "own.sql").write_text(sql)
    study = demo_study.model_copy(update={"split": SplitSection(column="split", external_centers=["B"])})
    cohort = load_cohort(study, "own")
    truth = {r["patient_id"]: ("external" if r["center"] == "B" else "internal" if r["age"] < 40 else "train")
             for r in demo_patients().to_dicts()}
    assert dict(zip(cohort.patient_ids, cohort.split.tolist())) == truth


def test_a_split_column_with_another_name_becomes_split(demo_study):
    sql = ("SELECT patient_id, high_risk AS label, "
           "CASE WHEN center = 'B' THEN 'external' WHEN age < 40 THEN 'internal' ELSE 'train' END AS fold "
           "FROM patient_clinical")
    (demo_study.root / "cohorts" / "fold.sql").write_text(sql)
    study = demo_study.model_copy(update={"split": SplitSection(column="fold")})
    cohort = load_cohort(study, "fold")
    assert "fold" not in cohort.frame.columns and cohort.clinical_columns == []
    assert sorted(set(cohort.split.tolist())) == ["external", "internal", "train"]
