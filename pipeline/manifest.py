"""Reading manifests and inferring clinical column types, with errors that point at a cell.

CSV cells are read as text and typed here, so a column that is numeric in 97
rows and says ``high`` in one is reported at that row instead of silently
becoming text. Row numbers are those a spreadsheet shows: for CSV the line
number (the header is line 1); for Parquet the 1-based record number.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.errors import CohortlabError

MISSING = {"", "na", "n/a", "nan", "null", "none", "."}
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# a column is "meant" to be numeric when more than this share of its values are numbers
NUMERIC_SHARE = 0.5


@dataclass(frozen=True)
class CellError:
    """One problem in one cell (or row) of a manifest."""

    file: Path
    row: int | None
    column: str | None
    message: str
    csv: bool = True

    def __str__(self) -> str:
        where = [str(self.file)]
        if self.row is not None:
            where.append(f"{'line' if self.csv else 'row'} {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


@dataclass(frozen=True)
class Manifest:
    """A manifest read as text cells (CSV) or typed columns (Parquet)."""

    path: Path
    frame: pl.DataFrame
    is_csv: bool

    def row_number(self, index: int) -> int:
        """Spreadsheet row of the 0-based record ``index``."""
        return index + 2 if self.is_csv else index + 1

    def error(self, index: int | None, column: str | None, message: str) -> CellError:
        return CellError(self.path, None if index is None else self.row_number(index), column, message, self.is_csv)


class ManifestError(CohortlabError, ValueError):
    """A manifest file that cannot be read at all; ``error`` says where and why."""

    def __init__(self, error: CellError):
        self.error = error
        super().__init__(str(error))


def decode_text(path: Path, data: bytes, encoding: str = "utf-8", separator: str = ",") -> str:
    """``data`` decoded strictly in ``encoding`` (a UTF-8 byte-order mark is dropped).

    Raises
    ------
    ManifestError
        At the first byte that is not valid in ``encoding``, naming the line,
        the CSV column, the character position and the byte offset.
    """
    codec = codecs.lookup(encoding).name
    try:
        return data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as exc:
        start = exc.start
    line_start = data.rfind(b"\n", 0, start) + 1
    line = data.count(b"\n", 0, start) + 1
    before = data[line_start:start].decode(codec, errors="replace")
    header = data[: data.find(b"\n") if b"\n" in data else len(data)].decode(codec, errors="replace")
    names = next(csv.reader([header.lstrip("\ufeff").strip("\r")], delimiter=separator), [])
    field_index = len(next(csv.reader([before], delimiter=separator), [""])) - 1 if before else 0
    column = names[field_index].strip() if line > 1 and 0 <= field_index < len(names) else None
    bad = data[start:start + 1].hex()
    message = (f"byte 0x{bad} (character {len(before) + 1} of the line, byte offset {start} of the file) is not "
               f"valid {encoding}; nothing was read. If the file was saved in another encoding (Excel on Windows "
               f"writes cp1252), declare it in study.toml: [manifests] encoding = \"cp1252\"")
    raise ManifestError(CellError(path, line, column, message))


def read_manifest(path: Path, encoding: str = "utf-8") -> Manifest:
    """Read a CSV (all cells as text, stripped) or Parquet manifest.

    CSV files are decoded strictly in ``encoding``: a byte that is not valid in
    it is an error (see :func:`decode_text`), never a replacement character.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pl.read_parquet(path)
        return Manifest(path, frame, is_csv=False)
    if suffix not in (".csv", ".tsv", ".txt"):
        raise ValueError(f"{path}: manifests are .csv, .tsv or .parquet")
    separator = "\t" if suffix == ".tsv" else ","
    text = decode_text(path, path.read_bytes(), encoding, separator)
    try:
        frame = pl.read_csv(io.BytesIO(text.encode("utf-8")), infer_schema=False, separator=separator)
    except pl.exceptions.ComputeError as exc:
        raise ManifestError(CellError(path, None, None, f"cannot be read as CSV: {exc}")) from None
    frame = frame.rename({c: c.strip() for c in frame.columns})
    frame = frame.with_columns(pl.col(c).str.strip_chars() for c in frame.columns)
    return Manifest(path, frame, is_csv=True)


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING


def require_columns(m: Manifest, columns: list[str]) -> list[CellError]:
    return [m.error(None, c, "required column is missing") for c in columns if c not in m.frame.columns]


def text_column(m: Manifest, column: str) -> list[str | None]:
    """A column's values as stripped strings, missing as None."""
    out: list[str | None] = []
    for v in m.frame.get_column(column).to_list():
        if is_missing(v):
            out.append(None)
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


@dataclass(frozen=True)
class TypedColumn:
    name: str
    type: str  # numeric | integer | binary | categorical | text | date
    values: pl.Series
    levels: list[str] | None


def _number(text: str) -> float | None:
    if _INT.match(text) or _FLOAT.match(text):
        return float(text)
    return None


