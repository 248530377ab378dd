"""The proportional-hazards check saved at fit time (models/<name>/zph.json) equals R's cox.zph."""

from __future__ import annotations

from typing import Any

import numpy as np

from analytics.models.persist import ZPH, read_files, read_zph
from analytics.models.ph_check import zph_of
from pipeline.config import StudyConfig


def test_saved_zph_equals_cox_zph(fitted_lung: StudyConfig, lung: dict[str, Any]) -> None:
    record = read_zph(fitted_lung.models_dir / "cox", fitted_lung.store_path)
    assert record is not None and record["computed"]
    ref = lung["zph"][0]
    assert ref["transform"] == record["transform"] == "km"
    assert [r["term"] for r in record["tests"]] == ["ph_karno", "ecog", "rcs(age, 4)", "sex", "GLOBAL"]
    assert [r["df"] for r in record["tests"]] == ref["df"]
    np.testing.assert_allclose([r["chisq"] for r in record["tests"]], ref["chisq"], rtol=1e-6)
    np.testing.assert_allclose([r["p"] for r in record["tests"]], ref["p"], rtol=1e-6)
    zph = zph_of(record)
    assert zph is not None
    np.testing.assert_allclose(zph.x, ref["x"], atol=1e-12)
    np.testing.assert_allclose(zph.residuals, np.asarray(ref["y"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(zph.var, np.asarray(ref["var"]), rtol=1e-6, atol=1e-9)
    assert record["n"] == len(lung["time"]) and record["events"] == int(sum(lung["status"]))


def test_zph_file_is_checked_against_the_store(fitted_lung: StudyConfig) -> None:
    files = read_files(fitted_lung.models_dir / "cox_main", fitted_lung.store_path)
    assert files is not None and ZPH in files


def test_penalised_cox_says_why_it_has_no_test(fitted_lung: StudyConfig) -> None:
    record = read_zph(fitted_lung.models_dir / "cox_ridge", fitted_lung.store_path)
    assert record is not None and record["computed"] is False
    assert "penalised" in record["reason"] and "cox.zph" in record["reason"]
    assert zph_of(record) is None


def test_main_effects_model_pools_the_factor(fitted_lung: StudyConfig) -> None:
    # age + sex + ecog: ecog's two treatment-coded columns are one term with 2 df; the global test has 4
    record = read_zph(fitted_lung.models_dir / "cox_main", fitted_lung.store_path)
    assert record is not None
    assert [(r["term"], r["df"]) for r in record["tests"]] == [("age", 1), ("sex", 1), ("ecog", 2), ("GLOBAL", 4)]
