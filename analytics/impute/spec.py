"""The variables of a chained-equations run: their kind, their default method, and their numeric coding.

Kinds follow mice's default methods (van Buuren & Groothuis-Oudshoorn, J Stat Softw 2011;45(3), §3.2):
``numeric`` → ``pmm``; ``binary`` (two levels, or a boolean) → ``logreg``; ``unordered`` (three or more levels)
→ ``polyreg``; ``ordered`` (a polars ``Enum``, three or more levels) → ``polr``. A category is coded 0 .. K-1 in
level order; a missing value is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.errors import CohortlabError

DEFAULT_METHOD = {"numeric": "pmm", "binary": "logreg", "unordered": "polyreg", "ordered": "polr"}
# the methods a kind may be given instead of its default (pmm on a category matches on its level codes, as mice's)
# polr on an unordered column takes its levels in their declared order ([variables] levels)
ALLOWED_METHODS = {"numeric": ("pmm", "norm"), "binary": ("logreg", "pmm"), "unordered": ("polyreg", "polr", "pmm"),
                   "ordered": ("polr", "polyreg", "pmm")}


class ImputationError(CohortlabError, ValueError):
    """Input the chained equations cannot impute: a column with every value missing, an unknown column or method,
    fewer than 2 imputations."""


@dataclass(frozen=True)
class Variable:
    """One column of the data.

    Attributes
    ----------
    name : str
    kind : str
        ``numeric``, ``binary``, ``unordered`` or ``ordered``.
    levels : tuple of str
        The category levels in code order (empty for a number).
    dtype : polars.DataType
        The input's dtype, restored on the completed data.
    """

    name: str
    kind: str
    levels: tuple[str, ...]
    dtype: pl.DataType


def _kind(series: pl.Series, declared: list[str] | None = None) -> tuple[str, tuple[str, ...]]:
    dt = series.dtype
    if dt.is_numeric():
        return "numeric", ()
    if dt == pl.Boolean:
        return "binary", ("false", "true")
    if isinstance(dt, pl.Enum):
        levels = tuple(str(v) for v in dt.categories.to_list())
        return ("binary" if len(levels) == 2 else "ordered"), levels
    if dt in (pl.String, pl.Categorical):
        seen = sorted(str(v) for v in series.drop_nulls().unique().to_list())
        # declared levels keep their order; values beyond them follow, sorted (encode names none: all are levels)
        levels = tuple(declared or ()) + tuple(v for v in seen if v not in (declared or ()))
        return ("binary" if len(levels) == 2 else "unordered"), levels
    raise ImputationError(f"column {series.name!r} has type {dt}, which cannot be imputed; "
                          "use a number, a boolean, a string or an Enum")


def describe(frame: pl.DataFrame, levels: dict[str, list[str]] | None = None) -> list[Variable]:
    """The :class:`Variable` of each column of ``frame``; a column with every value missing is an error.

    ``levels`` gives a text column's levels in their order (the first is the reference of its dummies and the
    lowest for ``polr``); otherwise they are sorted.
    """
    levels = levels or {}
    out = []
    for name in frame.columns:
        s = frame[name]
        if s.null_count() == s.len() or (s.dtype.is_float() and int(s.is_nan().sum()) + s.null_count() == s.len()):
            raise ImputationError(f"column {name!r}: every value is missing, so there is nothing to impute it from")
        kind, lev = _kind(s, levels.get(name))
        if kind != "numeric" and len(lev) < 2:
            raise ImputationError(f"column {name!r} has a single level {lev!r}; it cannot be imputed")
        out.append(Variable(name, kind, lev, s.dtype))
    return out


def encode(frame: pl.DataFrame, variables: list[Variable]) -> np.ndarray:
    """The (n, k) float array of ``frame``: numbers as they are, categories as level codes, NaN where missing."""
    cols = []
    for v in variables:
        s = frame[v.name]
        if v.kind == "numeric":
            a = s.cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
            a[~np.isfinite(a)] = np.nan
        elif s.dtype == pl.Boolean:
            a = s.cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
        else:
            index = {lev: i for i, lev in enumerate(v.levels)}
            raw = s.cast(pl.String).to_list()
            unknown = sorted({r for r in raw if r is not None and r not in index})
            if unknown:
                raise ImputationError(f"column {v.name!r}: level(s) {unknown} are not among {list(v.levels)}")
            a = np.array([np.nan if r is None else index[r] for r in raw], dtype=np.float64)
        cols.append(a)
    return np.column_stack(cols) if cols else np.empty((frame.height, 0))


def decode(values: np.ndarray, variables: list[Variable]) -> pl.DataFrame:
    """The inverse of :func:`encode` for completed values, with each column's input dtype."""
    series = []
    for j, v in enumerate(variables):
        a = values[:, j]
        if v.kind == "numeric":
            s = pl.Series(v.name, a, dtype=pl.Float64)
            if v.dtype.is_integer():
                s = s.round(0)
            series.append(s.cast(v.dtype))
        elif v.dtype == pl.Boolean:
            series.append(pl.Series(v.name, [None if np.isnan(x) else bool(x) for x in a], dtype=pl.Boolean))
        else:
            labels = [None if np.isnan(x) else v.levels[int(x)] for x in a]
            series.append(pl.Series(v.name, labels, dtype=pl.String).cast(v.dtype))
    return pl.DataFrame(series)


def methods_for(variables: list[Variable], missing: np.ndarray, override: dict[str, str] | None) -> dict[str, str]:
    """The method of each incomplete column: mice's default for its kind unless ``override`` names another.

    A column with nothing missing gets ``""`` (not imputed), as in mice.
    """
    by_name = {v.name: v for v in variables}
    override = dict(override or {})
    unknown = sorted(set(override) - set(by_name))
    if unknown:
        raise ImputationError(f"imputation method given for unknown column(s) {unknown}; columns are {sorted(by_name)}")
    out: dict[str, str] = {}
    for j, v in enumerate(variables):
        method = override.get(v.name, DEFAULT_METHOD[v.kind])
        if method not in ALLOWED_METHODS[v.kind]:
            raise ImputationError(f"column {v.name!r} ({v.kind}): method {method!r} is not one of "
                                  f"{list(ALLOWED_METHODS[v.kind])}")
        out[v.name] = method if missing[:, j].any() else ""
    return out
