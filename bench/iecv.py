"""Benchmark: internal-external cross-validation of a glm across 4 centres (3,000 patients) with the
meta-analysis of its performance, against the same analysis in R (glm + pROC + metafor).

Builds a throw-away study (4 development centres of 750 patients, one logistic model with
``penalty = "none"``), then times, in this process with imports and the study's setup excluded (best of 5):

* cohortlab: :func:`analytics.iecv.iecv_model` (4 fits of the model's whole procedure, each on the other
  centres' patients, scoring the left-out one; files written as in ``cohortlab fit``) and
  :func:`analytics.validation.multicentre.study_multicentre` (per-centre measures and their REML /
  Knapp-Hartung meta-analysis, as ``cohortlab validate``);
* R: ``bench/iecv_reference.R`` (glm per left-out centre, pROC, glm calibration, metafor ``rma`` and
  ``predict``), timed inside R the same way.

Each time is given as elapsed (wall) and CPU seconds: on a loaded machine the CPU seconds are the fairer
comparison. Prints the times, their ratios (goal: cohortlab not slower than R) and the largest difference
between the pooled estimates, CIs, tau² and prediction intervals of the two; writes ``reports/bench/iecv.json``.

``--against DIR`` also times the cohortlab code of another checkout (e.g. the previous commit's worktree) in the
same run, the two measured in turns, so a change's effect is read side by side on the same machine load.

Run from the repository root:  python bench/iecv.py [--against DIR]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rscript import reference

ROOT = Path(__file__).resolve().parents[1]
CENTRES, PER_CENTRE, REPEAT = ("A", "B", "C", "D"), 750, 5
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


def patients():  # type: ignore[no-untyped-def]
    import numpy as np
    import polars as pl

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


def cohortlab_run(root: Path, repeat: int = REPEAT) -> dict:
    """Time IECV + meta-analysis with the cohortlab code first on ``sys.path``: best wall and CPU seconds of
    ``repeat`` runs, and the pooled results."""
    from study_builders import build_study, study_toml

    from analytics.cohort import load_cohort
    from analytics.fit import fit, train_learner
    from analytics.iecv import iecv_model
    from analytics.iecv_files import IECV_FOLDER
    from analytics.validation.multicentre import study_multicentre
    from analytics.validation.stage import outcome_columns
    from pipeline import store

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
    # an earlier cohortlab took the fitting function as its fourth argument
    legacy = "fit_learner" in inspect.signature(iecv_model).parameters
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        shutil.rmtree(study.models_dir / IECV_FOLDER, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        if legacy:
            iecv_model(study, spec, cohort, train_learner, n_jobs=1)
        else:
            iecv_model(study, spec, cohort, n_jobs=1)
        result, _ = study_multicentre(study, preds, outcomes, ["glm"])
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    assert result is not None
    return {"seconds": wall, "cpu_seconds": cpu, "pooled": {p.measure: p.result for p in result["glm/iecv"].pooled}}


def _child(code: Path, root: Path, repeat: int) -> dict:
    """:func:`cohortlab_run` in a fresh process with ``code``'s packages first on its path."""
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{code / 'tests'}"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(root), "--repeat", str(repeat)],
                          cwd=code, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def r_run(csv: Path) -> dict | None:
    return reference("iecv_reference.R", csv, REPEAT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, help="another checkout whose cohortlab is timed in the same run")
    ap.add_argument("--rounds", type=int, default=2, help="turns of each code (with --against)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=REPEAT, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:  # one timing with the code of PYTHONPATH, as JSON on stdout
        print(json.dumps(cohortlab_run(args.child, args.repeat), default=float))
        return
    import numpy as np

    out: dict = {"patients": len(CENTRES) * PER_CENTRE, "centres": len(CENTRES),
                 "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    codes = {"cohortlab": ROOT, **({"baseline": args.against.resolve()} if args.against else {})}
    runs: dict[str, list[dict]] = {k: [] for k in codes}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds if args.against else 1):
            for label, code in codes.items():  # in turns: both see the same machine load
                runs[label].append(_child(code, Path(tmp) / f"{label}-{i}", REPEAT))
        csv = Path(tmp) / "patients.csv"
        sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
        patients().write_csv(csv)
        ref = r_run(csv)
    for label, rs in runs.items():
        out[f"{label}_s"] = min(r["seconds"] for r in rs)
        out[f"{label}_cpu_s"] = min(r["cpu_seconds"] for r in rs)
        print(f"{label} IECV + meta-analysis, {out['patients']} patients, {len(CENTRES)} centres: "
              f"{out[f'{label}_s']:.3f} s elapsed, {out[f'{label}_cpu_s']:.3f} s CPU (best of {REPEAT} x {len(rs)})")
    if "baseline" in runs:
        out["speed_up"] = out["baseline_s"] / out["cohortlab_s"]
        out["speed_up_cpu"] = out["baseline_cpu_s"] / out["cohortlab_cpu_s"]
        print(f"baseline / cohortlab: {out['speed_up']:.2f} elapsed, {out['speed_up_cpu']:.2f} CPU")
    if ref is not None:
        ours = runs["cohortlab"][0]["pooled"]
        names = {"auc": "auc", "citl": "calibration_in_the_large", "slope": "calibration_recalibration_slope",
                 "oe": "oe_ratio"}
        worst = 0.0
        for r_name, ours_name in names.items():
            r, o = ref["pooled"][r_name], ours[ours_name]
            mine = {"mu": o["mu"], "tau2": o["tau2"], "ci_lb": _scaled(o, "low", np), "ci_ub": _scaled(o, "high", np),
                    "pi_lb": _scaled(o, "pi_low", np), "pi_ub": _scaled(o, "pi_high", np)}
            for key in mine:
                worst = max(worst, abs(mine[key] - r[key]))
        out.update(r_s=ref["seconds"], r_cpu_s=ref.get("cpu_seconds"), max_abs_difference=worst,
                   versions=ref["versions"])
        for label in runs:
            out[f"{label}_ratio"] = out[f"{label}_s"] / ref["seconds"]
            if ref.get("cpu_seconds"):
                out[f"{label}_ratio_cpu"] = out[f"{label}_cpu_s"] / ref["cpu_seconds"]
        print(f"R (glm + pROC + metafor): {ref['seconds']:.3f} s elapsed, {ref.get('cpu_seconds', float('nan')):.3f} s "
              "CPU; " + "; ".join(f"{label} / R = {out[f'{label}_ratio']:.2f} elapsed, "
                                  f"{out.get(f'{label}_ratio_cpu', float('nan')):.2f} CPU" for label in runs)
              + " (goal: at most 1)")
        print(f"largest difference from R in the pooled estimates, tau² and prediction intervals: {worst:.2e}")
    else:
        print("R reference: not measured (no Rscript, or the script failed)")
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "iecv.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _scaled(o: dict, key: str, np) -> float:  # type: ignore[no-untyped-def]
    """A back-transformed bound of ``o`` on its pooling scale again (logit for AUC, log for O:E)."""
    x = float(o[key])
    if o["scale"] == "logit":
        return float(np.log(x / (1 - x)))
    if o["scale"] == "log":
        return float(np.log(x))
    return x


if __name__ == "__main__":
    main()
