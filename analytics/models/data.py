"""What one model sees: its input table, instance bags or member scores, row-aligned to patients.

A model's inputs come from three places, all named in its ``study.toml`` entry:

* ``features``: pooled feature blocks (``"feature_set:pooling"``), or for a
  MIL model the instance bags of one feature set;
* ``clinical``: cohort columns, typed but neither imputed nor scaled (the
  model's pipeline does that on training patients only);
* ``scores`` / ``members``: earlier models' predicted probabilities.

A patient who lacks a feature block, a bag or an input model's score lacks the
model's *inputs* and gets no prediction from it; a missing clinical *value* is
not a missing input (the pipeline imputes it). With ``[imputation] from`` the cohort's completed versions give
:attr:`ModelData.completions`: the input table once per imputation, its missing clinical cells filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from analytics.cohort import Bags, Cohort, feature_key
from pipeline.config import Model
from pipeline.errors import CohortlabError

SCORE_PREFIX = "score:"
NUMERIC_TYPES = ("numeric", "integer")


class ModelInputError(CohortlabError, ValueError):
    """A model's inputs cannot be assembled; the message names the model and the column."""


@dataclass(frozen=True)
class Columns:
    """Names of the input table's columns by how the pipeline treats them.

    ``features`` are image-feature columns (the optional PCA acts on these
    only); ``numeric`` are clinical numbers and input scores (imputed with the
    median, standardised); ``categorical`` are clinical categories (imputed with
    the most frequent level, one-hot encoded).
    """

    features: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    # declared order of a categorical column's levels (from the store's variables table), where known
    levels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # a regression model's formula over its clinical columns (None: its columns enter as they are), and the
    # reference levels declared in [variables] (treatment coding; analytics.models.formula)
    formula: str | None = None
    references: tuple[tuple[str, str], ...] = ()
    # the clinical columns in the model's declared order (`clinical = [...]`), where it differs from numbers first
    order: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.features + self.numeric + self.categorical

    def names(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """The column names by kind (what two tables must share to be read by the same model)."""
        return self.features, self.numeric, self.categorical

    def level_order(self, column: str) -> tuple[str, ...]:
        """The declared order of ``column``'s levels (empty when none is known)."""
        return dict(self.levels).get(column, ())

    def without(self, names: Sequence[str]) -> Columns:
        """These columns less ``names``."""
        drop = set(names)
        return Columns(tuple(c for c in self.features if c not in drop), tuple(c for c in self.numeric if c not in drop),
                       tuple(c for c in self.categorical if c not in drop),
                       tuple((c, lv) for c, lv in self.levels if c not in drop), self.formula,
                       tuple((c, r) for c, r in self.references if c not in drop),
                       tuple(c for c in self.order if c not in drop))

    @property
    def clinical(self) -> tuple[str, ...]:
        """The clinical columns (numbers and categories, not input scores), in the model's declared order."""
        cols = tuple(c for c in self.numeric if not c.startswith(SCORE_PREFIX)) + self.categorical
        rank = {c: i for i, c in enumerate(self.order)}
        return tuple(sorted(cols, key=lambda c: rank.get(c, len(rank)))) if rank else cols

    @property
    def scores(self) -> tuple[str, ...]:
        """The input models' score columns."""
        return tuple(c for c in self.numeric if c.startswith(SCORE_PREFIX))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"features": list(self.features), "numeric": list(self.numeric),
                               "categorical": list(self.categorical)}
        if self.levels:
            out["levels"] = {c: list(lv) for c, lv in self.levels}
        if self.formula is not None:
            out["formula"] = self.formula
        if self.references:
            out["references"] = dict(self.references)
        if self.order:
            out["order"] = list(self.order)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Columns:
        levels = tuple((str(c), tuple(map(str, lv))) for c, lv in (d.get("levels") or {}).items())
        refs = tuple((str(c), str(r)) for c, r in (d.get("references") or {}).items())
        return cls(tuple(d.get("features", ())), tuple(d.get("numeric", ())), tuple(d.get("categorical", ())), levels,
                   d.get("formula"), refs, tuple(d.get("order", ())))


