"""The formula language of regression models: ``histol + stage + rcs(age, 4) + histol:stage``.

A model's ``formula`` is the right-hand side of an R model formula (Wilkinson & Rogers, Appl Stat
1973; Chambers & Hastie, *Statistical Models in S*, 1992, ch. 2): terms joined by ``+``, interactions
``a:b``, crossings ``a*b`` (``a + b + a:b``), ``(a + b)^2``, ``-`` to remove a term, ``a/b`` nesting.
Its factors are input columns, used as they are (numbers) or treatment-coded (categories), and two
functions:

* ``rcs(x, k)``: Harrell's restricted cubic spline of ``x`` with ``k`` knots (3 to 7; default 5), as
  ``rms::rcs``;
* ``C(x, ref = "level")``: ``x`` treatment-coded against ``level``.

This module parses only: it reads no data, so :mod:`pipeline.config` checks a formula when the study
file is loaded. The terms come in R's order (``terms.formula``: by degree, then as written) and the
factors of an interaction in the order the variables first appear in the formula, as R labels them.
The model matrix itself is :class:`analytics.models.formula.RegressionDesign`. The parser underneath
is formulaic's (Wilkinson-formula grammar); function calls are read with Python's :mod:`ast`, never
evaluated.
"""

from __future__ import annotations

import ast
import difflib
import functools
from dataclasses import dataclass
from typing import Literal

from pipeline.errors import CohortlabError

FUNCTIONS = ("rcs", "C")
"""The functions a formula may call."""

# what users of R or patsy may write instead, and what to write here
_INSTEAD = {"factor": "C", "as.factor": "C", "relevel": "C", "ns": "rcs", "bs": "rcs", "cr": "rcs",
            "Treatment": "C", "lsp": "rcs", "pol": "rcs", "poly": "rcs"}
KNOTS = (3, 7)
"""The numbers of knots ``rcs`` accepts (rms's default knot quantiles exist for these)."""
DEFAULT_KNOTS = 5  # rms::rcs without a number of knots


class FormulaError(CohortlabError, ValueError):
    """A formula that cannot be read; the message says what is wrong, in one line."""


@dataclass(frozen=True)
class Factor:
    """One variable of a formula as it enters the model matrix.

    Attributes
    ----------
    variable
        The input column.
    function
        ``"rcs"`` (a spline basis), ``"C"`` (a factor with a stated reference) or ``""`` (the column as it is).
    knots
        The spline's number of knots (``rcs`` only).
    reference
        The reference level (``C(x, ref = ...)`` only).
    """

    variable: str
    function: Literal["", "rcs", "C"] = ""
    knots: int | None = None
    reference: str | None = None

    @property
    def label(self) -> str:
        """As R deparses it (``rcs(age, 4)``); a coded factor is named by its variable, as with ``relevel``."""
        return f"rcs({self.variable}, {self.knots})" if self.function == "rcs" else self.variable

    @property
    def key(self) -> tuple[str, str, int | None]:
        """Identity in a term: ``x`` and ``C(x, ref = ...)`` are the same variable, ``rcs(x, k)`` another."""
        return (self.variable, "rcs" if self.function == "rcs" else "", self.knots)


@dataclass(frozen=True)
class ParsedTerm:
    """One term: its factors, in the order their variables first appear in the formula."""

    factors: tuple[Factor, ...]

    @property
    def label(self) -> str:
        return ":".join(f.label for f in self.factors)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.variable for f in self.factors))


@dataclass(frozen=True)
class ParsedFormula:
    """A parsed formula: its terms in R's order and its factors in order of first appearance."""

    text: str
    terms: tuple[ParsedTerm, ...]
    factors: tuple[Factor, ...]

    @property
    def variables(self) -> tuple[str, ...]:
        """The input columns it reads, in order of first appearance."""
        return tuple(dict.fromkeys(f.variable for f in self.factors))

    @property
    def references(self) -> dict[str, str]:
        """Reference levels stated with ``C(x, ref = ...)``, by variable."""
        return {f.variable: f.reference for f in self.factors if f.reference is not None}

    @property
    def splines(self) -> dict[str, int]:
        """Variables entered as splines and their numbers of knots."""
        return {f.variable: int(f.knots) for f in self.factors if f.function == "rcs" and f.knots is not None}


