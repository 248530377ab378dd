"""Benchmark: seconds of ``cohortlab report`` for a study of 6 models and 4,000 patients (issue 24, item 7).

The study is :mod:`bench.run_scale`'s ``--six`` one (a clinical-only two-centre study: tuned and
maximum-likelihood logistic, SVM, XGBoost, Cox and a voting of three; ``n_boot`` 2,000; explain off),
fitted and validated once. Each round then runs, in a fresh Python process per code path, the report
three ways:

* ``cold``: no figure cache (``<study>/cache/figures`` removed), every figure drawn;
* ``warm``: the same report again (``--force``), figures from the cache;
* ``cli``: the command ``cohortlab report --force`` cold, Python's start and imports included.

Printed per code path: wall and CPU seconds (CPU: the process's user + system time, the worker processes
it waited for included), the median over ``--rounds``; code paths alternate within a round, so a load that
comes and goes on a shared machine weighs on each alike. ``--base PATH`` adds a checkout of an earlier
commit (``git worktree add /tmp/base HEAD``) as a second code path, run on its own copy of the study. The
goal (2 cores): ``cold`` under 5 s.

    python bench/report_speed.py [--patients 4000] [--rounds 3] [--base /tmp/base] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cputime import cpu_seconds  # noqa: E402

GOAL_S = 5.0

# run in a fresh interpreter with the code path first on sys.path: one cold and one warm render, timed
# inside the process (imports excluded), printed as one JSON line
PROBE = """
import json, resource, shutil, sys, time
from pathlib import Path
def cpu():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
w0, c0 = time.perf_counter(), cpu()
from pipeline.config import load_config
from analytics.report import write_report
out = {"imports": [time.perf_counter() - w0, cpu() - c0]}
study = load_config(Path(sys.argv[1]) / "study.toml")
for label in ("cold", "warm"):
    if label == "cold":
        shutil.rmtree(study.root / "cache" / "figures", ignore_errors=True)
    w, c = time.perf_counter(), cpu()
    write_report(study, force=True, progress=False)
    out[label] = [time.perf_counter() - w, cpu() - c]
print(json.dumps(out))
"""


def build(folder: Path, n: int) -> Path:
    """The six-model study of ``n`` patients in ``folder``, fitted and validated (every stage but the report)."""
    import run_scale

    from analytics import stages
    from pipeline import store

    study = run_scale.write_study(folder, n, run_scale.MODELS)
    with store.verified_once():
        for stage in stages.for_run(study):
            if stage.name != "report":
                stage.run(study, progress=False)
    return folder


def _env(code: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    return env


def probe(code: Path, study: Path) -> dict[str, list[float]]:
    """Cold and warm in-process seconds (wall, CPU) of the report of ``study`` with the code at ``code``."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(study)], capture_output=True, text=True,
                          env=_env(code), cwd=code, check=False)
    if done.returncode != 0:
        raise SystemExit(f"report with the code at {code} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli(code: Path, study: Path) -> list[float]:
    """Wall and CPU seconds of ``cohortlab report --force`` cold (interpreter start and imports included)."""
    shutil.rmtree(study / "cache" / "figures", ignore_errors=True)
    w, c = time.perf_counter(), cpu_seconds()
    done = subprocess.run([sys.executable, "-m", "analytics.cli", "report", str(study / "study.toml"), "--force"],
                          capture_output=True, text=True, env=_env(code), cwd=code, check=False)
    if done.returncode != 0:
        raise SystemExit(f"cohortlab report with the code at {code} failed:\n{done.stderr[-2000:]}")
    return [time.perf_counter() - w, cpu_seconds() - c]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", type=Path, default=None, help="a checkout of an earlier commit to compare with")
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the study in this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="report_speed_") as tmp:
        folder = args.keep or Path(tmp) / "study"
        if not (folder / "reports").is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            build(folder, args.patients)
            print(f"study of 6 models and {args.patients} patients fitted and validated in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        paths = {"current": (ROOT, folder)}
        if args.base is not None:
            copy = Path(tmp) / "study_base"
            shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("index.html"))
            paths["base"] = (args.base.resolve(), copy)
        rows: dict[str, dict[str, list[list[float]]]] = {p: {} for p in paths}
        for r in range(args.rounds):
            for name, (code, study) in paths.items():
                got: dict[str, Any] = probe(code, study)
                got["cli"] = cli(code, study)
                for k, v in got.items():
                    rows[name].setdefault(k, []).append(v)
                print(f"round {r + 1} {name:8}" + "".join(f"  {k} {v[0]:.2f} s ({v[1]:.2f} cpu)" for k, v in got.items())
                      + f"  load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"\nmedian of {args.rounds} rounds, {os.cpu_count()} cores; wall s (cpu s)")
        print(f"{'code':10}" + "".join(f"{k:>18}" for k in ("imports", "cold", "warm", "cli")))
        summary = {}
        for name, got in rows.items():
            med = {k: [statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)] for k, v in got.items()}
            summary[name] = med
            print(f"{name:10}" + "".join(f"{med[k][0]:>9.2f} ({med[k][1]:>5.2f})" for k in ("imports", "cold", "warm", "cli")))
        cold = summary["current"]["cold"][0]
        print(f"goal: cold report {cold:.2f} s: " + ("met (< 5 s)" if cold < GOAL_S else f"MISSED by {cold - GOAL_S:.2f} s"))
        out = ROOT / "reports" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "report_speed.json").write_text(json.dumps({"cores": os.cpu_count(), "patients": args.patients,
                                                           "rounds": rows, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
