"""Grouping explained inputs into blocks a clinician can read, and their labels.

A model's input table (:mod:`analytics.models.data`) has three kinds of column:

* image features ``"feature_set:pooling:j"``: grouped into their block
  ``"feature_set:pooling"`` (one group per pooled feature set);
* input scores ``"score:<model>"``: each its own group;
* clinical variables: each its own group. A categorical variable is one column
  of the input table; where an explainer works on its one-hot columns, their
  values are summed back to the variable before grouping.

A group's SHAP value for a patient is the sum of its members' SHAP values (so
additivity carries over: base value + sum over groups = model output), and a
group's importance is the mean absolute grouped SHAP value over the explained
patients (Lundberg & Lee, "A unified approach to interpreting model
predictions", NeurIPS 2017; grouping as in the shap package's grouped
explanations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipeline.store import feature_set_params

SCORE_PREFIX = "score:"


def group_of(column: str, feature_columns: Sequence[str] = ()) -> str:
    """The group of one input column.

    ``"fs:pooling:j"`` (an image-feature column, recognised by its two colons or
    by being listed in ``feature_columns``) -> ``"fs:pooling"``; anything else
    (a clinical variable, a ``"score:<model>"`` column, an already grouped
    block) is its own group.
    """
    if column.startswith(SCORE_PREFIX):
        return column
    parts = column.split(":")
    if len(parts) == 3 and parts[2].isdigit():
        return f"{parts[0]}:{parts[1]}"
    if column in feature_columns and ":" in column:
        return column.rsplit(":", 1)[0]
    return column


@dataclass(frozen=True)
class Grouping:
    """Explained features, the group of each, and readable labels.

    Attributes
    ----------
    features
        Names of the explained units (columns of a SHAP matrix), in order.
    groups
        The group of each feature (same length as ``features``).
    labels
        Readable label of each feature and group name (falls back to the name).
    """

    features: tuple[str, ...]
    groups: tuple[str, ...]
    labels: Mapping[str, str]

    def __post_init__(self) -> None:
        if len(self.features) != len(self.groups):
            raise ValueError(f"{len(self.features)} features but {len(self.groups)} group entries")

    @property
    def group_names(self) -> tuple[str, ...]:
        """Distinct groups in order of first appearance."""
        return tuple(dict.fromkeys(self.groups))

    def index(self) -> np.ndarray:
        """Position of each feature's group in :attr:`group_names`."""
        pos = {g: i for i, g in enumerate(self.group_names)}
        return np.array([pos[g] for g in self.groups], dtype=np.int64)

    def label(self, name: str) -> str:
        return self.labels.get(name, name)

    @property
    def trivial(self) -> bool:
        """Every group holds exactly one feature (grouping changes nothing)."""
        return len(self.group_names) == len(self.features)


def make_grouping(features: Sequence[str], labels: Mapping[str, str] | None = None,
                  feature_columns: Sequence[str] = ()) -> Grouping:
    """A :class:`Grouping` of ``features`` by :func:`group_of`."""
    feats = tuple(features)
    return Grouping(feats, tuple(group_of(f, feature_columns) for f in feats), dict(labels or {}))


def group_values(values: np.ndarray, grouping: Grouping) -> np.ndarray:
    """Sum SHAP values ``(n, p)`` within groups -> ``(n, n_groups)`` (columns in ``group_names`` order)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(grouping.features):
        raise ValueError(f"SHAP values of shape {values.shape} for {len(grouping.features)} features")
    out = np.zeros((values.shape[0], len(grouping.group_names)), dtype=np.float64)
    np.add.at(out.T, grouping.index(), values.T)
    return out


def importance(values: np.ndarray) -> np.ndarray:
    """Mean absolute SHAP value per column (the usual global importance)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        return np.zeros(values.shape[1])
    return np.abs(values).mean(axis=0)


# --- readable labels -----------------------------------------------------------------------


def variable_label(name: str, variables: pl.DataFrame | None) -> str:
    """``"Age (years)"`` from the store's ``variables`` row (label and unit), else the name."""
    if variables is None or variables.height == 0 or "name" not in variables.columns:
        return name
    rows = variables.filter(pl.col("name") == name)
    if rows.height == 0:
        return name
    row = rows.row(0, named=True)
    label = row.get("label") or name
    unit = row.get("unit")
    return f"{label} ({unit})" if unit else label


def _block_label(block: str, feature_sets: Mapping[str, Mapping[str, Any]]) -> str:
    fs, _, pooling = block.partition(":")
    rec = feature_sets.get(fs) or {}
    encoder = rec.get("encoder")
    weights = rec.get("weights")
    what = f"{fs} ({encoder}" if encoder else fs
    if encoder and weights == "random":
        what += ", random weights"
    if encoder:
        what += ")"
    return f"{what}, {pooling}-pooled" if pooling else what


def labels_for(
    names: Sequence[str],
    variables: pl.DataFrame | None = None,
    feature_sets: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """Readable labels of features and groups.

    Clinical variables get their label and unit from the ``variables`` table;
    ``score:<model>`` becomes ``"<model> score"``; a block ``fs:pooling`` names
    its encoder (and says when its weights are random); a block column
    ``fs:pooling:j`` is ``"fs:pooling #j"``, or the feature's own name when the
    feature set records one (radiomics ``params.feature_names``).
    """
    fsets = dict(feature_sets or {})
    out: dict[str, str] = {}
    for name in names:
        if name.startswith(SCORE_PREFIX):
            out[name] = f"{name[len(SCORE_PREFIX):]} score"
            continue
        parts = name.split(":")
        if len(parts) == 3 and parts[2].isdigit():
            fnames = feature_set_params(fsets.get(parts[0])).get("feature_names") or []
            j = int(parts[2])
            out[name] = f"{fnames[j]} ({parts[1]})" if j < len(fnames) else f"{parts[0]}:{parts[1]} #{j}"
        elif len(parts) == 2:
            out[name] = _block_label(name, fsets)
        else:
            out[name] = variable_label(name, variables)
    return out
