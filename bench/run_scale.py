"""Benchmark: how the time and memory of each stage of ``cohortlab run`` grow with the number of patients.

A clinical-only study (a patients manifest only: three numeric and two categorical variables, a binary label
drawn from a known logistic model, time and event from an exponential model with censoring; centre B is the
external split and a quarter of centre A the internal one), ``[explain] enabled = false``,
``[validation] internal = "none"`` and ``n_boot`` 2,000 (the default), is run end to end by the stages of
:func:`analytics.run.run` for each ``--sizes``. Its models (registry-scale cohorts): a maximum-likelihood
logistic (``penalty = "none"``), the default tuned penalised logistic and XGBoost. ``--six`` runs instead
the six models of the incremental-report goal (logistic tuned and ML, svm, xgboost, cox and a voting of
three) at 1k, 4k and 10k patients, with two more rounds:

* ``rerun``: the same run again (every stage should skip);
* ``add 2``: two models added to study.toml (fit fits those two; validate should validate only those two;
  the report is rendered again).

For each size it prints each stage's wall seconds, CPU seconds and peak resident memory (the stage's own
high-water mark: ``VmHWM`` reset before each stage; worker processes, joblib's live ones included, are counted
in CPU (:mod:`cputime`), not in memory),
then the log-log slope of each stage's time over the sizes, and, when ``Rscript`` is on the PATH, the ratio
of the run's wall time to ``bench/run_scale_reference.R`` (one glm, pROC DeLong and 2,000 stratified
bootstrap resamples, ``rms::val.prob``) on the same patients at ``--r-size`` (200k). The goals (2 cores):

* 1M patients end to end in at most 20 minutes, peak memory at most 8 GB (``--million`` adds 1M);
* every stage's slope at most 1.1;
* at 200k patients, at most twice the R script's wall time;
* the report in at most 5 s at every size (its time does not depend on n).

A goal missed is printed with the amount by which it is missed. ``--profile N`` profiles
``validate(force=True)`` and ``write_report(force=True)`` at N patients (cProfile; the ``--top`` costliest
functions by cumulative time). Writes ``reports/bench/run_scale.json``.

    python bench/run_scale.py [--sizes 10000 100000] [--million] [--r-size 200000] [--six] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cputime import cpu_seconds  # noqa: E402
from rscript import reference as r_reference  # noqa: E402

from analytics import stages  # noqa: E402
from pipeline import store  # noqa: E402
from pipeline.config import StudyConfig, ValidationSettings, load_config  # noqa: E402

STAGES = ("ingest", "cohort", "fit", "validate", "report")

VARIABLES = """[variables]
sex = { levels = ["F", "M"] }
stage = { levels = ["I", "II", "III", "IV"] }
age = { type = "numeric", unit = "years" }
marker = { type = "numeric" }
bmi = { type = "numeric" }
"""

SCALE_MODELS = """[[models]]
name = "logit_ml"
kind = "logistic"
clinical = ["age", "marker", "bmi", "sex", "stage"]
params = { penalty = "none" }
[[models]]
name = "logit_tuned"
kind = "logistic"
clinical = ["age", "marker", "bmi", "sex", "stage"]
[[models]]
name = "xgb"
kind = "xgboost"
clinical = ["age", "marker", "bmi", "sex", "stage"]
"""

MODELS = """[[models]]
name = "logit_l2"
kind = "logistic"
clinical = ["age", "marker", "bmi", "sex", "stage"]
[[models]]
name = "logit_ml"
kind = "logistic"
clinical = ["age", "marker", "bmi", "sex", "stage"]
params = { penalty = "none" }
[[models]]
name = "svm"
kind = "svm"
clinical = ["age", "marker", "bmi", "sex", "stage"]
[[models]]
name = "xgb"
kind = "xgboost"
clinical = ["age", "marker", "bmi", "sex", "stage"]
[[models]]
name = "cox"
kind = "cox"
clinical = ["age", "marker", "bmi", "sex", "stage"]
[[models]]
name = "vote"
kind = "voting"
members = ["logit_l2", "svm", "xgb"]
"""

ADDED = """[[models]]
name = "logit_small"
kind = "logistic"
clinical = ["age", "marker"]
params = { penalty = "none" }
[[models]]
name = "xgb_small"
kind = "xgboost"
clinical = ["age", "marker", "stage"]
"""

SETTINGS = """[validation]
horizons = [2.0]
[explain]
enabled = false
"""


def patients(n: int, seed: int = 11) -> pl.DataFrame:
    """``n`` synthetic patients: centre, five predictors, a logistic label and exponential follow-up."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    marker = rng.normal(0, 1, n)
    bmi = rng.normal(26, 4, n)
    sex = rng.choice(["F", "M"], n)
    stage = rng.choice(["I", "II", "III", "IV"], n, p=[0.4, 0.3, 0.2, 0.1])
    stage_effect = np.select([stage == "II", stage == "III", stage == "IV"], [0.4, 0.8, 1.3], 0.0)
    lp = -1.2 + 0.03 * (age - 60) + 0.8 * marker - 0.02 * (bmi - 26) + 0.2 * (sex == "M") + stage_effect
    label = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    event_time = rng.exponential(1 / (0.25 * np.exp(0.7 * lp)))
    censor = rng.uniform(0.5, 6.0, n)
    return pl.DataFrame({
        "patient_id": [f"P{i:06d}" for i in range(n)],
        "center": np.where(rng.random(n) < 0.7, "A", "B"),
        "label": label, "time": np.round(np.minimum(event_time, censor), 4),
        "event": (event_time <= censor).astype(int),
        "age": np.round(age, 1), "marker": np.round(marker, 3), "bmi": np.round(bmi, 1), "sex": sex, "stage": stage,
    })


