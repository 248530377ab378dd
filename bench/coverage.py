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
More null replications:        nice -n 19 python bench/coverage.py --null-only --first-rep 200 --reps 1000 \
                                   --out reports/bench/coverage_null.csv
Pooled with the first 200:     python bench/coverage.py --summarise reports/bench/coverage.jsonl \
                                   reports/bench/coverage_null.jsonl

Missing-data scenario (issue 27, item 7; ``--missing``): a known logistic model
``logit P(y) = -1 + 0.7 x1 + 0.5 x2 - 0.5 x3`` (x1, x2 standard normal with correlation 0.5, x3 Bernoulli 0.4)
on n = 500 patients; 30% of x1 is deleted at random given the outcome and x2
(``logit P(x1 missing) = c + y + x2``, c set for 30%), i.e. MAR, under which complete-case and single imputation
are biased.  Each simulation fits the glm five ways: on the full data before deletion (the reference), on the
complete cases, after single (median) imputation of x1, and after multiple imputation by chained equations
(``analytics.impute``, the outcome in the imputation model, m = 20, maxit = 10), once with predictive mean matching
(mice's default, 5 donors) and once with Bayesian linear regression (mice's ``norm``) from the same seed, pooled by
Rubin's rules (``analytics.stats.rubin.pool``, Barnard-Rubin df with dfcom = n - p).  Intervals are Wald for one
data set and Rubin's t for the pooled fit.  Prints each coefficient's bias, its empirical and mean model SE and
its 95% CI coverage, each with its Monte-Carlo SE (Morris, White & Crowther, Stat Med 2019;38:2074-2102); writes
reports/bench/coverage_missing.csv (and .jsonl).  Goal for MI: 93.6-96.4% (95% within 2 Monte-Carlo SEs).

    python bench/coverage.py --missing               (1,000 simulations)
    python bench/coverage.py --missing --quick       (100 simulations)

Measured (1,000 simulations): multiple imputation is unbiased and covers 94-96% with ``norm``; with ``pmm`` it
covers x1 and x2 about 92%, its empirical SE 10% above the pooled SE, as R mice's own ``pmm`` does in the same
design (``bench/coverage_missing_reference.R``, mice 3.15, 300 simulations: 92.3% and 90.3% with ``pmm``, 95% and
96% with ``norm``): predictive mean matching with 5 donors draws too few distinct values where the missing x1
concentrate and observed donors are sparse (Morris, White & Royston, BMC Med Res Methodol 2014;14:75).  Complete case biases the intercept and x2; single
imputation biases x1 and x2 (coverage about 50%).
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

from analytics.impute import Settings as ImputeSettings  # noqa: E402
from analytics.impute import impute  # noqa: E402
from analytics.stats.calibrate import logistic_fit  # noqa: E402
from analytics.stats.internal import bootstrap_indices, optimism, replicates_from  # noqa: E402
from analytics.stats.nested_cv import nested_cv, nested_cv_plan  # noqa: E402
from analytics.stats.roc import auc, auc_ci  # noqa: E402
from analytics.stats.rubin import dfcom_glm, pool  # noqa: E402
from analytics.stats.updating import glm_logistic  # noqa: E402

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
                share = float(np.mean((lo > 0.5) | (hi < 0.5)))
                line[f"{key}_excl0.5%"] = round(100 * share, 1)
                # Monte-Carlo SE of a proportion (Morris, White & Crowther 2019): is a miss noise or bias?
                line[f"{key}_excl_mcse%"] = round(100 * float(np.sqrt(share * (1 - share) / max(d.height, 1))), 1)
        lines.append(line)
    return pl.DataFrame(lines)


# ------------------------------------------------------------------ missing-data scenario (issue 27, item 7)
MISSING_TERMS = ("(Intercept)", "x1", "x2", "x3")
MISSING_BETA = np.array([-1.0, 0.7, 0.5, -0.5])
MISSING_RHO = 0.5  # corr(x1, x2): x2 carries information about the missing x1
MISSING_SHARE = 0.3
MISSING_ON = np.array([1.0, 1.0])  # log-odds of x1 missing per unit of y and of x2 (MAR)
MISSING_METHODS = ("full", "cc", "single", "mi", "mi_norm")
MISSING_LABELS = {"full": "full data (before deletion)", "cc": "complete case", "single": "single (median)",
                  "mi": "multiple imputation (pmm)", "mi_norm": "multiple imputation (norm)"}
# x1's imputation method of each multiple-imputation analysis: mice's default (predictive mean matching, 5 donors)
# and Bayesian linear regression (mice's "norm"), from the same seed
MI_METHODS = {"mi": "pmm", "mi_norm": "norm"}


