"""Benchmark: joining a 2048-dimensional pooled feature set to a 10,000-patient cohort.

Builds a throw-away store (10,000 patients, two centres, one feature set of
dim 2048), then times

* ``read_patient_features`` plus aligning its rows to the cohort's order
  (the store's general reader: ORDER BY patient_id, then a Python dict lookup),
* ``analytics.cohort.read_block`` (the cohort's join: patient positions joined
  inside DuckDB, no sort, rows scattered into place),
* ``load_cohort`` end to end (SQL, checks, split, join),

best of 5 each, checks that both joins give the same matrix, prints a table
and writes ``reports/bench/cohort_join.json``.

Run from the repository root:  python bench/cohort_join.py
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.cohort import load_cohort, read_block, read_only  # noqa: E402
from pipeline import store  # noqa: E402
from pipeline.config import parse_study  # noqa: E402

N, DIM, REPEAT = 10_000, 2048, 5
TARGET_S = 1.0


def build(root: Path) -> Path:
    path = root / "store.duckdb"
    rng = np.random.default_rng(0)
    ids = [f"P{i:05d}" for i in range(N)]
    con = store.connect(path)
    try:
        con.register("_p", pa.table({"patient_id": ids, "center": ["B" if i % 5 == 0 else "A" for i in range(N)],
                                     "source_file": [None] * N, "source_row": pa.array([None] * N, pa.int32())}))
        con.execute("INSERT INTO patients SELECT * FROM _p")
        con.execute("ALTER TABLE clinical ADD COLUMN age BIGINT")
        con.execute("ALTER TABLE clinical ADD COLUMN y BIGINT")
        con.register("_c", pa.table({"patient_id": ids, "age": rng.integers(18, 90, N), "y": rng.integers(0, 2, N)}))
        con.execute("INSERT INTO clinical SELECT * FROM _c")
        store.register_feature_set(con, store.FeatureSetRecord("big", "wsi", "resnet50", "random", {}, DIM))
        order = rng.permutation(N)  # written in an order unrelated to patient ids
        store.write_patient_features(con, "big", "mean", [ids[i] for i in order],
                                     rng.standard_normal((N, DIM)).astype(np.float32), [1] * N)
    finally:
        con.close()
    (root / "cohorts").mkdir()
    (root / "cohorts" / "all.sql").write_text(
        "SELECT patient_id, y AS label, age FROM patient_clinical WHERE age >= $min_age")
    return path


def best_of(fn, repeat: int = REPEAT) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = build(root)
        study = parse_study({"study": {"name": "bench"}, "manifests": {"patients": "p.csv"},
                             "cohort": {"name": "all", "params": {"min_age": 0}},
                             "split": {"external_centers": ["B"], "internal_fraction": 0.25, "seed": 0}}, root)
        ids = sorted(f"P{i:05d}" for i in range(N))
        with read_only(path) as session:
            def general() -> np.ndarray:
                got, m = store.read_patient_features(session.con, "big", "mean")
                where = {p: i for i, p in enumerate(got)}
                return m[[where[p] for p in ids]]

            t_general, a = best_of(general)
            t_block, block = best_of(lambda: read_block(session.con, "big", ids))
        assert np.array_equal(a, block.values), "the two joins disagree"
        t_load, cohort = best_of(lambda: load_cohort(study, features=["big"]))
        X, names = cohort.matrix()
        assert X.shape == (N, DIM) and len(names) == DIM
        t_hash, _ = best_of(lambda: cohort.digest(), 3)

    result = {
        "patients": N, "dim": DIM,
        "read_patient_features_and_align_s": round(t_general, 4),
        "cohort_read_block_s": round(t_block, 4),
        "load_cohort_end_to_end_s": round(t_load, 4),
        "cohort_digest_s": round(t_hash, 4),
        "speedup_vs_read_patient_features": round(t_general / t_block, 2),
        "target_s": TARGET_S,
        "python": platform.python_version(), "machine": platform.machine(),
    }
    print(f"join of {N} patients x {DIM} features (best of {REPEAT})")
    print(f"  read_patient_features + align : {t_general:.3f} s")
    print(f"  cohort read_block             : {t_block:.3f} s   ({t_general / t_block:.2f}x faster)")
    print(f"  load_cohort end to end        : {t_load:.3f} s   (target < {TARGET_S:.1f} s: "
          f"{'ok' if t_load < TARGET_S else 'MISSED'})")
    print(f"  cohort digest (sha256)        : {t_hash:.3f} s")
    out = ROOT / "reports" / "bench" / "cohort_join.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    main()