def study_text(models: str) -> str:
    head = ["[study]", 'name = "scale"', "seed = 3", "[manifests]", 'patients = "patients.csv"', VARIABLES,
            "[cohort]", 'name = "all"', "[split]", 'external_centers = ["B"]', "internal_fraction = 0.25", "seed = 1"]
    # internal = "none" (the default) is written where the key exists, so the bench also runs on older commits
    internal = 'internal = "none"\n' if "internal" in ValidationSettings.model_fields else ""
    return "\n".join(head) + "\n" + models + SETTINGS.replace("[validation]\n", "[validation]\n" + internal)


def write_study(root: Path, n: int, models: str = MODELS) -> StudyConfig:
    patients(n).write_csv(root / "patients.csv")
    (root / "cohorts").mkdir(exist_ok=True)
    (root / "cohorts" / "all.sql").write_text(
        "SELECT p.patient_id, p.center, c.label, c.time, c.event, c.age, c.marker, c.bmi, c.sex, c.stage "
        "FROM patients p JOIN clinical c USING (patient_id)", encoding="utf-8")
    (root / "study.toml").write_text(study_text(models), encoding="utf-8")
    return load_config(root / "study.toml")


def _cpu() -> float:
    """CPU seconds of this process and its workers (:func:`cputime.cpu_seconds`)."""
    return cpu_seconds()


_HWM = re.compile(r"^VmHWM:\s+(\d+) kB", re.M)


def _reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux ``clear_refs``); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_gb() -> float:
    """This process's resident high-water mark in GB (since the last :func:`_reset_peak`, else since it began)."""
    try:
        found = _HWM.search(Path("/proc/self/status").read_text())
        if found:
            return int(found.group(1)) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed_run(study: StudyConfig) -> dict[str, Any]:
    """The stages of ``cohortlab run`` (:func:`analytics.stages.for_run`, as :func:`analytics.run.run` runs them),
    each timed: wall seconds; CPU seconds under ``cpu``; peak resident GB under ``memory``."""
    out: dict[str, Any] = {"cpu": {}, "memory": {}, "skipped": []}
    t0 = time.perf_counter()
    with store.verified_once():
        for stage in stages.for_run(study):
            reset = _reset_peak()
            w, c = time.perf_counter(), _cpu()
            result = stage.run(study, progress=False)
            out[stage.name] = round(time.perf_counter() - w, 2)
            out["cpu"][stage.name] = round(_cpu() - c, 2)
            out["memory"][stage.name] = round(_peak_gb(), 3) if reset else None
            if getattr(result, "skipped", False) is True:
                out["skipped"].append(stage.name)
    out["total"] = round(time.perf_counter() - t0, 2)
    out["load"] = round(os.getloadavg()[0], 1)
    return out


