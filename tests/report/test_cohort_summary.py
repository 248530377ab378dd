"""The cohort stage leaves Table 1, the participant flow and the cohort's frame for the report, which then
runs no cohort SQL and computes no Table 1; what it renders is the same as from the cohort itself."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import analytics.cohort
import analytics.table1
from analytics import stages
from analytics.cohort import load_cohort
from analytics.cohort.summary import read_summary, summary_dir
from analytics.report import DIGEST_MARK, write_report
from pipeline.config import StudyConfig, load_config

from report_helpers import write_study


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudyConfig]:
    made = write_study(tmp_path_factory.mktemp("summary"), n_boot=20)
    write_report(made, progress=False)  # its figures cached: each copy below draws none again
    yield made


def _copy(study: StudyConfig, to: Path) -> StudyConfig:
    shutil.copytree(study.root, to)
    return load_config(to / "study.toml")


def _render(study: StudyConfig) -> str:
    """The report's HTML, less its last line (the inputs digest, which covers the code as well)."""
    text = write_report(study, force=True, progress=False).path.read_text(encoding="utf-8")
    return text[:text.rindex(DIGEST_MARK)]


def _no_cohort_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the report ran the cohort SQL or computed Table 1")

    monkeypatch.setattr(analytics.cohort, "load_cohort", refuse)
    monkeypatch.setattr(analytics.table1, "table1", refuse)
    monkeypatch.setattr(analytics.cohort.Cohort, "table1", refuse)


def test_cohort_stage_leaves_what_the_report_reads(study: StudyConfig, tmp_path: Path) -> None:
    moved = _copy(study, tmp_path / "s")
    stages.cohort(moved)  # the `cohort` verb only reads
    assert read_summary(moved) is None and not summary_dir(moved).exists()
    stages.BY_NAME["cohort"].run(moved)  # as `run` runs the stage
    summary = read_summary(moved)
    assert summary is not None
    cohort = load_cohort(moved)
    assert summary.hash == cohort.hash and summary.frame.equals(cohort.frame)
    assert summary.frame.schema == cohort.frame.schema
    assert summary.cohort().digest() == cohort.hash  # the frame read back is the one hashed
    assert summary.table1_html == cohort.table1().to_html()
    assert summary.coverage == {"wsi_r18": 40}
    # the study's cohort with other parameters is not the report's: nothing rewritten
    before = (summary_dir(moved) / "summary.json").read_bytes()
    stages.cohort(moved, params={"min_age": 60}, leave_summary=True)
    assert (summary_dir(moved) / "summary.json").read_bytes() == before


def test_report_from_the_summary_equals_the_report_from_the_cohort(study: StudyConfig, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    moved = _copy(study, tmp_path / "s")
    shutil.rmtree(summary_dir(moved), ignore_errors=True)
    curves = (moved.report_dir / "curves.json").read_bytes()
    exact = _render(moved)
    stages.cohort(moved, leave_summary=True)
    with monkeypatch.context() as m:
        _no_cohort_sql(m)
        fast = _render(moved)
    assert fast == exact
    # the figures draw thinned curves; the curves stored by validate stay exact, every point of every curve
    assert (moved.report_dir / "curves.json").read_bytes() == curves
    assert "Selected by the cohort SQL" in fast and 'class="table1"' in fast


def test_a_damaged_or_stale_summary_is_not_used(study: StudyConfig, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    moved = _copy(study, tmp_path / "s")
    stages.cohort(moved, leave_summary=True)
    exact = _render(moved)
    frame = summary_dir(moved) / "frame.arrow"
    raw = bytearray(frame.read_bytes())
    raw[-40] ^= 0xFF
    frame.write_bytes(bytes(raw))
    assert read_summary(moved) is None  # not the file written: the report reads the cohort itself
    assert _render(moved) == exact
    # a summary of another cohort than the one the metrics were computed from is not used either
    stages.cohort(moved, leave_summary=True)
    entry = json.loads((summary_dir(moved) / "summary.json").read_text(encoding="utf-8"))
    entry["hash"] = "0" * 64
    (summary_dir(moved) / "summary.json").write_text(json.dumps(entry), encoding="utf-8")
    assert read_summary(moved) is not None
    with monkeypatch.context() as m:
        calls: list[str] = []
        real = analytics.cohort.load_cohort

        def counted(*args: object, **kwargs: object) -> object:
            calls.append("load")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        m.setattr(analytics.cohort, "load_cohort", counted)
        assert _render(moved) == exact
    assert calls == ["load"]
    # another split rule in study.toml than the summary's: not used
    text = (moved.root / "study.toml").read_text(encoding="utf-8")
    stages.cohort(moved, leave_summary=True)
    assert "internal_fraction = 0.25" in text
    (moved.root / "study.toml").write_text(text.replace("internal_fraction = 0.25", "internal_fraction = 0.3"),
                                           encoding="utf-8")
    assert read_summary(load_config(moved.root / "study.toml")) is None
