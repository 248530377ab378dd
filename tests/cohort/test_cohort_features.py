"""The Cohort object: feature joins aligned to patients, missing features, bags, subsets, hashes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analytics.cohort import CohortError, load_cohort
from pipeline import store

from cohort_helpers import add_features, add_instances, demo_patients

ALL = demo_patients()["patient_id"].to_list()


def _row(pid: str, dim: int = 3) -> list[float]:
    """The hand-made feature row of a patient: its number, times 10, times 100 ..."""
    k = int(pid[1:])
    return [k * 10.0**j for j in range(dim)]


@pytest.fixture()
def featured(demo_study):
    """fsA:mean for every patient except P050-P059, written in reverse order; fsB:max for P000-P029."""
    path = demo_study.store_path
    have_a = [p for p in ALL if not p.startswith("P05")][::-1]
    add_features(path, "fsA", "mean", have_a, np.array([_row(p) for p in have_a], np.float32),
                 [int(p[1:]) + 1 for p in have_a])
    have_b = ALL[:30]
    add_features(path, "fsB", "max", have_b, np.array([_row(p, 2) for p in have_b], np.float32) * -1)
    return demo_study


def test_matrix_rows_follow_patient_order(featured):
    cohort = load_cohort(featured, features=["fsA"])
    X, names = cohort.matrix()
    assert names == ["fsA:mean:0", "fsA:mean:1", "fsA:mean:2"]
    assert X.dtype == np.float32 and X.shape == (len(cohort), 3)
    ids = cohort.patient_ids
    for pid in ("P001", "P013", "P049"):  # hand-checked rows
        assert X[ids.index(pid)].tolist() == _row(pid)
    assert np.isnan(X[ids.index("P055")]).all()
    block = cohort.blocks["fsA:mean"]
    assert block.n_instances[ids.index("P013")] == 14 and block.n_instances[ids.index("P055")] == 0
    with pytest.raises(ValueError):
        X[0, 0] = 1.0  # the cohort's own data is read-only


def test_missing_features_are_reported_not_dropped(featured, caplog):
    cohort = load_cohort(featured, features=["fsA:mean", "fsB:max"])
    assert len(cohort) == 58  # P005, P011 are minors
    expected_a = [f"P05{i}" for i in range(10)]
    expected_b = [p for p in cohort.patient_ids if int(p[1:]) >= 30]
    assert cohort.missing == {"fsA:mean": expected_a, "fsB:max": expected_b}
    assert "fsA:mean: 10 of 58" in caplog.text and "P050" in caplog.text
    assert cohort.available(["fsA"]).sum() == 48
    assert not cohort.available()[cohort.patient_ids.index("P030")]


def test_two_blocks_side_by_side(featured):
    cohort = load_cohort(featured, features=["fsA", "fsB:max"])
    X, names = cohort.matrix(["fsB:max", "fsA"], dtype=np.float64)
    assert X.dtype == np.float64 and X.shape == (58, 5)
    assert names == ["fsB:max:0", "fsB:max:1", "fsA:mean:0", "fsA:mean:1", "fsA:mean:2"]
    i = cohort.patient_ids.index("P012")
    assert X[i].tolist() == [-12.0, -120.0, 12.0, 120.0, 1200.0]
    with pytest.raises(CohortError, match=r"feature block\(s\) \['fsC:mean'\] not loaded"):
        cohort.matrix(["fsC"])


def test_unknown_feature_set_is_an_error(featured):
    with pytest.raises(CohortError, match="no pooled features 'fsA:max' in the store .have: fsA:mean, fsB:max"):
        load_cohort(featured, features=["fsA:max"])


def test_on_missing_drop_and_error(featured, caplog):
    dropped = load_cohort(featured, features=["fsA"], on_missing="drop")
    assert len(dropped) == 48 and not any(p.startswith("P05") for p in dropped.patient_ids)
    assert dropped.missing == {"fsA:mean": []}
    assert "dropping 10 patients" in caplog.text
    assert not np.isnan(dropped.matrix()[0]).any()
    with pytest.raises(CohortError, match=r"fsA:mean: 10 of 58 \(P050, P051"):
        load_cohort(featured, features=["fsA"], on_missing="error")
    # fsC lacks every positive external patient: dropping them leaves the external split one class
    pts = demo_patients()
    have_c = pts.filter((pl.col("center") == "A") | (pl.col("high_risk") == 0))["patient_id"].to_list()
    add_features(featured.store_path, "fsC", "mean", have_c, np.zeros((len(have_c), 2), np.float32))
    with pytest.raises(CohortError, match=r"after dropping patients without features: the external split .* label 0"):
        load_cohort(featured, features=["fsC"], on_missing="drop")


def test_clinical_frame_is_typed_and_not_imputed(featured):
    cohort = load_cohort(featured)
    clin = cohort.clinical(["age", "sex", "esr"])
    assert clin.schema == pl.Schema({"age": pl.Int64, "sex": pl.String, "esr": pl.Float64})
    truth = demo_patients().filter(pl.col("age") >= 18).sort("patient_id")
    assert clin.equals(truth.select("age", "sex", "esr"))
    assert cohort.variable_types(["age", "sex", "esr"]) == {"age": "integer", "sex": "categorical", "esr": "numeric"}
    with pytest.raises(CohortError, match=r"no column\(s\) \['bmi'\]"):
        cohort.clinical(["bmi"])


def test_outcome_arrays_and_subsets(featured):
    cohort = load_cohort(featured, features=["fsA"])
    truth = demo_patients().filter(pl.col("age") >= 18).sort("patient_id")
    assert cohort.y.tolist() == truth["high_risk"].to_list()
    assert cohort.time.tolist() == truth["followup_months"].to_list()
    assert cohort.event.tolist() == truth["event"].to_list()
    assert cohort.groups.tolist() == cohort.patient_ids
    external = cohort.subset("external")
    assert set(external.center) == {"B"} and set(external.split) == {"external"}
    assert external.patient_ids == truth.filter(pl.col("center") == "B")["patient_id"].to_list()
    X, _ = external.matrix()
    i = external.patient_ids.index("P012")
    assert X[i].tolist() == _row("P012")
    dev = cohort.subset(["train", "internal"])
    assert len(dev) + len(external) == len(cohort)
    by_mask = cohort.subset(cohort.frame["age"] > 50)
    assert all(a > 50 for a in by_mask.frame["age"])
    assert cohort.subset(np.array([3, 0])).patient_ids == [cohort.patient_ids[3], cohort.patient_ids[0]]
    with pytest.raises(CohortError, match="unknown split"):
        cohort.subset("test")


def test_bags_hold_instances_with_coordinates(demo_study):
    path = demo_study.store_path
    rng = np.random.default_rng(0)
    e1, e2, e3 = (rng.standard_normal((n, 4)).astype(np.float32) for n in (2, 3, 1))
    add_instances(path, "tiles", "S2", "P001", e2, [(0, 0), (224, 0), (448, 224)])
    add_instances(path, "tiles", "S1", "P001", e1, [(10, 20), (30, 40)])
    add_instances(path, "tiles", "S9", "P004", e3, [(7, 8)])
    cohort = load_cohort(demo_study, bags=["tiles"])
    bags = cohort.bags("tiles")
    assert len(bags) == len(cohort) and bags.dim == 4
    emb, meta = bags[cohort.patient_ids.index("P001")]
    assert np.array_equal(emb, np.vstack([e1, e2]))  # ordered by source, then instance
    assert meta["source_id"].to_list() == ["S1", "S1", "S2", "S2", "S2"]
    assert list(zip(meta["x"], meta["y"])) == [(10, 20), (30, 40), (0, 0), (224, 0), (448, 224)]
    emb4, meta4 = bags[cohort.patient_ids.index("P004")]
    assert np.array_equal(emb4, e3) and meta4["x"].to_list() == [7]
    assert bags.sizes.sum() == 6
    assert set(bags.missing) == set(cohort.patient_ids) - {"P001", "P004"}
    assert cohort.missing["tiles:instances"] == bags.missing
    lazy = load_cohort(demo_study).bags("tiles")  # read on demand
    assert lazy.digest() == bags.digest()
    sub = cohort.subset(np.array([cohort.patient_ids.index("P004")]))
    assert np.array_equal(sub.bags("tiles")[0][0], e3)


def test_hash_is_stable_and_tracks_sql_params_and_store(featured):
    a = load_cohort(featured, features=["fsA"])
    b = load_cohort(featured, features=["fsA"])
    assert a.hash == b.hash and len(a.hash) == 64
    assert load_cohort(featured, params={"min_age": 19}).digest() != a.digest(features=[])
    assert load_cohort(featured).hash == a.digest(features=[])  # the features loaded don't change the rows part
    assert a.subset("train").hash != a.hash

    con = store.connect(featured.store_path)
    con.execute("UPDATE clinical SET igg = igg + 1 WHERE patient_id = 'P001'")
    con.close()
    changed_clinical = load_cohort(featured, features=["fsA"])
    assert changed_clinical.hash != a.hash

    ids = [p for p in ALL if not p.startswith("P05")]
    m = np.array([_row(p) for p in ids], np.float32)
    m[0, 0] += 1
    add_features(featured.store_path, "fsA", "mean", ids, m, [int(p[1:]) + 1 for p in ids])
    changed_features = load_cohort(featured, features=["fsA"])
    assert changed_features.digest(features=[]) == changed_clinical.digest(features=[])
    assert changed_features.hash != changed_clinical.hash


def test_complete_features_stored_in_patient_order(demo_study):
    # every patient, written in id order: the join may hand back the store's buffer without a copy
    add_features(demo_study.store_path, "full", "mean", ALL, np.array([_row(p) for p in ALL], np.float32))
    cohort = load_cohort(demo_study, features=["full"])
    X, _ = cohort.matrix()
    assert X.tolist() == [_row(p) for p in cohort.patient_ids]
    assert cohort.missing == {"full:mean": []}
    sub = cohort.subset(np.array([5, 1]))
    assert sub.matrix()[0].tolist() == [_row(cohort.patient_ids[5]), _row(cohort.patient_ids[1])]
