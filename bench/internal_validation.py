"""Benchmark: internal-validation replicates on 1 and 2 local workers, on Ray local, and against rms::validate.

A glm-sized logistic regression (``kind = "logistic"``, ``params = { C = inf }``: maximum likelihood, as R's
``glm`` / ``rms::lrm``) on ``--n`` (2,000) synthetic patients with five predictors is refitted on ``--B``
(200) bootstrap resamples by :func:`analytics.internal_fit.run_replicates`, each run into an empty cache:

* joblib with 1 worker (this process) and with 2 workers (loky): the speed-up (target >= 1.7 on 2 cores), with
  the worker processes started (loky keeps them for the next call) and including their start ("cold": each
  worker imports scikit-learn and the learner's modules, seconds that a glm's 200 refits do not cover);
* Ray local (2 CPUs) against joblib with 2 workers (target >= 0.9), likewise warm and cold;
* every engine's replicate files are compared byte for byte;
* seconds per replicate beside ``rms::validate(lrm(...), B)``'s on the same patients, when Rscript and rms
  are installed (R's time covers the same work: B refits, apparent and test predictions, and its indexes).

Prints a table (each engine's wall seconds and CPU seconds, its worker processes included; a warning when the
load average shows other work on the machine, which makes the speed-ups meaningless), each target met or
missed, and writes ``reports/bench/internal_validation.json``. About 1-2 minutes on a quiet 2-core machine.

    python bench/internal_validation.py [--n 2000] [--B 200] [--rounds 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
sys.path.insert(0, str(ROOT / "bench"))

from cputime import cpu_seconds  # noqa: E402

from analytics import internal_fit  # noqa: E402
from analytics.internal_fit import Resampling, run_replicates  # noqa: E402
from pipeline.config import StudyConfig, load_config  # noqa: E402

PREDICTORS = ("age", "marker", "bmi", "score", "dose")
R_SCRIPT = """
suppressPackageStartupMessages(library(rms))
d <- read.csv(commandArgs(TRUE)[1])
B <- as.integer(commandArgs(TRUE)[2])
f <- lrm(label ~ age + marker + bmi + score + dose, data = d, x = TRUE, y = TRUE)
set.seed(1)
t <- system.time(v <- validate(f, B = B))[["elapsed"]]
cat(t, v["Dxy", "index.corrected"], "\\n")
"""


def patients(n: int, seed: int = 7) -> pl.DataFrame:
    """``n`` patients with five predictors and a label drawn from a known logistic model."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, len(PREDICTORS)))
    lp = -0.4 + x @ np.array([0.6, 0.9, -0.3, 0.2, 0.0])
    label = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    cols = {name: x[:, j].round(4) for j, name in enumerate(PREDICTORS)}
    return pl.DataFrame({"patient_id": [f"P{i:05d}" for i in range(n)], "center": ["A"] * n, **cols, "label": label})


def study(root: Path, frame: pl.DataFrame) -> StudyConfig:
    """A study of ``frame`` whose patients are all training patients, with the logistic model; ingested."""
    from pipeline.ingest import ingest

    frame.write_csv(root / "patients.csv")
    (root / "cohorts").mkdir()
    cols = ", ".join(f"c.{c}" for c in ("label", *PREDICTORS))
    (root / "cohorts" / "all.sql").write_text(
        f"SELECT p.patient_id, p.center, {cols} FROM patients p JOIN clinical c USING (patient_id)", encoding="utf-8")
    clinical = ", ".join(f'"{c}"' for c in PREDICTORS)
    (root / "study.toml").write_text(f"""[study]
name = "bench_internal"
seed = 1
[manifests]
patients = "patients.csv"
[cohort]
name = "all"
[split]
internal_fraction = 0
[[models]]
name = "glm"
kind = "logistic"
clinical = [{clinical}]
params = {{ C = inf }}
""", encoding="utf-8")
    config = load_config(root / "study.toml")
    ingest(config, progress=False)
    return config


def task_inputs(config: StudyConfig) -> tuple[object, object, np.ndarray]:
    """The model, its training patients' inputs and labels, as fit hands them to the replicates."""
    from analytics.cohort import load_cohort
    from analytics.models.data import assemble

    spec = config.model("glm")
    cohort = load_cohort(config, features=[], bags=[], on_missing="keep")
    assembled = assemble(spec, cohort, {})
    y = cohort.frame["label"].to_numpy().astype(np.int64)
    return spec, assembled.data, y


CPU: dict[str, float] = {}  # CPU seconds (this process and its workers) of each engine's best turn


def timed(spec: object, data: object, y: np.ndarray, plan: Resampling, folder: Path, name: str = "",
          **engine: object) -> float:
    """Wall seconds of all replicates into an empty cache folder (its CPU seconds under ``CPU[name]`` when it is
    the engine's fastest turn yet)."""
    shutil.rmtree(folder, ignore_errors=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    run_replicates(spec, data, y, plan, fit_key="bench", models_dir=folder, **engine)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    if name and wall <= BEST.get(name, np.inf):
        BEST[name], CPU[name] = wall, cpu_seconds() - c0
    return wall


BEST: dict[str, float] = {}


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("rep_*.npz"))}


