"""The cohort: :class:`Cohort`, and running, checking and splitting a cohort file into one.

A cohort is one read-only SQL query (``sql/cohorts/<name>.sql``, or
``<study>/cohorts/<name>.sql``, which wins on a name clash) that returns one row
per patient; :func:`load_cohort` runs it (:mod:`analytics.cohort.sql`), checks
its rows (:mod:`analytics.cohort.checks`), adds the split
(:mod:`analytics.splits`) and joins stored features
(:mod:`analytics.cohort.features`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from analytics.cohort.checks import RESERVED, check_cohort
from analytics.cohort.errors import CohortError
from analytics.cohort.features import Bags, FeatureBlock, _key, feature_key, read_bags, read_block
from analytics.cohort.files import cohort_name, cohort_params, find_cohort, view_files
from analytics.cohort.sql import Session, read_only, run_select
from analytics.splits import SPLITS, SplitError, assign_splits, check_splits, outcome_strata, split_counts
from analytics.table1 import Table1, table1
from pipeline import store
from pipeline.config import SplitSection, StudyConfig

log = logging.getLogger("cohortlab.cohort")


@dataclass(frozen=True, eq=False)
class Cohort:
    """A checked, split cohort with its joined features; everything aligned to ``patient_ids``.

    Patients are in ``patient_id`` order. Nothing is imputed or scaled here:
    models fit that on training patients only.

    Attributes
    ----------
    name, file, sql
        The cohort's name, its SQL file and text.
    params
        The bound parameters.
    split_rule
        The ``[split]`` section applied.
    frame
        One row per patient: ``patient_id``, ``label`` (Int8, nullable),
        ``time`` (Float64) and ``event`` (Int8) when the SQL returns them,
        ``center``, ``split``, then the SQL's other (clinical) columns, typed as
        the store holds them.
    blocks
        ``"feature_set:pooling" -> FeatureBlock`` for the pooled features loaded.
    bag_sets
        ``feature_set -> Bags`` for instance bags loaded with the cohort.
    variables
        The store's ``variables`` table (type, unit, role, label, levels).
    feature_sets
        Provenance of each feature set loaded (the ``feature_sets`` row).
    store_path
        The store read.
    views
        ``name -> SQL`` of the views created for the cohort.
    left_out
        Instance files the store's ``instances`` view left out when the cohort
        was loaded (missing, damaged, another source's, or not the file written),
        as :class:`pipeline.store.InstanceProblem`: their sources are absent from
        the bags, and their patients count as missing there.
    incomplete
        Patients the cohort SQL selected but ``[imputation] method = "complete_case"``
        left out for a missing value in a model's clinical variables (before the split).
    completions
        With ``[imputation] from``: per imputation, ``frame`` with the clinical columns the cohort SQL returned on
        that imputation's completed ``clinical`` table (:mod:`analytics.cohort.completed`); empty otherwise.
    """

    name: str
    file: Path
    sql: str
    params: dict[str, Any]
    split_rule: dict[str, Any]
    frame: pl.DataFrame
    blocks: dict[str, FeatureBlock] = field(default_factory=dict)
    bag_sets: dict[str, Bags] = field(default_factory=dict)
    variables: pl.DataFrame = field(default_factory=pl.DataFrame)
    feature_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_path: Path | None = None
    views: dict[str, str] = field(default_factory=dict)
    left_out: tuple[store.InstanceProblem, ...] = ()
    incomplete: tuple[str, ...] = ()
    completions: tuple[pl.DataFrame, ...] = ()

    # --- patients and outcomes
    def __len__(self) -> int:
        return self.frame.height

    @property
    def patient_ids(self) -> list[str]:
        return self.frame["patient_id"].to_list()

    @property
    def groups(self) -> np.ndarray:
        """Grouping for grouped cross-validation: the patient id (one row per patient)."""
        return self.frame["patient_id"].to_numpy().astype(object)

    @property
    def split(self) -> np.ndarray:
        """``"train"`` / ``"internal"`` / ``"external"`` per patient."""
        return self.frame["split"].to_numpy().astype(object)

    @property
    def center(self) -> np.ndarray:
        return self.frame["center"].to_numpy().astype(object)

    @property
    def y(self) -> np.ndarray:
        """Labels as int64; raises when any patient is unlabelled (use :meth:`labelled`)."""
        return self._complete_column("label", np.int64)

    @property
    def time(self) -> np.ndarray | None:
        """Follow-up time (float64), or None when the cohort has no ``time`` column."""
        return self._complete_column("time", np.float64) if "time" in self.frame.columns else None

    @property
    def event(self) -> np.ndarray | None:
        """Event indicator (int64), or None when the cohort has no ``event`` column."""
        return self._complete_column("event", np.int64) if "event" in self.frame.columns else None

    def _complete_column(self, col: str, dtype: Any) -> np.ndarray:
        s = self.frame[col]
        if s.null_count():
            ids = self.frame.filter(s.is_null())["patient_id"].to_list()
            raise CohortError(
                f"cohort {self.name}: column {col} is NULL for {len(ids)} patients ({', '.join(ids[:10])}); "
                f"take a subset first, e.g. cohort.subset(cohort.frame['{col}'].is_not_null())"
            )
        return s.to_numpy().astype(dtype)

    def labelled(self) -> Cohort:
        """The patients with a label."""
        return self.subset(self.frame["label"].is_not_null())

    # --- features
    @property
    def missing(self) -> dict[str, list[str]]:
        """Patients without each loaded block (``"fs:pooling"``) or bag set (``"fs:instances"``)."""
        out = {k: [p for p, a in zip(self.patient_ids, b.available) if not a] for k, b in self.blocks.items()}
        out.update({f"{fs}:instances": b.missing for fs, b in self.bag_sets.items()})
        return out

    def available(self, features: Sequence[str] | None = None) -> np.ndarray:
        """Boolean mask: the patient has every block in ``features`` (default: all loaded)."""
        mask = np.ones(len(self), dtype=bool)
        for key in self._keys(features):
            mask &= self.blocks[key].available
        return mask

    def _keys(self, features: Sequence[str] | None) -> list[str]:
        keys = list(self.blocks) if features is None else [_key(f) for f in features]
        absent = [k for k in keys if k not in self.blocks]
        if absent:
            raise CohortError(
                f"cohort {self.name}: feature block(s) {absent} not loaded; pass them to "
                f"load_cohort(features=[...]) (loaded: {list(self.blocks) or 'none'})"
            )
        return keys

    def matrix(self, features: Sequence[str] | None = None, dtype: Any = np.float32) -> tuple[np.ndarray, list[str]]:
        """Feature matrix of the given blocks side by side, and the column names.

        Rows follow ``patient_ids``; patients without a block have NaN in its
        columns (see :attr:`missing` / :meth:`available`). A single float32
        block is returned without copying (read-only).
        """
        keys = self._keys(features)
        if not keys:
            return np.zeros((len(self), 0), dtype=dtype), []
        parts = [self.blocks[k].values for k in keys]
        names = [n for k in keys for n in self.blocks[k].names]
        if len(parts) == 1 and np.dtype(dtype) == parts[0].dtype:
            return parts[0], names
        return np.hstack(parts).astype(dtype, copy=False), names

    def bags(self, feature_set: str) -> Bags:
        """Instance bags of ``feature_set``: the ones loaded with the cohort, else read now."""
        if feature_set in self.bag_sets:
            return self.bag_sets[feature_set]
        if self.store_path is None:
            raise CohortError(f"cohort {self.name}: no store to read bags from")
        with read_only(self.store_path) as session:
            verify_instances(session, self.store_path, [feature_set])
            return read_bags(session.con, feature_set, self.patient_ids)

    # --- clinical
    @property
    def clinical_columns(self) -> list[str]:
        """The SQL's columns other than patient_id, label, time, event, center, split."""
        return [c for c in self.frame.columns if c not in RESERVED]

    def clinical(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Typed clinical columns (default: all), rows in patient order, nothing imputed."""
        cols = self.clinical_columns if columns is None else list(columns)
        unknown = [c for c in cols if c not in self.frame.columns]
        if unknown:
            raise CohortError(
                f"cohort {self.name} ({self.file}): no column(s) {unknown}; it returns {self.clinical_columns}"
            )
        return self.frame.select(cols)

    def variable_types(self, columns: Sequence[str] | None = None) -> dict[str, str]:
        """``column -> type`` (numeric / integer / binary / categorical / text / date).

        From the store's ``variables`` table; a column the SQL computed is typed
        by its dtype (numbers numeric, booleans binary, dates date, text categorical).
        """
        declared = {}
        if self.variables.height:
            declared = dict(zip(self.variables["name"].to_list(), self.variables["type"].to_list()))
        out = {}
        for c in self.clinical(columns).columns:
            dt = self.frame[c].dtype
            if c in declared:
                out[c] = declared[c]
            elif dt == pl.Boolean:
                out[c] = "binary"
            elif dt.is_integer():
                out[c] = "integer"
            elif dt.is_numeric():
                out[c] = "numeric"
            elif dt.is_temporal():
                out[c] = "date"
            else:
                out[c] = "categorical"
        return out

    # --- subsets and summaries
    def subset(self, which: str | Sequence[str] | np.ndarray | pl.Series) -> Cohort:
        """The cohort restricted to a split name, a list of split names, a boolean mask or row indices."""
        index = self._index(which)
        return replace(
            self,
            frame=self.frame.select(pl.all().gather(index)),
            blocks={k: b.take(index) for k, b in self.blocks.items()},
            bag_sets={k: b.take(index) for k, b in self.bag_sets.items()},
            completions=tuple(f.select(pl.all().gather(index)) for f in self.completions),
        )

    def _index(self, which: str | Sequence[str] | np.ndarray | pl.Series) -> np.ndarray:
        if isinstance(which, str) or (isinstance(which, (list, tuple)) and which and isinstance(which[0], str)):
            names = [which] if isinstance(which, str) else list(which)
            bad = [n for n in names if n not in SPLITS]
            if bad:
                raise CohortError(f"unknown split(s) {bad}; use {', '.join(SPLITS)}")
            return np.flatnonzero(np.isin(self.split, names))
        arr = which.to_numpy() if isinstance(which, pl.Series) else np.asarray(which)
        if arr.dtype == bool:
            if arr.shape != (len(self),):
                raise CohortError(f"a mask of {arr.shape[0]} values for a cohort of {len(self)} patients")
            return np.flatnonzero(arr)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise CohortError(f"subset by split name(s), a boolean mask or integer row indices, not {arr.dtype}")
        return arr.astype(np.int64)

    def counts(self) -> pl.DataFrame:
        """Patients per split and label."""
        return split_counts(self.frame["split"], self.frame["label"])

    def table1(self, columns: Sequence[str] | None = None, digits: int = 1) -> Table1:
        """Baseline characteristics by split and label (:func:`analytics.table1.table1`)."""
        return table1(self.frame, self.variables, columns=columns, digits=digits)

    # --- provenance
    def digest(self, features: Sequence[str] | None = None, bags: Sequence[str] | None = None) -> str:
        """sha256 of the cohort's definition, its rows, and the given blocks / bag sets (default: all loaded).

        Definition: SQL text, view texts, bound parameters and split rule. Rows:
        the frame as NDJSON (ids, labels, splits, clinical values), i.e. the store
        content the cohort sees. Blocks: their values and the feature set's
        provenance row. Same SQL, parameters and store give the same digest.
        """
        h = hashlib.sha256(self._definition_digest.encode())
        h.update(self._rows_digest.encode())
        for key in self._keys(features):
            h.update(key.encode() + self.blocks[key].digest().encode())
            h.update(json.dumps(self.feature_sets.get(feature_key(key)[0], {}), sort_keys=True, default=str).encode())
        for fs in (list(self.bag_sets) if bags is None else list(bags)):
            if fs not in self.bag_sets:
                raise CohortError(f"cohort {self.name}: bags of '{fs}' not loaded; pass load_cohort(bags=[...])")
            h.update(fs.encode() + self.bag_sets[fs].digest().encode())
        return h.hexdigest()

    @cached_property
    def hash(self) -> str:
        """:meth:`digest` of everything loaded (computed once)."""
        return self.digest()

    @cached_property
    def _definition_digest(self) -> str:
        payload = {"sql": self.sql, "views": self.views, "params": self.params, "split": self.split_rule}
        return store.json_digest(payload)

    @cached_property
    def _rows_digest(self) -> str:
        h = hashlib.sha256(str(self.frame.schema).encode())
        h.update(self.frame.write_ndjson().encode())
        for completed in self.completions:  # imputations read with [imputation] from: new values, a new cohort
            h.update(completed.write_ndjson().encode())
        return h.hexdigest()

    def provenance(self) -> dict[str, Any]:
        """What a report needs to trace the cohort: file, parameters, split rule, feature sets, hash."""
        return {
            "cohort": self.name, "file": str(self.file), "params": self.params, "split": self.split_rule,
            "patients": len(self), "feature_sets": self.feature_sets, "hash": self.hash,
        }


def build_cohort(
    session: Session,
    file: Path,
    params: Mapping[str, Any],
    split: SplitSection,
    name: str | None = None,
    features: Sequence[str] = (),
    bags: Sequence[str] = (),
    on_missing: Literal["keep", "drop", "error"] = "keep",
    views: Mapping[str, Path] | None = None,
    store_path: Path | None = None,
    event_codes: Mapping[int, str] | None = None,
    complete_case: Sequence[str] | None = None,
) -> Cohort:
    """Run, check and split a cohort file on an open read-only session and join features (see :func:`load_cohort`).

    ``event_codes``: the study's declared status codes (``event`` holds them instead of 0/1).
    ``complete_case``: columns a patient must have (:func:`complete_case_columns`); the others are left out
    before the split and listed in :attr:`Cohort.incomplete`.
    """
    if on_missing not in ("keep", "drop", "error"):
        raise CohortError(f"on_missing must be keep, drop or error, not {on_missing!r}")
    con = session.con
    source = str(file)
    sql = file.read_text(encoding="utf-8")
    patients = store.query(con, "SELECT patient_id, center AS _store_center FROM patients")
    frame = check_cohort(run_select(session, sql, params, source), source, patients["patient_id"], event_codes)
    if "center" not in frame.columns:
        frame = frame.join(patients, on="patient_id", how="left", maintain_order="left")
        frame = frame.rename({"_store_center": "center"})
    incomplete: tuple[str, ...] = ()
    if complete_case is not None:
        frame, incomplete = _drop_incomplete(frame, complete_case, source)
    centers = dict(zip(patients["patient_id"].to_list(), patients["_store_center"].to_list()))
    if "split" in frame.columns and split.column != "split":
        raise CohortError(
            f"{source}: returns a 'split' column but study.toml [split] does not set column = \"split\"; "
            "set it to use the SQL's splits, or rename the column"
        )
    frame = frame.with_columns(assign_splits(frame, split, centers, source))
    if split.column not in (None, "split"):
        frame = frame.drop(split.column)  # now held by `split`; keeps it out of the clinical columns
    order = [c for c in RESERVED if c in frame.columns] + [c for c in frame.columns if c not in RESERVED]
    frame = frame.select(order)

    ids = frame["patient_id"].to_list() if features or bags else []  # the readers bind ids; none to read: no list
    blocks = {}
    for ref in features:
        block = read_block(con, ref, ids)
        blocks[block.key] = block
    bag_sets = {fs: read_bags(con, fs, ids) for fs in bags}
    used_sets = sorted({feature_key(k)[0] for k in blocks} | set(bag_sets))
    fs_rows = store.query(con, "SELECT * FROM feature_sets WHERE name IN (SELECT unnest($n))", {"n": used_sets}) \
        if used_sets else pl.DataFrame()
    variables = store.query(con, "SELECT name, type, unit, role, label, n_missing, levels FROM variables ORDER BY name")
    cohort = Cohort(
        name=name or file.stem, file=file, sql=sql, params=dict(params), split_rule=split.model_dump(),
        frame=frame, blocks=blocks, bag_sets=bag_sets, variables=variables,
        feature_sets={r["name"]: r for r in fs_rows.to_dicts()},
        store_path=store_path, views={n: p.read_text(encoding="utf-8") for n, p in (views or {}).items()},
        incomplete=incomplete,
    )
    return _handle_missing(cohort, on_missing, split)


def complete_case_columns(study: StudyConfig) -> list[str] | None:
    """The clinical variables of any model, when ``[imputation] method = "complete_case"``; else None."""
    if study.imputation is None or study.imputation.method != "complete_case":
        return None
    return list(dict.fromkeys(c for m in study.models for c in m.clinical))


def _drop_incomplete(frame: pl.DataFrame, columns: Sequence[str], source: str) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """``frame`` without the patients missing any of ``columns`` (those it has), and their ids."""
    present = [c for c in columns if c in frame.columns]
    if not present:
        return frame, ()
    miss = pl.any_horizontal([pl.col(c).is_null() | (pl.col(c).is_nan() if frame[c].dtype.is_float() else pl.lit(False))
                              for c in present])
    gone = frame.filter(miss)["patient_id"].cast(pl.String).to_list()
    if gone:
        log.warning("%s: complete-case analysis leaves out %d of %d patients missing a value of %s", source,
                    len(gone), frame.height, ", ".join(present))
    return frame.filter(~miss), tuple(gone)


def verify_instances(session: Session, store_path: Path, feature_sets: Sequence[str]) -> tuple[store.InstanceProblem, ...]:
    """Verify the content of ``feature_sets``' instance files before they are read; the files left out.

    The session's ``instances`` view is made again over the files whose
    sha256 and ``source_id`` match their ``embed_items`` rows
    (:func:`pipeline.store.refresh_instances_view`); the other feature sets
    keep the cheap check (size and footer) the session was opened with. Each
    file left out is logged as a warning.
    """
    if feature_sets:
        store.refresh_instances_view(session.con, store_path, content=set(feature_sets))
    return tuple(store.left_out_instances(session.con))


def _handle_missing(cohort: Cohort, on_missing: str, split: SplitSection) -> Cohort:
    lacking = {k: v for k, v in cohort.missing.items() if v}
    if not lacking:
        return cohort
    lines = [f"{k}: {len(v)} of {len(cohort)} ({', '.join(v[:10])}{' ...' if len(v) > 10 else ''})"
             for k, v in lacking.items()]
    if on_missing == "error":
        raise CohortError(f"cohort {cohort.name}: patients without features: " + "; ".join(lines))
    if on_missing == "keep":
        log.warning("cohort %s: patients without features (kept, NaN rows): %s", cohort.name, "; ".join(lines))
        return cohort
    keep = cohort.available()
    for b in cohort.bag_sets.values():
        keep &= b.sizes > 0
    log.warning("cohort %s: dropping %d patients without features: %s", cohort.name, int((~keep).sum()),
                "; ".join(lines))
    out = cohort.subset(keep)
    present = [s for s in SPLITS if s in set(cohort.split.tolist())]
    try:
        check_splits(out.frame["patient_id"], out.frame["split"], outcome_strata(out.frame), expected=present,
                     source=f"cohort {cohort.name} after dropping patients without features")
    except SplitError as exc:
        raise CohortError(str(exc)) from None
    return out


def _codes(study: StudyConfig) -> dict[int, str] | None:
    """The study's declared status codes (None: a 0/1 event)."""
    causes = study.causes
    return causes.codes if causes is not None else None


def load_cohort(
    study: StudyConfig,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    features: Sequence[str] = (),
    bags: Sequence[str] = (),
    *,
    split: SplitSection | None = None,
    on_missing: Literal["keep", "drop", "error"] = "keep",
) -> Cohort:
    """Run a study's cohort and join features.

    Parameters
    ----------
    study
        The study (its store, cohort section and split rule).
    name
        Cohort name (default: ``[cohort] name``) or a path to a ``.sql`` file.
    params
        Parameters bound over the study's ``[cohort] params``.
    features
        Pooled feature blocks, ``"feature_set"`` (mean pooling) or ``"feature_set:pooling"``.
    bags
        Feature sets whose instance bags to load now (else :meth:`Cohort.bags` reads them on demand).
    split
        Split rule overriding the study's ``[split]``.
    on_missing
        Patients lacking a requested block or bag: ``"keep"`` (NaN rows,
        logged and listed in :attr:`Cohort.missing`), ``"drop"`` (removed,
        logged; the split checks run again) or ``"error"``.

    Returns
    -------
    Cohort
        With :attr:`Cohort.left_out`: the instance files left out. The files
        of ``bags`` are verified by content (sha256 and ``source_id``, see
        :func:`verify_instances`) before they are read; the others by size and
        footer.
    """
    name = cohort_name(study, name)
    file = find_cohort(study, name)
    bound = cohort_params(study, name, params)
    views = view_files(study)
    with read_only(study.store_path, views, [study.root], study.sql) as session:
        left_out = verify_instances(session, study.store_path, bags)
        cohort = build_cohort(
            session, file, bound, split or study.split, name=Path(name).stem, features=features, bags=bags,
            on_missing=on_missing, views=views, store_path=study.store_path, event_codes=_codes(study),
            complete_case=complete_case_columns(study),
        )
    return replace(cohort, left_out=left_out)
