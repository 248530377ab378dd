"""What the cohort stage leaves for the report, so that the report's time does not grow with the cohort.

When the cohort stage (:func:`analytics.cohort.cohort_overview`) runs the study's own cohort with the study's
own parameters, it writes ``<study folder>/cache/cohort/``:

* ``frame.arrow``: the cohort's frame (Arrow IPC, every polars type kept);
* ``variables.arrow``: the store's ``variables`` rows the cohort was read with;
* ``summary.json``: the cohort's hash and definition (name, file, SQL, parameters, split rule, views), Table 1
  as HTML, the cohort's part of the participant flow (:func:`cohort_flow`) for each way an outcome can be
  known, each feature set's coverage, and the sha256 of the two Arrow files.

Each file is written to a temporary name and renamed, ``summary.json`` last; a reader that finds a file whose
sha256 differs from the one ``summary.json`` records (a write cut short, an edit) ignores the whole summary
(:func:`read_summary` returns None) and the report loads the cohort itself. Nothing is rewritten when the
cohort, its variables and the code that summarises them are unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from analytics.cohort.frame import Cohort, complete_case_columns
from analytics.splits import SPLITS
from pipeline import atomic
from pipeline.config import StudyConfig

log = logging.getLogger("cohortlab.cohort")

FORMAT = 1
# the ways an outcome is known in the participant flow: (label only | label, or time and event) x counted events
FLOW_KINDS = {"label": (False, "label"), "followed": (True, "label"), "followed_events": (True, "event")}


def summary_dir(study: StudyConfig) -> Path:
    """``<study folder>/cache/cohort``: where the cohort stage leaves its summary."""
    return study.root / "cache" / "cohort"


def cohort_flow(frame: pl.DataFrame, store_centers: pl.DataFrame, followed: bool, event_col: str,
                causes: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The cohort's part of the participant flow, counted by centre without a loop over patients.

    Parameters
    ----------
    frame
        The cohort frame (``patient_id``, ``label``, ``center``, ``split``, with ``time`` and ``event`` when
        present).
    store_centers
        The store's ``patients``: ``patient_id`` and ``center`` (the centre a patient is counted under in the
        flow's rows).
    followed
        Whether a patient with a time and an event has an outcome without a label (a survival endpoint or model).
    event_col
        What the per-split cells count as events: ``label`` or ``event``.
    causes
        Competing causes, ``code -> label`` (code 0, censored, left out): ``event`` holds status codes, so its
        cells count each cause's events by its label rather than summing the codes.

    Returns
    -------
    dict
        ``centers`` (sorted, of the store); ``rows``: ``{stage, counts, total}`` for the patients selected and
        those with a known outcome; ``splits``: per split present (by its key), ``{split, cells}`` with ``n (events)`` per
        centre and in total; ``followed``: whether a time and an event made an outcome known.
    """
    centers = sorted(store_centers.get_column("center").unique().drop_nulls().to_list())
    followed = followed and "time" in frame.columns and "event" in frame.columns
    known = known_outcome(frame, followed)
    of = store_centers.select("patient_id", pl.col("center").alias("_store_center"))

    def counts(part: pl.DataFrame) -> list[int]:
        per = dict(part.select("patient_id").join(of, on="patient_id", how="inner")
                   .group_by("_store_center").len().iter_rows())
        return [int(per.get(c, 0)) for c in centers]

    labelled = frame.filter(known)
    selected, with_outcome = counts(frame), counts(labelled)
    stage = "With a known outcome (label, or time and event)" if followed else "With a known outcome (label)"
    rows = [{"stage": "Selected by the cohort SQL", "counts": selected, "total": sum(selected)},
            {"stage": stage, "counts": with_outcome, "total": sum(with_outcome)}]
    event = event_col if followed else "label"
    if event == "event" and causes:  # status codes: a code 2 is one event of cause 2, not two events
        by_cause = [c for c in sorted(causes) if c != 0]
        per_split = (labelled.group_by("split", "center")
                     .agg(pl.len().alias("n"), *[(pl.col("event") == c).cast(pl.Int64).sum().alias(f"k{c}")
                                                 for c in by_cause]))
        splits = []
        for split in SPLITS:
            part = per_split.filter(pl.col("split") == split)
            if part.height == 0:
                continue
            names = [f"k{c}" for c in by_cause]
            cell = {r[0]: (int(r[1]), [int(k or 0) for k in r[2:]])
                    for r in part.select("center", "n", *names).iter_rows()}
            total = (int(part.get_column("n").sum()), [int(part.get_column(k).sum() or 0) for k in names])
            empty = (0, [0] * len(names))
            cells = [f"{n} ({', '.join(f'{k} {causes[c]}' for c, k in zip(by_cause, ks))})" if n else "–"
                     for n, ks in [cell.get(c, empty) for c in centers] + [total]]
            splits.append({"split": split, "cells": cells})
        return {"centers": centers, "rows": rows, "splits": splits, "followed": followed}
    per_split = (labelled.group_by("split", "center")
                 .agg(pl.len().alias("n"), pl.col(event).cast(pl.Int64).sum().alias("k")))
    splits = []
    for split in SPLITS:
        part = per_split.filter(pl.col("split") == split)
        if part.height == 0:
            continue
        cell = {c: (int(n), int(k or 0)) for c, n, k in part.select("center", "n", "k").iter_rows()}
        total = (int(part.get_column("n").sum()), int(part.get_column("k").sum() or 0))
        cells = [f"{n} ({k})" if n else "–" for n, k in [cell.get(c, (0, 0)) for c in centers] + [total]]
        splits.append({"split": split, "cells": cells})
    return {"centers": centers, "rows": rows, "splits": splits, "followed": followed}


