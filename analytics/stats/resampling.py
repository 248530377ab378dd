"""One replicate of an internal validation: the rows it was fitted on and the scores it gave.

The fit stage refits a model's whole procedure on each replicate's rows and records its scores;
validation turns the replicates into optimism-corrected measures
(:mod:`analytics.stats.internal`). This record is what passes between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Replicate:
    """A model refitted on a resample (or a training fold) of the n training patients.

    Attributes
    ----------
    index
        The rows (0..n-1 into the training patients, in their order) it was fitted on; a bootstrap
        resample repeats rows.
    apparent
        Its scores of the rows it was fitted on, ``index`` order (length ``len(index)``).
    test
        Its scores of all n training patients, in their order (the bootstrap's "test" sample is the
        original one; for cross-validation only the left-out rows are used).
    apparent_risk, test_risk
        Survival models: absolute risk at each horizon, ``(len(index), h)`` and ``(n, h)``; else None.
    error
        Why the replicate failed (its scores are then empty); None when it succeeded.
    """

    index: np.ndarray
    apparent: np.ndarray
    test: np.ndarray
    apparent_risk: np.ndarray | None = None
    test_risk: np.ndarray | None = None
    error: str | None = None
