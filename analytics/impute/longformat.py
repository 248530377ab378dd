"""Imputations in ``mice::complete(imp, "long")`` format: ``.imp`` (1..m), the patient id, the imputed columns.

:func:`read_long` reads imputations made elsewhere (``[imputation] from``) against the observed data: rows with
``.imp = 0`` (the incomplete data, ``include = TRUE``) and mice's ``.id`` column are ignored; an imputed value
contradicting an observed one, a patient missing from an imputation, unequal patient counts across imputations,
a patient or column the observed data lack, and a cell left missing are errors naming the file, its line, the
patient and the imputation. A category level seen only in imputed values is flagged, not refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from .spec import ImputationError

# R writes doubles with 15 significant digits: an observed value read back agrees to about 1e-15
_SAME = 1e-9


@dataclass(frozen=True)
class LongImputations:
    """``m`` completed versions of the observed data, in the observed data's row order, the flags raised, and the
    patients the file holds (the others are left as observed when read with ``partial``)."""

    completed: list[pl.DataFrame]
    flags: list[str]
    patients: frozenset[str] = field(default_factory=frozenset)
    columns: tuple[str, ...] = ()

    @property
    def m(self) -> int:
        return len(self.completed)


def _fail(path: Path, message: str) -> ImputationError:
    return ImputationError(f"{path}: {message}")


def read_long(path: str | Path, observed: pl.DataFrame, id_column: str = "patient_id",
              partial: bool = False, unfilled: Sequence[str] = ()) -> LongImputations:
    """Read and check long-format imputations of ``observed`` (one row per patient, ``id_column`` unique).

    Parameters
    ----------
    path : str or Path
        The CSV (UTF-8).
    observed : polars DataFrame
        The incomplete data: ``id_column`` and the columns the file may fill.
    id_column : str
    partial : bool
        ``observed`` may hold patients the file does not (a whole manifest, of which the file imputes some): their
        cells are left as observed; default False, every patient with a missing cell must be in the file.
    unfilled : sequence of str
        Columns checked against the observed values but never filled (outcomes: mice leaves them as they are, or
        imputes values no analysis here may use).

    Returns
    -------
    LongImputations
    """
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema_length=0, null_values=["", "NA"], encoding="utf8")
    except FileNotFoundError:
        raise _fail(path, "no such imputations file ([imputation] from)") from None
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as exc:
        raise _fail(path, f"cannot be read as UTF-8 CSV: {exc}") from None
    for col in (".imp", id_column):
        if col not in raw.columns:
            raise _fail(path, f"no column {col!r}; expected mice's long format (.imp, {id_column}, imputed columns)")
    raw = raw.with_row_index("_line", offset=2)
    bad = raw.filter(pl.col(".imp").is_null() | ~pl.col(".imp").str.contains(r"^\s*\d+\s*$"))
    if bad.height:
        r = bad.row(0, named=True)
        raise _fail(path, f"line {r['_line']}: .imp is {r['.imp']!r}; it must be 0 (ignored) or an imputation number")
    raw = raw.with_columns(pl.col(".imp").str.strip_chars().cast(pl.Int64)).filter(pl.col(".imp") > 0)
    columns = [c for c in raw.columns if c not in (".imp", ".id", id_column, "_line")]
    unknown = [c for c in columns if c not in observed.columns]
    if unknown:
        raise _fail(path, f"column(s) {unknown} are not in the observed data (its columns: {observed.columns})")
    known = set(observed[id_column].cast(pl.String).to_list())
    strangers = raw.filter(~pl.col(id_column).is_in(list(known)))
    if strangers.height:
        r = strangers.row(0, named=True)
        raise _fail(path, f"line {r['_line']}: patient {r[id_column]!r} is not among the observed patients")
    imps = sorted(raw[".imp"].unique().to_list())
    if len(imps) < 2:
        raise _fail(path, f"{len(imps)} imputation(s); multiple imputation needs at least 2")
    if imps != list(range(1, len(imps) + 1)):
        raise _fail(path, f".imp numbers {imps} are not 1..{len(imps)}")
    counts = {i: raw.filter(pl.col(".imp") == i).height for i in imps}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"imputation {i}: {n}" for i, n in counts.items())
        most = max(imps, key=lambda i: counts[i])
        fewest = min(imps, key=lambda i: counts[i])
        gone = sorted(set(raw.filter(pl.col(".imp") == most)[id_column].to_list())
                      - set(raw.filter(pl.col(".imp") == fewest)[id_column].to_list()))
        which = f"; patient {gone[0]!r} is missing from imputation {fewest}" if gone else ""
        raise _fail(path, f"unequal patient counts across imputations ({detail}){which}")
    dup = raw.filter(pl.struct(".imp", id_column).is_duplicated())
    if dup.height:
        r = dup.row(0, named=True)
        raise _fail(path, f"line {r['_line']}: patient {r[id_column]!r} appears twice in imputation {r['.imp']}")
    patients = set(raw.filter(pl.col(".imp") == 1)[id_column].to_list())
    for i in imps[1:]:
        these = set(raw.filter(pl.col(".imp") == i)[id_column].to_list())
        gone = sorted(patients - these)
        if gone:
            raise _fail(path, f"patient {gone[0]!r} is missing from imputation {i} (present in imputation 1)")
    obs = observed.with_columns(pl.col(id_column).cast(pl.String))
    completed: list[pl.DataFrame] = []
    flags: list[str] = []
    for i in imps:
        part = raw.filter(pl.col(".imp") == i)
        merged = obs.join(part.select(id_column, "_line", *columns), on=id_column, how="left", suffix=".imputed",
                            maintain_order="left")
        filled = []
        for c in columns:
            fill = _fill(path, merged, c, f"{c}.imputed" if f"{c}.imputed" in merged.columns else c, i, id_column,
                         flags if c not in unfilled else [])
            filled.append(fill if c not in unfilled else merged[c])
        done = merged.select(obs.columns).with_columns(filled)
        for c in (c for c in columns if c not in unfilled):
            left = done.filter(pl.col(c).is_null() & (pl.col(id_column).is_in(list(patients)) if partial
                                                      else pl.lit(True)))
            if left.height:
                raise _fail(path, f"imputation {i} leaves patient {left[id_column][0]!r}'s {c} missing")
        completed.append(observed.with_columns([done[c].cast(observed[c].dtype).alias(c) for c in columns]))
    return LongImputations(completed, sorted(set(flags)), frozenset(patients),
                           tuple(c for c in columns if c not in unfilled))


def _fill(path: Path, merged: pl.DataFrame, column: str, imputed: str, imp: int, id_column: str,
          flags: list[str]) -> pl.Series:
    """The observed column with its missing cells filled from ``imputed``; contradictions are errors."""
    obs = merged[column]
    text = merged[imputed]
    if obs.dtype.is_numeric():
        try:
            values = text.cast(pl.Float64, strict=True)
        except pl.exceptions.PolarsError:
            bad = text.filter(text.cast(pl.Float64, strict=False).is_null() & text.is_not_null())
            raise _fail(path, f"imputation {imp}: {column} holds {bad[0]!r}, not a number") from None
        o = obs.cast(pl.Float64).to_numpy()
        v = values.to_numpy()
        clash = ~np.isnan(o) & ~np.isnan(v) & ~np.isclose(o, v, rtol=_SAME, atol=0.0)
        if clash.any():
            k = int(np.flatnonzero(clash)[0])
            raise _fail(path, f"line {merged['_line'][k]}: imputation {imp} gives patient {merged[id_column][k]!r} "
                              f"{column} = {v[k]:g}, contradicting the observed {o[k]:g}")
        filled = pl.Series(column, np.where(np.isnan(o), v, o)).fill_nan(None)
        return filled.cast(obs.dtype, strict=False) if obs.dtype.is_integer() else filled
    o_s = obs.cast(pl.String)
    clash = (o_s.is_not_null() & text.is_not_null() & (o_s != text)).fill_null(False)
    if clash.any():
        k = int(np.flatnonzero(clash.to_numpy())[0])
        raise _fail(path, f"line {merged['_line'][k]}: imputation {imp} gives patient {merged[id_column][k]!r} "
                          f"{column} = {text[k]!r}, contradicting the observed {o_s[k]!r}")
    seen = set(o_s.drop_nulls().to_list())
    fresh = sorted(set(text.filter(o_s.is_null()).drop_nulls().to_list()) - seen)
    if fresh:
        flags.append(f"{column}: level(s) {fresh} appear only in imputed values, never observed")
    return o_s.zip_with(o_s.is_not_null(), text).alias(column)


def write_long(long: pl.DataFrame, path: Path) -> None:
    """Write a long-format frame as CSV (missing as empty), the format :func:`read_long` reads."""
    long.write_csv(path, null_value="")
