"""The write probe that ``cohortlab embed --ray`` runs on every node before any work.

Kept apart from :mod:`pipeline.ray_runner` and free of heavy imports: a Ray
task imports the module of its function, and this one loads in a fraction of a
second where the runner (torch, DuckDB) takes seconds on a small node.
"""

from __future__ import annotations

import uuid
from pathlib import Path


def probe_write(folder: str) -> tuple[str, str | None]:
    """Write and remove a file in ``folder`` on this node; ``(node address, problem or None)``."""
    import ray

    node = ray.util.get_node_ip_address()
    probe = Path(folder) / f".probe-{uuid.uuid4().hex}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return node, f"{type(exc).__name__}: {exc.strerror or exc}"
    return node, None
