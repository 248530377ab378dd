"""Benchmark: chained equations (m = 20, maxit = 10) on survival::pbc against R ``mice`` in the same run.

The cohort is ``survival::pbc``'s 418 patients with 11 variables: death by the end of follow-up (the outcome, in
the imputation models), age, sex, log bilirubin, albumin (complete) and cholesterol, copper, triglycerides,
platelets (predictive mean matching), ascites (logistic regression) and stage (multinomial regression) with
2 to 136 missing each. R writes the data and times ``mice(d, m, maxit)`` with ``system.time`` after its packages
are loaded; this process times :func:`analytics.impute.impute` after its imports, with 1 worker (as mice) and
with 2. Each side runs ``--rounds`` times and keeps its fastest. Prints the seconds and the ratio (ours / mice:
below 1 is faster) and writes ``reports/bench/imputation.json``.

    python bench/imputation.py [--m 20] [--maxit 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics import impute  # noqa: E402

R_SCRIPT = """
suppressPackageStartupMessages({library(mice); library(survival)})
args <- commandArgs(TRUE)
m <- as.integer(args[2]); maxit <- as.integer(args[3]); rounds <- as.integer(args[4])
d <- survival::pbc[, c("status", "age", "sex", "bili", "albumin", "chol", "copper", "trig", "platelet",
                       "ascites", "stage")]
d$dead <- as.integer(d$status == 2); d$status <- NULL
d$bili <- log(d$bili)
d$ascites <- factor(d$ascites, levels = 0:1, labels = c("no", "yes"))
d$stage <- factor(d$stage)
d <- d[, c("dead", "age", "sex", "bili", "albumin", "chol", "copper", "trig", "platelet", "ascites", "stage")]
write.csv(d, args[1], row.names = FALSE, na = "")
best <- Inf
for (r in seq_len(rounds)) {
  t <- system.time(imp <- mice(d, m = m, maxit = maxit, seed = r, print = FALSE))[["elapsed"]]
  best <- min(best, t)
}
cat(best, paste(imp$method, collapse = ","), as.character(packageVersion("mice")), "\\n")
"""


def run_r(csv: Path, m: int, maxit: int, rounds: int) -> tuple[float, str, str]:
    """mice's fastest seconds, its methods and its version; the data land in ``csv``."""
    script = csv.with_suffix(".R")
    script.write_text(R_SCRIPT, encoding="utf-8")
    out = subprocess.run(["Rscript", str(script), str(csv), str(m), str(maxit), str(rounds)], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"Rscript failed: {out.stderr.strip()[-400:]}")
    seconds, methods, version = out.stdout.split()
    return float(seconds), methods, version


def run_ours(frame: pl.DataFrame, m: int, maxit: int, rounds: int, n_jobs: int) -> tuple[float, dict[str, str]]:
    """Our fastest seconds over ``rounds`` (workers started before the clock, as R's packages are loaded)."""
    impute.impute(frame, impute.Settings(m=max(n_jobs, 2), maxit=1, seed=0, n_jobs=n_jobs))
    best = float("inf")
    methods: dict[str, str] = {}
    for r in range(rounds):
        start = time.perf_counter()
        imp = impute.impute(frame, impute.Settings(m=m, maxit=maxit, seed=r + 1, n_jobs=n_jobs))
        best = min(best, time.perf_counter() - start)
        methods = imp.methods
    return best, methods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=20)
    ap.add_argument("--maxit", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("Rscript") is None:
        raise SystemExit("Rscript is not installed: this benchmark needs R with mice and survival")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "pbc.csv"
        r_seconds, r_methods, version = run_r(csv, args.m, args.maxit, args.rounds)
        frame = pl.read_csv(csv, null_values=[""], infer_schema_length=None).with_columns(pl.col("stage").cast(pl.String))
    one, methods = run_ours(frame, args.m, args.maxit, args.rounds, 1)
    two, _ = run_ours(frame, args.m, args.maxit, args.rounds, 2)
    ours_methods = ",".join(methods.values())
    print(f"survival::pbc: {frame.height} patients, {frame.width} variables, m = {args.m}, maxit = {args.maxit}")
    print(f"methods  mice: {r_methods}\n         ours: {ours_methods}")
    print(f"{'engine':<28}{'seconds':>10}{'ratio to mice':>16}")
    print(f"{'R mice ' + version:<28}{r_seconds:>10.2f}{1.0:>16.2f}")
    print(f"{'cohortlab, 1 worker':<28}{one:>10.2f}{one / r_seconds:>16.2f}")
    print(f"{'cohortlab, 2 workers':<28}{two:>10.2f}{two / r_seconds:>16.2f}")
    out = ROOT / "reports" / "bench" / "imputation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"patients": frame.height, "variables": frame.width, "m": args.m, "maxit": args.maxit,
              "rounds": args.rounds, "mice_version": version, "mice_seconds": r_seconds, "seconds_1_worker": one,
              "seconds_2_workers": two, "ratio_1_worker": one / r_seconds, "ratio_2_workers": two / r_seconds,
              "methods_mice": r_methods, "methods": ours_methods, "machine": platform.platform()}
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp_out.replace(out)


if __name__ == "__main__":
    main()