def profile(study: StudyConfig, top: int) -> dict[str, str]:
    """cProfile of validate and report (each forced), the ``top`` functions by cumulative time."""
    from analytics.report import write_report
    from analytics.validation.stage import validate

    out = {}
    for name, call in (("validate", lambda: validate(study, force=True, progress=False)),
                       ("report", lambda: write_report(study, force=True, progress=False))):
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        call()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
        out[name] = f"{name}: {time.perf_counter() - t0:.2f} s (under cProfile)\n" + buf.getvalue()
    return out


def _show(row: dict[str, Any]) -> None:
    """One line of wall seconds per stage, one of CPU seconds (with the 1-minute load average) and one of peak GB."""
    print(f"{row['patients']:>9} {row['round']:<7}" + "".join(f"{row.get(s, float('nan')):>10.2f}" for s in STAGES)
          + f"{row['total']:>10.2f}", flush=True)
    print(f"{'':>9} {'cpu':<7}" + "".join(f"{row['cpu'].get(s, float('nan')):>10.2f}" for s in STAGES)
          + f"{sum(row['cpu'].values()):>10.2f}   load {row['load']}", flush=True)
    mem = row.get("memory", {})
    peaks = [m for m in mem.values() if m is not None]
    print(f"{'':>9} {'GB':<7}" + "".join(f"{_num(mem.get(s)):>10}" for s in STAGES)
          + f"{_num(max(peaks) if peaks else None):>10}", flush=True)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def slopes(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each stage's log-log slope of wall seconds over patients (least squares over the first rounds' sizes)."""
    first = [r for r in rows if r["round"] == "first"]
    out: dict[str, float | None] = {}
    for stage in [*STAGES, "total"]:
        pts = [(r["patients"], r[stage]) for r in first if r.get(stage) and r[stage] > 0]
        if len({n for n, _ in pts}) < 2:
            out[stage] = None
            continue
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        out[stage] = round(float(np.polyfit(x, y, 1)[0]), 3)
    return out


def reference(n: int, n_boot: int = 2000) -> dict[str, Any] | None:
    """``bench/run_scale_reference.R`` on the patients of an ``n``-patient study (its wall time, startup
    included, under ``wall``), or None without ``Rscript``."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory(prefix=f"run_scale_r_{n}_") as tmp:
        csv = Path(tmp) / "patients.csv"
        patients(n).write_csv(csv)
        t0 = time.perf_counter()
        out = r_reference("run_scale_reference.R", csv, n_boot)
        wall = time.perf_counter() - t0
    if out is not None:
        out["wall"] = round(wall, 2)
    return out