def missing_draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Design (intercept, x1, x2, x3) and outcome of ``n`` patients from the known logistic model."""
    x1 = rng.normal(size=n)
    x2 = MISSING_RHO * x1 + np.sqrt(1 - MISSING_RHO**2) * rng.normal(size=n)
    x3 = rng.binomial(1, 0.4, size=n).astype(np.float64)
    X = np.column_stack([np.ones(n), x1, x2, x3])
    return X, rng.binomial(1, special.expit(X @ MISSING_BETA))


def missing_intercept(share: float = MISSING_SHARE) -> float:
    """Intercept ``c`` of ``logit P(x1 missing) = c + y + x2`` giving ``share`` missing, by bisection on a fixed
    large sample."""
    X, y = missing_draw(np.random.default_rng(54321), 200_000)
    lin = MISSING_ON[0] * y + MISSING_ON[1] * X[:, 2]
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if special.expit(mid + lin).mean() < share else (lo, mid)
    return (lo + hi) / 2


def _wald(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """glm estimates and standard errors (a ValueError on separation)."""
    g = glm_logistic(X, y.astype(np.float64))
    return np.asarray(g.coef), np.asarray(g.se)


def missing_one(rep: int, n: int, m: int, maxit: int, c: float, level: float = LEVEL) -> dict:
    """One simulation: the five analyses' estimates and intervals of each coefficient, flat in one dict
    (``<analysis>_<term>_{est,se,low,high}``, and ``_fmi`` for multiple imputation)."""
    rng = np.random.default_rng([27, rep])
    X, y = missing_draw(rng, n)
    miss = rng.random(n) < special.expit(c + MISSING_ON[0] * y + MISSING_ON[1] * X[:, 2])
    out: dict = {"rep": rep, "missing": float(miss.mean())}
    z = float(stats.norm.ppf(0.5 + level / 2))
    try:
        fits = {"full": _wald(X, y), "cc": _wald(X[~miss], y[~miss])}
        Xs = X.copy()
        Xs[miss, 1] = np.median(X[~miss, 1])  # today's in-pipeline median fill, once
        fits["single"] = _wald(Xs, y)
        for key, (est, se) in fits.items():
            for j, term in enumerate(MISSING_TERMS):
                out.update({f"{key}_{term}_est": est[j], f"{key}_{term}_se": se[j],
                            f"{key}_{term}_low": est[j] - z * se[j], f"{key}_{term}_high": est[j] + z * se[j]})
        # chained equations with the outcome in the imputation model (Moons et al. 2006), then Rubin's rules
        frame = pl.DataFrame({"x1": np.where(miss, np.nan, X[:, 1]), "x2": X[:, 2], "x3": X[:, 3],
                              "y": y.astype(np.float64)})
        seed = int(rng.integers(2**31))
        for key, method in MI_METHODS.items():
            imp = impute(frame, ImputeSettings(m=m, maxit=maxit, seed=seed, methods={"x1": method}))
            est_m, var_m = [], []
            for i in range(1, m + 1):
                done = imp.complete(i)
                est, se = _wald(np.column_stack([np.ones(n), done["x1"].to_numpy(), X[:, 2], X[:, 3]]), y)
                est_m.append(est)
                var_m.append(se**2)
            pooled = pool(np.array(est_m), np.array(var_m), dfcom=dfcom_glm(n, X.shape[1]), names=MISSING_TERMS,
                          level=level)
            for j, term in enumerate(MISSING_TERMS):
                out.update({f"{key}_{term}_est": pooled.estimate[j], f"{key}_{term}_se": pooled.std_error[j],
                            f"{key}_{term}_low": pooled.conf_low[j], f"{key}_{term}_high": pooled.conf_high[j],
                            f"{key}_{term}_fmi": pooled.fmi[j]})
    except (FloatingPointError, ValueError, np.linalg.LinAlgError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}


def missing_summary(rows: list[dict]) -> pl.DataFrame:
    """Per analysis and coefficient: bias, empirical and mean model SE, coverage, width, with Monte-Carlo SEs.

    Performance measures and their Monte-Carlo SEs as Morris, White & Crowther (Stat Med 2019;38:2074-2102),
    table 6: bias ``mean(est) - beta`` with MCSE ``sd(est) / sqrt(S)``; coverage ``p`` with MCSE
    ``sqrt(p (1 - p) / S)``.
    """
    ok = [r for r in rows if "error" not in r]
    s = len(ok)
    lines = []
    for key in MISSING_METHODS:
        for j, term in enumerate(MISSING_TERMS):
            est = np.array([r[f"{key}_{term}_est"] for r in ok])
            se = np.array([r[f"{key}_{term}_se"] for r in ok])
            lo = np.array([r[f"{key}_{term}_low"] for r in ok])
            hi = np.array([r[f"{key}_{term}_high"] for r in ok])
            truth = MISSING_BETA[j]
            cover = float(np.mean((lo <= truth) & (truth <= hi)))
            emp = float(est.std(ddof=1)) if s > 1 else float("nan")
            line = {"analysis": MISSING_LABELS[key], "term": term, "true": float(truth), "sims": s,
                    "bias": round(float(est.mean() - truth), 4), "bias_mcse": round(emp / np.sqrt(s), 4),
                    "emp_se": round(emp, 4), "model_se": round(float(se.mean()), 4),
                    "cover%": round(100 * cover, 1), "cover_mcse%": round(100 * np.sqrt(cover * (1 - cover) / s), 1),
                    "width": round(float(np.mean(hi - lo)), 3)}
            if key in MI_METHODS:
                line["fmi"] = round(float(np.mean([r[f"{key}_{term}_fmi"] for r in ok])), 3)
            lines.append(line)
    return pl.DataFrame(lines, infer_schema_length=None)


def missing_main(args: argparse.Namespace) -> None:
    """Run (or, with ``--summarise``, only summarise) the missing-data scenario and print its table."""
    out = args.out.with_name("coverage_missing.csv") if args.out.name == "coverage.csv" else args.out
    if args.summarise:
        rows = [json.loads(line) for line in args.summarise.read_text().splitlines() if line.strip()]
    else:
        sims = 100 if args.quick and args.sims is None else (args.sims or 1000)
        start = time.perf_counter()
        c = missing_intercept()
        rows = []
        out.parent.mkdir(parents=True, exist_ok=True)
        jobs = Parallel(n_jobs=min(args.jobs, 2), return_as="generator_unordered")(
            delayed(missing_one)(r, args.missing_n, args.m, args.maxit, c) for r in range(sims))
        with open(out.with_suffix(".jsonl"), "w") as raw:  # per simulation, as they finish
            for row in jobs:
                rows.append(row)
                raw.write(json.dumps(row) + "\n")
                raw.flush()
        rows.sort(key=lambda r: r["rep"])
    table = missing_summary(rows)
    failed = sum(1 for r in rows if "error" in r)
    with pl.Config(tbl_rows=100, tbl_cols=30, tbl_width_chars=250, tbl_hide_dataframe_shape=True):
        print(table)
    share = float(np.mean([r["missing"] for r in rows]))
    print(f"{table['sims'][0]} simulations ({failed} failed), n = {args.missing_n}, {100 * share:.1f}% of x1 missing")
    for key in MI_METHODS:
        mi = table.filter(pl.col("analysis") == MISSING_LABELS[key])
        inside = mi.filter(pl.col("cover%").is_between(93.6, 96.4))
        print(f"{MISSING_LABELS[key]}: coverage within 93.6-96.4% for {inside.height} of {mi.height} coefficients")
    if not args.summarise:
        table.write_csv(out)
        print(f"m = {args.m}, maxit = {args.maxit}, {min(args.jobs, 2)} workers: "
              f"{time.perf_counter() - start:.0f} s total; wrote {out}")


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
    ap.add_argument("--null-only", action="store_true", help="only the null settings (their exclusion of 0.5)")
    ap.add_argument("--first-rep", type=int, default=0,
                    help="number of the first replication (each is seeded by setting and number: a later run with "
                         "--first-rep 200 adds replications 200.. to a run of 200, and --summarise pools them)")
    ap.add_argument("--summarise", type=Path, nargs="+", help="only summarise a coverage.jsonl (e.g. of a run cut short)")
    ap.add_argument("--missing", action="store_true", help="the missing-data scenario (issue 27) instead")
    ap.add_argument("--sims", type=int, help="simulations of the missing-data scenario (default 1,000)")
    ap.add_argument("--quick", action="store_true", help="100 simulations of the missing-data scenario")
    ap.add_argument("--missing-n", type=int, default=500, help="patients per simulated cohort (missing data)")
    ap.add_argument("--m", type=int, default=20, help="imputations (missing data)")
    ap.add_argument("--maxit", type=int, default=10, help="iterations per chain (missing data)")
    args = ap.parse_args()
    if args.missing:
        missing_main(args)
        return
    if args.summarise:
        done = [json.loads(line) for path in args.summarise for line in path.read_text().splitlines() if line.strip()]
        seen = {(r["setting"], r["rep"]) for r in done}
        if len(seen) < len(done):
            sys.exit("--summarise: a replication appears twice (overlapping --first-rep ranges)")
        order = list(dict.fromkeys(s["name"] for s in settings(args.n, args.rates)))
        with pl.Config(tbl_rows=100, tbl_cols=30, tbl_width_chars=250):
            print(summarise(done, [o for o in order if any(r["setting"] == o for r in done)]))
        return
    start = time.perf_counter()
    grid = settings(args.n, args.rates)  # ids (seeds) from the whole grid, so a --null-only run pools with a full one
    if args.null_only:
        grid = [s for s in grid if s["null"]]
    rows = []
    jobs = Parallel(n_jobs=args.jobs, return_as="generator_unordered")(
        delayed(one)(s, r, args.B, args.fresh, args.ncv_k, args.ncv_repeats) for r in range(args.first_rep, args.first_rep + args.reps) for s in grid)  # settings interleaved
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
