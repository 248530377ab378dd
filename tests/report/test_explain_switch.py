"""``[explain] enabled`` and the sample budget (recorded in the report), a report not rendered again when
nothing changed, and a study log free of third-party chatter; all through ``cohortlab run``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import study_toml, write_study

from analytics.cli import main

N = 60
STUDY = study_toml("switch", 2, """[[models]]
name = "clin"
kind = "svm"
clinical = ["age", "marker"]
grid = { C = [1.0] }
[validation]
n_boot = 20
folds = 3
""")
BUDGET = {"max_rows": 6, "background": 4, "nsamples": 24}
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) (\S+): ")


def _write(root: Path) -> Path:
    rng = np.random.default_rng(4)
    label = (rng.random(N) < 0.45).astype(int)
    patients = pl.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(N)], "center": np.where(np.arange(N) < 40, "A", "B"),
        "age": rng.normal(55, 9, N).round(1), "marker": (label * 1.5 + rng.normal(0, 1, N)).round(3), "label": label,
    })
    return write_study(root, patients, "c.label, c.age, c.marker", STUDY + "[explain]\nenabled = false\n")


def _run(toml: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(toml)])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three runs of one study: explain switched off; switched on with a budget; again with nothing changed."""
    root = tmp_path_factory.mktemp("switch")
    toml = _write(root)
    handlers = list(logging.getLogger().handlers)
    try:
        index = root / "reports" / "switch" / "index.html"
        first = _run(toml)
        off_html = index.read_text(encoding="utf-8")
        off_explain = (root / "reports" / "switch" / "explain").exists()
        toml.write_text(STUDY + "[explain]\nenabled = true\n" + "".join(f"{k} = {v}\n" for k, v in BUDGET.items()),
                        encoding="utf-8")
        second = _run(toml)
        stamp, html = index.stat().st_mtime_ns, index.read_bytes()
        shap_level = logging.getLogger("shap").getEffectiveLevel()
        third = _run(toml)
        yield {"root": root, "first": first, "second": second, "third": third, "off_html": off_html,
               "off_explain": off_explain, "stamp": stamp, "html": html, "index": index, "shap_level": shap_level}
    finally:
        for h in logging.getLogger().handlers:
            if h not in handlers:
                logging.getLogger().removeHandler(h)
                h.close()


def _stage(out: str, name: str) -> str:
    """The summary line of one stage: '  <status> <name> <seconds> s  <first line of its summary>'."""
    found = re.search(rf"^  (\S+)\s+{name}\s+[\d.]+ s  (.*)$", out, flags=re.MULTILINE)
    assert found, out
    return f"{found.group(1)} {found.group(2)}"


def test_explain_switched_off(runs: dict[str, Any]) -> None:
    code, out = runs["first"]
    assert code == 0, out
    assert _stage(out, "explain") == "skip skipped: [explain] enabled = false in study.toml"
    assert not runs["off_explain"]
    assert "Explanations are switched off in study.toml ([explain] enabled = false)" in runs["off_html"]


def test_budget_is_used_and_reported(runs: dict[str, Any]) -> None:
    code, out = runs["second"]
    assert code == 0, out
    assert _stage(out, "explain").startswith("ok ")
    assert _stage(out, "report").startswith("ok ") and "unchanged" not in _stage(out, "report")
    manifest = json.loads((runs["root"] / "reports" / "switch" / "explain" / "manifest.json").read_text())
    record = manifest["models"]["clin"]
    assert record["explainer"] == "kernel"
    assert record["budget"] == {**BUDGET, "max_units": 24}
    values = pl.read_parquet(runs["root"] / "reports" / "switch" / "explain" / next(
        v["path"] for v in manifest["values"] if v["kind"] == "shap_values"))
    held_out = values.filter(pl.col("split").is_in(["internal", "external"]))["patient_id"].n_unique()
    assert 0 < held_out <= BUDGET["max_rows"]
    assert "k-means summary (4 weighted centres)" in record["background"]
    html = runs["html"].decode("utf-8")
    assert ("Sample budget of clin: Kernel SHAP: up to 6 held-out patients explained per model (a seeded sample "
            "above); background: a k-means summary of the training patients in 4 weighted centres; 24 coalitions "
            "per patient (Kernel SHAP); image blocks as single players above 24 inputs.") in html


def test_report_not_rendered_again_when_nothing_changed(runs: dict[str, Any]) -> None:
    code, out = runs["third"]
    assert code == 0, out
    assert _stage(out, "report").startswith("skip ") and "unchanged" in _stage(out, "report")
    assert _stage(out, "validate").startswith("skip ")
    assert runs["index"].stat().st_mtime_ns == runs["stamp"]
    assert runs["index"].read_bytes() == runs["html"]


def test_third_party_loggers_stay_out_of_the_study_log(runs: dict[str, Any]) -> None:
    """SHAP (which logs every sampling step at DEBUG/INFO) ran in the second run; the log keeps our records only."""
    assert runs["shap_level"] == logging.WARNING
    lines = (runs["root"] / "logs" / "cohortlab.log").read_text(encoding="utf-8").splitlines()
    records = [m.groups() for m in map(LOG_LINE.match, lines) if m]
    assert any(name == "cohortlab.explain" and level == "INFO" for level, name in records)
    foreign = [(level, name) for level, name in records
               if not (name == "cohortlab" or name.startswith("cohortlab."))
               and level not in ("WARNING", "ERROR", "CRITICAL")]
    assert foreign == []
