"""Cohorts: SQL files that pick patients, checked, split, and joined with stored features.

A cohort is one read-only SQL query (``sql/cohorts/<name>.sql``, or
``<study>/cohorts/<name>.sql``, which wins on a name clash) that returns one row
per patient: ``patient_id`` and ``label`` (0/1/NULL), optionally ``time``,
``event``, ``center``, ``split``, and any clinical columns.

Running one:

* The store is opened read-only in a sandbox (:mod:`analytics.sandbox`): SQL
  reads files only below the study's folder and the store's ``instances/``,
  no URL, no extension, and cannot change that configuration. Every
  ``sql/views/<name>.sql`` (and ``<study>/views/<name>.sql``, which wins)
  holds one SELECT and becomes the TEMP VIEW ``<name>`` on that connection. A view that does not bind on this
  store (it names a column the store lacks) is skipped and named in the error
  of any cohort that then fails to find it.
* The file must hold exactly one SELECT (``WITH`` / ``FROM`` / ``VALUES`` are
  SELECTs); anything else (INSERT, CREATE, DROP, COPY, ATTACH, SET, ...) is
  refused before it runs (EXPLAIN ANALYZE too: it runs what it explains), and
  the read-only connection refuses writes anyway.
* Named parameters (``$min_age``, ``$centers`` a list) are bound by DuckDB,
  never pasted into the text. Values come from ``study.toml``
  (``[cohort] params``, applied to the study's own cohort) overlaid by the
  caller's (``--param name=value``). A parameter the SQL needs but nobody gave,
  or one given but not used (a misspelt name, with the likely intended one),
  is an error.
* Checks, each naming the file, the column and the result rows: columns
  ``patient_id`` and ``label`` present; at least one row; ``patient_id`` not
  NULL, unique and present in the store's ``patients``; ``label`` and ``event``
  0, 1 or NULL; ``time`` numeric and not negative.
* Rows are ordered by ``patient_id`` (whatever the SQL's order), ``center``
  comes from ``patients`` when the SQL does not return it, and the split rule
  (:mod:`analytics.splits`) adds ``split``.

The result, :class:`Cohort`, is what models consume; see its docstring.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from analytics import sandbox
from analytics.splits import (
    SPLITS,
    SplitError,
    assign_splits,
    check_splits,
    split_counts,
)
from analytics.table1 import Table1, table1
from pipeline import atomic, store
from pipeline.config import SplitSection, Study

log = logging.getLogger("cohortlab.cohort")

RESERVED = ("patient_id", "label", "time", "event", "center", "split")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
DEFAULT_POOLING = "mean"
_IDS_TABLE = "_cohortlab_cohort_ids"
_TRAILING = re.compile(r";(\s|--[^\n]*)*$")  # a closing semicolon and any comments after it


class CohortError(ValueError):
    """A cohort that cannot be run or breaks a rule; the message names the file, column and rows."""


# --- finding files -----------------------------------------------------------------------


def cohort_dirs(study: Study) -> list[Path]:
    """Folders searched for ``<name>.sql``, first match wins: the study's, then the repository's."""
    return [study.root / "cohorts", store.sql_dir() / "cohorts"]


def find_cohort(study: Study, name: str) -> Path:
    """The SQL file of cohort ``name`` (a name, or a path to a ``.sql`` file)."""
    if name.endswith(".sql"):
        for cand in (Path(name), study.root / name):
            if cand.is_file():
                return cand.resolve()
        raise CohortError(f"cohort file {name} not found (looked in . and {study.root})")
    if not NAME.match(name):
        raise CohortError(f"cohort name {name!r}: use letters, digits, '_' and '-', or give a path to a .sql file")
    for folder in cohort_dirs(study):
        cand = folder / f"{name}.sql"
        if cand.is_file():
            return cand.resolve()
    known = sorted({p.stem for d in cohort_dirs(study) if d.is_dir() for p in d.glob("*.sql")})
    raise CohortError(
        f"no cohort named '{name}' in {' or '.join(str(d) for d in cohort_dirs(study))}"
        f" (known: {', '.join(known) or 'none'})"
    )


def view_files(study: Study | None = None) -> dict[str, Path]:
    """``name -> file`` of the shared views; the study's ``views/`` wins over ``sql/views/``."""
    folders = [store.sql_dir() / "views"] + ([study.root / "views"] if study is not None else [])
    out: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.glob("*.sql")):
                out[p.stem] = p
    return out