def uninformative(table: pd.DataFrame, columns: Columns) -> dict[str, str]:
    """Columns of ``table`` that cannot inform a model fitted on its rows, with the reason.

    A column is ``"all missing"`` when no row has a value; a clinical or score
    column is ``"constant"`` when every row with a value has the same one (after
    imputation it carries nothing). Constant image-feature columns (units an
    encoder never activates) stay: they are part of the feature block, and
    standardised they are zero on every training patient. Returned in
    ``columns.all`` order.
    """
    out: dict[str, str] = {}
    features = set(columns.features)
    for col in columns.all:
        values = table[col]
        present = values[values.notna()]
        if present.empty:
            out[col] = "all missing"
        elif col not in features and present.nunique(dropna=True) == 1:
            out[col] = "constant"
    return out


def dropped_text(model: str, dropped: Mapping[str, str], shown: int = 8) -> str:
    """One line naming the input columns a model left out and why (image-feature columns counted per block)."""
    return f"model '{model}': left out {dropped_summary(dropped, shown)}"


def dropped_summary(dropped: Mapping[str, str], shown: int = 8) -> str:
    """The left-out columns by reason, e.g. ``igg (all missing on its training patients); site (constant ...)``."""
    parts: list[str] = []
    for reason in ("all missing", "constant"):
        cols = [c for c, why in dropped.items() if why == reason]
        if not cols:
            continue
        named = [c for c in cols if c.count(":") < 2]
        blocks: dict[str, int] = {}
        for c in cols:
            if c.count(":") >= 2:  # "feature_set:pooling:index"
                block = c.rsplit(":", 1)[0]
                blocks[block] = blocks.get(block, 0) + 1
        items = named[:shown] + ([f"{len(named) - shown} more"] if len(named) > shown else [])
        items += [f"{n} image-feature column(s) of {b}" for b, n in blocks.items()]
        parts.append(f"{', '.join(items)} ({reason} on its training patients)")
    return "; ".join(parts)


