"""Where a second-stage model's input scores come from.

A fusion model (e.g. an SVM on a deep-learning score plus clinical variables,
the CT study's design) and the ensembles name other models in ``scores`` /
``members``. Their input score for a patient is:

* a **training** patient: the input model's *out-of-fold* prediction, made by
  the outer-fold model that did not see the patient;
* an **internal / external** patient: the input model's *final* model's
  prediction (the model refitted on all training patients).

These are exactly the rows ``cohortlab fit`` writes to the ``predictions``
table, so the second stage never trains on scores of patients its inputs were
fitted on (in-sample scores would be over-confident and inflate it). Every
model shares one outer fold assignment, so a training patient's input score
and its own out-of-fold prediction come from the same fold. These scores
train the final second-stage model. Its *out-of-fold* predictions need more:
the out-of-fold scores of other training patients came from models that saw
this fold's patients, so each outer fold's second stage is fitted on input
scores cross-fitted without that fold (nested cross-fitting,
:mod:`analytics.crossfit`), unless the model says ``nested = false``.

For patients outside the fitted cohort (:func:`analytics.fit.predict`) every
input score is the input model's final-model prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from analytics.splits import SPLITS


def score_lookup(predictions: pl.DataFrame) -> dict[str, float]:
    """``patient_id -> score`` of one model's predictions frame."""
    return dict(zip(predictions["patient_id"].to_list(), predictions["score"].to_list()))


def training_scores(names: Sequence[str], predictions: Mapping[str, pl.DataFrame]) -> dict[str, dict[str, float]]:
    """Input scores for fitting a second-stage model (see the module notes).

    Parameters
    ----------
    names
        The input models.
    predictions
        ``model -> predictions frame`` (``patient_id, split, score, fold``) as
        written by ``cohortlab fit``: out-of-fold rows for training patients,
        final-model rows for held-out ones.

    Returns
    -------
    dict
        ``model -> {patient_id: score}``.
    """
    out = {}
    for name in names:
        frame = predictions[name]
        oof = frame.filter(pl.col("split") == "train")
        if oof["fold"].null_count():
            raise ValueError(f"model '{name}': training rows without an outer fold are not out-of-fold scores")
        out[name] = score_lookup(frame.filter(pl.col("split").is_in(SPLITS)))
    return out
