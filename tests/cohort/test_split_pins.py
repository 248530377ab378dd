"""The study-level hold-out, computed column-wide: the assignment of a seed is pinned (the same as the patient-by-
patient loop it replaced, so an existing study keeps its split), whatever container the ids and strata come in."""

from __future__ import annotations

import numpy as np
import polars as pl

from analytics.splits import assign_splits, stratified_holdout
from pipeline.config import SplitSection

IDS = [f"S{i:02d}" for i in range(24)]
STRATA = [None if i % 7 == 3 else (i * 5) % 3 % 2 for i in range(24)]
HELD = [1, 8, 11, 12, 15, 17, 21]  # seed 42, a 0.3 hold-out of each stratum (0, 1 and unlabelled)


def test_holdout_is_pinned_for_a_seed_whatever_holds_the_ids_and_strata() -> None:
    assert np.flatnonzero(stratified_holdout(IDS, STRATA, 0.3, 42)).tolist() == HELD
    as_arrays = stratified_holdout(np.array(IDS), pl.Series(STRATA, dtype=pl.Int8), 0.3, 42)
    assert np.flatnonzero(as_arrays).tolist() == HELD
    # a float label column with NaN for unlabelled: NaN is the unlabelled stratum, not one stratum per patient
    floats = np.array([np.nan if s is None else float(s) for s in STRATA])
    with_none = [None if s is None else float(s) for s in STRATA]
    held = stratified_holdout(pl.Series(IDS), floats, 0.3, 42)
    assert held.tolist() == stratified_holdout(IDS, with_none, 0.3, 42).tolist()
    assert held[[i for i, s in enumerate(STRATA) if s is None]].sum() == 1  # 0.3 of the 4 unlabelled


def test_centre_rule_split_is_pinned_for_a_seed() -> None:
    frame = pl.DataFrame({"patient_id": IDS[::-1], "label": pl.Series(STRATA[::-1], dtype=pl.Int8),
                          "center": ["A"] * 18 + ["B"] * 6})
    split = assign_splits(frame, SplitSection(external_centers=["B"], internal_fraction=0.25, seed=9))
    assert split.dtype == pl.String and split.name == "split"
    assert split.to_list() == ["train"] * 7 + ["internal"] * 2 + ["train"] * 4 + [
        "internal", "train", "internal", "train", "internal"] + ["external"] * 6