@dataclass(frozen=True, eq=False)
class ModelData:
    """A model's inputs for some patients, every part aligned to ``patient_ids``.

    Attributes
    ----------
    patient_ids
        The patients, in cohort order.
    table
        Input table for classical learners (pandas, columns in ``columns.all``
        order), or None.
    columns
        How the table's columns are treated, or None.
    bags
        One float32 ``(n_i, dim)`` instance matrix per patient (MIL), or None.
    instances
        Per patient, the instances' ``source_id, instance, x, y, z`` (MIL), or None.
    scores
        ``(n, m)`` member scores for voting / stacking, or None.
    score_names
        The member models, in column order.
    completions
        With imputations read from a file (``[imputation] from``): per imputation, ``table`` with the missing
        clinical cells filled (same rows and columns); None otherwise.
    """

    patient_ids: tuple[str, ...]
    table: pd.DataFrame | None = None
    columns: Columns | None = None
    bags: tuple[np.ndarray, ...] | None = None
    instances: tuple[pl.DataFrame, ...] | None = None
    scores: np.ndarray | None = None
    score_names: tuple[str, ...] = field(default_factory=tuple)
    completions: tuple[pd.DataFrame, ...] | None = None

    def __len__(self) -> int:
        return len(self.patient_ids)

    def take(self, index: np.ndarray) -> ModelData:
        """The rows at integer positions (or a boolean mask) ``index``."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=np.int64)
        return replace(
            self,
            patient_ids=tuple(self.patient_ids[i] for i in idx),
            table=None if self.table is None else self.table.iloc[idx].reset_index(drop=True),
            bags=None if self.bags is None else tuple(self.bags[i] for i in idx),
            instances=None if self.instances is None else tuple(self.instances[i] for i in idx),
            scores=None if self.scores is None else self.scores[idx],
            completions=None if self.completions is None else tuple(
                t.iloc[idx].reset_index(drop=True) for t in self.completions),
        )


@dataclass(frozen=True, eq=False)
class Assembled:
    """Inputs of one model for every cohort patient, with who lacks which input."""

    data: ModelData
    available: np.ndarray
    missing: dict[str, list[str]]


def mil_feature_set(spec: Model) -> str:
    """The feature set whose bags a MIL model reads (written without a pooling)."""
    ref = spec.features[0]
    if ":" in ref:
        raise ModelInputError(
            f"model '{spec.name}': a mil model reads instance bags, so features = [\"{ref.split(':', 1)[0]}\"] "
            f"(no ':{ref.split(':', 1)[1]}' pooling)"
        )
    return ref


def pooled_refs(spec: Model) -> list[str]:
    """Pooled feature blocks a (non-MIL) model reads, as ``"feature_set:pooling"``."""
    return [] if spec.traits.bags else [":".join(feature_key(f)) for f in spec.features]


def input_models(spec: Model) -> list[str]:
    """Models whose scores this model consumes (score inputs, then ensemble members)."""
    return list(spec.scores) + [m for m in spec.members if m not in spec.scores]


def score_matrix(
    names: Sequence[str], scores: Mapping[str, Mapping[str, float]], patient_ids: Sequence[str]
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """``(n, len(names))`` float64 matrix of input scores (NaN where a model gave none) and who lacks each."""
    out = np.full((len(patient_ids), len(names)), np.nan)
    missing: dict[str, list[str]] = {}
    for j, name in enumerate(names):
        if name not in scores:
            raise ModelInputError(f"no predictions of model '{name}' to use as an input")
        got = scores[name]
        for i, pid in enumerate(patient_ids):
            v = got.get(pid)
            if v is not None and np.isfinite(v):
                out[i, j] = v
        lacking = [p for p, ok in zip(patient_ids, np.isfinite(out[:, j])) if not ok]
        if lacking:
            missing[f"{SCORE_PREFIX}{name}"] = lacking
    return out, missing


def _formula_columns(spec: Model, cohort: Cohort, categorical: Sequence[str]) -> None:
    """A formula's columns against the cohort's: each one returned, no spline of a category."""
    if spec.formula is None:
        return
    from pipeline.formula import parse_formula

    where = f"model '{spec.name}': formula \"{spec.formula}\""
    for var, k in parse_formula(spec.formula).splines.items():
        if var in categorical:
            raise ModelInputError(f"{where}: rcs({var}, {k}): {var} is categorical; a spline needs a number")


def _clinical_kinds(spec: Model, cohort: Cohort) -> tuple[list[str], list[str]]:
    if spec.formula is not None:
        lacking = [c for c in spec.clinical if c not in cohort.clinical_columns]
        if lacking:
            raise ModelInputError(f"model '{spec.name}': formula \"{spec.formula}\" names {', '.join(lacking)}, which "
                                  f"cohort {cohort.name} does not return (it returns "
                                  f"{', '.join(cohort.clinical_columns) or 'no clinical column'})")
    types = cohort.variable_types(spec.clinical)
    frame = cohort.clinical(spec.clinical)
    numeric, categorical = [], []
    for col in spec.clinical:
        kind, dtype = types[col], frame[col].dtype
        if kind == "date":
            raise ModelInputError(
                f"model '{spec.name}': clinical column {col} is a date; derive a number from it in the cohort SQL "
                "(e.g. an age or a duration in days)"
            )
        if kind in NUMERIC_TYPES or (kind == "binary" and (dtype.is_numeric() or dtype == pl.Boolean)):
            if not (dtype.is_numeric() or dtype == pl.Boolean):
                raise ModelInputError(
                    f"model '{spec.name}': clinical column {col} is declared {kind} but holds {dtype} values"
                )
            numeric.append(col)
        else:
            categorical.append(col)
    return numeric, categorical


def _table(spec: Model, cohort: Cohort, score_values: np.ndarray) -> tuple[pd.DataFrame, Columns]:
    feats, feat_names = cohort.matrix(pooled_refs(spec), dtype=np.float64) if spec.features else (
        np.zeros((len(cohort), 0)), [])
    numeric, categorical = _clinical_kinds(spec, cohort) if spec.clinical else ([], [])
    clash = {c for c in spec.clinical if c.startswith(SCORE_PREFIX) or c in feat_names}
    if clash:
        raise ModelInputError(f"model '{spec.name}': clinical column names {sorted(clash)} clash with input names")
    parts: dict[str, np.ndarray | list] = {n: feats[:, j] for j, n in enumerate(feat_names)}
    parts.update(_clinical_parts(cohort.clinical(spec.clinical), numeric, categorical))
    score_cols = [f"{SCORE_PREFIX}{n}" for n in spec.scores]
    for j, col in enumerate(score_cols):
        parts[col] = score_values[:, j]
    _formula_columns(spec, cohort, categorical)
    columns = Columns(tuple(feat_names), tuple(numeric + score_cols), tuple(categorical),
                      _level_orders(cohort, categorical), spec.formula, tuple(sorted(spec.references.items())),
                      tuple(spec.clinical) if spec.traits.regression and list(spec.clinical) != numeric + categorical
                      else ())
    table = pd.DataFrame({c: parts[c] for c in columns.all})
    from analytics.models import harmonize  # scikit-learn loads with it: only when a table is built

    try:  # a harmonised model carries its batch and covariates (read and dropped by the pipeline's first step)
        carried = harmonize.carried_columns(spec, cohort)
    except ValueError as exc:
        raise ModelInputError(f"model '{spec.name}': {exc}") from None
    for col, values in carried.items():
        table[col] = values
    return table, columns


def _clinical_parts(clin: pl.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
    """The input table's clinical columns: numbers as float64, categories as objects (NaN where missing)."""
    parts: dict[str, np.ndarray] = {}
    for col in numeric:
        parts[col] = clin[col].cast(pl.Float64).to_numpy().astype(np.float64)
    for col in categorical:
        strings = clin[col].cast(pl.String).to_list()
        parts[col] = np.array([np.nan if v is None else v for v in strings], dtype=object)
    return parts


