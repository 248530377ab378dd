"""The stages of a study, once: the function that runs each, what it needs, and how its result prints.

``cohortlab <verb>`` (:mod:`analytics.cli`), ``cohortlab run`` (:mod:`analytics.run`), ``cohortlab demo``
and the notebook's :class:`cohortlab.Study` call a stage through this module only, so that they agree:
``[compute]`` of study.toml is read here, by :func:`embed`, whichever path runs it.

:data:`STAGES` lists the stages in ``run``'s order. A stage's library module is imported inside its
function, with a plain import statement: ``import analytics.stages`` stays light (no torch, no
scikit-learn) and the import contracts still see every dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipeline.config import StudyConfig

if TYPE_CHECKING:
    import polars as pl

    from analytics.cohort import Cohort
    from analytics.explain.study import ExplainResult
    from analytics.fit import FitResult
    from analytics.report import ReportOutcome
    from analytics.validation.stage import ValidateResult
    from analytics.verify import Verification
    from pipeline.embed import EmbedResult
    from pipeline.ingest import IngestResult

Need = Literal["feature_sets", "cohort", "models"]
"""A part of study.toml a stage of ``run`` needs: ``[[feature_sets]]``, ``[cohort]``, ``[[models]]``."""

Setting = Literal["device", "progress", "leave_summary"]
"""A setting of ``run`` that a stage's function takes as a keyword (``leave_summary``: ``run`` has the cohort
stage leave the cohort's summary for the report; the ``cohort`` verb only reads)."""


@dataclass(frozen=True)
class Skipped:
    """A stage left out on purpose, and why."""

    reason: str
    skipped: bool = True

    def __str__(self) -> str:
        return f"skipped: {self.reason}"


@dataclass(frozen=True)
class CohortOverview:
    """The cohort stage's result: the study's cohort (without features) and each feature set's coverage.

    Its text is ``run``'s line for the stage: the counts by split x label, then one ``warning:`` line per
    instance file left out.
    """

    cohort: Cohort
    coverage: pl.DataFrame

    def __str__(self) -> str:
        c = self.cohort
        left_out = "".join(f"\nwarning: instance file left out: {p}" for p in c.left_out)
        return f"cohort '{c.name}': {len(c)} patients\n{c.counts()}{left_out}"


def ray_address(study: StudyConfig, ray: str | None = None) -> str | None:
    """Where the embed stage and the internal-validation replicates run: ``ray`` (``--ray``) over ``[compute] ray``;
    None is this machine.

    Returns
    -------
    str or None
        ``local``, ``auto``, ``ray://host:port`` or ``host:port`` for Ray; None for the local runner.
    """
    return ray or study.compute.ray


def ingest(study: StudyConfig, *, progress: bool = True) -> IngestResult:
    """Read the manifests into the store, checked, in one transaction (:func:`pipeline.ingest.ingest`)."""
    from pipeline.ingest import ingest as run_ingest

    return run_ingest(study, progress=progress)


def embed(study: StudyConfig, feature_set: str | None = None, device: str = "auto", *,
          shard: tuple[int, int] | None = None, ray: str | None = None, progress: bool = True) -> EmbedResult:
    """Embed every feature set (or ``feature_set``), resumably, here or on Ray as ``[compute]`` says.

    Parameters
    ----------
    study
        The validated study.
    feature_set
        Only this feature set.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    shard
        ``(i, n)``: only the i-th of n shards of the sources (this process only; Ray spreads them itself).
    ray
        A Ray address that overrides ``[compute] ray`` (see :func:`ray_address`).
    progress
        Show progress bars.

    Raises
    ------
    pipeline.config.ConfigError
        ``shard`` given while the stage runs on Ray.
    """
    address = ray_address(study, ray)
    if address is None:
        from pipeline.embed import embed as embed_here

        return embed_here(study, feature_set=feature_set, device=device, shard=shard, progress=progress)
    if shard is not None:
        from pipeline.config import ConfigError

        where = f"ray {ray!r}" if ray else f"[compute] ray = {address!r} in {study.root / 'study.toml'}"
        raise ConfigError(f"shard {shard[0]}/{shard[1]} and {where}: Ray spreads the sources itself; give one of them")
    from pipeline.ray_runner import embed as embed_on_ray

    return embed_on_ray(study, feature_set=feature_set, device=device, ray_address=address,
                        retries=study.compute.ray_retries, progress=progress)


def cohort(study: StudyConfig, name: str | None = None, params: Mapping[str, Any] | None = None, *,
           leave_summary: bool = False) -> CohortOverview:
    """The cohort (default ``[cohort] name``) without features, and how many of its patients have each
    feature set; every feature set's instance files are verified by content
    (:func:`analytics.cohort.cohort_overview`). ``leave_summary`` (as ``run`` runs it): the study's own cohort
    is left for the report (:mod:`analytics.cohort.summary`)."""
    from analytics.cohort import cohort_overview

    found, coverage = cohort_overview(study, name, params, leave_summary=leave_summary)
    return CohortOverview(found, coverage)


