"""One validated study and its report, shared by the report tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import StudyConfig

from report_helpers import write_study


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyConfig, Path]]:
    """A study with predictions, metrics, failed input and a SHAP figure, and its rendered report."""
    from analytics.report import write_report

    study = write_study(tmp_path_factory.mktemp("study"))
    yield study, write_report(study, progress=False).path
