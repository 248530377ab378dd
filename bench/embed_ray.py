"""Benchmark: the embedding runner on one machine against Ray with 1 and 2 encoder actors.

Writes one synthetic study (``pipeline.synth``, 24 patients, WSI only, resnet18
with random weights on 64-pixel tiles), copies it three times, and embeds each
copy once: with the local runner, with Ray and 1 CPU actor, with Ray and 2 CPU
actors (each using half the cores). Ray is started once before the timings (as
a cluster would be running already); the encoder's load in each actor is timed,
as the local runner's is. Prints tiles/s of each, the ratio of Ray with 1 actor
to local, and the scaling from 1 to 2 actors in sources/s, and checks that the
three runs wrote the same instances.

Run from the repository root:  python bench/embed_ray.py [n_patients]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURE_SET = """
[[feature_sets]]
name = "wsi"
modality = "wsi"
encoder = "resnet18"
weights = "random"
mpp = 1.0
tile_size = 64
tissue_threshold = 0.25
batch_size = 32
num_workers = 0
"""


def _study(folder: Path, n: int):
    from pipeline.config import load_config
    from pipeline.ingest import ingest
    from pipeline.synth import make_study

    toml = make_study(folder, n_patients=n, small=True)
    head = toml.read_text().split("[[feature_sets]]", 1)[0]
    toml.write_text(head.replace('scans = "manifests/scans.csv"\n', "") + FEATURE_SET)
    study = load_config(toml)
    ingest(study, progress=False)
    return study


def main() -> None:
    import ray

    from pipeline import embed as local
    from pipeline import ray_runner
    from pipeline.config import load_config

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        base = _study(Path(tmp) / "base", n)
        copies = {}
        for name in ("local", "ray1", "ray2"):
            shutil.copytree(base.root, Path(tmp) / name)
            copies[name] = load_config(Path(tmp) / name / "study.toml")
        ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
        try:
            out = {}
            for name, study in copies.items():
                t0 = time.perf_counter()
                if name == "local":
                    res = local.embed(study, device="cpu", progress=False)
                else:
                    res = ray_runner.embed(study, device="cpu", progress=False, workers=int(name[-1]))
                secs = time.perf_counter() - t0
                r = res.feature_sets[0]
                out[name] = (r.instances, r.done + r.failed, secs)
        finally:
            ray.shutdown()
        frames = {k: pl.read_parquet(Path(tmp) / k / "instances" / "feature_set=wsi" / "*.parquet").sort("source_id", "instance")
                  for k in copies}
        for k in ("ray1", "ray2"):
            assert frames[k].drop("embedding").equals(frames["local"].drop("embedding"))
            np.testing.assert_allclose(np.stack(frames[k]["embedding"].to_numpy()),
                                       np.stack(frames["local"]["embedding"].to_numpy()), atol=1e-5)
    print(f"{n} patients, {out['local'][1]} slides, {out['local'][0]} tiles, {cpus} CPU(s)")
    for name, (tiles, sources, secs) in out.items():
        print(f"{name:6s} {secs:7.2f} s  {tiles / secs:8.1f} tiles/s  {sources / secs:6.2f} sources/s")
    ratio = (out["ray1"][0] / out["ray1"][2]) / (out["local"][0] / out["local"][2])
    scaling = (out["ray2"][1] / out["ray2"][2]) / (out["ray1"][1] / out["ray1"][2])
    print(f"Ray 1 actor / local (tiles/s): {ratio:.2f}")
    print(f"scaling 1 -> 2 actors (sources/s): {scaling:.2f}")


if __name__ == "__main__":
    main()
