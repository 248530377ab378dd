"""Reading manifests and inferring clinical column types, with errors that point at a cell.

CSV cells are read as text and typed here, so a column that is numeric in 97
rows and says ``high`` in one is reported at that row instead of silently
becoming text. Row numbers are those a spreadsheet shows: for CSV the physical
line where the record starts (the header is line 1; a quoted cell spanning
lines moves the records after it down); for Parquet the 1-based record number.

Column names become SQL identifiers of the store, so a header is checked
before anything is typed: a name that is empty or holds a quote or a control
character is refused, spaces around a name are removed (a name with spaces
is the same column as without), and two names equal after that, or differing
only in letter case (SQL does not tell those apart), are refused, naming both
columns.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.config import check_text_encoding
from pipeline.errors import CohortlabError
from pipeline.files import file_kind

MISSING = {"", "na", "n/a", "nan", "null", "none", "."}
# anchored with \Z: "$" would also match before a final line break
_INT = re.compile(r"\A[+-]?\d+\Z")
_FLOAT = re.compile(r"\A[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_DATE = re.compile(r"\A\d{4}-\d{2}-\d{2}\Z")
# a column is "meant" to be numeric when more than this share of its values are numbers
NUMERIC_SHARE = 0.5


@dataclass(frozen=True)
class CellProblem:
    """One problem in one cell (or row) of a manifest.

    A record, not an exception: problems are collected so that one run reports them all, and raised
    together inside a :class:`ManifestError` (or :class:`pipeline.ingest.IngestError`).
    """

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
    """A manifest read as text cells (CSV) or typed columns (Parquet).

    ``lines`` holds, for a CSV, the physical line where each record starts.
    """

    path: Path
    frame: pl.DataFrame
    is_csv: bool
    lines: tuple[int, ...] | None = None

    def row_number(self, index: int) -> int:
        """Spreadsheet row of the 0-based record ``index``: its first line (CSV) or its 1-based number (Parquet)."""
        if self.lines is not None and 0 <= index < len(self.lines):
            return self.lines[index]
        return index + 2 if self.is_csv else index + 1

    def row_numbers(self) -> pl.Series:
        """:meth:`row_number` of every record, in order (Int32)."""
        if self.lines is not None and len(self.lines) == self.frame.height:
            return pl.Series(self.lines, dtype=pl.Int32)
        start = 2 if self.is_csv else 1
        return pl.int_range(start, start + self.frame.height, dtype=pl.Int32, eager=True)

    def error(self, index: int | None, column: str | None, message: str) -> CellProblem:
        return CellProblem(self.path, None if index is None else self.row_number(index), column, message, self.is_csv)


class ManifestError(CohortlabError, ValueError):
    """A manifest file that cannot be read at all; ``errors`` say where and why (``error`` is the first)."""

    def __init__(self, error: CellProblem, *more: CellProblem):
        self.error = error
        self.errors = [error, *more]
        super().__init__("; ".join(str(e) for e in self.errors))


# the first bytes of files that are not text manifests, and what to say about them
_MAGIC = (
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx or OpenDocument .ods workbook?)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old-style Office file (an Excel .xls workbook?)"),
    (b"PAR1", "a Parquet file"),
)
_WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_header(path: Path, names: list[str], is_csv: bool) -> list[str]:
    """The column names of a manifest, stripped of surrounding spaces, once they can name SQL columns.

    Raises
    ------
    ManifestError
        Naming every column (by position and name) whose name is empty or holds
        a quote or control character, and every pair equal after stripping or
        differing only in letter case.
    """
    line = 1 if is_csv else None
    errors: list[CellProblem] = []
    seen: dict[str, int] = {}
    out = [n.strip() for n in names]
    for k, (raw, name) in enumerate(zip(names, out), start=1):
        where = f"column {k} of the header"
        if not name:
            errors.append(CellProblem(path, line, None, f"{where} has no name ({raw!r}); every column needs one",
                                    is_csv))
            continue
        if '"' in name or _CONTROL.search(name):
            errors.append(CellProblem(path, line, None, f"{where} is named {raw!r}: a column name may not hold a "
                                    "quote or a control character (a line break, a tab); rename it", is_csv))
            continue
        first = seen.get(name.casefold())
        if first is not None:
            a, b = names[first - 1], raw
            if a == b:
                why = "the same name"
            elif out[first - 1] == name:
                why = "the same name once spaces around names are removed"
            else:
                why = "names that differ only in letter case, which SQL does not tell apart"
            errors.append(CellProblem(path, line, None, f"columns {first} ({a!r}) and {k} ({b!r}) have {why}; "
                                    "rename one of them (each column is stored under its name)", is_csv))
            continue
        seen[name.casefold()] = k
    if errors:
        raise ManifestError(*errors)
    return out


def decode_text(path: Path, data: bytes, encoding: str = "utf-8", separator: str = ",") -> str:
    """``data`` decoded strictly in ``encoding`` (a UTF-8 byte-order mark is dropped).

    Raises
    ------
    ManifestError
        At the first byte that is not valid in ``encoding``, naming the line,
        the CSV column, the character position and the byte offset.
    """
    try:
        codec = check_text_encoding(encoding)
    except ValueError as exc:
        raise ManifestError(CellProblem(path, None, None, f"encoding: {exc}")) from None
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
    raise ManifestError(CellProblem(path, line, column, message))


def read_manifest(path: Path, encoding: str = "utf-8") -> Manifest:
    """Read a CSV (all cells as text, stripped) or Parquet manifest.

    CSV files are decoded strictly in ``encoding``: a byte that is not valid in
    it is an error (see :func:`decode_text`), never a replacement character.
    The header is checked by :func:`check_header`.

    Raises
    ------
    ManifestError
        The file is missing, not a regular file, empty, a workbook or another
        kind of file, not valid CSV or Parquet, or its header is refused; the
        message names the file and, where there is one, the line.
    """
    def fail(message: str, line: int | None = None) -> ManifestError:
        return ManifestError(CellProblem(path, line, None, message))

    if not path.exists():
        raise fail("manifest not found")
    kind = file_kind(path)
    if kind is not None:  # reading a FIFO or a device would block, a folder fails: refuse before opening
        raise fail(f"is {kind}, not a manifest file")
    suffix = path.suffix.lower()
    if suffix in _WORKBOOKS:
        raise fail(f"is a spreadsheet workbook ({suffix}); save the sheet as CSV UTF-8 (File > Save As) and name "
                   "the .csv file in study.toml")
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix not in (".csv", ".tsv", ".txt"):
        raise fail("manifests are .csv, .tsv, .txt or .parquet files")
    data = path.read_bytes()
    if not data.strip():
        raise fail("the file is empty; a manifest starts with a header line naming its columns")
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise fail(f"is {what}, not a {suffix} text file; export the sheet as CSV UTF-8")
    separator = "\t" if suffix == ".tsv" else ","
    text = decode_text(path, data, encoding, separator)
    return _read_csv(path, text, separator)


def _read_csv(path: Path, text: str, separator: str) -> Manifest:
    """Parse decoded CSV text; each record keeps the physical line it starts on."""
    fast = _split_plain(path, text, separator)
    if fast is not None:
        return fast
    records, lines = _records_with_lines(path, text, separator)
    if not records or not any(c.strip() for c in records[0]):
        raise ManifestError(CellProblem(path, 1, None, "the first line is empty; a manifest starts with a header "
                                      "line naming its columns"))
    names = check_header(path, records[0], is_csv=True)
    width = len(names)
    body = records[1:]
    if any(len(r) != width for r in body):  # short records padded, long ones cut where the extra cells are empty
        for record, line in zip(body, lines[1:]):
            if len(record) > width and any(c.strip() for c in record[width:]):
                raise ManifestError(CellProblem(path, line, None, f"{len(record)} fields, but the header names "
                                              f"{width} columns (a separator too many, or a cell with a separator "
                                              "that is not quoted?)"))
        body = [r[:width] if len(r) >= width else r + [""] * (width - len(r)) for r in body]
    columns = list(zip(*body)) if body else [() for _ in names]
    # each cell stripped (as str.strip) and empty -> missing, column-wide
    frame = pl.DataFrame([pl.Series(n, col, dtype=pl.String) for n, col in zip(names, columns)]).select(
        pl.all().str.strip_chars(_SPACE).replace("", None))
    return Manifest(path, frame, is_csv=True, lines=tuple(lines[1:]))


# the longest cell the csv module reads (csv.field_size_limit's default); a longer one is its error
_FIELD_LIMIT = 131072


def _split_plain(path: Path, text: str, separator: str) -> Manifest | None:
    """A CSV without quotes, carriage returns or NUL characters, whose records all have the header's number of
    fields, split column-wide; the same manifest the csv module gives. None: read it record by record."""
    text = text.removeprefix("\ufeff")
    if any(c in text for c in ('"', "\r", "\0")):
        return None
    rows = text.split("\n")
    if text.endswith("\n"):
        rows.pop()
    if len(rows) < 2 or not rows[0].strip():
        return None
    names = next(csv.reader([rows[0]], delimiter=separator))
    width = len(names)
    body = pl.Series("line", rows[1:], dtype=pl.String)
    if (body.str.count_matches(separator, literal=True) != width - 1).any() or \
            (body.str.len_chars() > _FIELD_LIMIT).any():
        return None  # a record of another width, or a long line: the csv module's rules and messages
    names = check_header(path, names, is_csv=True)
    parts = body.str.split_exact(separator, width - 1).struct.unnest() if width > 1 else body.to_frame()
    frame = parts.rename(dict(zip(parts.columns, names))).select(pl.all().str.strip_chars(_SPACE).replace("", None))
    return Manifest(path, frame, is_csv=True, lines=tuple(range(2, len(rows) + 1)))


def _records_with_lines(path: Path, text: str, separator: str) -> tuple[list[list[str]], list[int]]:
    """Every CSV record and the physical line it starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=separator, strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        for record in reader:
            records.append(record)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ManifestError(CellProblem(path, start, None, f"cannot be read as CSV: {exc}")) from None
    return records, lines


