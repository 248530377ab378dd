"""Benchmark: how the time of each stage of ``cohortlab run`` grows with the number of patients.

A clinical-only study (a patients manifest only: three numeric and two categorical variables, a binary label
drawn from a known logistic model, time and event from an exponential model with censoring; centre B is the
external split and a quarter of centre A the internal one) with six models (logistic with the default C grid,
logistic with ``penalty = "none"``, svm, xgboost, cox and a voting of three), ``[explain] enabled = false`` and
``[validation] internal = "none"``, is run end to end by :func:`analytics.run.run` for each ``--sizes`` (1k,
4k, 10k patients by default; 100k if asked). For each size it prints the seconds of each stage (ingest,
cohort, fit, validate, report), then:

* ``rerun``: the same run again (every stage should skip);
* ``add 2``: two models added to study.toml (fit fits those two; validate should validate only those two;
  the report is rendered again).

``--profile N`` profiles ``validate(force=True)`` and ``write_report(force=True)`` at N patients (cProfile;
the 25 costliest functions by cumulative time). The targets of issue 24 item 7 are at 4,000 patients: report
under 5 s, the whole run under 30 s on 2 cores. Writes ``reports/bench/run_scale.json``.

    python bench/run_scale.py [--sizes 1000 4000 10000] [--profile 4000] [--no-add]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def write_study(root: Path, n: int) -> StudyConfig:
    patients(n).write_csv(root / "patients.csv")
    (root / "cohorts").mkdir(exist_ok=True)
    (root / "cohorts" / "all.sql").write_text(
        "SELECT p.patient_id, p.center, c.label, c.time, c.event, c.age, c.marker, c.bmi, c.sex, c.stage "
        "FROM patients p JOIN clinical c USING (patient_id)", encoding="utf-8")
    (root / "study.toml").write_text(study_text(MODELS), encoding="utf-8")
    return load_config(root / "study.toml")


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the machine may be shared: wall time varies)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_run(study: StudyConfig) -> dict[str, Any]:
    """The stages of ``cohortlab run`` (:func:`analytics.stages.for_run`, as :func:`analytics.run.run` runs them),
    each timed: wall seconds, and CPU seconds under ``cpu``."""
    out: dict[str, Any] = {"cpu": {}, "skipped": []}
    t0 = time.perf_counter()
    with store.verified_once():
        for stage in stages.for_run(study):
            w, c = time.perf_counter(), _cpu()
            result = stage.run(study, progress=False)
            out[stage.name] = round(time.perf_counter() - w, 2)
            out["cpu"][stage.name] = round(_cpu() - c, 2)
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
    """One line of wall seconds per stage, and one of CPU seconds (with the 1-minute load average)."""
    print(f"{row['patients']:>9} {row['round']:<7}" + "".join(f"{row.get(s, float('nan')):>10.2f}" for s in STAGES)
          + f"{row['total']:>10.2f}", flush=True)
    print(f"{'':>9} {'cpu':<7}" + "".join(f"{row['cpu'].get(s, float('nan')):>10.2f}" for s in STAGES)
          + f"{sum(row['cpu'].values()):>10.2f}   load {row['load']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    ap.add_argument("--profile", type=int, default=None, help="profile validate and report at this size")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-add", action="store_true", help="skip the rerun and add-two-models rounds")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}  python {platform.python_version()}  sizes: {args.sizes}", flush=True)
    rows: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}
    header = f"{'patients':>9} {'round':<7}" + "".join(f"{s:>10}" for s in STAGES) + f"{'total':>10}"
    print(header, flush=True)
    for n in sorted(set(args.sizes) | ({args.profile} if args.profile else set())):
        with tempfile.TemporaryDirectory(prefix=f"run_scale_{n}_") as tmp:
            root = Path(tmp)
            study = write_study(root, n)
            rounds = [("first", study)]
            for label, st in rounds:
                row = {"patients": n, "round": label, **timed_run(st)}
                rows.append(row)
                _show(row)
            if n == args.profile:
                profiles = profile(study, args.top)
            if not args.no_add and n in args.sizes:
                for label, text in (("rerun", MODELS), ("add 2", MODELS + ADDED)):
                    (root / "study.toml").write_text(study_text(text), encoding="utf-8")
                    row = {"patients": n, "round": label, **timed_run(load_config(root / "study.toml"))}
                    rows.append(row)
                    _show(row)
    for text in profiles.values():
        print("\n" + text)
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_scale.json").write_text(json.dumps({"cores": os.cpu_count(), "rows": rows, "profiles": profiles},
                                                   indent=1))
    print(f"written: {out / 'run_scale.json'}")


if __name__ == "__main__":
    main()
