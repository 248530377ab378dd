"""Benchmark: cause-specific Cox and Fine–Gray fits and their validation at two horizons on 1,000 simulated
patients with two competing causes, against the same analysis in R (riskRegression CSC, FGR, Score).

Times, in this process with imports and the data's simulation excluded (best of 3):

* cohortlab: :func:`analytics.stats.cause_specific_cox` and :func:`analytics.stats.fine_gray` on three
  covariates, each model's cumulative incidence of cause 1 at the two horizons, then for both models
  AUC(t) (:func:`analytics.stats.time_auc`), Brier(t) with the null model and IPA
  (:func:`analytics.stats.competing_score.brier_ipa`) and the contrasts between them
  (:func:`analytics.stats.competing_contrast.time_contrasts`): what ``Score(list(csc, fgr), cause = 1,
  null.model = TRUE, summary = "ipa")`` computes;
* R: ``bench/competing_reference.R`` (CSC, FGR, predictRisk, Score), timed inside R the same way.

Prints the times, their ratio (goal: cohortlab not slower than R) and the largest differences from R in the
coefficients, risks, AUC(t) and Brier(t); writes ``reports/bench/competing.json``.

Run from the repository root:  python bench/competing.py
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rscript import reference  # noqa: E402

from analytics import stats  # noqa: E402
from analytics.stats.competing_contrast import time_contrasts  # noqa: E402
from analytics.stats.competing_score import brier_ipa  # noqa: E402

N, REPEAT, HORIZONS = 1000, 3, (2.0, 5.0)


def patients() -> pl.DataFrame:
    """Two independent exponential causes depending on the covariates, uniform censoring."""
    rng = np.random.default_rng(28)
    x1, x2, x3 = rng.normal(size=N).round(4), rng.binomial(1, 0.4, N), rng.normal(size=N).round(4)
    t1 = rng.exponential(1 / (0.08 * np.exp(0.6 * x1 + 0.4 * x2)))
    t2 = rng.exponential(1 / (0.05 * np.exp(-0.3 * x1 + 0.5 * x3)))
    cens = rng.uniform(1, 12, N)
    t = np.minimum.reduce([t1, t2, cens])
    status = np.select([t == t1, t == t2], [1, 2], 0)
    return pl.DataFrame({"time": t.round(4), "status": status, "x1": x1, "x2": x2, "x3": x3})


def analysis(d: pl.DataFrame) -> dict[str, Any]:
    """Both fits, their risks at the horizons, and Score's measures of both models (as the R script)."""
    x = d.select("x1", "x2", "x3").to_numpy()
    t, s = d["time"].to_numpy(), d["status"].to_numpy()
    csc = stats.cause_specific_cox(x, t, s)
    fgr = stats.fine_gray(x, t, s, cause=1)
    r_csc, r_fgr = csc.predict_risk(x, HORIZONS, cause=1), fgr.predict_risk(x, HORIZONS)
    auc = [stats.time_auc(t, s, r, HORIZONS, cause=1) for r in (r_csc, r_fgr)]
    br = [brier_ipa(t, s, r, HORIZONS, cause=1) for r in (r_csc, r_fgr)]
    time_contrasts(t, s, r_csc, r_fgr, HORIZONS, cause=1)
    return {"csc_coef": np.r_[csc.models[1].coef, csc.models[2].coef], "fgr_coef": fgr.coef,
            "auc": np.r_[auc[0].estimate, auc[1].estimate],
            # Score's order: the null model, then csc, then fgr, each at both horizons
            "brier": np.r_[br[0].null.estimate, br[0].brier.estimate, br[1].brier.estimate],
            "risk_csc": r_csc[:5], "risk_fgr": r_fgr[:5]}


def cohortlab_run(d: pl.DataFrame) -> tuple[float, dict[str, Any]]:
    best, result = float("inf"), {}
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        result = analysis(d)
        best = min(best, time.perf_counter() - t0)
    return best, result


def r_run(csv: Path) -> dict | None:
    return reference("competing_reference.R", csv, REPEAT)


def main() -> None:
    d = patients()
    seconds, ours = cohortlab_run(d)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "patients.csv"
        d.write_csv(csv)
        ref = r_run(csv)
    out: dict[str, Any] = {"patients": N, "horizons": list(HORIZONS), "cohortlab_s": seconds,
                           "events": {str(c): int((d["status"] == c).sum()) for c in (1, 2)},
                           "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    print(f"cohortlab CSC + Fine-Gray + validation at {len(HORIZONS)} horizons, {N} patients: {seconds:.3f} s "
          f"(best of {REPEAT})")
    if ref is not None:
        diffs = {k: float(np.max(np.abs(np.asarray(ours[k], dtype=float) - np.asarray(ref["result"][k], dtype=float))))
                 for k in ours}
        out.update(r_s=ref["seconds"], ratio=seconds / ref["seconds"], max_abs_difference=diffs,
                   versions=ref["versions"])
        print(f"R (CSC + FGR + predictRisk + Score): {ref['seconds']:.3f} s; cohortlab / R = {out['ratio']:.2f} "
              "(goal: at most 1)")
        print("largest differences from R: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    else:
        print("R reference: not measured (no Rscript, or the script failed)")
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "competing.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
