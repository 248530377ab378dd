"""Benchmark: what nested cross-fitting costs the demo study's second-stage models.

Takes the demo study that ``make demo`` leaves in ``demo/`` (a copy of its
study file, store and instances, so the folder is left as it is), or, when there
is none, synthesises the demo (60 patients; ``--small``: 16) in a temporary
folder and ingests and embeds it on the CPU. With the first-stage models fitted
once, it times ``cohortlab fit`` of each second-stage model (one with
``scores`` or ``members``):

* not nested (``nested = false``);
* nested, with nothing cached (the first run after adding the model);
* nested again with the input models' fits cached on disk (a later run, for
  example after changing the model's grid).

The time is the model's own fit time (``FitResult``), without loading the
cohort, best of ``--repeat`` (2). Prints a table with the ratio nested / not nested and writes
``reports/bench/nested.json``. Soft voting fits nothing on its members'
scores, so it is never nested: its three times are alike.

    python bench/nested.py [--study demo/study.toml] [--small]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.crossfit import CACHE_FOLDER, needs_nesting  # noqa: E402
from analytics.fit import fit  # noqa: E402
from pipeline.config import StudyConfig, load_config  # noqa: E402


def prepared_study(work: Path, given: Path | None, small: bool) -> StudyConfig:
    """A demo study under ``work`` with its features embedded."""
    demo = given or ROOT / "demo" / "study.toml"
    target = work / "study"
    if demo.exists() and (demo.parent / "store.duckdb").exists():
        print(f"using a copy of {demo.parent}", flush=True)
        shutil.copytree(demo.parent, target, ignore=shutil.ignore_patterns("slides", "scans", "models", "logs"))
        return load_config(target / "study.toml")
    from pipeline.embed import embed
    from pipeline.ingest import ingest
    from pipeline.synth import make_study

    print(f"no embedded demo study: synthesising one ({'small' if small else 'full'}) and embedding it on the CPU",
          flush=True)
    study = load_config(make_study(target, small=small))
    ingest(study, progress=False)
    embed(study, device="cpu", progress=False)
    return study


def with_nesting(study: StudyConfig, name: str, nested: bool) -> StudyConfig:
    models = [m.model_copy(update={"nested": nested}) if m.name == name else m for m in study.models]
    return study.model_copy(update={"models": models})


def time_model(study: StudyConfig, name: str, nested: bool, cached: bool, repeat: int) -> float:
    """Best of ``repeat`` times ``fit`` spends on one model refitted from scratch (its input models up to date)."""
    best = float("inf")
    for _ in range(repeat):
        shutil.rmtree(study.models_dir / name, ignore_errors=True)
        if not cached:
            shutil.rmtree(study.models_dir / CACHE_FOLDER, ignore_errors=True)
        result = fit(with_nesting(study, name, nested), models=[name], progress=False)
        best = min(best, result.model(name).seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=None, help="an embedded study.toml (default demo/study.toml)")
    parser.add_argument("--small", action="store_true", help="synthesise the 16-patient demo when there is none")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many fits per variant (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        study = prepared_study(Path(tmp), args.study, args.small)
        first = fit(study, progress=False)  # every model, so the first-stage ones are up to date
        second = [m for m in study.models if m.scores or m.members]
        print(f"{study.study.name}: {first.cohort_counts}, {first.outer_folds} outer folds; "
              f"second-stage models: {', '.join(m.name for m in second) or 'none'}\n")
        rows = []
        for m in second:
            plain = time_model(study, m.name, nested=False, cached=False, repeat=args.repeat)
            nested = time_model(study, m.name, nested=True, cached=False, repeat=args.repeat)
            cached = time_model(study, m.name, nested=True, cached=True, repeat=args.repeat)
            rows.append({"model": m.name, "kind": m.kind, "nested_applies": needs_nesting(m), "not_nested_s": plain,
                         "nested_s": nested, "nested_cached_s": cached, "ratio": nested / plain if plain else None,
                         "ratio_cached": cached / plain if plain else None})
    header = f"{'model':<12} {'kind':<9} {'not nested':>11} {'nested':>9} {'ratio':>7} {'cached':>9} {'ratio':>7}"
    print(header)
    for r in rows:
        note = "" if r["nested_applies"] else "  (soft voting: nothing to nest)"
        print(f"{r['model']:<12} {r['kind']:<9} {r['not_nested_s']:>9.2f} s {r['nested_s']:>7.2f} s "
              f"{r['ratio']:>6.1f}x {r['nested_cached_s']:>7.2f} s {r['ratio_cached']:>6.1f}x{note}")
    out = ROOT / "reports" / "bench" / "nested.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"study": study.study.name, "counts": first.cohort_counts, "folds": first.outer_folds,
                               "machine": platform.platform(), "python": platform.python_version(), "models": rows},
                              indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
