"""A study in a notebook: each stage of the command line as a method that returns an object.

The stage methods call the stage table the CLI's verbs and ``cohortlab run`` call
(:mod:`analytics.stages`), so a notebook runs a stage as the command line does:
:meth:`Study.embed` runs on Ray when study.toml sets ``[compute] ray``. The data
methods (:meth:`Study.cohort`, :meth:`Study.sql`) call :mod:`analytics.cohort`.
Heavy modules load when a method is first called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics import stages
from pipeline.config import StudyConfig, load_config

if TYPE_CHECKING:
    import polars as pl

    from analytics.cohort import Cohort
    from analytics.explain.study import ExplainResult
    from analytics.fit import FitResult
    from analytics.run import RunResult
    from analytics.validation import Validation
    from analytics.verify import Verification
    from cohortlab.model import Model
    from pipeline.embed import EmbedResult
    from pipeline.ingest import IngestResult


class Study:
    """One study (its ``study.toml``), with a method per stage.

    Parameters
    ----------
    config
        The validated ``study.toml`` (:func:`pipeline.config.load_config`); :func:`load_study` reads it.

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
        """Read the manifests into the store, checked (:func:`analytics.stages.ingest`)."""
        return stages.ingest(self.config, progress=progress)

    def embed(self, feature_set: str | None = None, device: str = "auto", *,
              shard: tuple[int, int] | None = None, ray: str | None = None, progress: bool = True) -> EmbedResult:
        """Embed every feature set, or ``feature_set``, resumably, here or on Ray as ``[compute] ray`` says
        (:func:`analytics.stages.embed`), as ``cohortlab embed`` does.

        ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``shard``: ``(i, n)``, the i-th of n shards
        (not on Ray); ``ray``: a Ray address over ``[compute] ray`` (``cohortlab embed --ray``).
        """
        return stages.embed(self.config, feature_set=feature_set, device=device, shard=shard, ray=ray,
                            progress=progress)

    def cohort(self, name: str | None = None, /, **params: Any) -> Cohort:
        """Run a cohort (default ``[cohort] name``; or a path to a ``.sql`` file) with its ``$name``
        parameters bound from ``params`` over ``[cohort] params`` (:func:`analytics.cohort.load_cohort`)."""
        from analytics.cohort import load_cohort

        return load_cohort(self.config, name, params or None)

    def cumulative_incidence(self, by: str | None = None, times: Sequence[float] | None = None) -> pl.DataFrame:
        """Aalen–Johansen cumulative incidence of every declared cause at ``times`` (default ``[validation]
        horizons``, else the quartiles of the event times), overall or by the cohort column ``by`` (cut at its
        ``[validation] subgroups`` cuts when it has them): ``variable, group, cause, code, time, estimate, se,
        low, high, n, n_risk``, as ``summary(survfit(Surv(time, factor(status)) ~ by), times)``
        (:func:`analytics.report.competing.cumulative_incidence_table`; Aalen & Johansen 1978).

        Raises
        ------
        pipeline.config.ConfigError
            No event variable declares status codes (``[variables] <event>.codes``).
        analytics.cohort.CohortError
            The cohort has no ``time`` and ``event``, or no column ``by``.
        """
        from analytics.cohort import CohortError, load_cohort
        from analytics.report.competing import cumulative_incidence_table, horizons_of
        from pipeline.config import ConfigError

        causes = self.config.causes
        if causes is None:
            raise ConfigError(f"{self.root / 'study.toml'}: no event variable declares status codes; declare them, "
                              'e.g. status = { role = "event", codes = { "0" = "censored", "1" = "death" } }')
        cohort = load_cohort(self.config)
        frame = cohort.frame
        missing = [c for c in ("time", "event", *([by] if by else [])) if c not in frame.columns]
        if missing:
            raise CohortError(f"cohort {cohort.name}: no column(s) {', '.join(missing)} "
                              f"(columns: {', '.join(frame.columns)})")
        followed = frame.drop_nulls(["time", "event"])
        at = list(times) if times is not None else horizons_of(
            self.config, followed["time"].to_numpy(), followed["event"].to_numpy())
        group = self.config.validation.subgroups.get(by) if by else None
        return cumulative_incidence_table(frame, causes, at, by=by, cuts=group.cuts if group else (),
                                          level=self.config.validation.level)

    def sql(self, query: str, /, **params: Any) -> pl.DataFrame:
        """Run one read-only query on the store with its views, ``$name`` parameters bound from ``params``,
        as ``cohortlab sql`` does (:func:`analytics.cohort.run_sql`): checked, sandboxed, limited by ``[sql]``."""
        from analytics.cohort import run_sql

        return run_sql(self.config, query, params or None)

    def fit(self, models: Sequence[str] | None = None, *, ray: str | None = None, progress: bool = True) -> FitResult:
        """Fit the study's models, or ``models`` and those they depend on (:func:`analytics.stages.fit`); ``ray``:
        a Ray address for the internal-validation replicates over ``[compute] ray`` (``cohortlab fit --ray``)."""
        return stages.fit(self.config, models=models, ray=ray, progress=progress)

    def model(self, name: str) -> Model:
        """A fitted model (:class:`cohortlab.model.Model`): its record and, for a regression model, ``.summary``
        (the coefficient table, a polars frame), ``.anova`` and ``.print_summary()``.

        Raises
        ------
        analytics.models.persist.PersistError
            No such model in study.toml, or it is not fitted yet.
        """
        from cohortlab.model import Model

        return Model(self.config, name)

    def validation(self, *, force: bool = False, partial: bool = False, progress: bool = True) -> Validation:
        """The validated metrics: computed when the predictions, outcomes or settings changed since the last
        validation (or ``force``), else read back from ``metrics.json``
        (:func:`analytics.stages.validate`, :func:`analytics.validation.stage.load_validation`).

        ``partial``: validate the models that have predictions when some do not.
        """
        result = stages.validate(self.config, force=force, progress=progress, partial=partial)
        if result.validation is not None:
            return result.validation
        from analytics.validation.stage import load_validation

        return load_validation(self.config)

    def explain(self, models: Sequence[str] | None = None, patients: Sequence[str] | None = None, *,
                progress: bool = True) -> ExplainResult:
        """SHAP explanations and MIL attention figures of the fitted models (or ``models``) under the report
        folder, as ``cohortlab explain`` writes them (:func:`analytics.stages.explain`).

        ``patients``: those to draw waterfall plots and attention heatmaps of (default ``[report]
        explain_patients``). With ``[explain] enabled = false`` nothing is done and ``.notes`` says so.
        """
        return stages.explain(self.config, models=models, patients=patients, progress=progress)

    def verify(self) -> Verification:
        """Check every done instance file against the store: sha256, the source_id it holds, its footer
        (:func:`analytics.stages.verify`); ``.ok``, ``.problems`` (kind, file, feature set, source, reason),
        ``.table()``."""
        return stages.verify(self.config)

    def report(self, *, force: bool = False, progress: bool = True) -> Path:
        """Write ``index.html`` unless it is up to date (or ``force``); return its path
        (:func:`analytics.stages.report`)."""
        return stages.report(self.config, force=force, progress=progress).path

    def run(self, device: str = "auto", *, progress: bool = True) -> RunResult:
        """Every stage in order, each skipping finished work, as ``cohortlab run`` does (:func:`analytics.run.run`).

        A failed stage stops the ones after it and is named in the result (``.ok`` is then False); nothing
        is raised for it.
        """
        from analytics.run import run as run_all

        return run_all(self.config, device=device, progress=progress)


def load_study(path: str | Path) -> Study:
    """Read and check ``study.toml`` (or the folder holding one).

    Raises
    ------
    pipeline.config.ConfigError
        The file is missing, not TOML, or a key is wrong (named).
    """
    return Study(load_config(path))


__all__ = ["Study", "load_study"]
