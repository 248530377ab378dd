"""Benchmark: vectorised stratified bootstrap AUC CI and fast DeLong.

Compares ``stats.auc_ci(method="bootstrap")`` (B = 2000) with a Python loop
over ``sklearn.metrics.roc_auc_score`` on the same resamples, and times the
DeLong interval at n = 100,000.  Prints a table and writes
``reports/bench/stats.json``.

Run from the repository root:  python bench/stats.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sklearn.metrics import roc_auc_score  # noqa: E402

from analytics import stats  # noqa: E402
from analytics.stats.bootstrap import bootstrap_indices  # noqa: E402

B = 2000
SEED = 0
TARGET_RATIO = 50.0
TARGET_DELONG_MS = 50.0


def data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.round(rng.normal(size=n) + 1.2 * y, 3)  # some ties
    return y, score


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def loop_bootstrap(y: np.ndarray, s: np.ndarray, n_boot: int) -> tuple[float, np.ndarray]:
    """The same stratified resamples, one roc_auc_score call per replicate."""
    idx_all = np.vstack(list(bootstrap_indices(y, n_boot, SEED)))
    t0 = time.perf_counter()
    reps = np.array([roc_auc_score(y[row], s[row]) for row in idx_all])
    return time.perf_counter() - t0, reps


def bench_bootstrap(n: int, loop_b: int) -> dict:
    y, s = data(n)
    stats.auc_ci(y, s, method="bootstrap", n_boot=50)  # warm-up
    t_vec, ci = best_of(lambda: stats.auc_ci(y, s, method="bootstrap", n_boot=B, seed=SEED), 3)
    t_loop, reps = loop_bootstrap(y, s, loop_b)
    t_loop_full = t_loop * B / loop_b
    row = {
        "n": n,
        "n_boot": B,
        "vectorised_s": t_vec,
        "loop_replicates_run": loop_b,
        "loop_s_measured": t_loop,
        "loop_s_for_B": t_loop_full,
        "loop_extrapolated": loop_b < B,
        "speedup": t_loop_full / t_vec,
        "ci": ci.as_dict(),
    }
    if loop_b == B:
        lo, hi = np.quantile(reps, [0.025, 0.975])
        row["max_abs_diff_vs_loop_ci"] = float(max(abs(lo - ci.low), abs(hi - ci.high)))
    return row


def bench_delong(n: int = 100_000, repeat: int = 15) -> dict:
    y, s = data(n, seed=2)
    stats.auc_ci(y, s)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ci = stats.auc_ci(y, s, method="delong")
        times.append(time.perf_counter() - t0)
    return {"n": n, "best_ms": 1e3 * min(times), "median_ms": 1e3 * statistics.median(times),
            "repeats": repeat, "ci": ci.as_dict()}


def main() -> None:
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [bench_bootstrap(1_000, B), bench_bootstrap(10_000, 200)]
    dl = bench_delong()
    print("Stratified bootstrap AUC CI, B = 2000 (best of 3) vs loop over sklearn roc_auc_score")
    print(f"{'n':>7} {'vectorised':>12} {'sklearn loop':>14} {'speed-up':>9}  note")
    for r in rows:
        factor = B // r["loop_replicates_run"]
        note = (f"loop run on {r['loop_replicates_run']} replicates "
                f"({r['loop_s_measured']:.2f} s), extrapolated x{factor} to B={B}"
                if r["loop_extrapolated"] else
                f"loop run on all {B}; CI bounds differ by {r['max_abs_diff_vs_loop_ci']:.1e}")
        print(f"{r['n']:>7} {r['vectorised_s'] * 1e3:>10.1f} ms {r['loop_s_for_B']:>12.2f} s "
              f"{r['speedup']:>8.0f}x  {note}")
    print(f"  AUC CI at n=1,000:  {stats.Interval(**rows[0]['ci'])}")
    print(f"DeLong CI at n = {dl['n']:,}: best {dl['best_ms']:.1f} ms, "
          f"median {dl['median_ms']:.1f} ms over {dl['repeats']} runs")
    ok_ratio = rows[0]["speedup"] >= TARGET_RATIO
    ok_delong = dl["best_ms"] < TARGET_DELONG_MS
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-min load average {load_before:.1f} before / {load_after:.1f} after on "
          f"{os.cpu_count()} CPUs (timings inflate when the machine is shared)")
    verdict = {True: "met", False: "NOT met"}
    print(f"targets: bootstrap >= {TARGET_RATIO:.0f}x at n=1,000: {verdict[ok_ratio]}; "
          f"DeLong < {TARGET_DELONG_MS:.0f} ms at n=100,000: {verdict[ok_delong]}")
    out = {
        "bootstrap": rows,
        "delong": dl,
        "targets": {"bootstrap_speedup_n1000": TARGET_RATIO, "delong_ms_n100000": TARGET_DELONG_MS,
                    "bootstrap_met": ok_ratio, "delong_met": ok_delong},
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "machine": platform.machine(), "processor": platform.processor(),
                        "cpus": os.cpu_count(), "load_average_before": load_before,
                        "load_average_after": load_after},
    }
    path = ROOT / "reports" / "bench" / "stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(path)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
