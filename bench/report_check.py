"""Browser check of the HTML report (called by bench/report_check.sh; not a test: CI has no Chromium).

``render REPORT PNG``: renders ``REPORT`` in headless Chromium to a full-page PNG
and fails (exit 1) on any console message, uncaught error or failed resource.
Chromium's stderr log (``--enable-logging=stderr --v=0``) carries every console
message as an ``INFO:CONSOLE`` line; a canary page with a deliberate
``console.error`` is rendered first, so a Chromium whose log format hides them
fails the check instead of passing it. The report has no scripts, so any
console message at all counts as an error.

``build-fallback FOLDER``: when the full demo cannot run (e.g. no embedding
stage), writes a clinical-only stand-in of the synthetic demo study (the
demo's patients, no images), fits two logistic models with scikit-learn
(out-of-fold on the training split, refitted for the held-out splits), runs
``validate`` and ``report``, and prints the report's path.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--enable-logging=stderr", "--v=0",
)
CONSOLE = re.compile(r"(:CONSOLE[(:]|Uncaught|Failed to load resource|net::ERR_)")
CANARY = ('<!DOCTYPE html><html><head><title>canary</title><link rel="icon" href="data:,"></head>'
          '<body><p>canary</p><script>console.error("report-check canary");</script></body></html>')
WIDTH = 1280
START_HEIGHT = 16000
MAX_HEIGHT = 128000
BLANK_TAIL = 120  # pixels of empty page at the bottom that show the whole report was captured


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium on PATH (bench/report_check.sh installs Debian's chromium)")


def shoot(browser: str, url: str, png: Path, height: int) -> list[str]:
    """Render ``url`` into ``png`` at 1280 x ``height``; return the console lines of Chromium's log."""
    with tempfile.TemporaryDirectory(prefix="report-check-") as profile:
        proc = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={WIDTH},{height}", url],
            capture_output=True, text=True, timeout=300,
        )
    if not png.exists():
        raise SystemExit(f"chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return [line for line in proc.stderr.splitlines() if CONSOLE.search(line)]


def content_rows(png: Path) -> tuple[int, int]:
    """(last non-white row + 1, image height)."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(Image.open(png).convert("L"))
    rows = np.flatnonzero((grey < 250).any(axis=1))
    return (int(rows.max()) + 1 if rows.size else 0), grey.shape[0]


def render(report: Path, out: Path) -> int:
    """Render ``report`` to ``out`` (trimmed full page); 0 when there were no console messages."""
    from PIL import Image

    browser = chromium()
    report = report.resolve()
    if not report.is_file():
        raise SystemExit(f"{report}: no such report")
    external = re.findall(r'(?:src|href)="(?:https?:)?//[^"]+"|url\((?:https?:)?//', report.read_text(encoding="utf-8"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-check-canary-") as tmp:
        page = Path(tmp) / "canary.html"
        page.write_text(CANARY, encoding="utf-8")
        if not any("report-check canary" in line for line in shoot(browser, page.as_uri(), Path(tmp) / "c.png", 600)):
            print("FAIL: the canary's console.error did not reach chromium's log; console errors cannot be seen")
            return 2
    height = START_HEIGHT
    while True:
        raw = out.with_name(out.stem + ".full.png")
        raw.unlink(missing_ok=True)
        messages = shoot(browser, report.as_uri(), raw, height)
        last, total = content_rows(raw)
        if total - last >= BLANK_TAIL or height >= MAX_HEIGHT:
            break
        height *= 2
    Image.open(raw).crop((0, 0, WIDTH, min(total, last + 40))).save(out, optimize=True)
    raw.unlink()
    print(f"report:     {report}")
    print(f"screenshot: {out} ({WIDTH} x {min(total, last + 40)} px; rendered at height {height})")
    if total - last < BLANK_TAIL:
        print(f"FAIL: the page is taller than {MAX_HEIGHT} px; the screenshot is cut")
        return 1
    for ref in external:
        print(f"FAIL: external reference {ref}")
    for line in messages:
        print(f"FAIL: console: {line}")
    if messages or external:
        return 1
    print("ok: no console messages, no external references")
    return 0


# --- the clinical-only stand-in study --------------------------------------------------------------

FALLBACK_TOML = """\
# Clinical-only stand-in of the synthetic demo study (no images), written by bench/report_check.py.
[study]
name = "report_check"
description = "Clinical-only stand-in of the synthetic two-centre demo study (not patient data): bench/report_check.py"
seed = 0

[manifests]
patients = "patients.csv"

[variables]
patient_id = { role = "id" }
center = { type = "categorical", role = "strata", label = "Centre" }
age = { type = "numeric", unit = "years", role = "predictor", label = "Age" }
sex = { type = "categorical", role = "predictor", label = "Sex" }
esr = { type = "numeric", unit = "mm/h", role = "predictor", label = "Erythrocyte sedimentation rate" }
anti_ssa = { type = "categorical", role = "predictor", label = "Anti-SSA/Ro antibodies" }
igg = { type = "numeric", unit = "g/L", role = "predictor", label = "Serum IgG" }
focus_score = { type = "numeric", unit = "foci/4 mm2", role = "predictor", label = "Focus score" }
high_risk = { type = "binary", role = "outcome", label = "High-risk extra-glandular involvement" }
followup_months = { type = "numeric", unit = "months", role = "time", label = "Follow-up" }
event = { type = "binary", role = "event", label = "Extra-glandular event" }

[cohort]
name = "demo"
params = { min_age = 18 }

[split]
external_centers = ["B"]
internal_fraction = 0.25
seed = 0

[[models]]
name = "clinical"
kind = "logistic"
clinical = ["age", "esr", "anti_ssa", "igg", "focus_score"]

[[models]]
name = "esr_only"
kind = "logistic"
clinical = ["esr"]

[validation]
n_boot = 500
compare = [["clinical", "esr_only"]]

[report]
dir = "report"
"""


def build_fallback(folder: Path, n_patients: int = 120) -> Path:
    """Write, fit, validate and report the clinical-only stand-in study; return the report path."""
    import numpy as np
    import polars as pl
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from analytics.cohort import load_cohort
    from analytics.report import write_report
    from analytics.validation.stage import validate
    from pipeline import store
    from pipeline.config import load_config
    from pipeline.ingest import ingest
    from pipeline.synth import PATIENT_COLUMNS, make_patients

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rows = [",".join(PATIENT_COLUMNS)] + [",".join(p.row()) for p in make_patients(n_patients, seed=0)]
    (folder / "patients.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "study.toml").write_text(FALLBACK_TOML, encoding="utf-8")
    study = load_config(folder / "study.toml")
    ingest(study, progress=False)
    cohort = load_cohort(study)
    frame = cohort.frame
    cols = {"clinical": ["age", "esr", "anti_ssa", "igg", "focus_score"], "esr_only": ["esr"]}
    preds = []
    train = cohort.split == "train"
    y = cohort.y.astype(int)
    for name, features in cols.items():
        # anti-SSA as 0/1; missing numbers imputed with the training median
        x = np.column_stack([
            (frame[c] == "positive").cast(pl.Float64).to_numpy() if frame[c].dtype == pl.String
            else frame[c].cast(pl.Float64).fill_null(frame[c].cast(pl.Float64).filter(train).median()).to_numpy()
            for c in features
        ])
        model = make_pipeline(StandardScaler(), LogisticRegression())
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        oof = cross_val_predict(model, x[train], y[train], cv=folds, method="predict_proba")[:, 1]
        held = model.fit(x[train], y[train]).predict_proba(x[~train])[:, 1]
        score = np.empty(len(y))
        score[train], score[~train] = oof, held
        fold = np.full(len(y), None, dtype=object)
        fold[train] = 0
        preds += [(name, p, s, float(v), f) for p, s, v, f in zip(cohort.patient_ids, cohort.split, score, fold)]
    con = store.connect(study.store_path)
    try:
        con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", preds)
    finally:
        con.close()
    validate(study, progress=False)
    return write_report(study, progress=False).path


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if not args_in:  # `make bench` runs every bench/*.py without arguments
        print("report check: run `bash bench/report_check.sh` (or `make report-check`); needs chromium")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render a report to PNG and check the console")
    r.add_argument("report", type=Path)
    r.add_argument("png", type=Path)
    b = sub.add_parser("build-fallback", help="build the clinical-only stand-in study and its report")
    b.add_argument("folder", type=Path)
    args = parser.parse_args(args_in)
    if args.cmd == "render":
        return render(args.report, args.png)
    print(build_fallback(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
