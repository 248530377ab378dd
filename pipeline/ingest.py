"""Manifests -> store, validated, in one transaction.

The store mirrors the manifests: after ``ingest`` the ``patients``,
``clinical``, ``variables``, ``slides`` and ``scans`` tables hold exactly what
the manifests say (embeddings already computed are kept). Every problem found
is reported at once, each naming the file, the row and the column; if there is
any, nothing is written. Re-ingesting unchanged manifests writes nothing.

Paths are stored as the manifests give them, relative to the study folder
(see :func:`stored_path`), and each slide or scan gets a fingerprint of its
content and manifest fields, so a copied or moved study folder ingests to the
same rows and its embeddings stay valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from tqdm.auto import tqdm

from pipeline import store
from pipeline.config import StudyConfig, Variable
from pipeline.errors import CohortlabError
from pipeline.files import file_kind
from pipeline.manifest import (
    CellProblem,
    Manifest,
    ManifestError,
    TypedColumn,
    apply_levels,
    infer_column,
    read_manifest,
    require_columns,
    text_column,
    text_series,
)

log = logging.getLogger("cohortlab.ingest")

DEFAULT_ROLES = {"label": "outcome", "outcome": "outcome", "time": "time", "event": "event", "status": "event"}
SQL_TYPES = {"numeric": "DOUBLE", "integer": "BIGINT", "binary": "INTEGER", "categorical": "VARCHAR", "text": "VARCHAR", "date": "DATE"}
MAX_REPORTED = 50


class IngestError(CohortlabError, ValueError):
    """Manifests that cannot be loaded; one line per problem, each naming file, row and column."""

    def __init__(self, errors: list[CellProblem]):
        self.errors = errors
        shown = [str(e) for e in errors[:MAX_REPORTED]]
        more = len(errors) - len(shown)
        text = f"{len(errors)} problem{'s' if len(errors) != 1 else ''} in the manifests; the store was not changed:\n  " + "\n  ".join(shown)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


@dataclass
class TableChange:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.removed)

    def __str__(self) -> str:
        return f"{self.inserted} new, {self.updated} updated, {self.unchanged} unchanged, {self.removed} removed"


@dataclass
class IngestResult:
    store: Path
    changes: dict[str, TableChange] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.changes.values())

    def __str__(self) -> str:
        lines = [f"store: {self.store}" + ("" if self.changed else " (already up to date; nothing written)")]
        lines += [f"  {name:<9} {change}" for name, change in self.changes.items()]
        return "\n".join(lines)


# --- patients and clinical variables --------------------------------------------------


@dataclass(frozen=True)
class PatientTables:
    patients: pl.DataFrame
    clinical: pl.DataFrame
    variables: pl.DataFrame
    columns: list[TypedColumn]


def _role(name: str, declared: Variable | None) -> str:
    if declared is not None and declared.role is not None:
        return declared.role
    if declared is not None and declared.codes is not None:  # status codes make an event column
        return "event"
    return DEFAULT_ROLES.get(name.lower(), "predictor")


def _unique_ids(m: Manifest, column: str) -> tuple[pl.Series, list[CellProblem]]:
    """The ids of a column (String, null when empty) and a problem at every empty or repeated one, in row order;
    the search is column-wide, only the rows found wrong are visited in Python."""
    ids = text_series(m, column)
    first_of = pl.DataFrame({"id": ids}).with_row_index("row").group_by("id").agg(pl.col("row").min().alias("first"))
    first = ids.to_frame("id").join(first_of, on="id", how="left", maintain_order="left")["first"]
    wrong = (ids.is_null() | (first != pl.int_range(len(ids), eager=True)).fill_null(False)).arg_true().to_list()
    errors: list[CellProblem] = []
    for i in wrong:
        v = ids[i]
        if v is None:
            errors.append(m.error(i, column, "id is empty"))
        else:
            errors.append(m.error(i, column, f"duplicate id '{v}' (first seen at {'line' if m.is_csv else 'row'} "
                                             f"{m.row_number(int(first[i]))})"))
    return ids, errors


def _check_codes(m: Manifest, col: TypedColumn, codes: dict[str, str]) -> list[CellProblem]:
    """An event column with declared status codes: exactly those codes; one problem listing every other code."""
    raw = text_column(m, col.name)
    allowed = {int(k) for k in codes}
    where = "line" if m.is_csv else "row"
    if col.type not in ("binary", "integer", "numeric"):
        bad = [(i, v) for i, v in enumerate(raw) if v is not None]
    else:
        outside = (col.values.is_not_null() & ~col.values.cast(pl.Float64).is_in([float(a) for a in allowed]))
        bad = [(i, raw[i]) for i in outside.arg_true().to_list()]
    if not bad:
        return []
    values = sorted({str(v) for _, v in bad})
    rows = ", ".join(str(m.row_number(i)) for i, _ in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    declared = ", ".join(f"{k} ({lab})" for k, lab in codes.items())
    return [m.error(None, col.name, f"code(s) {', '.join(repr(v) for v in values)} are not declared "
                                    f"(declared: {declared}) at {where}(s) {rows}")]


def _check_roles(m: Manifest, col: TypedColumn, role: str, codes: dict[str, str] | None = None) -> list[CellProblem]:
    if role == "event" and codes is not None:
        return _check_codes(m, col, codes)
    # the checks run on the typed column at once; the manifest's text is read only for the rows found wrong
    if role in ("outcome", "event"):
        what = "label" if role == "outcome" else "event"
        if col.type not in ("binary", "integer", "numeric"):
            raw = text_column(m, col.name)
            bad = [(i, v) for i, v in enumerate(raw) if v is not None]
            return [m.error(i, col.name, f"{what} must be 0 or 1, not '{v}'") for i, v in bad[:MAX_REPORTED]]
        values = col.values.cast(pl.Float64)
        rows = (values.is_not_null() & ~values.is_in([0.0, 1.0]).fill_null(False)).arg_true().to_list()
        raw = text_column(m, col.name) if rows else []
        return [m.error(i, col.name, f"{what} must be 0 or 1, not '{raw[i]}'") for i in rows]
    if role == "time":
        if col.type not in ("integer", "numeric", "binary"):
            return [m.error(None, col.name, f"time must be numeric (column type is {col.type})")]
        values = col.values.cast(pl.Float64)
        infinite = values.is_not_null() & ~values.is_finite().fill_null(False)  # inf, -inf and nan parse as numbers
        negative = values.is_not_null() & ~infinite & (values < 0).fill_null(False)
        rows = (infinite | negative).arg_true().to_list()
        if not rows:
            return []
        raw, bad = text_column(m, col.name), set(infinite.arg_true().to_list())
        return [m.error(i, col.name, f"time must be a finite number, not '{raw[i]}'") if i in bad
                else m.error(i, col.name, f"time must not be negative, not '{raw[i]}'") for i in rows]
    return []


def read_patients(study: StudyConfig) -> tuple[PatientTables | None, set[str], list[CellProblem]]:
    """Validate the patient manifest and build the patients, clinical and variables tables.

    The set of patient ids is returned even when there are errors, so that
    slide and scan rows are checked against it in the same pass.
    """
    path = study.path(study.manifests.patients)
    try:
        m = read_manifest(path, study.manifests.encoding)
    except ManifestError as exc:
        return None, set(), exc.errors
    errors = require_columns(m, ["patient_id", "center"])
    if errors:
        return None, set(), errors
    ids, id_errors = _unique_ids(m, "patient_id")
    known = set(ids.drop_nulls().to_list())
    errors += id_errors
    centers = text_series(m, "center")
    errors += [m.error(i, "center", "centre is missing") for i in centers.is_null().arg_true().to_list()]
    unknown = sorted(set(study.variables) - set(m.frame.columns))
    errors += [CellProblem(Path("study.toml"), None, f"variables.{v}", f"no column '{v}' in {path}") for v in unknown]

    columns: list[TypedColumn] = []
    var_rows: list[dict[str, Any]] = []
    for name in m.frame.columns:
        if name in ("patient_id", "center"):
            continue
        declared = study.variables.get(name)
        levels = declared.levels if declared else None
        kind = declared.type if declared else None
        col, col_errors = infer_column(m, name, "categorical" if levels and kind is None else kind)
        errors += col_errors
        if col is None:
            continue
        if levels:
            col, level_errors = apply_levels(m, col, levels)
            errors += level_errors
        role = _role(name, declared)
        errors += _check_roles(m, col, role, declared.codes if declared else None)
        columns.append(col)
        var_rows.append(
            {
                "name": name,
                "type": col.type,
                "unit": declared.unit if declared else None,
                "role": role,
                "label": (declared.label if declared and declared.label else name),
                "n_missing": int(col.values.null_count()),
                "levels": col.levels,
            }
        )
    if errors:
        return None, known, errors
    patients = pl.DataFrame(
        {
            "patient_id": ids,
            "center": centers,
            "source_file": pl.repeat(stored_path(study, study.manifests.patients), m.frame.height, eager=True),
            "source_row": m.row_numbers(),
        },
        schema={"patient_id": pl.String, "center": pl.String, "source_file": pl.String, "source_row": pl.Int32},
    )
    clinical = pl.DataFrame([ids.alias("patient_id")] + [c.values for c in columns])
    variables = pl.DataFrame(
        var_rows,
        schema={"name": pl.String, "type": pl.String, "unit": pl.String, "role": pl.String, "label": pl.String,
                "n_missing": pl.Int32, "levels": pl.List(pl.String)},
    )
    return PatientTables(patients.sort("patient_id"), clinical.sort("patient_id"), variables, columns), known, []


# --- slides and scans ----------------------------------------------------------------


def stored_path(study: StudyConfig, text: str) -> str:
    """How the store keeps a manifest path: relative to the study folder, with ``/`` separators.

    A relative path is kept relative (normalised, ``..`` allowed); an absolute
    one inside the study folder becomes relative; any other absolute path (data
    outside the study) stays absolute. Readers resolve it with ``study.path``.
    """
    root = study.root
    p = Path(os.path.normpath(root / text))
    for base in (root, root.resolve()):
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            pass
    if not Path(text).is_absolute():
        return Path(os.path.relpath(p, root)).as_posix()
    return p.as_posix()


def _source_rows(
    study: StudyConfig,
    manifest_path: str,
    id_col: str,
    path_cols: list[str],
    patient_ids: set[str],
    probe: Callable[[Manifest, int, dict[str, Any]], tuple[dict[str, Any] | None, list[CellProblem]]],
    what: str,
    progress: bool,
) -> tuple[list[dict[str, Any]], list[CellProblem]]:
    try:
        m = read_manifest(study.path(manifest_path), study.manifests.encoding)
    except ManifestError as exc:
        return [], exc.errors
    errors = require_columns(m, [id_col, "patient_id", path_cols[0]])
    if errors:
        return [], errors
    id_series, errors = _unique_ids(m, id_col)
    ids = id_series.to_list()  # read row by row below, with each source's probe
    # an id names the source's instance file: one the file system cannot hold fails every later embed
    errors += [m.error(i, id_col, problem) for i, v in enumerate(ids)
               if v is not None and (problem := store.file_name_problem(v)) is not None]
    patients = text_column(m, "patient_id")
    paths = {c: text_column(m, c) if c in m.frame.columns else [None] * m.frame.height for c in path_cols}
    rows: list[dict[str, Any]] = []
    for i in tqdm(range(m.frame.height), desc=f"probing {what}", unit=what[:-1], disable=not progress, leave=False):
        row_errors: list[CellProblem] = []
        pid = patients[i]
        if pid is None:
            row_errors.append(m.error(i, "patient_id", "patient id is empty"))
        elif pid not in patient_ids:
            row_errors.append(m.error(i, "patient_id", f"patient '{pid}' is not in the patient manifest"))
        resolved: dict[str, Any] = {}
        for c, values in paths.items():
            v = values[i]
            if v is None:
                if c == path_cols[0]:
                    row_errors.append(m.error(i, c, "path is empty"))
                resolved[c] = None
                continue
            p = study.path(v).resolve()
            if not p.exists():
                row_errors.append(m.error(i, c, f"file not found: {p}"))
            elif (kind := file_kind(p)) is not None and not (kind == "a folder" and what == "scans"):
                # a FIFO or a device would block the reader for ever; a folder is a DICOM series, for scans only
                wanted = "an image file or a DICOM folder" if what == "scans" else "a slide file"
                row_errors.append(m.error(i, c, f"{p} is {kind}, not {wanted}"))
            resolved[c] = p
        if not row_errors:
            probed, probe_errors = probe(m, i, resolved)
            row_errors += probe_errors
            if probed is not None and not probe_errors:
                # probed with absolute paths, stored relative to the study folder
                stored = {c: stored_path(study, values[i]) if values[i] is not None else None for c, values in paths.items()}
                rows.append({id_col: ids[i], "patient_id": pid, **probed, **stored})
        errors += row_errors
    return rows, errors


def _probe_slide(m: Manifest, i: int, paths: dict[str, Any]) -> tuple[dict[str, Any] | None, list[CellProblem]]:
    from pipeline import wsi

    mpp_text = text_column(m, "mpp")[i] if "mpp" in m.frame.columns else None
    mpp: float | None = None
    if mpp_text is not None:
        try:
            mpp = float(mpp_text)
            if not mpp > 0:
                raise ValueError
        except ValueError:
            return None, [m.error(i, "mpp", f"'{mpp_text}' is not a positive number of microns per pixel")]
    path: Path = paths["path"]
    try:
        info = wsi.probe_slide(path, mpp=mpp)
    except wsi.SlideError as exc:
        column = "mpp" if isinstance(exc, wsi.MissingMppError) else "path"
        return None, [m.error(i, column, str(exc))]
    return {
        "path": str(path),
        "vendor": info.get("vendor"),
        "width": info.get("width"),
        "height": info.get("height"),
        "mpp": info.get("mpp"),
        "mpp_source": info.get("mpp_source"),
        "objective": info.get("objective"),
        "levels": info.get("levels"),
        "downsamples": [float(d) for d in info.get("downsamples", [])],
        "fingerprint": store.file_fingerprint(path, mpp),
        "legacy_fingerprint": _legacy_fingerprint(path, mpp),
    }, []


def _probe_scan(m: Manifest, i: int, paths: dict[str, Any]) -> tuple[dict[str, Any] | None, list[CellProblem]]:
    from pipeline import ct

    label_text = text_column(m, "mask_label")[i] if "mask_label" in m.frame.columns else None
    label: int | None = None
    if label_text is not None:
        try:
            label = int(float(label_text))
            if label <= 0 or float(label_text) != label:
                raise ValueError
        except ValueError:
            return None, [m.error(i, "mask_label", f"'{label_text}' is not a positive whole label value")]
    image, mask = paths["image_path"], paths.get("mask_path")
    if label is not None and mask is None:
        return None, [m.error(i, "mask_path", "mask_label is given but there is no mask")]
    # probed with the label embed will use (1 when the manifest gives none), so a mask without it fails here
    used = label if label is not None else (1 if mask is not None else None)
    info: dict[str, Any]
    try:
        info = ct.probe_scan(image, mask, used)
    except ct.ScanError as exc:
        text = str(exc)
        if label is not None and "empty roi" in text.lower():
            column = "mask_label"
        elif mask is not None and str(mask) in text:
            column = "mask_path"
            if "empty roi" in text.lower():
                text += "; with no mask_label the ROI is label 1: give the mask's label in a mask_label column"
        else:
            column = "image_path"
        return None, [m.error(i, column, text)]
    return {
        "image_path": str(image),
        "mask_path": str(mask) if mask is not None else None,
        "mask_label": label if label is not None else (1 if mask is not None else None),
        "size": [int(v) for v in info["size"]],
        "spacing": [float(v) for v in info["spacing"]],
        "origin": [float(v) for v in info["origin"]],
        "direction": [float(v) for v in info["direction"]],
        "roi_voxels": info.get("roi_voxels"),
        # every byte of the volumes (the probe above has read them all anyway), the mask's too, and the label
        "fingerprint": store.file_fingerprint(
            image, store.content_digest(mask, None) if mask is not None else None, label, sample_above=None
        ),
        "legacy_fingerprint": _legacy_fingerprint(image, str(mask) if mask else None, label)
        + (_legacy_fingerprint(mask) if mask is not None else ""),
    }, []


SLIDE_SCHEMA = {
    "slide_id": pl.String, "patient_id": pl.String, "path": pl.String, "vendor": pl.String, "width": pl.Int64,
    "height": pl.Int64, "mpp": pl.Float64, "mpp_source": pl.String, "objective": pl.Float64, "levels": pl.Int32,
    "downsamples": pl.List(pl.Float64), "fingerprint": pl.String,
}
SCAN_SCHEMA = {
    "scan_id": pl.String, "patient_id": pl.String, "image_path": pl.String, "mask_path": pl.String,
    "mask_label": pl.Int32, "size": pl.List(pl.Int32), "spacing": pl.List(pl.Float64), "origin": pl.List(pl.Float64),
    "direction": pl.List(pl.Float64), "roi_voxels": pl.Int64, "fingerprint": pl.String,
}


# --- writing ----------------------------------------------------------------------


def _diff(con: duckdb.DuckDBPyConnection, table: str, key: str, new: pl.DataFrame) -> TableChange:
    old = store.query(con, f"SELECT * FROM {store.quote_ident(table)}")
    if old.columns != new.columns:
        # a changed clinical layout: every row counts as updated
        old_keys = set(old.get_column(key).to_list()) if key in old.columns else set()
        new_keys = set(new.get_column(key).to_list())
        return TableChange(len(new_keys - old_keys), len(new_keys & old_keys), 0, len(old_keys - new_keys))
    if old.height + new.height > _DIFF_BY_ROWS:
        return _diff_columns(old, new, key)
    old_rows = {r[key]: r for r in old.to_dicts()}
    change = TableChange()
    for r in new.to_dicts():
        prev = old_rows.pop(r[key], None)
        if prev is None:
            change.inserted += 1
        elif prev == r:
            change.unchanged += 1
        else:
            change.updated += 1
    change.removed = len(old_rows)
    return change


# tables larger than this (old and new rows together) are compared column-wide instead of row by row
_DIFF_BY_ROWS = 20_000


def _same(column: str, new: pl.DataType, old: pl.DataType) -> pl.Expr:
    """Whether a row's new and stored values are equal as Python compares them (None equals None; 1 equals 1.0;
    a number never equals a text)."""
    a, b = pl.col(column), pl.col(f"{column}\0old")
    if new == old:
        return a.eq_missing(b)
    if new.is_integer() and old.is_integer():  # DuckDB's INTEGER where the manifest's column is Int64
        return a.cast(pl.Int64).eq_missing(b.cast(pl.Int64))
    if new.is_numeric() and old.is_numeric():
        return a.cast(pl.Float64).eq_missing(b.cast(pl.Float64))
    return a.is_null() & b.is_null()


def _diff_columns(old: pl.DataFrame, new: pl.DataFrame, key: str) -> TableChange:
    """:func:`_diff`'s counts by a join on ``key`` and a null-aware comparison of each column (:func:`_same`)."""
    rest = [c for c in new.columns if c != key]
    both = new.join(old, on=key, how="inner", suffix="\0old")
    same = pl.all_horizontal([_same(c, new.schema[c], old.schema[c]) for c in rest]) if rest else pl.lit(True)
    unchanged = int(both.select(same.sum()).item()) if both.height else 0
    return TableChange(inserted=new.height - both.height, updated=both.height - unchanged, unchanged=unchanged,
                       removed=old.height - both.height)


