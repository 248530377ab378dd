"""The missing-data scenario of ``bench/coverage.py``: its data-generating model and its summary's Monte-Carlo SEs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def coverage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_coverage", ROOT / "bench" / "coverage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_coverage"] = module
    spec.loader.exec_module(module)
    return module


def test_thirty_percent_missing_at_random_on_the_outcome_and_x2(coverage: ModuleType) -> None:
    c = coverage.missing_intercept()
    rng = np.random.default_rng(0)
    X, y = coverage.missing_draw(rng, 100_000)
    p = 1 / (1 + np.exp(-(c + y + X[:, 2])))
    assert abs(p.mean() - 0.3) < 0.01
    # missing at random: more often missing among events and at high x2, never depending on x1 itself
    assert p[y == 1].mean() > p[y == 0].mean() + 0.1
    assert np.corrcoef(p, X[:, 2])[0, 1] > 0.5


def test_one_simulation_gives_every_analysis_and_mi_widens_single_imputations_interval(coverage: ModuleType) -> None:
    row = coverage.missing_one(0, 300, 3, 2, coverage.missing_intercept())
    assert "error" not in row and 0.2 < row["missing"] < 0.4
    for key in coverage.MISSING_METHODS:
        for term in coverage.MISSING_TERMS:
            assert row[f"{key}_{term}_low"] < row[f"{key}_{term}_est"] < row[f"{key}_{term}_high"]
    # single imputation treats the filled x1 as observed; Rubin's rules add the between-imputation variance
    assert row["mi_x1_se"] > row["full_x1_se"] and row["mi_x1_fmi"] > 0


def test_summary_bias_and_coverage_with_their_monte_carlo_ses(coverage: ModuleType) -> None:
    beta = coverage.MISSING_BETA
    rows = []
    for r, est in enumerate([0.0, 0.2, 0.4, 0.6]):  # offsets of every estimate from the truth
        row = {"rep": r, "missing": 0.3}
        for key in coverage.MISSING_METHODS:
            for j, term in enumerate(coverage.MISSING_TERMS):
                e = beta[j] + est
                row |= {f"{key}_{term}_est": e, f"{key}_{term}_se": 0.25, f"{key}_{term}_low": e - 0.5,
                        f"{key}_{term}_high": e + 0.5, f"{key}_{term}_fmi": 0.1}
        rows.append(row)
    rows.append({"rep": 9, "error": "ValueError: separation"})
    table = coverage.missing_summary(rows)
    x1 = table.filter((table["analysis"] == "complete case") & (table["term"] == "x1")).row(0, named=True)
    assert x1["sims"] == 4 and x1["bias"] == pytest.approx(0.3)
    assert x1["bias_mcse"] == pytest.approx(round(np.std([0, 0.2, 0.4, 0.6], ddof=1) / 2, 4))
    assert x1["cover%"] == 75.0 and x1["cover_mcse%"] == pytest.approx(round(100 * np.sqrt(0.75 * 0.25 / 4), 1))
    assert x1["width"] == 1.0 and x1["model_se"] == 0.25