def cohort_params(study: Study, name: str | None, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters to bind: the study's ``[cohort] params`` (for its own cohort) overlaid by ``params``."""
    out: dict[str, Any] = {}
    if study.cohort is not None and (name is None or name == study.cohort.name):
        out.update(study.cohort.params)
    out.update(params or {})
    return out


# --- running SQL read-only -----------------------------------------------------------------


def create_views(con: duckdb.DuckDBPyConnection, files: Mapping[str, Path]) -> dict[str, str]:
    """Create each view file as a TEMP VIEW; returns ``name -> reason`` for views that did not bind.

    Views may use each other: creation is retried until no further view binds.
    """
    pending: dict[str, str] = {}
    for name, path in files.items():
        if not NAME.match(name):
            raise CohortError(f"{path}: a view's file name becomes its name; use letters, digits, '_' and '-'")
        text = path.read_text(encoding="utf-8")
        stmts = _parse(con, text, str(path))
        if len(stmts) != 1 or stmts[0].type != duckdb.StatementType.SELECT:
            raise CohortError(f"{path}: a view file holds exactly one SELECT")
        if stmts[0].named_parameters:
            raise CohortError(f"{path}: a view cannot take parameters ({sorted(stmts[0].named_parameters)})")
        pending[name] = _TRAILING.sub("", text.strip())
    failed: dict[str, str] = {}
    while pending:
        failed = {}
        for name, text in pending.items():
            try:
                con.execute(f'CREATE OR REPLACE TEMP VIEW "{name}" AS\n{text}\n')
            except duckdb.Error as exc:
                failed[name] = str(exc).splitlines()[0]
        if len(failed) == len(pending):
            break
        pending = {n: pending[n] for n in failed}
    for name, reason in failed.items():
        log.info("view %s not created on this store: %s", name, reason)
    return failed


@dataclass(frozen=True)
class Session:
    """A read-only connection, the views that could not be created on it (name -> reason), the folders it reads."""

    con: duckdb.DuckDBPyConnection
    view_failures: dict[str, str]
    readable: tuple[str, ...] = ()


@contextmanager
def read_only(
    store_path: str | Path, views: Mapping[str, Path] | None = None, folders: Sequence[str | Path] = ()
) -> Iterator[Session]:
    """Open the store read-only in the SQL sandbox, with the shared views as TEMP views; closed on exit.

    The connection reads files only below ``folders`` (the study root) and the
    store's ``instances/`` folder, and loads no extension
    (:func:`analytics.sandbox.connect`); the views are created inside it.
    """
    con = sandbox.connect(store_path, folders)
    try:
        yield Session(con, create_views(con, views or {}), tuple(sandbox.readable(store_path, folders)))
    finally:
        con.close()


def _parse(con: duckdb.DuckDBPyConnection, text: str, source: str) -> list[Any]:
    try:
        return list(con.extract_statements(text))
    except duckdb.Error as exc:
        raise CohortError(f"{source}: the SQL does not parse: {exc}") from None


def _bind(stmt: Any, params: Mapping[str, Any], source: str) -> dict[str, Any]:
    used = set(stmt.named_parameters)
    positional = sorted(u for u in used if u.isdigit())
    if positional:
        raise CohortError(f"{source}: uses positional parameters (?, $1); name them ($min_age) so they can be bound")
    missing = sorted(used - set(params))
    unknown = sorted(set(params) - used)
    if unknown:  # a misspelt name is both unknown and missing: name it first, with the likely intent
        hints = {u: difflib.get_close_matches(u, missing, n=1) for u in unknown}
        named = ", ".join(u + (f" (did you mean ${hints[u][0]}?)" if hints[u] else "") for u in unknown)
        raise CohortError(
            f"{source}: unknown parameter(s) {named}; the SQL uses "
            f"{', '.join('$' + u for u in sorted(used)) or 'no parameters'}"
            + (f"; {', '.join('$' + m for m in missing)} not given" if missing else "")
        )
    if missing:
        raise CohortError(
            f"{source}: parameter(s) {', '.join('$' + m for m in missing)} not given; set them in study.toml "
            f"[cohort] params or pass --param {missing[0]}=..."
        )
    return {k: params[k] for k in sorted(used)}


def run_select(
    session: Session,
    text: str,
    params: Mapping[str, Any] | None = None,
    source: str = "query",
    allow_explain: bool = False,
) -> pl.DataFrame:
    """Run one read-only statement with bound named parameters and return a polars frame.

    Anything but a single SELECT (or, when ``allow_explain``, a plain EXPLAIN
    of one SELECT) is refused before it runs. EXPLAIN ANALYZE is refused
    always: it runs the statement it explains.
    """
    stmts = _parse(session.con, text, source)
    if len(stmts) != 1:
        raise CohortError(f"{source}: holds {len(stmts)} statements; give exactly one SELECT (nothing was run)")
    kind = stmts[0].type
    explain = allow_explain and kind == duckdb.StatementType.EXPLAIN
    if not (kind == duckdb.StatementType.SELECT or (explain and sandbox.explained_select(session.con, text))):
        what = sandbox.statement_name(kind, text)
        article = "an" if what[0] in "AEIO" or what == "UPDATE" else "a"
        runs = ", which runs the statement it explains" if what == "EXPLAIN ANALYZE" else ""
        reads = "SELECT / WITH / FROM" + (", or EXPLAIN of a SELECT" if allow_explain else "")
        raise CohortError(
            f"{source}: is {article} {what} statement{runs}; cohort and ad-hoc SQL may only read ({reads}); "
            "nothing was run and the store is unchanged"
        )
    values = _bind(stmts[0], params or {}, source)
    try:
        return store.query(session.con, text, values or None)
    except duckdb.Error as exc:
        msg = str(exc)
        if isinstance(exc, duckdb.PermissionException):  # the sandbox refused a file, URL or extension
            msg = f"{msg.splitlines()[0]}; SQL here reads files only below {', '.join(session.readable)}"
        if session.view_failures and "Catalog Error" in msg:
            skipped = "; ".join(f"{n}: {r}" for n, r in sorted(session.view_failures.items()))
            msg += f" (views not available on this store: {skipped})"
        raise CohortError(f"{source}: {msg}") from None
    except pl.exceptions.DuplicateError as exc:
        raise CohortError(f"{source}: the result has duplicate column names ({exc}); alias them") from None


# --- checking a cohort's rows -----------------------------------------------------------------


def _rows(mask: pl.Series | Sequence[bool], ids: Sequence[Any]) -> str:
    bad = [f"row {i + 1} ({ids[i]})" for i, m in enumerate(mask) if m]
    return ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")


def _binary(frame: pl.DataFrame, col: str, source: str) -> pl.Series:
    s = frame[col]
    ids = frame["patient_id"].to_list()
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

    Errors name the result rows (1-based, in the SQL's order). ``known_ids``:
    the store's patient ids, which every cohort patient must be one of.
    """
    missing = [c for c in ("patient_id", "label") if c not in frame.columns]
    if missing:
        raise CohortError(
            f"{source}: no column(s) {', '.join(missing)}; a cohort returns patient_id and label "
            f"(it returned {', '.join(frame.columns) or 'no columns'})"
        )
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
    cols: dict[str, pl.Series] = {"label": _binary(frame, "label", source)}
    if "event" in frame.columns:
        cols["event"] = _binary(frame, "event", source)
    if "time" in frame.columns:
        t = frame["time"]
        if not t.dtype.is_numeric():
            raise CohortError(f"{source}: column time must be numeric, not {t.dtype}")
        t = t.cast(pl.Float64).fill_nan(None)
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


# --- feature blocks and instance bags --------------------------------------------------------------


def feature_key(ref: str) -> tuple[str, str]:
    """``"resnet50"`` -> ``("resnet50", "mean")``; ``"resnet50:max"`` -> ``("resnet50", "max")``."""
    fs, _, pooling = ref.partition(":")
    if not fs or ":" in pooling:
        raise CohortError(f"feature reference {ref!r}: write feature_set or feature_set:pooling")
    return fs, pooling or DEFAULT_POOLING


def _key(ref: str) -> str:
    return ":".join(feature_key(ref))


@dataclass(frozen=True, eq=False)
class FeatureBlock:
    """One pooled feature set aligned to the cohort's patients.

    Attributes
    ----------
    key
        ``"feature_set:pooling"``.
    values
        float32 ``(n_patients, dim)``, read-only; rows of patients without the
        features are NaN.
    available
        bool ``(n_patients,)``: the patient has these features.
    n_instances
        int32 ``(n_patients,)``: instances pooled (0 where unavailable).
    names
        ``"feature_set:pooling:j"`` for j in 0..dim-1.
    """

    key: str
    values: np.ndarray
    available: np.ndarray
    n_instances: np.ndarray
    names: tuple[str, ...]

    def take(self, index: np.ndarray) -> FeatureBlock:
        return replace(self, values=_frozen(self.values[index]), available=_frozen(self.available[index]),
                       n_instances=_frozen(self.n_instances[index]))

    def digest(self) -> str:
        h = hashlib.sha256(self.key.encode())
        for arr in (self.available, self.n_instances, self.values):
            h.update(np.ascontiguousarray(arr).view(np.uint8).reshape(-1).data)
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Bags:
    """Instance bags of one feature set for multiple-instance learning, aligned to the cohort.

    Attributes
    ----------
    feature_set
        The feature set's name.
    patient_ids
        The cohort's patients, in cohort order.
    embeddings
        One float32 ``(n_i, dim)`` array per patient (``(0, dim)`` when the
        patient has no instances), ordered by source_id then instance.
    instances
        One frame per patient, row j describing ``embeddings[i][j]``: source_id,
        instance, x, y, z, level, tissue_fraction (x, y in level-0 pixels), for
        attention maps.
    dim
        Embedding width.
    """

    feature_set: str
    patient_ids: tuple[str, ...]
    embeddings: tuple[np.ndarray, ...]
    instances: tuple[pl.DataFrame, ...]
    dim: int

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, pl.DataFrame]:
        return self.embeddings[i], self.instances[i]

    @property
    def sizes(self) -> np.ndarray:
        """Instances per patient."""
        return np.array([e.shape[0] for e in self.embeddings], dtype=np.int64)

    @property
    def missing(self) -> list[str]:
        """Patients with no instances."""
        return [p for p, e in zip(self.patient_ids, self.embeddings) if e.shape[0] == 0]

    def take(self, index: np.ndarray) -> Bags:
        idx = [int(i) for i in index]
        return replace(self, patient_ids=tuple(self.patient_ids[i] for i in idx),
                       embeddings=tuple(self.embeddings[i] for i in idx),
                       instances=tuple(self.instances[i] for i in idx))

    def digest(self) -> str:
        h = hashlib.sha256(self.feature_set.encode())
        for pid, emb, meta in zip(self.patient_ids, self.embeddings, self.instances):
            h.update(pid.encode() + b"\0")
            h.update(np.ascontiguousarray(emb).view(np.uint8).reshape(-1).data)
            h.update(meta.write_ndjson().encode())
        return h.hexdigest()


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _register_ids(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> None:
    con.register(_IDS_TABLE, pa.table({"patient_id": pa.array(list(ids), type=pa.string()),
                                       "pos": pa.array(np.arange(len(ids), dtype=np.int64))}))


def _stored_dim(con: duckdb.DuckDBPyConnection, fs: str, pooling: str) -> int | None:
    rows = con.execute(
        "SELECT len(embedding) FROM patient_features WHERE feature_set = ? AND pooling = ? LIMIT 1", [fs, pooling]
    ).fetchall()
    return int(rows[0][0]) if rows else None


def read_block(con: duckdb.DuckDBPyConnection, ref: str, patient_ids: Sequence[str]) -> FeatureBlock:
    """Pooled features ``ref`` for ``patient_ids`` (in that order; NaN rows where absent).

    Joins the store's rows to the patient positions inside DuckDB (no ORDER BY:
    sorting rows of 2048 floats is the slow part of a plain read) and scatters
    the float32 matrix into place; when the store already holds the rows in
    cohort order and every patient has them, the Arrow buffer is used as is.
    """
    fs, pooling = feature_key(ref)
    n = len(patient_ids)
    _register_ids(con, patient_ids)
    try:
        tbl = con.sql(
            f"SELECT c.pos, f.n_instances, f.embedding FROM patient_features f JOIN {_IDS_TABLE} c USING (patient_id) "
            "WHERE f.feature_set = $fs AND f.pooling = $pooling",
            params={"fs": fs, "pooling": pooling},
        ).to_arrow_table()
    finally:
        con.unregister(_IDS_TABLE)
    if tbl.num_rows:
        matrix = store.embeddings_matrix(tbl.column("embedding"))
        dim = matrix.shape[1]
    else:
        dim = _stored_dim(con, fs, pooling)
        matrix = np.zeros((0, dim or 0), np.float32)
    if dim is None:
        have = con.execute(
            "SELECT DISTINCT feature_set || ':' || pooling FROM patient_features ORDER BY 1"
        ).fetchall()
        raise CohortError(
            f"no pooled features '{fs}:{pooling}' in the store (have: {', '.join(r[0] for r in have) or 'none'})"
        )
    pos = tbl.column("pos").to_numpy()
    available = np.zeros(n, dtype=bool)
    available[pos] = True
    n_inst = np.zeros(n, dtype=np.int32)
    n_inst[pos] = tbl.column("n_instances").to_numpy(zero_copy_only=False)
    if len(pos) == n and (n == 0 or (pos[0] == 0 and (np.diff(pos) == 1).all())):
        values = matrix  # already in cohort order, nothing missing
    else:
        values = np.empty((n, dim), dtype=np.float32)
        values[pos] = matrix
        values[~available] = np.nan
    names = tuple(f"{fs}:{pooling}:{j}" for j in range(dim))
    return FeatureBlock(f"{fs}:{pooling}", _frozen(values), _frozen(available), _frozen(n_inst), names)


def read_bags(con: duckdb.DuckDBPyConnection, feature_set: str, patient_ids: Sequence[str]) -> Bags:
    """Instance bags of ``feature_set`` for ``patient_ids`` (in that order), from the instance Parquet files."""
    rows = con.execute("SELECT dim FROM feature_sets WHERE name = ?", [feature_set]).fetchall()
    known = rows[0] if rows else None
    if known is None:
        raise CohortError(f"no feature set '{feature_set}' in the store")
    _register_ids(con, patient_ids)
    try:
        sources = con.execute(
            f"SELECT e.source_id FROM embed_items e JOIN {_IDS_TABLE} c USING (patient_id) "
            "WHERE e.feature_set = ? AND e.status = 'done' ORDER BY e.source_id",
            [feature_set],
        ).fetchall()
    finally:
        con.unregister(_IDS_TABLE)
    inst = store.read_instances(con, feature_set, [s[0] for s in sources]) if sources else None
    dim = int(known[0]) if known[0] is not None else 0
    n = len(patient_ids)
    if inst is None or inst.height == 0:
        empty = pl.DataFrame(schema={c: t for c, t in _META_SCHEMA.items()})
        return Bags(feature_set, tuple(patient_ids), tuple(np.zeros((0, dim), np.float32) for _ in range(n)),
                    tuple(empty for _ in range(n)), dim)
    where = pl.DataFrame({"patient_id": list(patient_ids), "_pos": np.arange(n, dtype=np.int64)})
    inst = inst.join(where, on="patient_id", how="inner").sort(["_pos", "source_id", "instance"])
    matrix = store.embeddings_matrix(inst["embedding"])
    dim = matrix.shape[1]
    counts = np.bincount(inst["_pos"].to_numpy(), minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    meta = inst.select(list(_META_SCHEMA)).cast(_META_SCHEMA)
    embeddings = tuple(_frozen(matrix[s:s + c]) for s, c in zip(starts, counts))
    frames = tuple(meta.slice(int(s), int(c)) for s, c in zip(starts, counts))
    return Bags(feature_set, tuple(patient_ids), embeddings, frames, dim)


_META_SCHEMA: dict[str, Any] = {
    "source_id": pl.String, "instance": pl.Int32, "x": pl.Int64, "y": pl.Int64, "z": pl.Int64,
    "level": pl.Int32, "tissue_fraction": pl.Float64,
}


# --- the cohort ---------------------------------------------------------------------------------------


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
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    @cached_property
    def _rows_digest(self) -> str:
        h = hashlib.sha256(str(self.frame.schema).encode())
        h.update(self.frame.write_ndjson().encode())
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
) -> Cohort:
    """Run, check and split a cohort file on an open read-only session and join features (see :func:`load_cohort`)."""
    if on_missing not in ("keep", "drop", "error"):
        raise CohortError(f"on_missing must be keep, drop or error, not {on_missing!r}")
    con = session.con
    source = str(file)
    sql = file.read_text(encoding="utf-8")
    patients = store.query(con, "SELECT patient_id, center AS _store_center FROM patients")
    frame = check_cohort(run_select(session, sql, params, source), source, patients["patient_id"])
    if "center" not in frame.columns:
        frame = frame.join(patients, on="patient_id", how="left", maintain_order="left")
        frame = frame.rename({"_store_center": "center"})
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

    ids = frame["patient_id"].to_list()
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
    )
    return _handle_missing(cohort, on_missing, split)


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
        check_splits(out.frame["patient_id"], out.frame["split"], out.frame["label"], expected=present,
                     source=f"cohort {cohort.name} after dropping patients without features")
    except SplitError as exc:
        raise CohortError(str(exc)) from None
    return out


def load_cohort(
    study: Study,
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
    """
    if name is None:
        if study.cohort is None:
            raise CohortError(f"{study.root / 'study.toml'}: no [cohort] name; name a cohort")
        name = study.cohort.name
    file = find_cohort(study, name)
    bound = cohort_params(study, name, params)
    views = view_files(study)
    with read_only(study.store_path, views, [study.root]) as session:
        return build_cohort(
            session, file, bound, split or study.split, name=Path(name).stem, features=features, bags=bags,
            on_missing=on_missing, views=views, store_path=study.store_path,
        )


# --- coverage and the CLI verbs ----------------------------------------------------------------------


def feature_coverage(con: duckdb.DuckDBPyConnection, patient_ids: Sequence[str], refs: Sequence[str]) -> pl.DataFrame:
    """For each ``feature_set:pooling`` (or ``feature_set:instances``), how many patients have it and who lacks it."""
    _register_ids(con, patient_ids)
    rows = []
    try:
        for ref in refs:
            fs, pooling = feature_key(ref)
            if pooling == "instances":
                sql = (f"SELECT DISTINCT patient_id FROM embed_items JOIN {_IDS_TABLE} USING (patient_id) "
                       "WHERE feature_set = $fs AND status = 'done'")
                have = {r[0] for r in con.sql(sql, params={"fs": fs}).fetchall()}
            else:
                sql = (f"SELECT patient_id FROM patient_features JOIN {_IDS_TABLE} USING (patient_id) "
                       "WHERE feature_set = $fs AND pooling = $pooling")
                have = {r[0] for r in con.sql(sql, params={"fs": fs, "pooling": pooling}).fetchall()}
            lacking = [p for p in patient_ids if p not in have]
            rows.append({"features": f"{fs}:{pooling}", "patients": len(have), "missing": len(lacking),
                         "missing ids": ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")})
    finally:
        con.unregister(_IDS_TABLE)
    return pl.DataFrame(rows, schema={"features": pl.String, "patients": pl.Int64, "missing": pl.Int64,
                                      "missing ids": pl.String})


def _print(frame: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=500, tbl_cols=-1, fmt_str_lengths=80, tbl_hide_dataframe_shape=True,
                   tbl_width_chars=400, tbl_hide_column_data_types=True):
        print(frame)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Cohort and split errors reach the CLI as its one-line user errors."""
    try:
        yield
    except (CohortError, SplitError) as exc:
        from analytics.cli import UserError

        raise UserError(str(exc)) from None


def show_cohort(study: Study, name: str | None, params: dict[str, Any]) -> Cohort:
    """``cohortlab cohort``: counts by split x label, patients missing features, Table 1."""
    with _user_errors():
        if name is None and study.cohort is None:
            raise CohortError(f"{study.root / 'study.toml'}: no [cohort] name; name a cohort")
        name = name or study.cohort.name  # type: ignore[union-attr]
        file = find_cohort(study, name)
        views = view_files(study)
        with read_only(study.store_path, views, [study.root]) as session:
            cohort = build_cohort(session, file, cohort_params(study, name, params), study.split,
                                  name=Path(name).stem, views=views, store_path=study.store_path)
            refs = [f"{f.name}:{p}" for f in study.feature_sets for p in f.pooling]
            refs += [f"{f.name}:instances" for f in study.feature_sets]
            coverage = feature_coverage(session.con, cohort.patient_ids, refs)
        print(f"cohort {cohort.name} ({file})  params {cohort.params or '{}'}  hash {cohort.hash[:12]}")
        print(f"{len(cohort)} patients\n")
        _print(cohort.counts())
        print("\nfeatures:")
        if coverage.height:
            _print(coverage)
        else:
            print("(no feature sets in study.toml)")
        t1 = cohort.table1()
        for group in t1.groups:
            print(f"\nTable 1, {group}:")
            _print(t1.block(group))
        return cohort


def run_sql(study: Study, query: str, out: Path | None = None, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """``cohortlab sql``: one read-only query on the store; print it, or write CSV / Parquet to ``out``."""
    with _user_errors():
        if out is not None and Path(out).suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise CohortError(f"--out {out}: write .csv or .parquet")
        with read_only(study.store_path, view_files(study), [study.root]) as session:
            frame = run_select(session, query, params or {}, source="query", allow_explain=True)
        if out is None:
            _print(frame)
            return frame
        out = Path(out)
        try:
            with atomic.staged(out) as tmp:
                if out.suffix.lower() == ".csv":
                    frame.write_csv(tmp)
                else:
                    frame.write_parquet(tmp)
        except pl.exceptions.PolarsError as exc:
            raise CohortError(f"--out {out}: cannot write this result ({exc}); list columns need .parquet") from None
        print(f"{frame.height} rows -> {out}")
        return frame
