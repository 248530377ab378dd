"""A cohort query that needs more than ``[sql] memory_limit`` runs to the end by spilling to the store's
temporary folder in the study, and says so; one that fits says nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.cohort import load_cohort
from pipeline.config import StudyConfig

PATIENTS = pl.DataFrame({
    "patient_id": [f"P{i:02d}" for i in range(8)],
    "center": ["A"] * 6 + ["B"] * 2,
    "age": [50 + i for i in range(8)],
    "label": [i % 2 for i in range(8)],
})
# three million rows into 1.5 million groups: a hash table far over 32 MB, so DuckDB writes part of it out
WIDE = """SELECT p.patient_id, p.center, c.label, c.age, s.n AS visits
FROM patients p JOIN clinical c USING (patient_id)
JOIN (SELECT 'P' || lpad((g % 8)::VARCHAR, 2, '0') AS patient_id, count(*) AS n
      FROM (SELECT i % 1500000 AS g FROM range(3000000) t(i) GROUP BY g) GROUP BY 1) s USING (patient_id)
"""


@pytest.fixture()
def study(tmp_path: Path) -> StudyConfig:
    made = build_study(tmp_path, PATIENTS, "c.label, c.age", study_toml("spill", 0, '[sql]\nmemory_limit = "32MB"\n'))
    (tmp_path / "cohorts" / "wide.sql").write_text(WIDE, encoding="utf-8")
    return made


def test_a_query_over_the_memory_limit_spills_and_says_so(study: StudyConfig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cohortlab"):
        cohort = load_cohort(study, "wide")
    assert cohort.frame["visits"].to_list() == [187_500] * 8  # every row counted: the statement ran to the end
    said = [r.getMessage() for r in caplog.records if "spilled" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    temp = f"{study.store_path.resolve()}.tmp"
    assert "wide.sql" in said[0] and temp in said[0] and "[sql] memory_limit" in said[0]
    assert Path(temp).is_relative_to(study.root.resolve())  # the study's own folder, not the working directory
    assert not any(Path(temp).glob("*")) if Path(temp).exists() else True  # DuckDB removed what it wrote


def test_a_query_within_the_limit_says_nothing(study: StudyConfig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cohortlab"):
        cohort = load_cohort(study)
    assert len(cohort) == 8
    assert not [r for r in caplog.records if "spilled" in r.getMessage()]
