"""Benchmark: coverage of the training-split AUC intervals the report shows (issue 24, item 5).

A known logistic data-generating model (8 standard normal predictors, log-odds ratios 0.8, 0.5, 0.3 and
five zeros, the intercept set for the event rate; about AUC 0.76) and a null model (labels independent
of 20 noise predictors).  Each replication draws a development cohort of n patients and fits an
unpenalised logistic regression (the glm of ``rms::validate``'s tests); its truth is that fitted model's
AUC on 100,000 fresh patients.  Intervals, each at 95%:

- ``oof``: DeLong interval of 5-fold stratified out-of-fold scores on the n patients (what the
  report shows for the training split today); truth = the model fitted on all n;
- ``boot``: the optimism-corrected bootstrap AUC (B resamples) with the location-shifted
  bootstrap interval of Noma et al. 2021 (``analytics.stats.internal``); truth = the model on all n;
- ``cent`` (a variant, not Noma's): the same percentile interval re-centred on the corrected
  estimate (``q - mean(training) + corrected``);
- ``hold``: a stratified 70/30 split-sample; DeLong interval on the 30% hold-out of the model
  fitted on the 70%; truth = that 70% model.
- ``ncv``: nested cross-validation of Bates, Hastie & Tibshirani (JASA 2024), AUC as a mean of
  per-patient DeLong terms (``analytics.stats.nested_cv``; 5 folds, 20 repeats, 300 refits); its
  bias-corrected estimate -/+ z * its SE; truth = the model on all n;
- ``p632`` (a hybrid, diagnostic): the .632+ AUC of the bootstrap replicates -/+ z * the ``ncv`` SE;
- ``ncvB``: the nested cross-validation interval of the Brier score; truth = the Brier score of the
  model on all n on the fresh patients (no null column: its truth is not fixed).

Prints, per setting, the percentage of intervals covering the truth (target 93-97%), the mean width,
and under the null the percentage excluding 0.5 (target <= 6%); writes reports/bench/coverage.csv (and coverage.jsonl, one line per replication).

Run from the repository root:  python bench/coverage.py            (>= 200 replications per setting)
Smoke run:                     python bench/coverage.py --reps 10 --B 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from joblib import Parallel, delayed
from scipy import special, stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# joblib's worker processes import the project too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from analytics.stats.calibrate import logistic_fit  # noqa: E402
from analytics.stats.internal import bootstrap_indices, optimism, replicates_from  # noqa: E402
from analytics.stats.nested_cv import nested_cv, nested_cv_plan  # noqa: E402
from analytics.stats.roc import auc, auc_ci  # noqa: E402

BETA = np.array([0.8, 0.5, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
NULL_PREDICTORS = 20
FOLDS = 5
HOLDOUT = 0.3
LEVEL = 0.95
KEYS = ("oof", "boot", "cent", "hold", "ncv", "p632", "ncvB")


def intercept_for(rate: float, beta: np.ndarray) -> float:
    """Intercept giving the event rate, by bisection on a fixed large sample."""
    x = np.random.default_rng(12345).normal(size=(200_000, beta.size)) @ beta
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if special.expit(mid + x).mean() < rate else (lo, mid)
    return (lo + hi) / 2


def draw(rng: np.random.Generator, n: int, a: float, beta: np.ndarray, null: bool, rate: float):
    X = rng.normal(size=(n, beta.size))
    p = np.full(n, rate) if null else special.expit(a + X @ beta)
    y = rng.binomial(1, p)
    return np.column_stack([np.ones(n), X]), y


def fit(Xr: np.ndarray, yr: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        beta = logistic_fit(Xr, yr.astype(np.float64), tol=1e-10, max_iter=50)
    if not np.all(np.isfinite(beta)):
        raise FloatingPointError("logistic fit diverged (separation)")
    return lambda Z: special.expit(Z @ beta)


def stratified_folds(rng: np.random.Generator, y: np.ndarray, k: int) -> np.ndarray:
    fold = np.empty(y.size, dtype=np.int64)
    for cls in (0, 1):
        rows = np.flatnonzero(y == cls)
        fold[rng.permutation(rows)] = np.arange(rows.size) % k
    return fold


def one(setting: dict, rep: int, B: int, fresh: int, ncv_k: int = 5, ncv_repeats: int = 20) -> dict:
    rng = np.random.default_rng([setting["id"], rep])
    null, n, rate = setting["null"], setting["n"], setting["rate"]
    beta = np.zeros(NULL_PREDICTORS) if null else BETA
    a = setting["a"]
    while True:  # a cohort needs both classes in every fold
        X, y = draw(rng, n, a, beta, null, rate)
        if min(y.sum(), n - y.sum()) >= 2 * FOLDS:
            break
    Xf, yf = draw(rng, fresh, a, beta, null, rate)
    out = {"setting": setting["name"], "rep": rep}
    try:
        full = fit(X, y)
        pf = full(Xf)
        truth = 0.5 if null else auc(yf, pf)
        truth_brier = float(np.mean((yf - pf) ** 2))
        # training out-of-fold DeLong (the report's training-split interval)
        fold = stratified_folds(rng, y, FOLDS)
        oof = np.empty(n)
        for k in range(FOLDS):
            tr = fold != k
            oof[~tr] = fit(X[tr], y[tr])(X[~tr])
        ci = auc_ci(y, oof, method="delong", level=LEVEL)
        out.update(oof_low=ci.low, oof_high=ci.high, oof_est=ci.estimate, oof_truth=truth)
        # optimism-corrected bootstrap with the location-shifted interval
        reps = replicates_from(fit, X, y, list(bootstrap_indices(n, B, seed=int(rng.integers(2**31)))))
        res = optimism(y, full(X), reps)
        row = res.table["index"].to_list().index("AUC")
        iv = res.interval(LEVEL)
        out.update(boot_low=iv["low"][row], boot_high=iv["high"][row], boot_est=iv["corrected"][row],
                   boot_truth=truth, boot_failed=res.failed)
        # a variant (not Noma's): the same percentile interval re-centred on the corrected estimate
        train = res.training[:, row]
        lo, hi = np.quantile(train, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) - train.mean() + iv["corrected"][row]
        out.update(cent_low=lo, cent_high=hi, cent_truth=truth)
        # split-sample hold-out
        hold = np.zeros(n, dtype=bool)
        for cls in (0, 1):
            rows = rng.permutation(np.flatnonzero(y == cls))
            hold[rows[: int(round(HOLDOUT * rows.size))]] = True
        part = fit(X[~hold], y[~hold])
        ci = auc_ci(y[hold], part(X[hold]), method="delong", level=LEVEL)
        out.update(hold_low=ci.low, hold_high=ci.high, hold_est=ci.estimate,
                   hold_truth=0.5 if null else auc(yf, part(Xf)))
        # nested cross-validation (Bates, Hastie & Tibshirani 2024) of the AUC and the Brier score
        plan = nested_cv_plan(y, ncv_k, ncv_repeats, seed=int(rng.integers(2**31)))
        ncv = nested_cv(y, replicates_from(fit, X, y, plan.indices()), plan, LEVEL)
        a_row, b_row = ncv.row(0, named=True), ncv.row(1, named=True)
        out.update(ncv_low=a_row["low"], ncv_high=a_row["high"], ncv_est=a_row["estimate"], ncv_truth=truth,
                   ncv_se=a_row["se"], ncv_se_naive=a_row["se_naive"], ncv_cv=a_row["cv"],
                   ncvB_low=b_row["low"], ncvB_high=b_row["high"], ncvB_est=b_row["estimate"], ncvB_se=b_row["se"],
                   ncvB_se_naive=b_row["se_naive"],
                   ncvB_truth=truth_brier)
        # a hybrid (diagnostic): the .632+ AUC of the same bootstrap replicates -/+ z * the nested-CV SE
        p632 = optimism(y, full(X), reps, method=".632+").table
        est632 = float(p632["corrected"][row])
        z = float(stats.norm.ppf(0.5 + LEVEL / 2))
        out.update(p632_low=est632 - z * a_row["se"], p632_high=est632 + z * a_row["se"], p632_est=est632,
                   p632_truth=truth)
    except (FloatingPointError, ValueError, np.linalg.LinAlgError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def settings(ns: list[int], rates: list[float]) -> list[dict]:
    out = []
    for n in ns:
        for rate in rates:
            out.append({"name": f"n={n} rate={rate}", "n": n, "rate": rate, "null": False,
                        "a": intercept_for(rate, BETA)})
        out.append({"name": f"null n={n} rate=0.3", "n": n, "rate": 0.3, "null": True, "a": 0.0})
    for i, s in enumerate(out):
        s["id"] = i
    return out


def summarise(rows: list[dict], order: list[str]) -> pl.DataFrame:
    df = pl.DataFrame([r for r in rows if "error" not in r])
    lines = []
    for name in order:
        d = df.filter(pl.col("setting") == name)
        null = name.startswith("null")
        line: dict = {"setting": name, "reps": d.height,
                      "failed": sum(1 for r in rows if r["setting"] == name and "error" in r)}
        for key in KEYS:
            lo, hi, tr = d[f"{key}_low"].to_numpy(), d[f"{key}_high"].to_numpy(), d[f"{key}_truth"].to_numpy()
            line[f"{key}_cover%"] = round(100 * float(np.mean((lo <= tr) & (tr <= hi))), 1)
            line[f"{key}_width"] = round(float(np.mean(hi - lo)), 3)
            if null and key != "ncvB":
                line[f"{key}_excl0.5%"] = round(100 * float(np.mean((lo > 0.5) | (hi < 0.5))), 1)
        lines.append(line)
    return pl.DataFrame(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--B", type=int, default=200)
    ap.add_argument("--n", type=int, nargs="+", default=[200, 500, 1000])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    ap.add_argument("--ncv-k", type=int, default=5, help="folds of the nested cross-validation")
    ap.add_argument("--ncv-repeats", type=int, default=20, help="repeats of the nested cross-validation")
    ap.add_argument("--fresh", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "coverage.csv")
    ap.add_argument("--summarise", type=Path, help="only summarise a coverage.jsonl (e.g. of a run cut short)")
    args = ap.parse_args()
    if args.summarise:
        done = [json.loads(line) for line in args.summarise.read_text().splitlines() if line.strip()]
        order = list(dict.fromkeys(s["name"] for s in settings(args.n, args.rates)))
        with pl.Config(tbl_rows=100, tbl_cols=30, tbl_width_chars=250):
            print(summarise(done, [o for o in order if any(r["setting"] == o for r in done)]))
        return
    start = time.perf_counter()
    grid = settings(args.n, args.rates)
    rows = []
    jobs = Parallel(n_jobs=args.jobs, return_as="generator_unordered")(
        delayed(one)(s, r, args.B, args.fresh, args.ncv_k, args.ncv_repeats) for r in range(args.reps) for s in grid)  # settings interleaved
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".jsonl"), "w") as raw:  # per replication, as they finish
        for row in jobs:
            rows.append(row)
            raw.write(json.dumps(row) + "\n")
            raw.flush()
    rows.sort(key=lambda r: (r["setting"], r["rep"]))
    table = summarise(rows, [s["name"] for s in grid])
    with pl.Config(tbl_rows=100, tbl_cols=30, tbl_width_chars=250):
        print(table)
    table.write_csv(args.out)
    print(f"{args.reps} replications per setting, B = {args.B}, {args.fresh:,} fresh patients per truth, "
          f"{args.jobs} workers: {time.perf_counter() - start:.0f} s total; wrote {args.out}")


if __name__ == "__main__":
    main()