def infer_column(m: Manifest, column: str, declared: str | None = None) -> tuple[TypedColumn | None, list[CellError]]:
    """Type one clinical column; report the cells that break the column's evident type.

    Rules: all numbers -> integer (binary when only 0/1) or numeric; all ISO
    dates -> date; at least ``NUMERIC_SHARE`` numbers with a few words mixed in
    -> an error at each word (mostly numbers: more than half) (the type cannot be inferred consistently); otherwise
    categorical (text when most values are distinct). A declared type in
    study.toml wins and every cell must fit it.
    """
    series = m.frame.get_column(column)
    if not m.is_csv and series.dtype != pl.String:
        return _typed_from_parquet(m, column, series, declared)
    cells = text_column(m, column)
    present = [(i, v) for i, v in enumerate(cells) if v is not None]
    errors: list[CellError] = []
    numbers = {i: _number(v) for i, v in present}
    n_num = sum(x is not None for x in numbers.values())
    kind = declared
    if kind is None:
        if not present:
            kind = "text"
        elif n_num == len(present):
            kind = "integer" if all(_INT.match(v) for _, v in present) else "numeric"
            if kind == "integer" and {int(float(v)) for _, v in present} <= {0, 1}:
                kind = "binary"
        elif all(_DATE.match(v) for _, v in present):
            kind = "date"
        elif n_num > NUMERIC_SHARE * len(present):
            for i, v in present:
                if numbers[i] is None:
                    errors.append(
                        m.error(i, column, f"'{v}' is not a number, but {n_num} of {len(present)} values in this "
                                "column are: fix the cell, leave it empty for missing, or declare the column's type "
                                "in study.toml [variables]")
                    )
            return None, errors
        else:
            distinct = len({v for _, v in present})
            kind = "categorical" if distinct <= max(12, len(present) // 2) else "text"
    values: list[object] = []
    for i, v in enumerate(cells):
        if v is None:
            values.append(None)
            continue
        if kind in ("numeric", "integer", "binary"):
            x = _number(v)
            if x is None or (kind != "numeric" and not x.is_integer()) or (kind == "binary" and x not in (0.0, 1.0)):
                errors.append(m.error(i, column, f"'{v}' is not {'0 or 1' if kind == 'binary' else 'a ' + ('whole ' if kind == 'integer' else '') + 'number'} (column type {kind})"))
                values.append(None)
            else:
                values.append(x if kind == "numeric" else int(x))
        elif kind == "date":
            try:
                values.append(date.fromisoformat(v))
            except ValueError:
                errors.append(m.error(i, column, f"'{v}' is not a date (YYYY-MM-DD)"))
                values.append(None)
        else:
            values.append(v)
    dtype = {"numeric": pl.Float64, "integer": pl.Int64, "binary": pl.Int64, "date": pl.Date}.get(kind, pl.String)
    series_out = pl.Series(column, values, dtype=dtype)
    levels = sorted({v for v in values if v is not None}) if kind == "categorical" else None  # type: ignore[type-var]
    return TypedColumn(column, kind, series_out, levels), errors


def apply_levels(m: Manifest, col: TypedColumn, levels: list[str]) -> tuple[TypedColumn, list[CellError]]:
    """``col`` with its declared ``levels`` (in declared order); an error at every value not among them.

    Levels declared but absent from the manifest are kept: they are part of
    the variable's definition (its order), not of this sample.
    """
    allowed = set(levels)
    errors = [
        m.error(i, col.name, f"'{v}' is not one of the declared levels {levels}: fix the cell, leave it empty for "
                f"missing, or add the level to study.toml [variables] {col.name}.levels")
        for i, v in enumerate(col.values.cast(pl.String).to_list()) if v is not None and v not in allowed
    ]
    return TypedColumn(col.name, col.type, col.values, list(levels)), errors


def _typed_from_parquet(
    m: Manifest, column: str, series: pl.Series, declared: str | None
) -> tuple[TypedColumn | None, list[CellError]]:
    dt = series.dtype
    if dt.is_integer() or dt == pl.Boolean:
        s = series.cast(pl.Int64)
        kind = "binary" if set(s.drop_nulls().unique().to_list()) <= {0, 1} else "integer"
    elif dt.is_float():
        s = series.cast(pl.Float64).fill_nan(None)
        kind = "numeric"
    elif dt == pl.Date or dt == pl.Datetime:
        s = series.cast(pl.Date)
        kind = "date"
    else:
        s = series.cast(pl.String)
        kind = "categorical"
    if declared is not None and declared != kind:
        if declared == "numeric" and kind in ("integer", "binary"):
            s, kind = s.cast(pl.Float64), "numeric"
        elif declared in ("categorical", "text"):
            s, kind = s.cast(pl.String), declared
        else:
            return None, [m.error(None, column, f"Parquet type {dt} does not fit the declared type '{declared}'")]
    levels = sorted(s.drop_nulls().unique().to_list()) if kind == "categorical" else None
    return TypedColumn(column, kind, s.rename(column), levels), []
