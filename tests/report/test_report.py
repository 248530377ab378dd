"""The HTML report: every section present, numbers equal to metrics.json, self-contained, deterministic."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics.report import SECTIONS, ReportError, write_report
from pipeline import store
from pipeline.config import StudyConfig, load_config

from report_helpers import ReportParser

INTERVAL = re.compile(r"^(-?\d+\.\d{3}) \((-?\d+\.\d{3})–(-?\d+\.\d{3})\)$")


def _expected(metrics: dict, key: str) -> str:
    """The text a data-metric cell must hold, written from metrics.json by the report's stated rules:
    three decimals, intervals as ``est (low–high)``, counts as integers, p-values below 0.001 as "<0.001"."""

    def f3(x: float) -> str:
        return f"{x:.3f}"

    def iv(d: dict) -> str:
        return f"{f3(d['estimate'])} ({f3(d['low'])}–{f3(d['high'])})"

    def p(x: float) -> str:
        return "<0.001" if x < 0.001 else f3(x)

    model, split, metric = key.split("|")
    if " vs " in model:
        a, b = model.split(" vs ")
        c = next(c for c in metrics["comparisons"] if (c["a"], c["b"], c["split"]) == (a, b, split))
        return {"auc_a": lambda: f3(c["auc_a"]), "auc_b": lambda: f3(c["auc_b"]), "z": lambda: f"{c['z']:.2f}",
                "p": lambda: p(c["p"]), "auc_difference": lambda: iv({"estimate": c["difference"], "low": c["low"], "high": c["high"]})}[metric]()
    m = metrics["models"][model]
    if split.startswith("center:"):
        center, _, sp = split[7:].rpartition("/")
        e = m["centers"][center][sp]
        return {"n": str(e["n"]), "n_positive": str(e["n_positive"]), "auc": iv(e["auc"]) if "auc" in e else "–"}[metric]
    if metric == "threshold":
        return f3(m["threshold"]["value"])
    s = m["splits"][split]
    if metric in ("n", "n_positive", "n_survival", "n_events"):
        return str(s[metric])
    if metric.startswith("calibration_"):
        return f3(s["calibration"][metric[12:]])
    if metric == "logrank_p":
        return p(s["logrank"]["p"])
    return iv(s[metric])


@pytest.fixture(scope="module")
def parsed(reported: tuple[StudyConfig, Path]) -> tuple[StudyConfig, str, ReportParser, dict]:
    study, path = reported
    text = path.read_text(encoding="utf-8")
    return study, text, ReportParser(text), json.loads((study.report_dir / "metrics.json").read_text())


def test_report_path_and_sections(reported: tuple[StudyConfig, Path], parsed: tuple) -> None:
    study, path = reported
    assert path == study.report_dir / "index.html"
    _, _, doc, _ = parsed
    wanted = {sid for sid, _ in SECTIONS} | {"flow", "flow-splits", "table1", "missing-data", "cohort-sql", "centers",
                                             "shap", "attention", "random-weights", "fig-roc-split-internal", "fig-forest"}
    for model in ("good", "weak"):
        wanted |= {f"fig-roc-{model}", f"fig-calibration-{model}", f"fig-decision-{model}", f"performance-{model}",
                   f"model-{model}"} | {f"km-{model}-{s}" for s in ("train", "internal", "external")}
    assert wanted <= doc.ids, sorted(wanted - doc.ids)


def test_every_number_equals_metrics_json(parsed: tuple) -> None:
    study, _, doc, metrics = parsed
    keys = [k for k, _ in doc.metrics]
    assert len(keys) > 100
    for key, text in doc.metrics:
        assert text == _expected(metrics, key), key
    # and every metric of metrics.csv that the report tabulates is there, within rounding
    csv = pl.read_csv(study.report_dir / "metrics.csv")
    shown = {k: t for k, t in doc.metrics}
    wanted = {"n", "n_positive", "auc", "auc_bootstrap", "sensitivity", "specificity", "accuracy", "ppv", "npv", "f1",
              "calibration_in_the_large", "calibration_recalibration_intercept", "calibration_recalibration_slope",
              "calibration_brier", "calibration_ici", "c_index",
              "logrank_p", "threshold", "auc_difference"}
    n_checked = 0
    for r in csv.filter(pl.col("metric").is_in(list(wanted))).iter_rows(named=True):
        where = r["split"] if r["center"] is None else f"center:{r['center']}/{r['split']}"
        text = shown[f"{r['model']}|{where}|{r['metric']}"]
        m = INTERVAL.match(text)
        numbers = [float(g) for g in m.groups()] if m else [float(text.replace("<", ""))]
        ref = [r["estimate"]] + ([r["low"], r["high"]] if m else [])
        if text.startswith("<"):
            assert r["estimate"] < 0.001
        else:
            assert numbers == pytest.approx(ref, abs=5e-4 + 1e-9), (r, text)
        n_checked += 1
    assert n_checked == csv.filter(pl.col("metric").is_in(list(wanted))).height > 80


def test_participant_flow_counts_from_the_manifest(parsed: tuple) -> None:
    study, text, _, _ = parsed
    pts = pl.read_csv(study.root / "patients.csv")
    cohort = pts.filter(pl.col("age") >= 30)
    con = store.connect(study.store_path, read_only=True)
    weak = con.execute("SELECT count(*) FROM predictions WHERE model = 'weak'").fetchone()[0]
    con.close()
    flow = text[text.index('<table class="flow">'):]
    flow = flow[:flow.index("</table>")]
    rows = dict(re.findall(r"<tr><td>([^<]+)</td>(.*?)</tr>", flow))
    nums = {k: [int(x) for x in re.findall(r'<td class="num">(\d+)</td>', v)] for k, v in rows.items()}
    a, b = (pts["center"] == "A").sum(), (pts["center"] == "B").sum()
    assert nums["Patients in the store"] == [a, b, a + b]
    ca, cb = (cohort["center"] == "A").sum(), (cohort["center"] == "B").sum()
    assert nums["Selected by the cohort SQL"] == [ca, cb, ca + cb]
    assert nums["Analysed by weak (inputs available)"][-1] == weak < ca + cb


def test_numbers_at_risk_equal_direct_counts(parsed: tuple) -> None:
    """Numbers at risk under the KM curves: patients of the risk group still followed at time t."""
    study, _, doc, metrics = parsed
    pts = pl.read_csv(study.root / "patients.csv").select("patient_id", "time")
    con = store.connect(study.store_path, read_only=True)
    preds = store.query(con, "SELECT model, patient_id, split, score FROM predictions")
    con.close()
    frame = preds.join(pts, on="patient_id")
    assert len(doc.at_risk) > 20
    for key, text in doc.at_risk:
        model, split, group, t = key.split("|")
        # the cut-point from the exact training scores (metrics.json rounds it to 12 digits, and the
        # median of an odd number of scores is itself a score)
        train = frame.filter((pl.col("model") == model) & (pl.col("split") == "train"))["score"].to_numpy()
        cut = np.quantile(train, metrics["models"][model]["risk_cutpoints"]["quantiles"])
        assert cut == pytest.approx(metrics["models"][model]["risk_cutpoints"]["values"], abs=1e-9)
        part = frame.filter((pl.col("model") == model) & (pl.col("split") == split))
        g = np.searchsorted(cut, part["score"].to_numpy(), side="right")
        names = ["low", "high"]
        sel = g == names.index(group)
        assert int(text) == int((part["time"].to_numpy()[sel] >= float(t)).sum()), key


def test_self_contained_and_escaped(parsed: tuple) -> None:
    study, text, doc, _ = parsed
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert all(src.startswith("data:image/") for _, src in doc.images) and len(doc.images) >= 14
    assert all(h.startswith("#") or h.startswith("data:") for h in doc.links)
    # the description and the failure message hold markup characters: escaped, not interpreted
    assert "Two-centre report test study &lt;&amp;&gt;" in text
    assert "cannot read &lt;level 0&gt; of slides/P041-S1.tiff" in text
    # every in-page link lands on an element
    assert {h[1:] for h in doc.links if h.startswith("#")} <= doc.ids


def test_provenance_failed_inputs_and_explanations(parsed: tuple) -> None:
    study, text, doc, _ = parsed
    assert doc.random_rows == ["td"]  # the random-weights feature set is flagged in its row
    assert "random, untrained weights" in text and "mpp 1, tile_size 224" in text
    failed = text[text.index('id="sec-failed"'):text.index('id="sec-tripod"')]
    assert "P041-S1" in failed and "wsi_r18" in failed
    shap = dict(doc.images)["fig-explain-0"]
    png = (study.report_dir / "explain" / "shap_good.png").read_bytes()
    assert shap == "data:image/png;base64," + base64.b64encode(png).decode()
    attention = text[text.index('id="attention"'):text.index('id="sec-failed"')]
    assert "Not computed" in attention


def test_tripod_checklist_filled_from_the_run(parsed: tuple) -> None:
    _, _, doc, _ = parsed
    for item in ("6b", "7", "11", "12a", "12c", "12d", "12e", "15", "20a", "20b", "21", "23a", "23b"):
        assert doc.tripod[item] == "filled", item
    for item in ("3a", "5b", "17", "18a", "19", "25", "26"):
        assert doc.tripod[item] == "author", item
    assert {str(i) for i in range(1, 28)} <= {re.match(r"\d+", k).group() for k in doc.tripod}


def test_two_renders_are_byte_identical(reported: tuple[StudyConfig, Path]) -> None:
    study, path = reported
    first = path.read_bytes()
    again = write_report(load_config(study.root / "study.toml"), progress=False, force=True).path  # rendered again
    assert again.read_bytes() == first


def test_report_without_metrics_and_bad_metrics(tmp_path: Path) -> None:
    """Before fit/validate the report still renders, saying what is missing; a corrupt metrics.json is a
    clear error naming the file, and no report is written half-way."""
    from pipeline.ingest import ingest

    pl.DataFrame({"patient_id": ["P1", "P2", "P3"], "center": ["A", "A", "B"], "label": [0, 1, 1]}).write_csv(tmp_path / "p.csv")
    (tmp_path / "study.toml").write_text('[study]\nname = "bare"\n[manifests]\npatients = "p.csv"\n')
    study = load_config(tmp_path / "study.toml")
    ingest(study, progress=False)
    path = write_report(study, progress=False).path
    text = path.read_text()
    assert "No metrics yet" in text and "Not computed" in text
    assert {sid for sid, _ in SECTIONS} <= ReportParser(text).ids
    path.unlink()
    (study.report_dir / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"metrics\.json: not valid JSON \(line 1, column 2\)"):
        write_report(study, progress=False)
    assert not path.exists() and not list(study.report_dir.glob(".index.html*"))


def test_stale_metrics_are_flagged(reported: tuple[StudyConfig, Path], tmp_path: Path) -> None:
    """Predictions changed after validate: the report says its metrics are out of date."""
    import shutil

    study, path = reported
    assert "have changed since the metrics were computed" not in path.read_text(encoding="utf-8")
    copy = tmp_path / "copy"
    shutil.copytree(study.root, copy)
    moved = load_config(copy / "study.toml")
    con = store.connect(moved.store_path)
    con.execute("UPDATE predictions SET score = score * 0.5 WHERE model = 'weak'")
    con.close()
    text = write_report(moved, progress=False).path.read_text(encoding="utf-8")
    assert "the predictions or settings have changed since the metrics were computed" in text
