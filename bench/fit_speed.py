"""Seconds of one model's fit (outer folds, inner tuning, final refit) on a synthetic clinical-only cohort.

Usage: ``python bench/fit_speed.py [--n 10000 50000] [--models logistic xgboost] [--n-jobs 1 2]``. Prints, per
cohort size, model and number of workers: wall seconds, CPU seconds of this process and its workers, the
estimators fitted, and the speed-up over one worker. Runs on any commit whose ``analytics.fit.fit_model`` takes
the same first arguments (an older one without ``Engine`` runs with one worker only), so the same script
measures the code before and after a change. The machine may be shared: the CPU seconds are the steadier number.
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analytics import fit as fit_module
from analytics.models.data import Assembled, Columns, ModelData
from analytics.outer_folds import outer_folds
from pipeline.config import Model

NUMERIC = tuple(f"x{i}" for i in range(8))
CATEGORICAL = ("sex", "stage")


def cohort(n: int, seed: int = 11) -> tuple[ModelData, np.ndarray, np.ndarray]:
    """``n`` patients with 10 predictors (8 numbers, 2 categories), a logistic label and a 70/30 train split."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NUMERIC)))
    sex = rng.choice(["F", "M"], n)
    stage = rng.choice(["I", "II", "III", "IV"], n, p=[0.4, 0.3, 0.2, 0.1])
    lp = -1.0 + X[:, :4] @ np.array([0.8, -0.5, 0.3, 0.2]) + 0.3 * (sex == "M") + 0.5 * (stage == "IV")
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(np.float64)
    table = pd.DataFrame(X, columns=list(NUMERIC)).assign(sex=sex, stage=stage)
    ids = tuple(f"P{i:07d}" for i in range(n))
    data = ModelData(ids, table=table, columns=Columns(numeric=NUMERIC, categorical=CATEGORICAL))
    split = np.where(rng.random(n) < 0.7, "train", "internal").astype(object)
    return data, y, split


def _live_children_cpu() -> float:
    """CPU seconds of this process's live child processes (joblib keeps its workers between calls; Linux only)."""
    tick, total, me = os.sysconf("SC_CLK_TCK"), 0.0, str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid; utime and stime are the 14th and 15th fields of the line
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = _live_children_cpu() if Path("/proc").is_dir() else 0.0
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live


def measure(n: int, kind: str, n_jobs: int) -> dict[str, float]:
    data, y, split = cohort(n)
    train = split == "train"
    plan = outer_folds(np.asarray(data.patient_ids, dtype=object)[train], y[train].astype(np.int64), 5, 3)
    spec = Model(name=kind, kind=kind, clinical=[*NUMERIC, *CATEGORICAL])
    inputs = Assembled(data, np.ones(n, dtype=bool), {})
    extra = {}
    if "engine" in inspect.signature(fit_module.fit_model).parameters:
        extra["engine"] = fit_module.Engine(n_jobs)
    elif n_jobs != 1:
        raise SystemExit("this commit fits on one worker only")
    t0, c0 = time.perf_counter(), _cpu()
    result = fit_module.fit_model(spec, inputs, y, split, plan, 3, **extra)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if "engine" in extra:
        extra["engine"].close()
    return {"wall": wall, "cpu": cpu, "fits": float(getattr(result, "fits", float("nan"))),
            "chosen": result.learner.chosen}


def _warm() -> None:
    import analytics.fit  # noqa: F401  (what a fit task imports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--models", nargs="+", default=["logistic", "xgboost"])
    parser.add_argument("--n-jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    for jobs in sorted(set(args.n_jobs) - {1}):  # start the workers once (a fit run pays this once, not per model)
        from joblib import Parallel, delayed

        t0, c0 = time.perf_counter(), _cpu()
        Parallel(n_jobs=jobs, backend="loky")(delayed(_warm)() for _ in range(jobs))
        print(f"starting {jobs} workers: {time.perf_counter() - t0:.1f} s wall, {_cpu() - c0:.1f} s CPU")
    print(f"{'patients':>9} {'model':>9} {'n_jobs':>6} {'wall s':>8} {'cpu s':>8} {'fits':>5} {'speed-up':>8}  chosen")
    for n in args.n:
        for kind in args.models:
            one = None
            for jobs in args.n_jobs:
                row = measure(n, kind, jobs)
                one = row["wall"] if one is None else one
                print(f"{n:>9} {kind:>9} {jobs:>6} {row['wall']:>8.1f} {row['cpu']:>8.1f} {row['fits']:>5.0f} "
                      f"{one / row['wall']:>8.2f}  {row['chosen']}", flush=True)


if __name__ == "__main__":
    main()
