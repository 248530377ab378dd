"""The contract between the embedding runner and a modality's embedder.

The runner (:mod:`pipeline.embed`) lists sources (slides or scans), skips the
done ones, shards the rest, and for each source calls ``Embedder.embed``; the
embedder turns one source into instance rows. Keeping the two apart lets the
WSI and CT stages share resume, sharding, failure recording and pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl

from pipeline.store import FeatureSetRecord


@dataclass(frozen=True)
class Source:
    """One slide or scan as stored by ingest (``row`` is its ``slides``/``scans`` row)."""

    source_id: str
    patient_id: str
    fingerprint: str
    row: dict[str, Any] = field(default_factory=dict)


class Embedder(Protocol):
    """Turns one source into instance rows for one feature set."""

    def record(self) -> FeatureSetRecord:
        """Provenance of the feature set: encoder, weights, every parameter, dim."""
        ...

    def embed(self, source: Source) -> pl.DataFrame:
        """Instance rows (``pipeline.store.INSTANCE_COLUMNS``) for one source.

        Raises on a broken source; the runner records the error and moves on.
        An embedder may also accept the keywords ``artifacts`` (a path prefix
        for side files such as a tissue-mask thumbnail), ``progress`` (a
        per-source progress bar) and ``cache`` (a folder of the store where
        work that feature sets share is kept, such as tissue masks and tile
        grids); the runner passes them only when the signature has them.
        """
        ...

    def close(self) -> None:
        """Release workers and device memory."""
        ...
