"""New patients checked against the development schema: typed as the study's store types them, each problem
kept as the reason its patient is not scored (the others are scored).

The development schema is the study store's ``variables`` table (type, role, levels) and the types of its
``clinical`` table. A column the model reads and the file lacks, a value of the wrong type, and a level never
seen in development stop only the patients they concern. Outcome, follow-up and event columns are never read:
new patients have none.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline import store
from pipeline.errors import CohortlabError

# roles whose values a new patient never brings (the outcome is what is predicted)
NOT_READ = ("outcome", "time", "event")
# DuckDB type of the development clinical column -> polars type of the new patients' column
_NUMERIC = {"DOUBLE": pl.Float64, "FLOAT": pl.Float64, "BIGINT": pl.Int64, "INTEGER": pl.Int32,
            "HUGEINT": pl.Int64, "SMALLINT": pl.Int32, "TINYINT": pl.Int32}


class PredictError(CohortlabError, ValueError):
    """New patients, a model or an output that cannot be scored or written; the message names the file and row."""


@dataclass(frozen=True)
class Schema:
    """The development clinical columns: DuckDB type, role and known levels of each."""

    types: dict[str, str]
    roles: dict[str, str]
    levels: dict[str, tuple[str, ...]]

    @classmethod
    def of_store(cls, store_path: Path) -> Schema:
        """Read from the study's store (read-only)."""
        con = store.connect(store_path, read_only=True)
        try:
            types = {str(r[0]): str(r[1]).upper() for r in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'clinical' "
                "AND column_name <> 'patient_id' ORDER BY ordinal_position").fetchall()}
            rows = con.execute("SELECT name, role, levels FROM variables").fetchall()
        finally:
            con.close()
        return cls(types, {str(n): str(r or "predictor") for n, r, _ in rows},
                   {str(n): tuple(str(v) for v in lv) for n, _, lv in rows if lv})


@dataclass
class NewPatients:
    """New patients typed as in development, and why some cannot be scored.

    Attributes
    ----------
    frame
        ``patient_id``, ``center`` and every development clinical column (NULL where absent, unread or bad).
    reasons
        ``patient_id -> reason`` for the patients that are not scored.
    missing
        ``patient_id -> columns`` left empty (the model's imputation fills them; they are flagged).
    rows
        ``patient_id -> line`` of the file.
    """

    frame: pl.DataFrame
    reasons: dict[str, str] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def read_csv(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """A CSV of new patients as text columns, decoded strictly in ``encoding``.

    Raises
    ------
    PredictError
        The file is missing, not in ``encoding``, has no ``patient_id`` column, or a duplicated or empty id.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PredictError(f"{path}: cannot read new patients ({exc.strerror or exc})") from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise PredictError(f"{path}: line {line}: not valid {encoding} (byte {exc.start}); nothing was scored") from None
    try:
        frame = pl.read_csv(io.StringIO(text), infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise PredictError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if "patient_id" not in frame.columns:
        raise PredictError(f"{path}: no column 'patient_id'")
    ids = frame["patient_id"].to_list()
    seen: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid is None or not pid.strip():
            raise PredictError(f"{path}: line {i + 2}, column patient_id: id is empty")
        if pid in seen:
            raise PredictError(f"{path}: line {i + 2}, column patient_id: duplicate id '{pid}' (first at line "
                               f"{seen[pid] + 2})")
        seen[pid] = i
    return frame


def check(frame: pl.DataFrame, schema: Schema, required: Sequence[str], source: str = "patients") -> NewPatients:
    """Type ``frame`` (text columns) as the development store does; each bad cell is its patient's reason.

    Parameters
    ----------
    frame
        ``patient_id`` and clinical columns as text (:func:`read_csv`), or already typed.
    schema
        The development schema.
    required
        The clinical columns the model reads: one the file lacks stops every patient.
    source
        The file's name, for the reasons.
    """
    ids = [str(v) for v in frame["patient_id"].to_list()]
    out = NewPatients(pl.DataFrame(), rows={p: i + 2 for i, p in enumerate(ids)})

    def stop(i: int, why: str) -> None:
        out.reasons.setdefault(ids[i], why)

    center = (frame["center"].cast(pl.String).fill_null("(new)") if "center" in frame.columns
              else pl.Series("center", ["(new)"] * len(ids), dtype=pl.String))
    columns: list[pl.Series] = [pl.Series("patient_id", ids, dtype=pl.String), center.alias("center")]
    for name, sql_type in schema.types.items():
        role = schema.roles.get(name, "predictor")
        numeric = _NUMERIC.get(sql_type)
        dtype = numeric or (pl.Date if sql_type == "DATE" else pl.String)
        if name not in frame.columns or role in NOT_READ:
            if name in required:
                for i in range(len(ids)):
                    stop(i, f"missing column '{name}' in {source}")
            columns.append(pl.Series(name, [None] * len(ids), dtype=dtype))
            continue
        text = frame[name].cast(pl.String).str.strip_chars()
        text = pl.Series(name, [None if v is None or v == "" else v for v in text.to_list()], dtype=pl.String)
        if dtype == pl.String:
            values = text
            known = schema.levels.get(name)
            if known:
                cells = values.to_list()
                for i, v in enumerate(cells):
                    if v is not None and v not in known:
                        stop(i, f"unknown level {name} = '{v}' (development levels: {', '.join(known)})")
                        cells[i] = None  # never reaches the model (the patient is not scored)
                values = pl.Series(name, cells, dtype=pl.String)
        else:
            values = text.cast(dtype, strict=False) if dtype != pl.Int32 and dtype != pl.Int64 else \
                text.cast(pl.Float64, strict=False)
            for i, (raw, v) in enumerate(zip(text.to_list(), values.to_list())):
                if raw is not None and v is None:
                    kind = "a date" if dtype == pl.Date else "a number"
                    stop(i, f"wrong type: {name} = '{raw}' is not {kind} (line {i + 2})")
                elif dtype in (pl.Int32, pl.Int64) and v is not None and float(v) != int(v):
                    stop(i, f"wrong type: {name} = '{raw}' is not an integer (line {i + 2})")
            if dtype in (pl.Int32, pl.Int64):
                values = pl.Series(name, [None if v is None or float(v) != int(v) else int(v)
                                          for v in values.to_list()], dtype=dtype)
            if name in schema.levels and dtype != pl.Date:  # a coded number (binary): its development codes
                known = schema.levels[name]
                for i, v in enumerate(values.to_list()):
                    if v is not None and str(v) not in known:
                        stop(i, f"unknown level {name} = '{v}' (development levels: {', '.join(known)})")
        if name in required:
            for i, v in enumerate(text.to_list()):
                if v is None:
                    out.missing.setdefault(ids[i], []).append(name)
        columns.append(values.alias(name))
    out.frame = pl.DataFrame(columns)
    return out


__all__ = ["NOT_READ", "NewPatients", "PredictError", "Schema", "check", "read_csv"]