def fit(study: StudyConfig, models: Sequence[str] | None = None, *, ray: str | None = None,
        progress: bool = True) -> FitResult:
    """Fit the study's models, or ``models`` and those they depend on (:func:`analytics.fit.fit`); their
    internal-validation replicates run on Ray when ``ray`` (``--ray``) or ``[compute] ray`` says so
    (:func:`ray_address`), else on ``[compute] n_jobs`` local processes."""
    from analytics.fit import fit as run_fit

    return run_fit(study, models=list(models) if models is not None else None, progress=progress,
                   ray=ray_address(study, ray))


def validate(study: StudyConfig, *, force: bool = False, partial: bool = False, progress: bool = True) -> ValidateResult:
    """Metrics with CIs per model and split (:func:`analytics.validation.stage.validate`); ``partial``: validate the
    models that have predictions, naming those left out."""
    from analytics.validation.stage import validate as run_validate

    return run_validate(study, force=force, progress=progress, partial=partial)


def explain(study: StudyConfig, models: Sequence[str] | None = None, patients: Sequence[str] | None = None, *,
            progress: bool = True) -> ExplainResult:
    """SHAP explanations and MIL attention figures under the report folder (:func:`analytics.explain.explain`);
    ``[explain] enabled = false`` does nothing and says so in the result's notes."""
    from analytics.explain.study import explain as run_explain

    return run_explain(study, models=list(models) if models is not None else None,
                       patients=list(patients) if patients is not None else None, progress=progress)


def report(study: StudyConfig, *, force: bool = False, progress: bool = True) -> ReportOutcome:
    """Write the HTML report unless none of its inputs changed, or ``force`` (:func:`analytics.report.write_report`)."""
    from analytics.report import write_report

    return write_report(study, force=force, progress=progress)


def verify(study: StudyConfig) -> Verification:
    """Check every done instance file against the store: sha256, source_id, footer (:func:`analytics.verify.verify`)."""
    from analytics.verify import verify as run_verify

    return run_verify(study)


def _explain_switched_off(study: StudyConfig) -> str | None:
    return None if study.explain.enabled else "[explain] enabled = false in study.toml"


@dataclass(frozen=True)
class Stage:
    """One stage: its function in this module, what ``run`` needs to include it, and how its result prints.

    Attributes
    ----------
    name
        The stage's name, its CLI verb.
    function
        The function of this module that runs it (the CLI verb and the notebook method call it).
    needs
        What study.toml must have for ``run`` to include the stage (all of them).
    in_run
        Whether ``run`` runs it at all (``verify`` is a check of its own).
    takes
        The settings of ``run`` its function takes.
    switched_off
        Why ``run`` skips it for this study (a :class:`Skipped` result), or None to run it.
    show
        Its result as text: ``run``'s summary of the stage, and what the CLI verb prints.
    """

    name: str
    function: Callable[..., Any]
    needs: tuple[Need, ...] = ()
    in_run: bool = True
    takes: tuple[Setting, ...] = ("progress",)
    switched_off: Callable[[StudyConfig], str | None] | None = None
    show: Callable[[Any], str] = str

    def applies(self, study: StudyConfig) -> bool:
        """Whether ``run`` includes this stage for ``study``."""
        return self.in_run and all(bool(getattr(study, need)) for need in self.needs)

    def run(self, study: StudyConfig, *, device: str = "auto", progress: bool = True) -> Any:
        """Run the stage as ``run`` does: the study's settings, ``device`` where it takes one."""
        reason = self.switched_off(study) if self.switched_off is not None else None
        if reason is not None:
            return Skipped(reason)
        settings = {"device": device, "progress": progress, "leave_summary": True}
        return self.function(study, **{key: settings[key] for key in self.takes})


STAGES: tuple[Stage, ...] = (
    Stage("ingest", ingest),
    Stage("embed", embed, needs=("feature_sets",), takes=("device", "progress")),
    Stage("cohort", cohort, needs=("cohort",), takes=("leave_summary",)),  # the study's own cohort and parameters
    Stage("fit", fit, needs=("cohort", "models")),
    Stage("validate", validate, needs=("cohort", "models")),
    Stage("explain", explain, needs=("cohort", "models"), switched_off=_explain_switched_off),
    Stage("report", report),
    Stage("verify", verify, in_run=False, takes=()),
)
"""Every stage, in ``run``'s order."""

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def for_run(study: StudyConfig) -> list[Stage]:
    """The stages ``run`` runs for ``study``, in order: ingest, [embed], [cohort, [fit, validate, explain]], report."""
    return [s for s in STAGES if s.applies(study)]


__all__ = ["BY_NAME", "STAGES", "CohortOverview", "Need", "Setting", "Skipped", "Stage", "cohort", "embed", "explain", "fit",
           "for_run", "ingest", "ray_address", "report", "validate", "verify"]