def r_validate(frame: pl.DataFrame, B: int, work: Path) -> tuple[float, float] | None:
    """rms::validate's elapsed seconds (and its corrected Dxy) on the same patients, or None without R / rms."""
    if shutil.which("Rscript") is None:
        return None
    csv, script = work / "bench.csv", work / "validate.R"
    frame.drop("patient_id", "center").write_csv(csv)
    script.write_text(R_SCRIPT, encoding="utf-8")
    out = subprocess.run(["Rscript", str(script), str(csv), str(B)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"Rscript failed: {out.stderr.strip()[-300:]}")
        return None
    seconds, dxy = out.stdout.split()[:2]
    return float(seconds), float(dxy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--B", type=int, default=200)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the warm engines (best time kept)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "study").mkdir()
        frame = patients(args.n)
        config = study(work / "study", frame)
        spec, data, y = task_inputs(config)
        plan = Resampling("bootstrap", args.B, 1, 5, config.study.seed)
        # warm-up: imports and one fit, so that the first engine is not charged for them
        internal_fit.fit_replicate(internal_fit.Task(spec, data, y, plan), 0)  # type: ignore[arg-type]
        # cold: worker processes (or Ray local) started by the run itself
        started = time.perf_counter()
        seconds = {"joblib 2 workers, cold": timed(spec, data, y, plan, work / "two", "joblib 2 workers, cold",
                                                   n_jobs=2)}
        engines: dict[str, dict[str, object]] = {"joblib 1 worker": {"n_jobs": 1}, "joblib 2 workers": {"n_jobs": 2}}
        session = None
        if not args.no_ray:
            import ray

            seconds["Ray local, cold"] = timed(spec, data, y, plan, work / "ray", "Ray local, cold", ray="local")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
            session = ray
            engines["Ray local"] = {"ray": "local"}  # the open session's workers are reused
        try:
            # warm: loky keeps its workers for the next call (the next model of a `cohortlab fit`), Ray its own;
            # the engines take turns, --rounds times, and each keeps its best time (other load on the machine
            # slows whichever runs while it lasts)
            timed(spec, data, y, plan, work / "warm", **engines.get("Ray local", {"n_jobs": 2}))
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, engine in engines.items():
                    folder = work / name.replace(" ", "_")
                    best[name] = min(best.get(name, np.inf), timed(spec, data, y, plan, folder, name, **engine))
            seconds.update(best)
        finally:
            if session is not None:
                session.shutdown()
        reference = files(work / "joblib_1_worker")
        same = {name: files(work / name.replace(" ", "_")) == reference for name in engines if name != "joblib 1 worker"}
        same["joblib 2 workers, cold"] = files(work / "two") == reference
        if not args.no_ray:
            same["Ray local, cold"] = files(work / "ray") == reference
        r = r_validate(frame, args.B, work)
    speedup = seconds["joblib 1 worker"] / seconds["joblib 2 workers"]
    cold = seconds["joblib 1 worker"] / seconds["joblib 2 workers, cold"]
    ray_ratio = seconds["joblib 2 workers"] / seconds["Ray local"] if "Ray local" in seconds else None
    print(f"internal validation: {args.B} bootstrap replicates of a logistic glm (5 predictors) on {args.n} patients, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other work on the machine slows the workers)")
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: load average {load:.1f} on {os.cpu_count()} cores: other work competes with the workers, "
              "so the speed-ups below are not valid; run this again on a quiet machine")
    print(f"{'engine':<24} {'wall s':>8} {'cpu s':>8} {'s/replicate':>12}  same bytes as 1 worker")
    for name, s in seconds.items():
        print(f"{name:<24} {s:8.2f} {CPU.get(name, float('nan')):8.2f} {s / args.B:12.4f}  {same.get(name, '-')}")
    if r is not None:
        print(f"{'rms::validate':<24} {r[0]:8.2f} {'':>8} {r[0] / args.B:12.4f}  (R; corrected Dxy {r[1]:.4f})")
    else:
        print("rms::validate: Rscript or rms not available")
    print(f"speed-up 2 workers / 1 worker: {speedup:.2f} with the workers started: "
          + ("met (>= 1.7)" if speedup >= 1.7 else "MISSED (target >= 1.7)") + f"; {cold:.2f} including their start")
    if ray_ratio is not None:
        print(f"Ray local / joblib 2 workers (speed ratio): {ray_ratio:.2f}: "
              + ("met (>= 0.9)" if ray_ratio >= 0.9 else "MISSED (target >= 0.9)"))
    print(f"{time.perf_counter() - started:.0f} s in all")
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "internal_validation.json").write_text(json.dumps({
        "n": args.n, "B": args.B, "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "machine": platform.platform(), "seconds": seconds,
        "cpu_seconds": CPU, "same_bytes": same, "speedup_2_over_1": speedup, "speedup_2_over_1_cold": cold, "ray_over_joblib": ray_ratio,
        "rms_validate_seconds": None if r is None else r[0],
    }, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
