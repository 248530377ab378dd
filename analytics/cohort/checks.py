"""Checking a cohort's rows: the columns a cohort returns, typed, ordered, and errors naming the rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from analytics.cohort.errors import CohortError
from pipeline.config import RESERVED

__all__ = ["RESERVED", "check_cohort"]


def _rows(mask: pl.Series | Sequence[bool], ids: pl.Series | Sequence[Any]) -> str:
    """The first ten rows (1-based, with their patient id) where ``mask`` holds, and how many more; the ids are
    looked up for those rows only (no loop over the patients)."""
    where = (mask if isinstance(mask, pl.Series) else pl.Series(list(mask), dtype=pl.Boolean)).fill_null(False).arg_true()
    first = where.head(10).to_list()
    named = ids.gather(first).to_list() if isinstance(ids, pl.Series) else [ids[i] for i in first]
    bad = [f"row {i + 1} ({pid})" for i, pid in zip(first, named)]
    return ", ".join(bad) + (f" and {len(where) - 10} more" if len(where) > 10 else "")


def _values(s: pl.Series, mask: pl.Series, k: int) -> list[Any]:
    """The first ``k`` values of ``s`` where ``mask`` holds."""
    return s.filter(mask.fill_null(False)).head(k).to_list()


def _binary(frame: pl.DataFrame, col: str, source: str, outcome_elsewhere: bool = False) -> pl.Series:
    """``col`` as 0/1/NULL (Int8). ``outcome_elsewhere``: the cohort has time and event, so a label NULL for
    every patient is allowed (a survival cohort)."""
    s = frame[col]
    ids = frame["patient_id"]
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
        vals = _values(s, bad, 5)
        raise CohortError(f"{source}: column {col} must be 0, 1 or NULL; found {vals} in {_rows(bad, ids)}")
    return as_float.cast(pl.Int8)


def _status(frame: pl.DataFrame, source: str, codes: Mapping[int, str]) -> pl.Series:
    """``event`` as declared status codes or NULL (Int8): 0 censored, every other declared code a cause."""
    s = frame["event"]
    ids = frame["patient_id"]
    declared = ", ".join(f"{c} ({lab})" for c, lab in codes.items())
    if s.null_count() == len(s):
        raise CohortError(f"{source}: column event is NULL for every patient ({len(s)} rows): return the event's "
                          f"status codes ({declared})")
    if s.dtype == pl.Boolean:
        s = s.cast(pl.Int8)
    if not s.dtype.is_numeric():
        raise CohortError(f"{source}: column event must hold the declared status codes ({declared}) or NULL, "
                          f"not {s.dtype} values")
    as_float = s.cast(pl.Float64)
    bad = as_float.is_not_null() & ~as_float.is_in([float(c) for c in codes]).fill_null(False)
    if bad.any():
        vals = sorted(set(s.filter(bad.fill_null(False)).unique().to_list()))[:10]
        raise CohortError(f"{source}: column event holds undeclared status code(s) {vals} in {_rows(bad, ids)}; "
                          f"the declared codes are {declared}")
    return as_float.cast(pl.Int8)


def check_cohort(frame: pl.DataFrame, source: str, known_ids: pl.Series | None = None,
                 event_codes: Mapping[int, str] | None = None) -> pl.DataFrame:
    """Validate a cohort result and return it typed and ordered by ``patient_id``.

    Errors name the result rows (1-based, in the SQL's order). A cohort without
    ``label`` but with ``time`` and ``event`` gets a NULL ``label`` column. ``known_ids``:
    the store's patient ids, which every cohort patient must be one of. ``event_codes``: the status codes the
    study's event variable declares (``[variables] <event>.codes``); ``event`` then holds those codes
    (0 censored) instead of 0/1.
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
    ids = pid
    if pid.null_count():
        raise CohortError(f"{source}: column patient_id is NULL in {_rows(pid.is_null(), ids)}")
    dup = pid.is_duplicated()
    if dup.any():
        raise CohortError(f"{source}: column patient_id repeats (one row per patient): {_rows(dup, ids)}")
    if known_ids is not None:
        unknown = ~pid.is_in(known_ids.cast(pl.String).implode())
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
        cols["event"] = _status(frame, source, event_codes) if event_codes else _binary(frame, "event", source)
    if "time" in frame.columns:
        t = frame["time"]
        if not t.dtype.is_numeric():
            raise CohortError(f"{source}: column time must be numeric, not {t.dtype}")
        t = t.cast(pl.Float64)
        # inf, -inf and NaN are no follow-up time (NaN is not silently a missing value either)
        infinite = (~t.is_finite()).fill_null(False)
        if infinite.any():
            vals = _values(t, infinite, 5)
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
