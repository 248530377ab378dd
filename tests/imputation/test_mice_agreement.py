"""The tool's own chained equations against mice: with m = 100 on survival::pbc (pmm, logreg, polyreg), the
pooled logistic coefficients lie within 0.5 standard errors of mice's (fixture mice_m100.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics import impute
from analytics.models.glm import MLLogistic
from analytics.stats.rubin import dfcom_glm, pool

HERE = Path(__file__).parent


def _design(c: pl.DataFrame) -> np.ndarray:
    return np.column_stack([c["age"], c["sex"] == "f", c["bili"], c["albumin"], c["chol"], c["platelet"],
                            c["ascites"] == "yes", c["stage"] == "2", c["stage"] == "3", c["stage"] == "4"]).astype(float)


@pytest.mark.slow
def test_pooled_glm_from_our_imputations_is_within_half_a_standard_error_of_mices() -> None:
    fx = json.loads((HERE / "mice_m100.json").read_text(encoding="utf-8"))
    frame = pl.DataFrame(fx["incomplete"]).with_columns(pl.col("stage").cast(pl.String))
    imp = impute.impute(frame, impute.Settings(m=100, maxit=fx["maxit"], seed=4, n_jobs=2))
    assert [imp.methods[c] for c in ("chol", "platelet", "ascites", "stage")] == ["pmm", "pmm", "logreg", "polyreg"]
    est, cov = [], []
    for i in range(1, imp.m + 1):
        c = imp.complete(i)
        fit = MLLogistic().fit(_design(c), c["dead"].to_numpy())
        est.append(np.r_[fit.intercept_, fit.coef_.ravel()])
        cov.append(fit.cov_)
    table = pool(np.array(est), np.array(cov), dfcom_glm(frame.height, 11))
    ref = fx["pool"]
    z = (table.estimate - np.array(ref["estimate"])) / np.array(ref["std_error"])
    assert np.all(np.abs(z) < 0.5), dict(zip(ref["term"], np.round(z, 3), strict=True))
    # and the pooled standard errors agree with mice's to within a fifth
    assert np.all(np.abs(table.std_error / np.array(ref["std_error"]) - 1) < 0.2)