def _completions(cohort: Cohort, table: pd.DataFrame, columns: Columns) -> tuple[pd.DataFrame, ...] | None:
    """``table`` once per imputation of the cohort (:attr:`Cohort.completions`), its clinical columns completed; None
    without imputations or clinical columns (image features and scores are never imputed)."""
    if not cohort.completions or not columns.clinical:
        return None
    numeric = [c for c in columns.numeric if c in columns.clinical]
    categorical = list(columns.categorical)
    out = []
    for frame in cohort.completions:
        filled = table.copy(deep=False)  # image-feature columns shared, not copied
        for col, values in _clinical_parts(frame.select(columns.clinical), numeric, categorical).items():
            filled[col] = values
        out.append(filled)
    return tuple(out)


def _level_orders(cohort: Cohort, categorical: Sequence[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The store's level order (declared in study.toml, else sorted) of each categorical column it knows."""
    var = cohort.variables
    if not categorical or var.height == 0 or "levels" not in var.columns:
        return ()
    known = {r["name"]: r["levels"] for r in var.select("name", "levels").to_dicts()}
    return tuple((c, tuple(str(v) for v in known[c])) for c in categorical if known.get(c))


def _bags(spec: Model, cohort: Cohort) -> tuple[Bags, list[str]]:
    bags = cohort.bags(mil_feature_set(spec))
    return bags, bags.missing


def assemble(spec: Model, cohort: Cohort, scores: Mapping[str, Mapping[str, float]]) -> Assembled:
    """A model's inputs for every cohort patient and which patients lack them.

    Parameters
    ----------
    spec
        The model's ``study.toml`` entry.
    cohort
        The cohort, with the model's pooled feature blocks loaded (bags are read
        on demand).
    scores
        ``model name -> {patient_id: score}`` for the models this one consumes.

    Returns
    -------
    Assembled
    """
    ids = cohort.patient_ids
    available = np.ones(len(ids), dtype=bool)
    missing: dict[str, list[str]] = {}
    names = input_models(spec)
    score_values, lacking = score_matrix(names, scores, ids)
    missing.update(lacking)
    available &= np.isfinite(score_values).all(axis=1)

    if spec.traits.ensemble:
        data = ModelData(tuple(ids), scores=score_values[:, [names.index(m) for m in spec.members]],
                         score_names=tuple(spec.members))
    elif spec.traits.bags:
        bags, lacking_bags = _bags(spec, cohort)
        if lacking_bags:
            missing[f"{bags.feature_set}:instances"] = lacking_bags
        available &= bags.sizes > 0
        inst = tuple(f.select("source_id", "instance", "x", "y", "z") for f in bags.instances)
        data = ModelData(tuple(ids), bags=tuple(np.asarray(e, dtype=np.float32) for e in bags.embeddings),
                         instances=inst)
    else:
        for ref in pooled_refs(spec):
            block_ok = cohort.available([ref])
            if not block_ok.all():
                missing[ref] = [p for p, ok in zip(ids, block_ok) if not ok]
            available &= block_ok
        table, columns = _table(spec, cohort, score_values[:, : len(spec.scores)])
        data = ModelData(tuple(ids), table=table, columns=columns,
                         completions=_completions(cohort, table, columns))
    return Assembled(data, available, missing)
