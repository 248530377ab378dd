"""Small test studies written as files: ``patients.csv``, one cohort query and ``study.toml``."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.config import StudyConfig, load_config

SPLIT_B = 'external_centers = ["B"]\ninternal_fraction = 0.25\nseed = 1'
"""The usual ``[split]`` rule: centre B external, a quarter of the other patients internal."""


def study_toml(
    name: str, seed: int, body: str, *, study: str = "", sections: str = "", cohort: str = "all",
    params: str = "", split: str = SPLIT_B,
) -> str:
    """The text of a ``study.toml`` reading ``patients.csv``.

    Parameters
    ----------
    name, seed
        ``[study]`` name and seed; ``study`` holds further ``[study]`` lines (e.g. ``endpoint = ...``).
    body
        Everything after ``[split]``: the ``[[models]]`` entries, ``[validation]`` and so on.
    sections
        Whole sections placed between ``[manifests]`` and ``[cohort]`` (``[variables]``, ``[[feature_sets]]``).
    cohort, params
        The cohort's name and, if given, its ``params`` inline table (e.g. ``"{ min_age = 30 }"``).
    split
        The ``[split]`` lines.
    """
    head = ["[study]", f'name = "{name}"', f"seed = {seed}", study, "[manifests]", 'patients = "patients.csv"',
            sections, "[cohort]", f'name = "{cohort}"', f"params = {params}" if params else "", "[split]", split]
    return "\n".join(line for line in head if line) + "\n" + body


def write_study(root: Path, patients: pl.DataFrame, columns: str, toml: str, *, cohort: str = "all",
                where: str = "") -> Path:
    """Write ``patients`` as ``patients.csv``, ``cohorts/<cohort>.sql`` and ``toml`` as ``study.toml``.

    The cohort joins ``patients p`` and ``clinical c`` and selects patient_id, center and ``columns``
    (e.g. ``"c.label, c.age"``), on one line, or with ``where`` (e.g. ``"c.age >= $min_age"``) one clause
    a line. Returns the path of ``study.toml``.
    """
    patients.write_csv(root / "patients.csv")
    (root / "cohorts").mkdir(exist_ok=True)
    select = f"SELECT p.patient_id, p.center, {columns}"
    source = "FROM patients p JOIN clinical c USING (patient_id)"
    sql = f"{select}\n{source}\nWHERE {where}\n" if where else f"{select} {source}"
    (root / "cohorts" / f"{cohort}.sql").write_text(sql, encoding="utf-8")
    path = root / "study.toml"
    path.write_text(toml, encoding="utf-8")
    return path


def build_study(root: Path, patients: pl.DataFrame, columns: str, toml: str, *, cohort: str = "all",
                where: str = "") -> StudyConfig:
    """:func:`write_study`, then load and ingest the study; returns it."""
    from pipeline.ingest import ingest

    study = load_config(write_study(root, patients, columns, toml, cohort=cohort, where=where))
    ingest(study, progress=False)
    return study
