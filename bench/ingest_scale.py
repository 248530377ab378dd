"""Benchmark: ``cohortlab ingest`` of a large patients manifest, with its strict checks on.

Writes the clinical-only manifest of ``bench/run_scale.py`` (patient id, centre, label, time, event, three
numeric and two categorical variables with declared levels) at ``--rows`` patients (default 1,000,000) and
ingests it into a fresh store, timing the stage (wall and CPU seconds, peak resident memory). A second run
ingests the same manifest with ``--bad`` broken cells spread through the file (a word in a numeric column, an
undeclared level, a label of 2, a duplicate id): the ingest must refuse it, report every problem at once and
leave the store unchanged, and its time is shown too. The goal of the registry-scale issue: 1M rows in at most
60 s. ``--profile`` prints the costliest functions of the clean ingest (cProfile, ``--top``).

    python bench/ingest_scale.py [--rows 1000000] [--bad 200] [--profile] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
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
sys.path.insert(0, str(ROOT / "bench"))

from run_scale import write_study  # noqa: E402

from pipeline import store  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.ingest import IngestError, ingest  # noqa: E402

GOAL_SECONDS = 60.0


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def break_cells(csv: Path, bad: int, seed: int = 5) -> int:
    """Rewrite ``csv`` with ``bad`` broken cells (four kinds in turn) at rows spread over the file; returns how
    many problems the ingest must report."""
    frame = pl.read_csv(csv, infer_schema_length=0)  # every cell as text, as the manifest reader sees it
    rows = np.sort(np.random.default_rng(seed).choice(np.arange(1, frame.height), bad, replace=False))
    cols = {c: frame[c].to_list() for c in ("patient_id", "marker", "stage", "label")}
    for k, r in enumerate(rows.tolist()):
        kind = k % 4
        if kind == 0:
            cols["marker"][r] = "high"
        elif kind == 1:
            cols["stage"][r] = "V"
        elif kind == 2:
            cols["label"][r] = "2"
        else:
            cols["patient_id"][r] = cols["patient_id"][0]
    frame.with_columns(*(pl.Series(c, v) for c, v in cols.items())).write_csv(csv)
    return bad


def timed(call: Any) -> tuple[float, float, Any]:
    w, c = time.perf_counter(), _cpu()
    try:
        out = call()
    except IngestError as exc:
        out = exc
    return time.perf_counter() - w, _cpu() - c, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bad", type=int, default=200, help="broken cells in the second run (0: no second run)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    out: dict[str, Any] = {"rows": args.rows, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ingest_scale_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        study = write_study(root, args.rows)
        csv = root / "patients.csv"
        print(f"manifest: {args.rows} rows, {csv.stat().st_size / 1e6:.0f} MB, written in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        wall, cpu, result = timed(lambda: ingest(study, progress=False))
        if prof:
            prof.disable()
        if isinstance(result, IngestError):
            raise SystemExit(f"the clean manifest was refused: {str(result)[:400]}")
        con = store.connect(study.store_path, read_only=True)
        try:
            stored = con.execute("SELECT count(*) FROM clinical").fetchone()
        finally:
            con.close()
        assert stored is not None and stored[0] == args.rows, stored
        out.update(clean_wall=round(wall, 2), clean_cpu=round(cpu, 2), peak_gb=round(_peak_gb(), 2),
                   load=round(os.getloadavg()[0], 1))
        print(f"clean ingest: {wall:.1f} s wall, {cpu:.1f} s CPU, peak {_peak_gb():.2f} GB (load "
              f"{out['load']}); goal <= {GOAL_SECONDS:.0f} s at 1M rows: "
              + (("met" if wall <= GOAL_SECONDS else f"MISSED by {wall - GOAL_SECONDS:.0f} s")
                 if args.rows >= 1_000_000 else "not measured at 1M (--rows)"), flush=True)
        if prof:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.top)
            print(buf.getvalue())
        if args.bad:
            before = study.store_path.read_bytes()
            want = break_cells(csv, args.bad)
            wall, cpu, result = timed(lambda: ingest(load_config(root / "study.toml"), progress=False))
            if not isinstance(result, IngestError):
                raise SystemExit("the broken manifest was accepted")
            assert study.store_path.read_bytes() == before, "a refused ingest changed the store"
            # a duplicate id is one problem; each other broken cell one more
            out.update(bad_cells=want, reported=len(result.errors), bad_wall=round(wall, 2), bad_cpu=round(cpu, 2))
            print(f"broken manifest ({want} broken cells): refused in {wall:.1f} s wall, {cpu:.1f} s CPU, "
                  f"{len(result.errors)} problems reported at once, the store unchanged", flush=True)
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "ingest_scale.json").write_text(json.dumps(out, indent=1))
    print(f"written: {dest / 'ingest_scale.json'}")


if __name__ == "__main__":
    main()
