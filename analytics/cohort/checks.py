"""Checking a cohort's rows: the columns a cohort returns, typed, ordered, and errors naming the rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from analytics.cohort.errors import CohortError
from pipeline.config import RESERVED

__all__ = ["RESERVED", "check_cohort"]


def _rows(mask: pl.Series | Sequence[bool], ids: Sequence[Any]) -> str:
    bad = [f"row {i + 1} ({ids[i]})" for i, m in enumerate(mask) if m]
    return ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")


def _binary(frame: pl.DataFrame, col: str, source: str, outcome_elsewhere: bool = False) -> pl.Series:
    """``col`` as 0/1/NULL (Int8). ``outcome_elsewhere``: the cohort has time and event, so a label NULL for
    every patient is allowed (a survival cohort)."""
    s = frame[col]
    ids = frame["patient_id"].to_list()
    if s.null_count() == len(s) and not outcome_elsewhere:  # `NULL AS label` types as Null, not a number
        raise CohortError(
            f"{source}: column {col} is NULL for every patient ({len(s)} rows): the cohort has no outcome; "
            f"return {col} as 0/1" + (" (or time and event for a survival cohort)" if col == "label" else "")
        )
    if s.dtype == pl.Null:
        return s.cast(pl.Int8)
    if s.dtype == pl.Boolean:
        return s.cast(pl.Int8)
    if not s.dtype.is_numeric():
        raise CohortError(f"{source}: column {col} must be 0, 1 or NULL, not {s.dtype} values")
    as_float = s.cast(pl.Float64)
    bad = as_float.is_not_null() & ~as_float.is_in([0.0, 1.0]).fill_null(False)
    if bad.any():
        vals = [v for v, b in zip(s.to_list(), bad) if b][:5]
        raise CohortError(f"{source}: column {col} must be 0, 1 or NULL; found {vals} in {_rows(bad, ids)}")
    return as_float.cast(pl.Int8)


def check_cohort(frame: pl.DataFrame, source: str, known_ids: pl.Series | None = None) -> pl.DataFrame:
    """Validate a cohort result and return it typed and ordered by ``patient_id``.

    Errors name the result rows (1-based, in the SQL's order). A cohort without
    ``label`` but with ``time`` and ``event`` gets a NULL ``label`` column. ``known_ids``:
    the store's patient ids, which every cohort patient must be one of.
    """
    survival = "time" in frame.columns and "event" in frame.columns
    # a survival cohort may return time and event without a binary label (its label is then NULL throughout)
    missing = [c for c in ("patient_id", *(() if survival else ("label",))) if c not in frame.columns]
    if missing:
        raise CohortError(
            f"{source}: no column(s) {', '.join(missing)}; a cohort returns patient_id and label, "
            f"or patient_id, time and event (it returned {', '.join(frame.columns) or 'no columns'})"
        )
    if "label" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int8).alias("label"))
    if frame.height == 0:
        raise CohortError(f"{source}: the cohort has no patients")
    pid = frame["patient_id"]
    if pid.dtype != pl.String:
        pid = pid.cast(pl.String)
    ids = pid.to_list()
    if pid.null_count():
        raise CohortError(f"{source}: column patient_id is NULL in {_rows(pid.is_null(), ids)}")
    dup = pid.is_duplicated()
    if dup.any():
        raise CohortError(f"{source}: column patient_id repeats (one row per patient): {_rows(dup, ids)}")
    if known_ids is not None:
        unknown = ~pid.is_in(known_ids.to_list())
        if unknown.any():
            raise CohortError(
                f"{source}: column patient_id names patients that are not in the store's patients table: "
                f"{_rows(unknown, ids)}"
            )
    if "center" in frame.columns and frame["center"].null_count():
        raise CohortError(f"{source}: column center is NULL in {_rows(frame['center'].is_null(), ids)}")
    frame = frame.with_columns(pid.alias("patient_id"))
    cols: dict[str, pl.Series] = {"label": _binary(frame, "label", source, outcome_elsewhere=survival)}
    if "event" in frame.columns:
        cols["event"] = _binary(frame, "event", source)
    if "time" in frame.columns:
        t = frame["time"]
        if not t.dtype.is_numeric():
            raise CohortError(f"{source}: column time must be numeric, not {t.dtype}")
        t = t.cast(pl.Float64)
        # inf, -inf and NaN are no follow-up time (NaN is not silently a missing value either)
        infinite = (~t.is_finite()).fill_null(False)
        if infinite.any():
            vals = [v for v, b in zip(t.to_list(), infinite) if b][:5]
            raise CohortError(f"{source}: column time must be a finite number; found {vals} in {_rows(infinite, ids)}")
        neg = (t < 0).fill_null(False)
        if neg.any():
            raise CohortError(f"{source}: column time must not be negative: {_rows(neg, ids)}")
        cols["time"] = t
    for col in ("center", "split"):
        if col in frame.columns and frame[col].dtype != pl.String:
            cols[col] = frame[col].cast(pl.String)
    frame = frame.with_columns(**cols)
    order = [c for c in RESERVED if c in frame.columns] + [c for c in frame.columns if c not in RESERVED]
    return frame.select(order).sort("patient_id")
