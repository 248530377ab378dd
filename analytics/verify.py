"""``cohortlab verify``: every stored file that results are read from, checked to be the one that was written.

One check per kind of file, each returning :class:`Problem` rows into one
list (so that further kinds slot in as one more entry of :data:`CHECKS`):

* ``instance``: every done instance file (``embed_items`` rows with status
  ``done``) is read whole: its sha256 against the one recorded when it was
  written, the ``source_id`` it holds against its row's, its folder against
  its feature set, its footer and size. A row written before checksums were
  recorded is a problem of its own (nothing to compare with) until
  ``cohortlab embed`` records one.
* ``model``: every folder under ``models/`` is read whole and each file's
  sha256 checked against the one ``cohortlab fit`` recorded in the store
  (:func:`analytics.models.persist.read_files`); nothing is unpickled or
  deserialised. A folder written by an older cohortlab (a pickle) is named
  as such: ``cohortlab fit`` refits it.

The other commands check less, by cost: ``features``, ``cohort``, ``fit`` and
``run`` verify the content of the instance files they read (the same sha256
check), ``sql`` only sizes and footers (see the README).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline import store
from pipeline.config import StudyConfig
from pipeline.errors import CohortlabError


class VerifyError(CohortlabError, ValueError):
    """A verification asked for something there is no check of."""


@dataclass(frozen=True)
class Problem:
    """One stored file that is not what was written, or cannot be checked.

    Attributes
    ----------
    kind
        What the file is (``"instance"``), the name of its entry in :data:`CHECKS`.
    file
        The file, relative to the study folder when it lies inside it.
    reason
        Why, in words (``"not the file that was written (sha256 differs)"``).
    feature_set, source
        The feature set and source (slide or scan) of an instance file; for a model file, source is the model.
    """

    kind: str
    file: str
    reason: str
    feature_set: str = ""
    source: str = ""

    def __str__(self) -> str:
        where = " / ".join(x for x in (self.feature_set, self.source) if x)
        return f"{self.kind}: {self.file}{f' ({where})' if where else ''}: {self.reason}"


@dataclass
class Verification:
    """What :func:`verify` checked (files per kind) and the problems it found; ``ok`` when there are none."""

    checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> pl.DataFrame:
        """The problems as a table: kind, file, feature set, source, reason."""
        return pl.DataFrame(
            [{"kind": p.kind, "file": p.file, "feature set": p.feature_set or "-", "source": p.source or "-",
              "reason": p.reason} for p in self.problems],
            schema={"kind": pl.String, "file": pl.String, "feature set": pl.String, "source": pl.String,
                    "reason": pl.String},
        )

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {kind} {'folder' if kind == 'model' else 'file'}(s)"
                           for kind, n in self.checked.items()) or "nothing"
        if self.ok:
            return f"verified {counts}: no problem"
        return f"verified {counts}: {len(self.problems)} problem(s)"


def _shown(study: StudyConfig, path: Path) -> str:
    try:
        return path.resolve().relative_to(study.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def instance_problems(study: StudyConfig) -> tuple[int, list[Problem]]:
    """Every done instance file checked by content: ``(files checked, problems)``."""
    if not study.store_path.exists():
        raise store.StoreError(f"{study.store_path}: no store here (run `cohortlab ingest` first)")
    con = store.connect(study.store_path, read_only=True)
    try:
        files = store.done_files(con)
        results = store.check_done_files(store.store_dir(study.store_path), files, content=True)
    finally:
        con.close()
    base = store.store_dir(study.store_path)
    out = []
    for f, (reason, _) in zip(files, results):
        if reason is None and f.stamp is None:
            reason = "no sha256 recorded (embedded before checksums were kept): `cohortlab embed` records one"
        if reason is not None:
            out.append(Problem("instance", _shown(study, base / f.path), reason, f.feature_set, f.source_id))
    return len(files), out


def model_problems(study: StudyConfig) -> tuple[int, list[Problem]]:
    """Every saved model folder's files checked against the sha256 recorded at fit time: ``(folders checked, problems)``."""
    from analytics.models.persist import PersistError, read_files

    if not study.store_path.exists():
        raise store.StoreError(f"{study.store_path}: no store here (run `cohortlab ingest` first)")
    folders = sorted(p for p in study.models_dir.iterdir() if p.is_dir()) if study.models_dir.is_dir() else []
    folders = [p for p in folders if not p.name.startswith(".")]  # temporaries of a fit in progress
    out = []
    for folder in folders:
        try:
            read_files(folder, study.store_path)
        except PersistError as exc:
            # the message starts with the file it names; the table shows that file in its own column
            text = str(exc)
            file, _, reason = text.partition(": ")
            out.append(Problem("model", _shown(study, Path(file)) if reason else _shown(study, folder),
                               reason or text, source=folder.name))
    return len(folders), out


CHECKS: dict[str, Callable[[StudyConfig], tuple[int, list[Problem]]]] = {"instance": instance_problems, "model": model_problems}
"""kind -> check: each takes the study and returns (files checked, problems)."""


def verify(study: StudyConfig, kinds: Iterable[str] | None = None) -> Verification:
    """Check every stored file of ``study`` (or of ``kinds``) against what was recorded when it was written.

    Parameters
    ----------
    study
        The study.
    kinds
        Keys of :data:`CHECKS` to run (default: all).

    Returns
    -------
    Verification
        Files checked per kind and the problems found, in kind order.

    Raises
    ------
    pipeline.store.StoreError
        The study has no store yet, or it cannot be opened.
    """
    chosen = list(CHECKS) if kinds is None else list(kinds)
    unknown = [k for k in chosen if k not in CHECKS]
    if unknown:
        raise VerifyError(f"unknown kinds {unknown}; known: {', '.join(CHECKS)}")
    result = Verification()
    for kind in chosen:
        n, problems = CHECKS[kind](study)
        result.checked[kind] = n
        result.problems += problems
    return result


__all__ = ["CHECKS", "Problem", "Verification", "VerifyError", "instance_problems", "model_problems", "verify"]