def _legacy_fingerprint(path: Path, *extra: Any) -> str:
    """The fingerprint stores of schema 1 gave a file (size and time; absolute mask paths came in ``extra``)."""
    parts: list[Any] = []
    if path.is_dir():
        for f in sorted(path.iterdir()):
            st = f.stat()
            parts += [f.name, st.st_size, st.st_mtime_ns]
    else:
        st = path.stat()
        parts += [st.st_size, st.st_mtime_ns]
    parts += list(extra)
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _keep_legacy_embeddings(
    con: duckdb.DuckDBPyConnection, modality: str, table: str, key: str, frame: pl.DataFrame, legacy: dict[str, str]
) -> int:
    """Move ``embed_items`` of sources unchanged since an older store fingerprinted them onto their new fingerprint.

    A stored fingerprint equal to the one the old rule gives the file now means
    the source has not changed, so its embeddings stay valid. Returns the rows moved.
    """
    old = dict(con.execute(f"SELECT {store.quote_ident(key)}, fingerprint FROM {store.quote_ident(table)}").fetchall())
    moved = 0
    for sid, new in zip(frame[key].to_list(), frame["fingerprint"].to_list()):
        before = old.get(sid)
        if before is None or before == new or before != legacy.get(sid):
            continue
        moved += con.execute(
            "UPDATE embed_items SET fingerprint = ? WHERE source_id = ? AND fingerprint = ? "
            "AND feature_set IN (SELECT name FROM feature_sets WHERE modality = ?)",
            [new, sid, before, modality],
        ).fetchone()[0]
    return moved