def _literal(node: ast.expr, what: str) -> str | int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):  # C(x, ref = a): an unquoted level
        return node.id
    raise FormulaError(f"{what}: give a number or a quoted text, not {ast.unparse(node)!r}")


def _function(name: str) -> str:
    hint = _INSTEAD.get(name) or next(iter(difflib.get_close_matches(name, FUNCTIONS, n=1, cutoff=0.5)), None)
    known = "rcs(x, k) and C(x, ref = \"level\")"
    return f"unknown function {name}()" + (f"; did you mean {hint}()?" if hint else "") + f" (known: {known})"


def _factor(expr: str) -> Factor:
    """A factor of a term from its (formulaic-rendered) Python expression."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise FormulaError(f"cannot read {expr!r}") from None
    if isinstance(node, ast.Name):
        return Factor(node.id)
    if not (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))):
        raise FormulaError(f"cannot read {expr!r}: write a column name, rcs(x, k) or C(x, ref = \"level\")")
    name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
    if name not in FUNCTIONS:
        raise FormulaError(_function(name))
    if not node.args or not isinstance(node.args[0], ast.Name):
        raise FormulaError(f"{expr}: the first argument of {name}() is a column name")
    variable = node.args[0].id
    extra = node.args[1:]
    named = {k.arg: k.value for k in node.keywords}
    if name == "rcs":
        if set(named) - {"k", "nk"} or len(extra) + len(named) > 1:
            raise FormulaError(f"{expr}: write rcs({variable}, k) with k the number of knots")
        given = extra[0] if extra else next(iter(named.values()), None)
        k = DEFAULT_KNOTS if given is None else _literal(given, expr)
        if not isinstance(k, int) or not KNOTS[0] <= k <= KNOTS[1]:
            raise FormulaError(f"{expr}: the number of knots must be {KNOTS[0]} to {KNOTS[1]} (rms's default knot "
                               f"places), not {k!r}")
        return Factor(variable, "rcs", knots=k)
    if set(named) - {"ref", "reference", "base"} or len(extra) + len(named) > 1:
        raise FormulaError(f"{expr}: write C({variable}) or C({variable}, ref = \"level\")")
    given = extra[0] if extra else next(iter(named.values()), None)
    ref = None if given is None else _literal(given, expr)
    return Factor(variable, "C", reference=None if ref is None else str(ref))


@functools.lru_cache(maxsize=512)  # immutable result; a model's formula is parsed at every fit and transform
def parse_formula(text: str) -> ParsedFormula:
    """Parse the right-hand side of a model formula (see the module notes).

    Raises
    ------
    FormulaError
        A syntax error, a response (``y ~``), an unknown function (with a "did you mean"), bad ``rcs``
        or ``C`` arguments, a removed intercept, a variable used both as a spline and otherwise, or two
        reference levels for one variable.
    """
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty")
    if "~" in text:
        raise FormulaError("give the right-hand side only (no 'outcome ~'): the outcome is the study's endpoint")
    try:
        ordered = Formula(text)
        as_written = Formula(text, _ordering="none")
        if not hasattr(ordered, "__iter__") or not hasattr(as_written, "__iter__"):
            raise FormulaError("give one right-hand side")
        plain = [[(str(f.expr), str(getattr(f.eval_method, "value", f.eval_method))) for f in t.factors]
                 for t in ordered]
        written = [[str(f.expr) for f in t.factors] for t in as_written]
    except FormulaError:
        raise
    except (FormulaicError, SyntaxError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FormulaError(f"cannot read the formula: {first}") from None
    factors: dict[str, Factor] = {}
    for term in plain:
        for expr, method in term:
            if method == "literal":
                if expr != "1":
                    raise FormulaError(f"a number ({expr}) is not a term")
                continue
            if expr not in factors:
                factors[expr] = Factor(expr) if method == "lookup" else _factor(expr)
    if not any(all(m == "literal" for _, m in t) for t in plain):
        raise FormulaError("the model keeps its intercept (a Cox model its baseline hazard): remove '- 1' / '+ 0'")
    # R's variable order: first appearance in the formula as written
    order: dict[tuple[str, str, int | None], int] = {}
    for term_exprs in written:
        for expr in term_exprs:
            if expr in factors:
                order.setdefault(factors[expr].key, len(order))
    terms: list[ParsedTerm] = []
    for term in plain:
        fs = [factors[e] for e, m in term if m != "literal"]
        if not fs:
            continue
        merged = {f.key: f for f in sorted(fs, key=lambda f: order[f.key])}
        parsed = ParsedTerm(tuple(merged.values()))
        if parsed.label not in {t.label for t in terms}:
            terms.append(parsed)
    if not terms:
        raise FormulaError("the formula has no terms")
    distinct = sorted({f.key: f for f in factors.values()}.values(), key=lambda f: order[f.key])
    _check_uses(list(factors.values()))
    refs = {f.variable: f.reference for f in factors.values() if f.reference is not None}
    distinct = [f if f.function == "rcs" or f.variable not in refs else Factor(f.variable, "C", reference=refs[f.variable])
                for f in distinct]
    terms = [ParsedTerm(tuple(f if f.function == "rcs" or f.variable not in refs
                              else Factor(f.variable, "C", reference=refs[f.variable]) for f in t.factors))
             for t in terms]
    return ParsedFormula(text.strip(), tuple(terms), tuple(distinct))


def _check_uses(factors: list[Factor]) -> None:
    """One reference level per variable; a spline's variable appears nowhere else (its basis holds the linear term)."""
    refs: dict[str, set[str]] = {}
    for f in factors:
        if f.reference is not None:
            refs.setdefault(f.variable, set()).add(f.reference)
    for var, given in refs.items():
        if len(given) > 1:
            raise FormulaError(f"{var} has two reference levels ({', '.join(sorted(map(repr, given)))})")
    uses: dict[str, set[tuple[str, str, int | None]]] = {}
    for f in factors:
        uses.setdefault(f.variable, set()).add(f.key)
    for var, keys in uses.items():
        if len(keys) > 1 and any(k[1] == "rcs" for k in keys):
            shown = sorted(Factor(var, "rcs", k[2]).label if k[1] == "rcs" else var for k in keys)
            raise FormulaError(f"{var} enters as {' and '.join(shown)}: a spline holds the linear term; use one of them")


def unspanned_terms(small: ParsedFormula, large: ParsedFormula) -> list[str]:
    """The terms of ``small`` whose model-matrix columns ``large``'s do not span ([]: ``small`` is nested).

    A term is spanned by the same term in ``large`` (``x`` and ``C(x, ref = ...)`` code the same space), and a
    variable entered linearly (``x``) also by its spline (``rcs(x, k)``: Harrell's basis holds ``x`` itself
    as its first column). Splines with other knots are not nested, nor is anything else. This is the
    nesting ``anova(small, large, test = "LRT")`` assumes of two models fitted on the same patients.
    """
    keys = {frozenset(f.key for f in t.factors) for t in large.terms}
    splined = {f.variable for t in large.terms if len(t.factors) == 1 for f in t.factors if f.function == "rcs"}
    out = []
    for term in small.terms:
        key = frozenset(f.key for f in term.factors)
        linear = len(term.factors) == 1 and term.factors[0].function != "rcs" and term.factors[0].variable in splined
        if key not in keys and not linear:
            out.append(term.label)
    return out