def known_outcome(frame: pl.DataFrame, followed: bool) -> pl.Expr:
    """The patients of ``frame`` with a known outcome: a label, or (``followed``) a time and an event."""
    known = pl.col("label").is_not_null()
    if followed and "time" in frame.columns and "event" in frame.columns:
        known = known | (pl.col("time").is_not_null() & pl.col("event").is_not_null())
    return known


@dataclass(frozen=True)
class CohortSummary:
    """The study's cohort as the cohort stage left it (see the module's docstring)."""

    hash: str
    name: str
    file: str
    sql: str
    params: dict[str, Any]
    split_rule: dict[str, Any]
    views: dict[str, str]
    table1_html: str
    flows: dict[str, dict[str, Any]]
    coverage: dict[str, int]
    frame: pl.DataFrame
    variables: pl.DataFrame = field(default_factory=pl.DataFrame)
    incomplete: tuple[str, ...] = ()  # left out by a complete-case analysis (Cohort.incomplete)

    def cohort(self, store_path: Path | None = None) -> Cohort:
        """The :class:`~analytics.cohort.Cohort` (no feature blocks), with the hash the cohort stage computed."""
        c = Cohort(name=self.name, file=Path(self.file), sql=self.sql, params=dict(self.params),
                   split_rule=dict(self.split_rule), frame=self.frame, variables=self.variables,
                   store_path=store_path, views=dict(self.views), incomplete=self.incomplete)
        c.__dict__["hash"] = self.hash  # the cached property, as computed from the same rows by the cohort stage
        return c

    def flow(self, survival: bool, endpoint: str) -> dict[str, Any]:
        """The cohort's part of the participant flow for a study with (``survival``) or without survival models
        or endpoint (:func:`cohort_flow`)."""
        kind = "label" if not survival else ("followed_events" if endpoint == "survival" else "followed")
        return self.flows[kind]


