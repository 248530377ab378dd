"""Table 1: baseline characteristics by split and by label, with p-values.

Layout. One block of columns per group: the whole cohort first, then each split
present (train, internal, external). In each block: all patients of the group,
label 0, label 1, the p-value comparing label 0 with label 1 inside that group,
and the test used. Unlabelled patients count in "all" only.

Which variables. By default every cohort column except ``patient_id``,
``label``, ``time``, ``event``, ``center``, ``split``, and except variables whose
role (``variables`` table) is ``id``, ``outcome``, ``time`` or ``event`` or whose
type is ``text`` or ``date``. Continuous = numeric / integer type (or a numeric
column with no ``variables`` row); categorical = categorical / binary type,
text columns and booleans.

Continuous variables. The distribution rule is decided once per variable on the
whole cohort, so a variable is shown the same way in every block: it is treated
as normal when, in each label group with at least 3 values, the Shapiro–Wilk
test (Shapiro & Wilk 1965) gives p >= ``alpha`` (0.05) for groups of at most
5000 values, or the bias-corrected sample skewness is within ±1 for larger
groups (where Shapiro–Wilk rejects trivial departures); a group of fewer than 3
values, or a constant variable, counts as not normal. Normal variables show
mean ± SD (ddof 1) and are compared by Welch's t-test (Welch 1947); the others
show median [Q1, Q3] (linear interpolation, R's type 7) and are compared by the
two-sided Mann–Whitney U test (Mann & Whitney 1947; scipy's exact / asymptotic
choice, with continuity correction).

Categorical variables. Counts and percentages of the non-missing values of
each group. Pearson's chi-square test (scipy ``chi2_contingency``, with Yates'
continuity correction for 2x2 tables) on the level x label table, levels absent
from the group dropped; when any expected count is below 5, Fisher's exact test
instead: exact for 2x2 tables, and for larger tables the Freeman–Halton
extension estimated from 20,000 Monte Carlo tables drawn with ``seed`` (so the
same inputs give the same p-value).

Missing values. A "missing" row, n (% of the group), follows each variable
with any missing value in the cohort.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats as sps

from analytics.splits import SPLITS
from pipeline import atomic
from pipeline.config import RESERVED

log = logging.getLogger("cohortlab.table1")

SKIP_ROLES = ("id", "outcome", "time", "event")
SKIP_TYPES = ("text", "date")
MC_TABLES = 20_000

Groups = list[tuple[str, np.ndarray]]  # (group name, row mask)


@dataclass(frozen=True)
class Table1:
    """Baseline table in three forms.

    Attributes
    ----------
    frame
        Display table (strings): variable, level, statistic, then per group
        ``"<group> | all"``, ``"<group> | label 0"``, ``"<group> | label 1"``,
        ``"<group> | p"``, ``"<group> | test"``.
    stats
        Numbers behind it, one row per variable x level x group x outcome
        (``outcome`` is "all", "0" or "1"): n, missing, mean, sd, median, q1,
        q3, count, percent.
    tests
        One row per variable x group: test, statistic, p.
    groups
        Group names in column order ("cohort" first).
    """

    frame: pl.DataFrame
    stats: pl.DataFrame
    tests: pl.DataFrame
    groups: tuple[str, ...]

    def block(self, group: str) -> pl.DataFrame:
        """The display columns of one group (e.g. "train") with short headers: all, label 0, label 1, p, test."""
        if group not in self.groups:
            raise ValueError(f"Table 1 has no group {group!r} (groups: {', '.join(self.groups)})")
        cols = {_col(group, part): name for part, name in
                (("all", "all"), ("0", "label 0"), ("1", "label 1"), ("p", "p"), ("test", "test"))}
        return self.frame.select(["variable", "level", "statistic", *cols]).rename(cols)

    def to_csv(self, path: str | Path) -> Path:
        """Write the display table as CSV (temp file renamed on success)."""
        with atomic.staged(path) as tmp:
            self.frame.write_csv(tmp)
        return Path(path)

    def to_html(self) -> str:
        """An HTML fragment (``<table class="table1">``) with a two-row header and a method note."""
        esc = html.escape
        top = ['<th rowspan="2">Variable</th>', '<th rowspan="2"></th>', '<th rowspan="2"></th>']
        sub = []
        for g in self.groups:
            top.append(f'<th colspan="5">{esc(g)}</th>')
            sub += [f"<th>{esc(h)}</th>" for h in ("all", "label 0", "label 1", "p", "test")]
        body = []
        for row in self.frame.iter_rows():
            cells = "".join(f"<td>{esc('' if v is None else str(v))}</td>" for v in row)
            cls = ' class="level"' if row[1] else ""
            body.append(f"<tr{cls}>{cells}</tr>")
        note = (
            "Continuous: mean ± SD with Welch's t-test when Shapiro–Wilk p ≥ 0.05 in both label groups, "
            "otherwise median [Q1, Q3] with the Mann–Whitney U test. Categorical: n (%) with the chi-square "
            "test, or Fisher's exact test when an expected count is below 5."
        )
        ncol = 3 + 5 * len(self.groups)
        return (
            '<table class="table1">\n<thead>\n<tr>' + "".join(top) + "</tr>\n<tr>" + "".join(sub)
            + "</tr>\n</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n"
            + f'<tfoot><tr><td colspan="{ncol}">{esc(note)}</td></tr></tfoot>\n</table>\n'
        )


@dataclass(frozen=True)
class _Var:
    name: str
    display: str
    kind: str  # continuous | categorical
    levels: tuple[Any, ...]


def table1(
    frame: pl.DataFrame,
    variables: pl.DataFrame | None = None,
    columns: Sequence[str] | None = None,
    digits: int = 1,
    alpha: float = 0.05,
    seed: int = 0,
) -> Table1:
    """Baseline characteristics by split and label (rules in the module notes).

    Parameters
    ----------
    frame
        One row per patient with ``label`` (0/1/null), optionally ``split``,
        and the variables.
    variables
        The store's ``variables`` table (name, type, unit, role, label, levels)
        for display names, units, level order and roles; optional.
    columns
        Variables to show (default: chosen by role and type).
    digits
        Decimals of means, SDs, medians and quartiles.
    alpha
        Shapiro–Wilk level of the normality rule.
    seed
        Seed of the Monte Carlo Fisher test for tables larger than 2x2.

    Returns
    -------
    Table1
    """
    if "label" not in frame.columns:
        raise ValueError("Table 1 needs a 'label' column")
    meta = _variables_meta(variables)
    chosen = _choose(frame, meta, columns)
    label = np.asarray(frame["label"].cast(pl.Float64).to_numpy(), dtype=float)
    groups: Groups = [("cohort", np.ones(frame.height, dtype=bool))]
    if "split" in frame.columns:
        split = np.asarray(frame["split"].to_list(), dtype=object)
        groups += [(g, split == g) for g in SPLITS if (split == g).any()]
    outcomes = (("all", np.ones(frame.height, dtype=bool)), ("0", label == 0), ("1", label == 1))
    acc = _Rows([], [], [])

    n_row: dict[str, Any] = {"variable": "n", "level": "", "statistic": "patients"}
    for g, gm in groups:
        for o, om in outcomes:
            n_row[_col(g, o)] = str(int((gm & om).sum()))
        n_row[_col(g, "p")] = n_row[_col(g, "test")] = ""
    acc.display.append(n_row)

    for var in [_describe(frame, meta, c) for c in chosen]:
        if var.kind == "continuous":
            present = _continuous_rows(acc, var, frame[var.name], label, groups, outcomes, digits, alpha)
        else:
            present = _categorical_rows(acc, var, frame[var.name], label, groups, outcomes, seed)
        if (~present).any():
            acc.display.append(_missing_row(present, groups, outcomes))

    names = tuple(g for g, _ in groups)
    order = ["variable", "level", "statistic"] + [_col(g, o) for g in names for o in ("all", "0", "1", "p", "test")]
    out = pl.DataFrame(acc.display, schema={c: pl.String for c in order})
    return Table1(frame=out, stats=_stats_frame(acc.stats), tests=_tests_frame(acc.tests), groups=names)


@dataclass(frozen=True)
class _Rows:
    """Rows collected while building the table (display strings, numbers, tests)."""

    display: list[dict[str, Any]]
    stats: list[dict[str, Any]]
    tests: list[dict[str, Any]]


def _continuous_rows(acc: _Rows, var: _Var, values: pl.Series, label: np.ndarray, groups: Groups,
                     outcomes: tuple[tuple[str, np.ndarray], ...], digits: int, alpha: float) -> np.ndarray:
    x = np.asarray(values.cast(pl.Float64).to_numpy(), dtype=float)
    normal = _is_normal(x, label, alpha)
    log.debug("Table 1: %s treated as %s", var.name, "normal" if normal else "not normal")
    row: dict[str, Any] = {"variable": var.display, "level": "", "statistic": "mean ± SD" if normal else "median [IQR]"}
    for g, gm in groups:
        for o, om in outcomes:
            s = _continuous(x[gm & om])
            acc.stats.append({"variable": var.name, "level": None, "group": g, "outcome": o, "normal": normal, **s})
            row[_col(g, o)] = _fmt_continuous(s, normal, digits)
        t = _test_continuous(x[gm & (label == 0)], x[gm & (label == 1)], normal)
        acc.tests.append({"variable": var.name, "group": g, **t})
        row[_col(g, "p")], row[_col(g, "test")] = _fmt_p(t["p"]), t["test"] or ""
    acc.display.append(row)
    return ~np.isnan(x)


def _categorical_rows(acc: _Rows, var: _Var, values: pl.Series, label: np.ndarray, groups: Groups,
                      outcomes: tuple[tuple[str, np.ndarray], ...], seed: int) -> np.ndarray:
    raw = values.to_list()
    present = np.array([v is not None for v in raw], dtype=bool)
    cats = np.asarray([str(v) if v is not None else None for v in raw], dtype=object)
    head: dict[str, Any] = {"variable": var.display, "level": "", "statistic": "n (%)"}
    level_rows: list[dict[str, Any]] = [{"variable": "", "level": str(lv), "statistic": ""} for lv in var.levels]
    for g, gm in groups:
        for o, om in outcomes:
            m = gm & om
            n_ok = int((m & present).sum())
            head[_col(g, o)] = ""
            for lv, lrow in zip(var.levels, level_rows):
                count = int((m & (cats == str(lv))).sum())
                pct = 100.0 * count / n_ok if n_ok else math.nan
                acc.stats.append({"variable": var.name, "level": str(lv), "group": g, "outcome": o, "normal": None,
                                  **_empty_stats(n_ok, int((m & ~present).sum())), "count": count, "percent": pct})
                lrow[_col(g, o)] = f"{count} ({_fmt_num(pct, 1)}%)" if n_ok else "0"
        t = _test_categorical(cats[gm & present], label[gm & present], seed)
        acc.tests.append({"variable": var.name, "group": g, **t})
        head[_col(g, "p")], head[_col(g, "test")] = _fmt_p(t["p"]), t["test"] or ""
        for lrow in level_rows:
            lrow[_col(g, "p")] = lrow[_col(g, "test")] = ""
    acc.display.extend([head, *level_rows])
    return present


def _missing_row(present: np.ndarray, groups: Groups, outcomes: tuple[tuple[str, np.ndarray], ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"variable": "", "level": "missing", "statistic": "n (%)"}
    for g, gm in groups:
        for o, om in outcomes:
            m = gm & om
            k, n = int((m & ~present).sum()), int(m.sum())
            row[_col(g, o)] = f"{k} ({_fmt_num(100.0 * k / n, 1)}%)" if n else "0"
        row[_col(g, "p")] = row[_col(g, "test")] = ""
    return row


def _col(group: str, part: str) -> str:
    return f"{group} | " + {"0": "label 0", "1": "label 1"}.get(part, part)


def _variables_meta(variables: pl.DataFrame | None) -> dict[str, dict[str, Any]]:
    if variables is None or variables.is_empty():
        return {}
    return {r["name"]: r for r in variables.to_dicts()}


def _choose(frame: pl.DataFrame, meta: dict[str, dict[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        unknown = [c for c in columns if c not in frame.columns]
        if unknown:
            raise ValueError(f"Table 1: no columns {unknown} in the cohort (it has {frame.columns})")
        return list(columns)
    out = []
    for c in frame.columns:
        m = meta.get(c, {})
        if c in RESERVED or m.get("role") in SKIP_ROLES or m.get("type") in SKIP_TYPES:
            continue
        dt = frame[c].dtype
        if not m and not (dt.is_numeric() or dt in (pl.String, pl.Boolean, pl.Categorical, pl.Enum)):
            continue
        out.append(c)
    return out


def _describe(frame: pl.DataFrame, meta: dict[str, dict[str, Any]], name: str) -> _Var:
    m = meta.get(name, {})
    dt = frame[name].dtype
    vtype = m.get("type")
    continuous = vtype in ("numeric", "integer") if vtype else (dt.is_numeric() and dt != pl.Boolean)
    if continuous and not dt.is_numeric():
        continuous = False
    label = m.get("label") or name
    unit = m.get("unit")
    display = f"{label} ({unit})" if unit else label
    if continuous:
        return _Var(name, display, "continuous", ())
    present = {str(v) for v in frame[name].unique().to_list() if v is not None}
    # declared order first (only levels present in the cohort); undeclared ones appended sorted
    levels: list[str] = [str(lv) for lv in (m.get("levels") or []) if str(lv) in present]
    levels += sorted(present - set(levels))
    return _Var(name, display, "categorical", tuple(levels))


def _is_normal(x: np.ndarray, label: np.ndarray, alpha: float) -> bool:
    groups = [x[(label == k) & ~np.isnan(x)] for k in (0, 1)]
    groups = [g for g in groups if g.size] or [x[~np.isnan(x)]]
    for g in groups:
        if g.size < 3 or np.ptp(g) == 0:
            return False
        if g.size <= 5000:
            if sps.shapiro(g).pvalue < alpha:
                return False
        elif abs(sps.skew(g, bias=False)) > 1:
            return False
    return True


def _empty_stats(n: int, missing: int) -> dict[str, Any]:
    return {"n": n, "missing": missing, "mean": None, "sd": None, "median": None, "q1": None, "q3": None,
            "count": None, "percent": None}


def _continuous(x: np.ndarray) -> dict[str, Any]:
    ok = x[~np.isnan(x)]
    out = _empty_stats(int(ok.size), int(x.size - ok.size))
    if ok.size:
        q1, med, q3 = np.percentile(ok, [25, 50, 75])
        out.update(mean=float(ok.mean()), median=float(med), q1=float(q1), q3=float(q3),
                   sd=float(ok.std(ddof=1)) if ok.size > 1 else None)
    return out


def _test_continuous(a: np.ndarray, b: np.ndarray, normal: bool) -> dict[str, Any]:
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if normal:
        if a.size < 2 or b.size < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
            return {"test": None, "statistic": None, "p": None}
        r = sps.ttest_ind(a, b, equal_var=False)
        return {"test": "Welch t", "statistic": float(r.statistic), "p": float(r.pvalue)}
    if a.size < 1 or b.size < 1 or np.ptp(np.concatenate([a, b])) == 0:
        return {"test": None, "statistic": None, "p": None}
    r = sps.mannwhitneyu(a, b, alternative="two-sided")
    return {"test": "Mann-Whitney U", "statistic": float(r.statistic), "p": float(r.pvalue)}


def _test_categorical(cats: np.ndarray, label: np.ndarray, seed: int) -> dict[str, Any]:
    keep = ~np.isnan(label)
    cats, label = cats[keep], label[keep]
    levels = sorted(set(cats.tolist()))
    table = np.array([[int(((cats == lv) & (label == k)).sum()) for k in (0, 1)] for lv in levels])
    if table.shape[0] < 2 or (table.sum(axis=0) == 0).any():
        return {"test": None, "statistic": None, "p": None}
    chi2, p, _, expected = sps.chi2_contingency(table)
    if (expected >= 5).all():
        return {"test": "chi-square", "statistic": float(chi2), "p": float(p)}
    if table.shape == (2, 2):
        r = sps.fisher_exact(table)
        return {"test": "Fisher exact", "statistic": float(r.statistic), "p": float(r.pvalue)}
    method = sps.MonteCarloMethod(n_resamples=MC_TABLES, rng=np.random.default_rng(seed))
    r = sps.fisher_exact(table, method=method)
    return {"test": "Fisher exact (Monte Carlo)", "statistic": float(r.statistic), "p": float(r.pvalue)}


def _fmt_num(v: float | None, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _fmt_continuous(s: dict[str, Any], normal: bool, digits: int) -> str:
    if not s["n"]:
        return "–"
    if normal:
        return f"{_fmt_num(s['mean'], digits)} ± {_fmt_num(s['sd'], digits)}"
    return f"{_fmt_num(s['median'], digits)} [{_fmt_num(s['q1'], digits)}, {_fmt_num(s['q3'], digits)}]"


def _fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _stats_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"variable": pl.String, "level": pl.String, "group": pl.String, "outcome": pl.String,
              "normal": pl.Boolean, "n": pl.Int64, "missing": pl.Int64, "mean": pl.Float64, "sd": pl.Float64,
              "median": pl.Float64, "q1": pl.Float64, "q3": pl.Float64, "count": pl.Int64, "percent": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _tests_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"variable": pl.String, "group": pl.String, "test": pl.String, "statistic": pl.Float64, "p": pl.Float64}
    return pl.DataFrame(rows, schema=schema)
