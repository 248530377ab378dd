"""A small validated study for the report tests: clinical manifest, two models' predictions inserted
directly into the store (as tests/validate does), feature-set provenance, a failed input and an
explanation figure."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from study_builders import build_study, study_toml

from pipeline import store
from pipeline.config import StudyConfig

N = 90


def write_study(root: Path, n_boot: int = 100) -> StudyConfig:
    """Write, ingest, predict and validate a two-centre study under ``root``; return it."""
    from analytics.cohort import load_cohort
    from analytics.validation.stage import validate

    rng = np.random.default_rng(5)
    centers = np.where(np.arange(N) < 60, "A", "B")
    label = (rng.random(N) < 0.4).astype(int)
    age = rng.normal(55, 10, N).round(1)
    sex = rng.choice(["F", "M"], N)
    crp = rng.lognormal(1.5, 0.6, N).round(2).astype(object)
    crp[rng.random(N) < 0.15] = None  # some missing values
    patients = pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(N)], "center": centers, "age": age, "sex": sex,
        "crp": pl.Series(crp.tolist(), dtype=pl.Float64), "label": label,
        "time": rng.exponential(30, N).round(2), "event": (rng.random(N) < 0.6).astype(int),
    })
    toml = study_toml("rep", 3, f"""[[models]]
name = "good"
kind = "logistic"
clinical = ["age", "crp"]
grid = {{ C = [0.1, 1.0] }}
[[models]]
name = "weak"
kind = "svm"
features = ["wsi_r18:mean"]
[validation]
n_boot = {n_boot}
compare = [["good", "weak"]]
""", study='description = "Two-centre report test study <&>"', params="{ min_age = 30 }", sections="""[variables]
age = { type = "numeric", unit = "years", role = "predictor", label = "Age" }
crp = { type = "numeric", unit = "mg/L", role = "predictor", label = "C-reactive protein" }
label = { type = "binary", role = "outcome", label = "Outcome" }
time = { type = "numeric", unit = "months", role = "time", label = "Follow-up" }
event = { type = "binary", role = "event" }
[[feature_sets]]
name = "wsi_r18"
modality = "wsi"
encoder = "resnet18"
weights = "random"
mpp = 1.0
tile_size = 224""")
    study = build_study(root, patients, "c.label, c.time, c.event, c.age, c.sex, c.crp", toml, where="c.age >= $min_age")
    cohort = load_cohort(study)
    y = cohort.y.astype(float)
    split = cohort.split
    good = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.1, len(y)))))
    weak = 1 / (1 + np.exp(-(0.4 * y - 0.2 + rng.normal(0, 1.0, len(y)))))
    rows = []
    for model, s in (("good", good), ("weak", weak)):
        for k, (pid, sp, sc) in enumerate(zip(cohort.patient_ids, split, s)):
            if model == "weak" and k % 11 == 0:
                continue  # patients without the image inputs get no prediction
            rows.append((model, pid, sp, float(sc), 0 if sp == "train" else None))
    con = store.connect(study.store_path)
    try:
        con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", rows)
        store.register_feature_set(con, store.FeatureSetRecord(
            "wsi_r18", "wsi", "resnet18", "random", {"mpp": 1.0, "tile_size": 224, "tissue_threshold": 0.25}, 512))
        for pid in cohort.patient_ids[:40]:
            store.record_item(con, "wsi_r18", f"{pid}-S1", pid, "done", n_instances=3, seconds=0.1)
        store.record_item(con, "wsi_r18", "P041-S1", "P041", "failed", error="cannot read <level 0> of slides/P041-S1.tiff")
    finally:
        con.close()
    validate(study, progress=False)
    explain = study.report_dir / "explain"
    explain.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buf, format="PNG")
    (explain / "shap_good.png").write_bytes(buf.getvalue())
    (explain / "manifest.json").write_text(json.dumps({"figures": [
        {"model": "good", "kind": "shap_beeswarm", "patient_id": None, "path": "shap_good.png",
         "caption": "SHAP values of the clinical model"},
    ]}))
    return study


class ReportParser:
    """What the tests read from a report: element ids, data-metric cells, images, at-risk cells, TRIPOD rows."""

    def __init__(self, text: str) -> None:
        from html.parser import HTMLParser

        self.ids: set[str] = set()
        self.metrics: list[tuple[str, str]] = []  # (key, text)
        self.at_risk: list[tuple[str, str]] = []
        self.images: list[tuple[str, str]] = []  # (enclosing figure id, src)
        self.tripod: dict[str, str] = {}  # item -> status
        self.links: list[str] = []
        self.random_rows: list[str] = []
        outer = self

        class _P(HTMLParser):
            def __init__(self) -> None:
                super().__init__(convert_charrefs=True)
                self.capture: tuple[str, str] | None = None  # (kind, key)
                self.buf: list[str] = []
                self.depth = 0
                self.figure = ""

            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                a = dict(attrs)
                if a.get("id"):
                    outer.ids.add(a["id"] or "")
                if tag == "figure":
                    self.figure = a.get("id") or ""
                if tag == "img":
                    outer.images.append((self.figure, a.get("src") or ""))
                if tag == "a" and a.get("href"):
                    outer.links.append(a["href"] or "")
                if tag == "tr" and (a.get("id") or "").startswith("tripod-"):
                    outer.tripod[(a["id"] or "")[7:]] = a.get("data-status") or ""
                if a.get("data-random-weights"):
                    outer.random_rows.append(tag)
                for attr, kind in (("data-metric", "metric"), ("data-at-risk", "risk")):
                    if a.get(attr):
                        self.capture, self.buf, self.depth = (kind, a[attr] or ""), [], 0
                if self.capture is not None:
                    self.depth += 1

            def handle_endtag(self, tag: str) -> None:
                if self.capture is None:
                    return
                self.depth -= 1
                if self.depth == 0:
                    kind, key = self.capture
                    (outer.metrics if kind == "metric" else outer.at_risk).append((key, "".join(self.buf).strip()))
                    self.capture = None

            def handle_data(self, data: str) -> None:
                if self.capture is not None:
                    self.buf.append(data)

        _P().feed(text)