def _plain(value: Any) -> Any:
    """``value`` as it reads back from summary.json (tuples as lists, dates as text)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _ipc(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="uncompressed")
    return buf.getvalue()


def _code_digest() -> str:
    """sha256 of the code that summarises a cohort (this module and Table 1)."""
    h = hashlib.sha256(f"format {FORMAT}".encode())
    for path in (Path(__file__), Path(__file__).resolve().parents[1] / "table1.py"):
        h.update(path.read_bytes())
    return h.hexdigest()


def _key(cohort: Cohort, centers: pl.DataFrame, coverage: Mapping[str, int]) -> str:
    h = hashlib.sha256(cohort.hash.encode())
    h.update(cohort.variables.write_ndjson().encode())
    h.update(centers.write_csv().encode())
    h.update(json.dumps(dict(coverage), sort_keys=True).encode())
    h.update(_code_digest().encode())
    return h.hexdigest()


def write_summary(study: StudyConfig, cohort: Cohort, store_centers: pl.DataFrame, coverage: Mapping[str, int]) -> Path:
    """Write ``<study folder>/cache/cohort/`` for ``cohort`` (the study's own cohort), unless it already holds it.

    Parameters
    ----------
    study
        The study.
    cohort
        Its cohort, as the cohort stage built it.
    store_centers
        The store's ``patients`` (``patient_id``, ``center``).
    coverage
        Patients with each feature set's instances (``feature set -> patients``).

    Returns
    -------
    Path
        The ``summary.json`` written (or found current).
    """
    folder = summary_dir(study)
    target = folder / "summary.json"
    key = _key(cohort, store_centers, coverage)
    try:
        if json.loads(target.read_text(encoding="utf-8")).get("key") == key and read_summary(study) is not None:
            return target
    except (OSError, ValueError, AttributeError):
        pass
    frame_raw, variables_raw = _ipc(cohort.frame), _ipc(cohort.variables)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("frame.arrow", frame_raw), ("variables.arrow", variables_raw)):
        with atomic.staged(folder / name) as tmp:
            tmp.write_bytes(data)
    prov = cohort.provenance()
    entry = {
        "format": FORMAT, "key": key, "study_cohort": _plain(study.cohort.model_dump() if study.cohort else None),
        "hash": cohort.hash, "name": cohort.name, "file": str(cohort.file),
        "sql": cohort.sql, "params": prov["params"], "split_rule": cohort.split_rule, "views": cohort.views,
        "patients": len(cohort), "table1_html": cohort.table1().to_html(),
        "flows": {kind: cohort_flow(cohort.frame, store_centers, followed, event,
                                    study.causes.codes if study.causes is not None and study.causes.is_competing
                                    else None)
                  for kind, (followed, event) in FLOW_KINDS.items()},
        "coverage": dict(coverage), "incomplete": list(cohort.incomplete),
        "complete_case": complete_case_columns(study),
        "sha256": {"frame.arrow": hashlib.sha256(frame_raw).hexdigest(),
                   "variables.arrow": hashlib.sha256(variables_raw).hexdigest()},
    }
    atomic.write_text(target, json.dumps(entry, sort_keys=True, default=str) + "\n")
    log.info("cohort summary written: %s", target)
    return target


def read_summary(study: StudyConfig) -> CohortSummary | None:
    """The summary the cohort stage left for ``study``, or None (none written, an older format, a file that is
    not the one written, or a split rule that has changed since)."""
    folder = summary_dir(study)
    try:
        entry = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        if entry.get("format") != FORMAT:
            return None
        raw = {}
        for name in ("frame.arrow", "variables.arrow"):
            data = (folder / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"][name]:
                log.warning("%s: not the file the cohort stage wrote; the cohort is read again", folder / name)
                return None
            raw[name] = data
        # a summary of another cohort, other parameters or another split rule than study.toml's now
        if (entry["study_cohort"] != _plain(study.cohort.model_dump() if study.cohort else None)
                or entry["split_rule"] != _plain(study.split.model_dump())
                or entry.get("complete_case") != complete_case_columns(study)):
            return None
        return CohortSummary(
            hash=str(entry["hash"]), name=str(entry["name"]), file=str(entry["file"]), sql=str(entry["sql"]),
            params=dict(entry["params"]), split_rule=dict(entry["split_rule"]), views=dict(entry["views"]),
            table1_html=str(entry["table1_html"]), flows=dict(entry["flows"]),
            coverage={str(k): int(v) for k, v in entry["coverage"].items()},
            frame=pl.read_ipc(io.BytesIO(raw["frame.arrow"])),
            variables=pl.read_ipc(io.BytesIO(raw["variables.arrow"])),
            incomplete=tuple(str(p) for p in entry.get("incomplete", [])),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, pl.exceptions.PolarsError):
        return None
