"""Each public name means one thing: the study file's classes are not named like the notebook's or the results."""

from __future__ import annotations

import importlib

import pytest

import cohortlab
from analytics import report, validation
from pipeline import config


@pytest.mark.parametrize("module, name", [
    ("pipeline.config", "Study"),        # the notebook's cohortlab.Study; the study file is StudyConfig
    ("pipeline.config", "load_study"),   # the notebook's cohortlab.load_study; the study file is read by load_config
    ("pipeline.config", "Validation"),   # the result of validation; its settings are ValidationSettings
    ("analytics.report", "report"),      # the stage is write_report (the notebook's Study.report() calls it)
])
def test_a_retired_name_is_gone(module: str, name: str) -> None:
    assert not hasattr(importlib.import_module(module), name)


def test_each_remaining_name_names_one_thing() -> None:
    assert config.StudyConfig.__name__ == "StudyConfig" and config.load_config.__name__ == "load_config"
    assert config.StudyConfig.model_fields["validation"].annotation is config.ValidationSettings
    assert cohortlab.Study is not config.StudyConfig and cohortlab.load_study is not config.load_config
    assert cohortlab.Validation is validation.Validation is not config.ValidationSettings
    assert callable(report.write_report) and callable(cohortlab.Study.report)