def goals(rows: list[dict[str, Any]], slope: dict[str, float | None], r: dict[str, Any] | None,
          r_size: int) -> list[str]:
    """Each goal of the registry-scale issue, met or missed (and by how much), for what was measured."""
    out = []
    first = {row["patients"]: row for row in rows if row["round"] == "first"}
    million = first.get(1_000_000)
    if million is not None:
        peak = max((m for m in million["memory"].values() if m is not None), default=None)
        t = million["total"]
        out.append(f"1M end to end {t:.0f} s: " + ("met (<= 1200 s)" if t <= 1200 else
                                                   f"MISSED by {t - 1200:.0f} s ({t / 1200:.2f}x the 1200 s goal)"))
        if peak is not None:
            out.append(f"1M peak memory {peak:.2f} GB: " + ("met (<= 8 GB)" if peak <= 8 else
                                                          f"MISSED by {peak - 8:.2f} GB"))
    else:
        out.append("1M: not measured (--million)")
    for stage, value in slope.items():
        if value is not None:
            out.append(f"slope of {stage} {value:.2f}: " + ("met (<= 1.1)" if value <= 1.1 else
                                                             f"MISSED by {value - 1.1:.2f}"))
    at = first.get(r_size)
    if r is not None and at is not None:
        ratio = at["total"] / r["wall"]
        out.append(f"{r_size} patients: run {at['total']:.0f} s, R script {r['wall']:.0f} s (ratio {ratio:.2f}): "
                   + ("met (<= 2x)" if ratio <= 2 else f"MISSED by {ratio - 2:.2f}x ({at['total'] - 2 * r['wall']:.0f} s)"))
    elif not r_size:
        out.append("ratio to R: not asked (--r-size 0)")
    elif r is None:
        out.append(f"ratio to R at {r_size}: not measured (no Rscript, or the reference failed)")
    else:
        out.append(f"ratio to R at {r_size}: the run was not measured at {r_size} patients (--sizes)")
    for n, row in sorted(first.items()):
        rep = row.get("report")
        if rep is not None:
            out.append(f"report at {n}: {rep:.2f} s: " + ("met (<= 5 s)" if rep <= 5 else f"MISSED by {rep - 5:.2f} s"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="patients per run (default 10000 100000; with --six 1000 4000 10000)")
    ap.add_argument("--million", action="store_true", help="add a run of 1,000,000 patients")
    ap.add_argument("--six", action="store_true", help="the six models of the incremental-report goal, with the "
                                                       "rerun and add-two-models rounds")
    ap.add_argument("--r-size", type=int, default=200_000, help="patients of the comparison with R (0: none)")
    ap.add_argument("--profile", type=int, default=None, help="profile validate and report at this size")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-add", action="store_true", help="skip the rerun and add-two-models rounds (--six)")
    ap.add_argument("--keep", type=Path, default=None, help="keep each study in a folder below this one")
    args = ap.parse_args()
    sizes = args.sizes or ([1000, 4000, 10000] if args.six else [10_000, 100_000])
    if args.million:
        sizes = sorted(set(sizes) | {1_000_000})
    if args.r_size and args.r_size not in sizes and not args.six and shutil.which("Rscript"):
        sizes = sorted(set(sizes) | {args.r_size})
    models = MODELS if args.six else SCALE_MODELS
    print(f"cores: {os.cpu_count()}  python {platform.python_version()}  sizes: {sizes}  "
          f"models: {'six' if args.six else 'logistic (ML), logistic (tuned), xgboost'}", flush=True)
    rows: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}
    header = f"{'patients':>9} {'round':<7}" + "".join(f"{s:>10}" for s in STAGES) + f"{'total':>10}"
    print(header, flush=True)
    for n in sorted(set(sizes) | ({args.profile} if args.profile else set())):
        with tempfile.TemporaryDirectory(prefix=f"run_scale_{n}_", dir=args.keep) as tmp:
            root = Path(tmp)
            if args.keep is not None:  # a folder that outlives the run (the temporary one is left empty)
                root = args.keep / f"study_{n}"
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
            study = write_study(root, n, models)
            row = {"patients": n, "round": "first", **timed_run(study)}
            rows.append(row)
            _show(row)
            if n == args.profile:
                profiles = profile(study, args.top)
            if args.six and not args.no_add and n in sizes:
                for label, text in (("rerun", MODELS), ("add 2", MODELS + ADDED)):
                    (root / "study.toml").write_text(study_text(text), encoding="utf-8")
                    row = {"patients": n, "round": label, **timed_run(load_config(root / "study.toml"))}
                    rows.append(row)
                    _show(row)
    slope = slopes(rows)
    print("\nlog-log slope of wall time over patients: "
          + "  ".join(f"{k} {'–' if v is None else f'{v:.2f}'}" for k, v in slope.items()), flush=True)
    r = reference(args.r_size) if args.r_size and not args.six else None
    if r is not None:
        print(f"R reference at {args.r_size}: {r['wall']:.1f} s wall ({r['total']:.1f} s in the script; steps "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["steps"].items()) + ")", flush=True)
    met = goals(rows, slope, r, args.r_size) if not args.six else []
    for line in met:
        print("goal: " + line, flush=True)
    for text in profiles.values():
        print("\n" + text)
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_scale.json").write_text(json.dumps({"cores": os.cpu_count(), "rows": rows, "slopes": slope,
                                                    "r_reference": r, "goals": met, "profiles": profiles},
                                                   indent=1))
    print(f"written: {out / 'run_scale.json'}")


if __name__ == "__main__":
    main()