def _replace(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    con.execute(f"DELETE FROM {store.quote_ident(table)}")
    if frame.height:
        con.register("_ingest_new", frame.to_arrow())
        try:
            cols = ", ".join(store.quote_ident(c) for c in frame.columns)
            con.execute(f"INSERT INTO {store.quote_ident(table)} ({cols}) SELECT {cols} FROM _ingest_new")
        finally:
            con.unregister("_ingest_new")


def _replace_clinical(con: duckdb.DuckDBPyConnection, tables: PatientTables) -> None:
    # manifest headers are data: quoted, so a name such as `x" INTEGER); COPY ...` is one odd column name
    cols = ",\n    ".join(f"{store.quote_ident(c.name)} {SQL_TYPES[c.type]}" for c in tables.columns)
    con.execute("DROP TABLE IF EXISTS clinical")
    con.execute(f"CREATE TABLE clinical (\n    patient_id VARCHAR PRIMARY KEY{',' if cols else ''}\n    {cols}\n)")
    _replace(con, "clinical", tables.clinical)


class StoreWriteError(store.StoreError):
    """The store could not be written (disk full, a read-only or failing disk); the transaction was rolled back."""


# what DuckDB raises when a write to the store file or its WAL fails
_WRITE_FAILURES = (duckdb.IOException, duckdb.FatalException, duckdb.TransactionException)
_WRITE_FAILURE_WORDS = ("no space left", "could not write", "read-only file system", "disk quota", "file too large",
                        "input/output error")


@contextmanager
def _write_failure_named(path: Path) -> Iterator[None]:
    """Turn DuckDB's failure to write the store (``FatalException: No space left on device`` and kin) into one
    :class:`StoreWriteError` naming ``path``; other errors pass unchanged."""
    try:
        yield
    except _WRITE_FAILURES as exc:
        # a failed ROLLBACK after a fatal error ("database invalidated") hides the cause in __context__
        cause: BaseException = exc
        while isinstance(cause.__context__, duckdb.Error):
            cause = cause.__context__
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if not any(word in text.lower() for word in _WRITE_FAILURE_WORDS):
            raise  # not a failed write (a bug keeps its traceback)
        raise StoreWriteError(
            f"disk full (or not writable) while writing {path}: {text}; the store was not changed"
        ) from None


def ingest(study: StudyConfig, progress: bool = True) -> IngestResult:
    """Validate every manifest of ``study`` and load them into its store.

    Raises
    ------
    IngestError
        Listing every problem found (file, row, column, cause); the store is left unchanged.
    StoreWriteError
        The store could not be written (a full disk); the transaction is rolled back.
    """
    patients, patient_ids, errors = read_patients(study)
    slides: list[dict[str, Any]] = []
    scans: list[dict[str, Any]] = []
    if study.manifests.slides:
        slides, slide_errors = _source_rows(
            study, study.manifests.slides, "slide_id", ["path"], patient_ids, _probe_slide, "slides", progress
        )
        errors += slide_errors
    if study.manifests.scans:
        scans, scan_errors = _source_rows(
            study, study.manifests.scans, "scan_id", ["image_path", "mask_path"], patient_ids, _probe_scan, "scans", progress
        )
        errors += scan_errors
    if errors or patients is None:
        raise IngestError(errors)

    legacy = {"wsi": {r["slide_id"]: r.pop("legacy_fingerprint") for r in slides},
              "ct": {r["scan_id"]: r.pop("legacy_fingerprint") for r in scans}}
    slide_frame = pl.DataFrame(slides, schema=SLIDE_SCHEMA).sort("slide_id")
    scan_frame = pl.DataFrame(scans, schema=SCAN_SCHEMA).sort("scan_id")
    con = store.connect(study.store_path)
    try:
        result = IngestResult(study.store_path)
        result.changes["patients"] = _diff(con, "patients", "patient_id", patients.patients)
        result.changes["clinical"] = _diff(con, "clinical", "patient_id", patients.clinical)
        result.changes["variables"] = _diff(con, "variables", "name", patients.variables)
        result.changes["slides"] = _diff(con, "slides", "slide_id", slide_frame)
        result.changes["scans"] = _diff(con, "scans", "scan_id", scan_frame)
        if not result.changed:
            log.info("ingest: store already up to date")
            return result
        with _write_failure_named(study.store_path), store.transaction(con):
            kept = _keep_legacy_embeddings(con, "wsi", "slides", "slide_id", slide_frame, legacy["wsi"])
            kept += _keep_legacy_embeddings(con, "ct", "scans", "scan_id", scan_frame, legacy["ct"])
            if kept:
                log.info("ingest: %d embedded source(s) of an older store keep their embeddings (fingerprints now "
                         "of content)", kept)
            _replace(con, "patients", patients.patients)
            _replace_clinical(con, patients)
            _replace(con, "variables", patients.variables)
            _replace(con, "slides", slide_frame)
            _replace(con, "scans", scan_frame)
        log.info("ingest: %s", "; ".join(f"{k}: {v}" for k, v in result.changes.items()))
        return result
    finally:
        con.close()
