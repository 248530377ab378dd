"""The sections of ``study.toml`` on how the stages run and where they write: ``[explain]`` (the explanations'
sample budget), ``[compute]`` (Ray or local processes), ``[sql]`` (limits of user SQL) and ``[report]``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pipeline.config_base import Strict


class ExplainSection(Strict):
    """Whether ``run`` explains the models, and the sample budget of the explanations.

    A budget left out takes the explain stage's default (see the README). The
    budget used is recorded with each model's explanations and shown in the report.
    """

    enabled: bool = True
    max_rows: int | None = Field(default=None, ge=1)  # held-out patients explained per model (a seeded sample above)
    background: int | None = Field(default=None, ge=1)  # k-means centres summarising the training patients (Kernel SHAP)
    nsamples: int | None = Field(default=None, ge=1)  # coalitions per explained patient (Kernel SHAP)
    max_background: int | None = Field(default=None, ge=1)  # training patients (tree and linear explainers)
    max_units: int | None = Field(default=None, ge=1)  # inputs above which an image block is one player
    top_k: int | None = Field(default=None, ge=1)  # tiles per attention gallery row


class Compute(Strict):
    """Where the embedding stage, each model's outer-fold fits and the internal-validation replicates run, on every
    path (``cohortlab embed`` / ``fit`` / ``run`` / ``demo``, ``Study.embed()`` / ``Study.fit()`` / ``Study.run()``):
    ``ray`` = "local", "auto" or "ray://host:port" (unset: this process, fits and replicates on ``n_jobs`` local
    processes); ``--ray`` overrides it. Fitted models are the same bytes whatever runs them."""

    ray: str | None = None
    ray_retries: int = Field(default=2, ge=0)  # tries again of a source whose worker process was lost
    # local worker processes (joblib) of the outer-fold fits and of the internal-validation replicates: -1 every core
    n_jobs: int = -1

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError(f"n_jobs = {v}: give a number of worker processes (1 or more), or -1 for every core")
        return v

    @field_validator("ray")
    @classmethod
    def _ray(cls, v: str | None) -> str | None:
        if v is not None and not (v in ("local", "auto") or v.startswith("ray://") or ":" in v):
            raise ValueError(f"ray {v!r}: use \"local\", \"auto\", \"ray://host:port\" or \"host:port\"")
        return v


_MEMORY = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


class SqlLimits(Strict):
    """``[sql]``: limits of user SQL (cohort files, views, ``cohortlab sql``) on the sandbox connection."""

    timeout_s: float = Field(default=300, gt=0, allow_inf_nan=False)  # a statement running longer is stopped
    memory_limit: str = "4GB"  # DuckDB's memory limit for one statement's work, e.g. "512MB", "16GB"

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not _MEMORY.fullmatch(v.strip()):
            raise ValueError(f"{v!r} is not an amount of memory; write e.g. \"4GB\" or \"512MB\"")
        return v.strip()


class Report(Strict):
    dir: str | None = None  # default: reports/<study name> beside study.toml
    title: str | None = None
    explain_patients: list[str] = Field(default_factory=list)


__all__ = ["Compute", "ExplainSection", "Report", "SqlLimits"]
