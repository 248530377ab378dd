"""The report's "Added value" section: present, its numbers equal metrics.json, the TRIPOD table cites it."""

from __future__ import annotations

import json
import re

import pytest

from analytics.report import write_report
from analytics.validation.stage import validate
from pipeline.config import load_config

from report_helpers import ReportParser, write_study


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ReportParser, dict]:
    study = write_study(tmp_path_factory.mktemp("study"), n_boot=50)
    toml = study.root / "study.toml"
    # [validation] is the file's last table
    toml.write_text(toml.read_text() + 'added_value = [["good", "weak"]]\nrisk_cutoffs = [0.3, 0.6]\n')
    study = load_config(toml)
    validate(study, force=True, progress=False)
    text = write_report(study, progress=False).path.read_text(encoding="utf-8")
    return text, ReportParser(text), json.loads((study.report_dir / "metrics.json").read_text())


def _interval(d: dict, est: str = "estimate") -> str:
    return f"{d[est]:.3f} ({d['low']:.3f}–{d['high']:.3f})"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def test_section_numbers_equal_metrics_json(rendered) -> None:
    text, doc, metrics = rendered
    assert "sec-added-value" in doc.ids
    shown = {k: t for k, t in doc.metrics if k.startswith("good vs weak|")}
    entries = metrics["added_value"]
    assert {a["split"] for a in entries} == {"train", "internal", "external"}
    n = 0
    for a in entries:
        key = f"good vs weak|{a['split']}"
        expect = {
            "auc_difference": _interval(a["auc_difference"], "difference"), "auc_difference_p": _p(a["auc_difference"]["p"]),
            "nri": _interval(a["nri"]), "nri_p": _p(a["nri"]["p"]),
            "nri_events": f"{a['nri']['events']['estimate']:.3f}",
            "nri_nonevents": f"{a['nri']['nonevents']['estimate']:.3f}",
            "nri_categorical": _interval(a["nri_categorical"]), "nri_categorical_p": _p(a["nri_categorical"]["p"]),
            "idi": _interval(a["idi"]), "idi_p": _p(a["idi"]["p"]),
        }
        for name, want in expect.items():
            assert shown[f"{key}|{name}"] == want, (key, name)
            n += 1
        # the reclassification table's counts, events then non-events, in the section's text
        section = text[text.index('id="sec-added-value"'):text.index("</section>", text.index('id="sec-added-value"'))]
        assert str(sum(map(sum, a["reclassification"]["events"]))) == str(a["n_positive"])
        assert "Reclassification" in section
    assert n == 30
    # a penalised logistic model against an SVM: no LR test, and the report says why
    train = [a for a in entries if a["split"] == "train"][0]
    assert train["lr_test"] is None and train["lr_test_reason"]
    assert re.search(r"No likelihood-ratio test: .*not a logistic regression|penalised", text)


def test_tripod_cites_the_section(rendered) -> None:
    _, doc, _ = rendered
    assert "#sec-added-value" in doc.links
