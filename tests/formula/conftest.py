"""The R reference of tests/formula (made by formula_fixture.R on survival::nwtco)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

FIXTURE = Path(__file__).with_name("formula_fixture.json")


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def nwtco(reference: dict[str, Any]) -> pd.DataFrame:
    """nwtco as the fixture holds it: age in months (float), histol FH / UH, stage I to IV (text)."""
    d = reference["data"]
    return pd.DataFrame({"age": pd.Series(d["age"], dtype="float64"), "histol": pd.Series(d["histol"], dtype=object),
                         "stage": pd.Series(d["stage"], dtype=object)})
