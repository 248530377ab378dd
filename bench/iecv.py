"""Benchmark: internal-external cross-validation of a glm across 4 centres (3,000 patients) with the
meta-analysis of its performance, against the same analysis in R (glm + pROC + metafor).

Builds a throw-away study (4 development centres of 750 patients, one logistic model with
``penalty = "none"``), then times, in this process with imports and the study's setup excluded (best of 3):

* cohortlab: :func:`analytics.iecv.iecv_model` (4 fits of the model's whole procedure, each on the other
  centres' patients, scoring the left-out one; files written as in ``cohortlab fit``) and
  :func:`analytics.validation.multicentre.study_multicentre` (per-centre measures and their REML /
  Knapp-Hartung meta-analysis, as ``cohortlab validate``);
* R: ``bench/iecv_reference.R`` (glm per left-out centre, pROC, glm calibration, metafor ``rma`` and
  ``predict``), timed inside R the same way.

Prints the times, their ratio (goal: cohortlab not slower than R) and the largest difference between the
pooled estimates, CIs, tau² and prediction intervals of the two; writes ``reports/bench/iecv.json``.

Run from the repository root:  python bench/iecv.py
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from study_builders import build_study, study_toml  # noqa: E402

from analytics.cohort import load_cohort  # noqa: E402
from analytics.fit import fit, train_learner  # noqa: E402
from analytics.iecv import iecv_model  # noqa: E402
from analytics.iecv_files import IECV_FOLDER  # noqa: E402
from analytics.validation.multicentre import study_multicentre  # noqa: E402
from analytics.validation.stage import outcome_columns  # noqa: E402
from pipeline import store  # noqa: E402

CENTRES, PER_CENTRE, REPEAT = ("A", "B", "C", "D"), 750, 3
MODELS = """[[models]]
name = "glm"
kind = "logistic"
clinical = ["age", "marker"]
params = { penalty = "none" }
[validation]
n_boot = 0
folds = 2
internal_external = true
[compute]
n_jobs = 1
"""


def patients() -> pl.DataFrame:
    rng = np.random.default_rng(29)
    frames = []
    for k, center in enumerate(CENTRES):
        age = rng.normal(60 + 2 * k, 10, PER_CENTRE)
        marker = rng.normal(0, 1, PER_CENTRE)
        eta = -1.0 + 0.3 * (k - 1.5) + 0.03 * (age - 60) + (0.8 + 0.15 * k) * marker
        frames.append(pl.DataFrame({"patient_id": [f"{center}{i:04d}" for i in range(PER_CENTRE)], "center": center,
                                    "label": rng.binomial(1, 1 / (1 + np.exp(-eta))), "age": age.round(3),
                                    "marker": marker.round(5)}))
    return pl.concat(frames)


def cohortlab_run(root: Path) -> tuple[float, dict[str, dict[str, float]]]:
    split = 'external_centers = []\ninternal_fraction = 0\nseed = 1'
    root.mkdir(parents=True)
    study = build_study(root, patients(), "c.label, c.age, c.marker", study_toml("iecv_bench", 1, MODELS, split=split))
    fit(study, progress=False)
    cohort = load_cohort(study)
    spec = study.model("glm")
    con = store.connect(study.store_path, read_only=True)
    try:
        preds = store.read_predictions(con)
    finally:
        con.close()
    outcomes = cohort.frame.select(outcome_columns(study, cohort.frame.columns)).rename({"split": "cohort_split"})
    best = float("inf")
    result = None
    for _ in range(REPEAT):
        shutil.rmtree(study.models_dir / IECV_FOLDER, ignore_errors=True)
        t0 = time.perf_counter()
        iecv_model(study, spec, cohort, train_learner, n_jobs=1)
        result, _ = study_multicentre(study, preds, outcomes, ["glm"])
        best = min(best, time.perf_counter() - t0)
    assert result is not None
    pooled = {p.measure: p.result for p in result["glm/iecv"].pooled}
    return best, pooled


def r_run(csv: Path) -> dict | None:
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    done = subprocess.run([rscript, str(ROOT / "bench" / "iecv_reference.R"), str(csv), str(REPEAT)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds, ours = cohortlab_run(root / "study")
        csv = root / "patients.csv"
        patients().write_csv(csv)
        ref = r_run(csv)
    out: dict = {"patients": len(CENTRES) * PER_CENTRE, "centres": len(CENTRES), "cohortlab_s": seconds,
                 "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    print(f"cohortlab IECV + meta-analysis, {out['patients']} patients, {len(CENTRES)} centres: {seconds:.3f} s "
          f"(best of {REPEAT})")
    if ref is not None:
        names = {"auc": "auc", "citl": "calibration_in_the_large", "slope": "calibration_recalibration_slope",
                 "oe": "oe_ratio"}
        worst = 0.0
        for r_name, ours_name in names.items():
            r, o = ref["pooled"][r_name], ours[ours_name]
            mine = {"mu": o["mu"], "tau2": o["tau2"], "ci_lb": _scaled(o, "low"), "ci_ub": _scaled(o, "high"),
                    "pi_lb": _scaled(o, "pi_low"), "pi_ub": _scaled(o, "pi_high")}
            for key in mine:
                worst = max(worst, abs(mine[key] - r[key]))
        out.update(r_s=ref["seconds"], ratio=seconds / ref["seconds"], max_abs_difference=worst,
                   versions=ref["versions"])
        print(f"R (glm + pROC + metafor): {ref['seconds']:.3f} s; cohortlab / R = {out['ratio']:.2f} "
              f"(goal: at most 1)")
        print(f"largest difference from R in the pooled estimates, tau² and prediction intervals: {worst:.2e}")
    else:
        print("R reference: not measured (no Rscript, or the script failed)")
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "iecv.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _scaled(o: dict, key: str) -> float:
    """A back-transformed bound of ``o`` on its pooling scale again (logit for AUC, log for O:E)."""
    x = float(o[key])
    if o["scale"] == "logit":
        return float(np.log(x / (1 - x)))
    if o["scale"] == "log":
        return float(np.log(x))
    return x


if __name__ == "__main__":
    main()
