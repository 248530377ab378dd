"""A study in a notebook: each stage of the command line as a method that returns an object.

The methods are thin calls into the library functions the CLI calls
(:func:`pipeline.ingest.ingest`, :func:`pipeline.embed.embed`,
:func:`analytics.cohort.load_cohort`, :func:`analytics.fit.fit`,
:func:`analytics.validate.validate`, :func:`analytics.report.write_report`,
:func:`analytics.verify.verify`), each imported when first called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Study as StudyConfig
from pipeline.config import load_study as read_study_toml

if TYPE_CHECKING:
    import polars as pl

    from analytics.cohort import Cohort
    from analytics.fit import FitResult
    from analytics.validation import Validation
    from analytics.verify import Verification
    from pipeline.embed import EmbedResult
    from pipeline.ingest import IngestResult


class Study:
    """One study (its ``study.toml``), with a method per stage.

    Parameters
    ----------
    config
        The validated ``study.toml`` (:func:`pipeline.config.load_study`); :func:`load_study` reads it.

    Attributes
    ----------
    config
        The validated ``study.toml``, as the library functions take it (``.models``, ``.validation`` ...).
    """

    def __init__(self, config: StudyConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"<cohortlab.Study {self.name!r} at {self.root}>"

    @property
    def name(self) -> str:
        """``[study] name``."""
        return self.config.study.name

    @property
    def root(self) -> Path:
        """The study folder (where ``study.toml`` is)."""
        return self.config.root

    @property
    def report_dir(self) -> Path:
        """Where ``metrics.json``, ``metrics.csv``, ``curves.json`` and ``index.html`` are written."""
        return self.config.report_dir

    def ingest(self, *, progress: bool = True) -> IngestResult:
        """Read the manifests into the store, checked (:func:`pipeline.ingest.ingest`)."""
        from pipeline.ingest import ingest

        return ingest(self.config, progress=progress)

    def embed(self, feature_set: str | None = None, device: str = "auto", *,
              shard: tuple[int, int] | None = None, progress: bool = True) -> EmbedResult:
        """Embed every feature set, or ``feature_set``, resumably (:func:`pipeline.embed.embed`).

        ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``shard``: ``(i, n)``, the i-th of n shards.
        """
        from pipeline.embed import embed

        return embed(self.config, feature_set=feature_set, device=device, shard=shard, progress=progress)

    def cohort(self, name: str | None = None, /, **params: Any) -> Cohort:
        """Run a cohort (default ``[cohort] name``; or a path to a ``.sql`` file) with its ``$name``
        parameters bound from ``params`` over ``[cohort] params`` (:func:`analytics.cohort.load_cohort`)."""
        from analytics.cohort import load_cohort

        return load_cohort(self.config, name, params or None)

    def sql(self, query: str, /, **params: Any) -> pl.DataFrame:
        """Run one read-only query on the store with its views, ``$name`` parameters bound from ``params``,
        as ``cohortlab sql`` does (:func:`analytics.cohort.run_sql`): checked, sandboxed, limited by ``[sql]``."""
        from analytics.cohort import run_sql

        return run_sql(self.config, query, params or None)

    def fit(self, models: Sequence[str] | None = None, *, progress: bool = True) -> FitResult:
        """Fit the study's models, or ``models`` and those they depend on (:func:`analytics.fit.fit`)."""
        from analytics.fit import fit

        return fit(self.config, models=list(models) if models is not None else None, progress=progress)

    def validation(self, *, force: bool = False, partial: bool = False, progress: bool = True) -> Validation:
        """The validated metrics: computed when the predictions, outcomes or settings changed since the last
        validation (or ``force``), else read back from ``metrics.json``
        (:func:`analytics.validate.validate`, :func:`analytics.validate.load_validation`).

        ``partial``: validate the models that have predictions when some do not.
        """
        from analytics.validate import load_validation, validate

        result = validate(self.config, force=force, progress=progress, partial=partial)
        return result.validation if result.validation is not None else load_validation(self.config)

    def verify(self) -> Verification:
        """Check every done instance file against the store: sha256, the source_id it holds, its footer
        (:func:`analytics.verify.verify`); ``.ok``, ``.problems`` (kind, file, feature set, source, reason),
        ``.table()``."""
        from analytics.verify import verify

        return verify(self.config)

    def report(self, *, force: bool = False, progress: bool = True) -> Path:
        """Write ``index.html`` unless it is up to date (or ``force``); return its path
        (:func:`analytics.report.write_report`)."""
        from analytics.report import write_report

        return write_report(self.config, force=force, progress=progress).path


def load_study(path: str | Path) -> Study:
    """Read and check ``study.toml`` (or the folder holding one).

    Raises
    ------
    pipeline.config.ConfigError
        The file is missing, not TOML, or a key is wrong (named).
    """
    return Study(read_study_toml(path))


__all__ = ["Study", "load_study"]