def _read_parquet(path: Path) -> Manifest:
    """A Parquet manifest: its schema's names checked, then its typed columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ManifestError(CellProblem(path, None, None, f"cannot be read as Parquet: {first}")) from None
    stripped = check_header(path, list(names), is_csv=False)
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ManifestError(CellProblem(path, None, None, f"cannot be read as Parquet: {first}")) from None
    return Manifest(path, frame.rename(dict(zip(frame.columns, stripped))), is_csv=False)


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING


def require_columns(m: Manifest, columns: list[str]) -> list[CellProblem]:
    return [m.error(None, c, "required column is missing") for c in columns if c not in m.frame.columns]


# the characters Python's str.strip() removes (str.isspace), so the column-wide strip is the same as the cell's
_SPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
          "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _ascii_text(series: pl.Series) -> bool:
    """A text column of ASCII cells only: its cells are typed column-wide (polars), with the same result as the
    cell-by-cell rules (``\\d`` and letter case beyond ASCII are left to those)."""
    return series.dtype == pl.String and bool((series.str.len_bytes() == series.str.len_chars()).all())


def text_series(m: Manifest, column: str) -> pl.Series:
    """:func:`text_column` as a String series (null for missing), computed column-wide for an ASCII text column."""
    series = m.frame.get_column(column)
    if not _ascii_text(series):
        return pl.Series(column, text_column(m, column), dtype=pl.String)
    stripped = series.str.strip_chars(_SPACE)
    missing = stripped.str.to_lowercase().is_in(sorted(MISSING)).fill_null(True)
    return pl.select(pl.when(~missing).then(stripped).alias(column)).to_series()


def text_column(m: Manifest, column: str) -> list[str | None]:
    """A column's values as stripped strings, missing as None."""
    series = m.frame.get_column(column)
    if _ascii_text(series):
        return text_series(m, column).to_list()
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


