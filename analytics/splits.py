"""Patient-level train / internal / external splits, and the checks that keep them honest.

A split rule comes from ``study.toml`` (:class:`pipeline.config.SplitSection`):

* **Centre rule** (default). ``external`` = every patient of the centres in
  ``external_centers``; the remaining (development) patients are split into
  ``internal``, a stratified seeded hold-out of ``internal_fraction``, and
  ``train``, the rest.
* **Column rule** (``column = "split"``). The split is read from that column
  of the cohort SQL's result; values must be ``train``, ``internal`` or
  ``external``.

Stratified hold-out: development patients are grouped by label (0, 1, and
unlabelled as a third stratum) and ordered by ``patient_id``, so the result does
not depend on the order of the cohort's rows. Stratum ``s`` of size ``n`` sends
``floor(fraction * n + 0.5)`` patients to ``internal``, the first of a
permutation drawn from ``numpy.random.default_rng([seed, crc32(str(s))])``: the
same seed gives the same split, each stratum's count is within half a patient
of its target, and one stratum's draw does not depend on the others.

Centre rules (all raise :class:`SplitError`):

* every name in ``external_centers`` must be a known centre (one of the store's
  ``patients.center`` values or the cohort's centres); a name that matches only
  when case and surrounding spaces are ignored is reported with the spelling to use;
* every external centre must have at least one patient in the cohort (a centre
  whose patients the cohort filtered out would silently shrink the external set);
* at least one development centre must remain;
* when the cohort returns its own ``center`` column, no patient may sit at an
  external centre in the store and at a development centre in the cohort, or
  the other way round (an external centre's patients leaking into development);
* with the column rule and ``external_centers`` both given, every patient of an
  external centre must have split ``external`` (patients of other centres may
  still be ``external``, e.g. a temporal hold-out the SQL defines).

Checks on the assigned splits: each patient in exactly one split; ``train``
not empty, and ``internal`` / ``external`` not empty when the rule asks for them;
every non-empty split holds both label classes among its labelled patients.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from pipeline.config import SplitSection
from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.splits")

SPLITS = ("train", "internal", "external")


class SplitError(CohortlabError, ValueError):
    """A split rule that cannot be applied, or splits that break a rule; the message says which."""


def stratified_holdout(
    patient_ids: Iterable[str], strata: Iterable[Any], fraction: float, seed: int
) -> np.ndarray:
    """Seeded, stratified hold-out mask (``True`` = held out), independent of input order.

    Parameters
    ----------
    patient_ids
        Unique patient ids.
    strata
        One stratum value per patient (``None`` is a stratum of its own).
    fraction
        Share of each stratum to hold out, in ``[0, 1)``.
    seed
        Seed of the per-stratum permutation.

    Returns
    -------
    numpy.ndarray
        Boolean mask aligned with ``patient_ids``.
    """
    ids = _as_text(patient_ids)
    codes, levels = _stratum_codes(strata)
    if len(codes) != len(ids):
        raise SplitError(f"{len(ids)} patient ids but {len(codes)} strata values")
    if not 0 <= fraction < 1:
        raise SplitError(f"internal_fraction must be in [0, 1), not {fraction}")
    out = np.zeros(len(ids), dtype=bool)
    # patients by stratum, each stratum in patient-id order (two stable sorts: ties keep the input order)
    order = np.argsort(ids, kind="stable")
    order = order[np.argsort(codes[order], kind="stable")]
    bounds = np.searchsorted(codes[order], np.arange(len(levels) + 1))
    for code, level in enumerate(levels):
        members = order[bounds[code]:bounds[code + 1]]
        k = int(np.floor(fraction * len(members) + 0.5))
        # each stratum draws from its own stream, so adding or removing a stratum moves no other draw
        rng = np.random.default_rng([seed, zlib.crc32(str(level).encode())])
        out[members[rng.permutation(len(members))[:k]]] = True
    return out


def _as_text(values: Iterable[Any]) -> np.ndarray:
    """``values`` as a numpy text array (one C-level conversion, no Python loop over a Series or an array)."""
    if isinstance(values, pl.Series):
        values = values.to_numpy()
    elif not isinstance(values, np.ndarray):
        values = np.asarray(list(values), dtype=object)
    return np.asarray(values).astype(str)


def _stratum_codes(strata: Iterable[Any]) -> tuple[np.ndarray, list[Any]]:
    """A code (0..L-1) per patient and the L stratum values, equal values (``1 == 1.0``) one stratum and every
    missing value (``None``, a null, NaN) the stratum ``None``; hashed in C (pandas.factorize)."""
    if isinstance(strata, pl.Series):
        values = np.asarray(strata.to_list(), dtype=object)  # nulls stay None (to_numpy would make them NaN)
    else:
        values = np.asarray(strata if isinstance(strata, np.ndarray) else list(strata), dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), [None if pd.isna(u) else u for u in uniques]


def _external_names(rule: SplitSection, centers: set[str], source: str) -> list[str]:
    names = list(rule.external_centers)
    if len(set(names)) != len(names):
        raise SplitError(f"[split] external_centers lists a centre twice: {names}")
    for name in names:
        if name in centers:
            continue
        close = [c for c in sorted(centers) if c.strip().casefold() == name.strip().casefold()]
        hint = f"; did you mean '{close[0]}'?" if close else f"; known centres: {', '.join(sorted(centers))}"
        raise SplitError(f"[split] external_centers: no centre named '{name}' in the store or {source}{hint}")
    return names


def _check_center_agreement(
    frame: pl.DataFrame, external: set[str], store_centers: Mapping[str, str], source: str
) -> None:
    stored = frame["patient_id"].replace_strict(dict(store_centers), default=None, return_dtype=pl.String)
    ext = sorted(external)
    moved = stored.is_not_null() & (stored.is_in(ext) != frame["center"].is_in(ext))
    if moved.any():
        wrong = [f"{p} (store: {a}, cohort: {b})" for p, a, b in
                 zip(frame["patient_id"].filter(moved), stored.filter(moved), frame["center"].filter(moved))]
        raise SplitError(
            f"{source}: column center moves patients across the external/development boundary, "
            f"which would leak an external centre into development: {_some(wrong)}"
        )


def outcome_strata(frame: pl.DataFrame) -> pl.Series:
    """The 0/1 column splits are stratified and checked on: ``label``, or ``event`` for a cohort without labels.

    A survival cohort may return ``time`` and ``event`` without a binary label; its splits then hold
    both events and censored patients. An event with status codes (competing causes) counts any cause as
    the event here.
    """
    if frame["label"].drop_nulls().len() == 0 and "event" in frame.columns:
        return (frame["event"] > 0).cast(pl.Int8).alias("label")
    return frame["label"]


def assign_splits(
    frame: pl.DataFrame,
    rule: SplitSection,
    store_centers: Mapping[str, str] | None = None,
    source: str = "cohort",
) -> pl.Series:
    """The split of every patient under ``rule``, checked (see the module notes).

    Parameters
    ----------
    frame
        One row per patient with ``patient_id``, ``label`` (0/1/null), ``center``
        and, for the column rule, the split column.
    rule
        The study's ``[split]`` section.
    store_centers
        ``patient_id -> patients.center`` from the store; its values are the
        known centres and it is used to catch centre relabelling by the cohort.
    source
        Name used in error messages (the cohort file).

    Returns
    -------
    polars.Series
        ``split`` (String), aligned with ``frame``.
    """
    for col in ("patient_id", "label", "center"):
        if col not in frame.columns:
            raise SplitError(f"{source}: no column '{col}' to split on")
    store_centers = dict(store_centers or {})
    cohort_centers = set(frame["center"].drop_nulls().to_list())
    if frame["center"].null_count():
        rows = [i + 1 for i, c in enumerate(frame["center"].to_list()) if c is None]
        raise SplitError(f"{source}: column center is empty in rows {_some(rows)}")
    external = set(_external_names(rule, cohort_centers | set(store_centers.values()), source))
    if store_centers:
        _check_center_agreement(frame, external, store_centers, source)
    for name in sorted(external):
        if name not in cohort_centers:
            raise SplitError(
                f"[split] external centre '{name}' has no patients in {source} "
                "(the cohort filtered them all out); drop it from external_centers or widen the cohort"
            )

    if rule.column is not None:
        split = _split_from_column(frame, rule.column, source)
        if external:
            bad = frame.filter(pl.col("center").is_in(sorted(external)) & (split != "external"))
            if bad.height:
                raise SplitError(
                    f"{source}: column {rule.column}: patients of external centres {sorted(external)} are "
                    f"not in the external split: {_some(bad['patient_id'].to_list())}"
                )
        check_splits(frame["patient_id"], split, outcome_strata(frame), expected=_present(split), source=source)
        return split

    is_external = frame["center"].is_in(sorted(external)).to_numpy()
    if is_external.all():
        raise SplitError(
            f"{source}: every patient is at an external centre ({', '.join(sorted(external))}); "
            "no development centre is left to train on"
        )
    dev = np.flatnonzero(~is_external)
    held = np.zeros(frame.height, dtype=bool)
    held[dev] = stratified_holdout(
        frame["patient_id"].gather(dev), outcome_strata(frame).gather(dev), rule.internal_fraction, rule.seed
    )
    values = np.where(is_external, "external", np.where(held, "internal", "train"))
    split = pl.Series("split", values, dtype=pl.String)
    expected = ["train"] + (["internal"] if rule.internal_fraction > 0 else []) + (["external"] if external else [])
    check_splits(frame["patient_id"], split, outcome_strata(frame), expected=expected, source=source)
    log.info("%s: %s", source, ", ".join(f"{s} {int((values == s).sum())}" for s in SPLITS))
    return split


def _split_from_column(frame: pl.DataFrame, column: str, source: str) -> pl.Series:
    if column not in frame.columns:
        raise SplitError(f"{source}: [split] column = '{column}' but the cohort returns no such column")
    values = frame[column]
    if values.dtype != pl.String:
        raise SplitError(f"{source}: column {column} must hold text (train/internal/external), not {values.dtype}")
    bad = [
        f"row {i + 1} ({pid}): {v!r}"
        for i, (pid, v) in enumerate(zip(frame["patient_id"].to_list(), values.to_list()))
        if v not in SPLITS
    ]
    if bad:
        raise SplitError(f"{source}: column {column} must be one of {', '.join(SPLITS)}; found {_some(bad)}")
    return values.alias("split")


def _present(split: pl.Series) -> list[str]:
    return ["train"] + [s for s in ("internal", "external") if s in set(split.to_list())]


def check_splits(
    patient_ids: pl.Series | Iterable[str],
    split: pl.Series | Iterable[str],
    label: pl.Series | Iterable[Any],
    expected: Iterable[str] = ("train",),
    source: str = "cohort",
) -> None:
    """Raise :class:`SplitError` unless the splits are usable.

    Each patient in exactly one split, only known split names, every
    ``expected`` split non-empty, and both label classes in every non-empty split.
    """
    columns = [_series("patient_id", patient_ids, pl.String), _series("split", split, pl.String),
               _series("label", label, pl.Int8)]
    if len({c.len() for c in columns}) > 1:
        raise SplitError(f"{source}: patient ids, splits and labels differ in length")
    frame = pl.DataFrame(columns)
    unknown = frame.filter(~pl.col("split").is_in(SPLITS).fill_null(False))["split"].unique().to_list()
    if unknown:
        raise SplitError(f"{source}: unknown split names {sorted(map(str, unknown))}; use {', '.join(SPLITS)}")
    per_patient = frame.group_by("patient_id", maintain_order=True).agg(
        pl.col("split").unique().sort().alias("splits"), pl.len().alias("rows"))
    twice = per_patient.filter(pl.col("splits").list.len() > 1)
    if twice.height:
        items = [f"{p} ({', '.join(s)})" for p, s in zip(twice["patient_id"], twice["splits"])]
        raise SplitError(f"{source}: patients in more than one split: {_some(items)}")
    dup = per_patient.filter(pl.col("rows") > 1)["patient_id"].to_list()
    if dup:
        raise SplitError(f"{source}: patients listed more than once: {_some(dup)}")
    present = set(frame["split"].unique().to_list())
    for name in expected:
        if name not in present:
            raise SplitError(
                f"{source}: the {name} split is empty"
                + (" (internal_fraction too small for the development patients?)" if name == "internal" else "")
            )
    for name in SPLITS:
        labels = frame.filter(pl.col("split") == name)["label"]
        classes = sorted(labels.drop_nulls().unique().to_list())
        if labels.len() and classes != [0, 1]:
            what = f"only label {classes[0]}" if classes else "no labelled patients"
            raise SplitError(f"{source}: the {name} split ({labels.len()} patients) has {what}; it needs both classes")


def _series(name: str, values: pl.Series | Iterable[Any], dtype: Any) -> pl.Series:
    s = values.rename(name) if isinstance(values, pl.Series) else pl.Series(name, list(values))
    return s.cast(dtype)


def split_counts(split: pl.Series, label: pl.Series) -> pl.DataFrame:
    """Patients per split and label: columns split, label 0, label 1, unlabelled, total."""
    frame = pl.DataFrame({"split": split, "label": label.cast(pl.Int8)})
    rows = []
    for name in [s for s in SPLITS if s in set(split.to_list())]:
        part = frame.filter(pl.col("split") == name)["label"]
        rows.append(
            {
                "split": name,
                "label 0": int((part == 0).sum()),
                "label 1": int((part == 1).sum()),
                "unlabelled": int(part.null_count()),
                "total": part.len(),
            }
        )
    out = pl.DataFrame(rows, schema={"split": pl.String, "label 0": pl.Int64, "label 1": pl.Int64,
                                     "unlabelled": pl.Int64, "total": pl.Int64})
    total = out.select(pl.lit("all").alias("split"), pl.exclude("split").sum())
    return pl.concat([out, total])


def _some(items: list[Any], k: int = 10) -> str:
    head = ", ".join(str(i) for i in items[:k])
    return head + (f" and {len(items) - k} more" if len(items) > k else "")
