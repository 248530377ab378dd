"""The cohort columns with a meaning of their own are named once, in the lowest layer, and read from there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

import analytics.cohort
import analytics.table1
import pipeline
from pipeline import config

ROOT = Path(pipeline.__file__).resolve().parents[1]  # the source tree under test


def test_reserved_is_defined_once() -> None:
    where = []
    for path in sorted(p for pkg in ("pipeline", "analytics", "cohortlab") for p in (ROOT / pkg).rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == "RESERVED" for t in targets):
                where.append(path.relative_to(ROOT).as_posix())
    assert where == ["pipeline/config.py"]
    assert analytics.cohort.RESERVED is config.RESERVED and analytics.table1.RESERVED is config.RESERVED
    assert config.RESERVED == ("patient_id", "label", "time", "event", "center", "split")


def _model(**kw: object) -> config.Model:
    return config.Model(name="m", kind="svm", features=["fs"], harmonize="combat", **kw)


@pytest.mark.parametrize("column", ["patient_id", "label", "time", "event", "split"])
def test_a_reserved_column_is_never_a_batch_or_a_protected_covariate(column: str) -> None:
    with pytest.raises(ValidationError, match=f'batch = "{column}" cannot be a batch'):
        _model(batch=column)
    with pytest.raises(ValidationError, match=f"harmonize_covariates cannot hold \\['{column}'\\]"):
        _model(harmonize_covariates=[column])


def test_the_centre_is_the_default_batch_or_a_covariate_of_another() -> None:
    assert _model().batch == "center"
    assert _model(batch="scanner", harmonize_covariates=["center"]).harmonize_covariates == ["center"]