def infer_column(m: Manifest, column: str, declared: str | None = None) -> tuple[TypedColumn | None, list[CellProblem]]:
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
    if _ascii_text(series):
        return _infer_ascii(m, column, declared)
    cells = text_column(m, column)
    present = [(i, v) for i, v in enumerate(cells) if v is not None]
    errors: list[CellProblem] = []
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


# the patterns above for ASCII text (``$`` ends the text in polars' regex dialect)
_INT_ASCII = r"^[+-]?[0-9]+$"
_FLOAT_ASCII = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_DATE_ASCII = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _infer_ascii(m: Manifest, column: str, declared: str | None) -> tuple[TypedColumn | None, list[CellProblem]]:
    """:func:`infer_column`'s rules and messages, applied column-wide (no Python per cell) to ASCII text."""
    cells = text_series(m, column)
    present = cells.is_not_null()
    n_present = int(present.sum())
    is_int = cells.str.contains(_INT_ASCII).fill_null(False)
    is_num = is_int | cells.str.contains(_FLOAT_ASCII).fill_null(False)
    # Python's float() and polars' parser round a decimal the same way (both correctly rounded)
    number = pl.select(pl.when(is_num).then(cells.cast(pl.Float64, strict=False))).to_series()
    n_num = int(is_num.sum())
    errors: list[CellProblem] = []
    kind = declared
    if kind is None:
        if not n_present:
            kind = "text"
        elif n_num == n_present:
            kind = "integer" if bool(is_int.filter(present).all()) else "numeric"
            if kind == "integer" and bool(number.drop_nulls().is_in([0.0, 1.0]).all()):
                kind = "binary"
        elif bool(cells.drop_nulls().str.contains(_DATE_ASCII).all()):
            kind = "date"
        elif n_num > NUMERIC_SHARE * n_present:
            words = (present & ~is_num).arg_true().to_list()
            return None, [m.error(i, column, f"'{cells[i]}' is not a number, but {n_num} of {n_present} values in "
                                  "this column are: fix the cell, leave it empty for missing, or declare the "
                                  "column's type in study.toml [variables]") for i in words]
        else:
            distinct = cells.drop_nulls().n_unique()
            kind = "categorical" if distinct <= max(12, n_present // 2) else "text"
    if kind in ("numeric", "integer", "binary"):
        whole = number.is_finite().fill_null(False) & (number == number.floor()).fill_null(False)
        ok = is_num & (whole if kind != "numeric" else True)
        if kind == "binary":
            ok = ok & number.is_in([0.0, 1.0]).fill_null(False)
        what = "0 or 1" if kind == "binary" else "a " + ("whole " if kind == "integer" else "") + "number"
        errors = [m.error(i, column, f"'{cells[i]}' is not {what} (column type {kind})")
                  for i in (present & ~ok).arg_true().to_list()]
        kept = pl.select(pl.when(ok).then(number)).to_series()
        out = kept if kind == "numeric" else kept.cast(pl.Int64)
    elif kind == "date":
        shaped = cells.str.contains(_DATE_ASCII).fill_null(False)
        parsed = pl.select(pl.when(shaped).then(cells.str.to_date("%Y-%m-%d", strict=False))).to_series()
        parsed = pl.select(pl.when(parsed.dt.year() >= 1).then(parsed)).to_series()  # year 0: not a Python date
        values: list[Any] = parsed.to_list()
        for i in (present & parsed.is_null()).arg_true().to_list():
            try:  # another ISO form date.fromisoformat reads (YYYYMMDD, a week date), or an error
                values[i] = date.fromisoformat(str(cells[i]))
            except ValueError:
                errors.append(m.error(i, column, f"'{cells[i]}' is not a date (YYYY-MM-DD)"))
        out = pl.Series(column, values, dtype=pl.Date)
    else:
        out = cells
    levels = sorted(cells.drop_nulls().unique().to_list()) if kind == "categorical" else None
    return TypedColumn(column, kind, out.rename(column), levels), errors


def apply_levels(m: Manifest, col: TypedColumn, levels: list[str]) -> tuple[TypedColumn, list[CellProblem]]:
    """``col`` with its declared ``levels`` (in declared order); an error at every value not among them.

    Levels declared but absent from the manifest are kept: they are part of
    the variable's definition (its order), not of this sample.
    """
    text = col.values.cast(pl.String)
    outside = (text.is_not_null() & ~text.is_in(list(levels))).arg_true().to_list()
    errors = [
        m.error(i, col.name, f"'{text[i]}' is not one of the declared levels {levels}: fix the cell, leave it empty "
                f"for missing, or add the level to study.toml [variables] {col.name}.levels")
        for i in outside
    ]
    return TypedColumn(col.name, col.type, col.values, list(levels)), errors


def _typed_from_parquet(
    m: Manifest, column: str, series: pl.Series, declared: str | None
) -> tuple[TypedColumn | None, list[CellProblem]]:
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
