"""Validation results cached per model and per pair of models, so that ``validate`` recomputes only what changed.

Each entry is one JSON file in ``<study folder>/cache/validation/`` (beside study.toml: the report folder holds
only what the report shows), named by what it holds and the sha256 *key* of
everything its numbers depend on:

* a model's entry (``model.<name>.<key>.json``: its :class:`~analytics.validation.records.ModelMetrics`, curves and
  notes, as ``_model_metrics`` returns them) is keyed by its predictions, its saved horizon and grid risks,
  the cohort's outcomes, its endpoint, the ``[validation]`` settings and seed, and :func:`code_digest` (the source
  of ``analytics.validation`` and ``analytics.stats`` and the numerical libraries' versions);
* a pair's entry (``comparison.<a>.<b>.<key>.json``: its paired DeLong comparisons) is keyed by both models' keys.

Adding a model computes only its entries; new predictions of one model change only the keys of its entries
(older entries of the same model or pair are removed when the new one is written). An entry is data, never code
(JSON, read with :func:`json.loads`): one that does not parse, lacks a field, or whose content does not match the
sha256 it records is ignored and recomputed. Entries are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import polars as pl

from analytics.validation.measures import SplitMetrics
from analytics.validation.records import ModelMetrics, PairedComparison
from analytics.validation.result import Validation
from analytics.validation.values import ValidateError
from pipeline import atomic

log = logging.getLogger("cohortlab.validate")

FORMAT = 1
"""The entries' layout; a change to it (or to the code) gives new keys, so old entries are never misread."""

# what the metrics are computed with besides the project's own code
LIBRARIES = ("numpy", "scipy", "polars", "scikit-learn", "statsmodels", "lifelines")
# the project's packages whose code computes the metrics (analytics.stats imports nothing else of the project)
_CODE_DIRS = ("validation", "stats")


def code_digest() -> str:
    """sha256 of the code that computes the metrics: the ``.py`` files of ``analytics/validation`` and
    ``analytics/stats`` (relative path and content) and the versions of :data:`LIBRARIES`."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    for folder in _CODE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            raw = path.read_bytes()
            h.update(f"{path.relative_to(root).as_posix()}:{len(raw)}:".encode())
            h.update(raw)
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}={version(lib)}\n".encode())
        except PackageNotFoundError:
            h.update(f"{lib}=-\n".encode())
    return h.hexdigest()


def frame_digest(frame: pl.DataFrame | None) -> str:
    """sha256 of a frame's column names, types and values (as CSV); ``-`` for no frame."""
    if frame is None:
        return "-"
    h = hashlib.sha256(json.dumps([[c, str(t)] for c, t in frame.schema.items()]).encode())
    h.update(frame.write_csv().encode())
    return h.hexdigest()


def digest(*parts: str) -> str:
    """sha256 of ``parts``, each length-prefixed (no two different lists of parts give the same text)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8")
        h.update(f"{len(raw)}:".encode())
        h.update(raw)
    return h.hexdigest()


def _text(payload: Any) -> str:
    return json.dumps(payload, allow_nan=False, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True)
class CachedModel:
    """One model's validation as ``_model_metrics`` returns it: metrics, curves (model-level: split -> ...), notes."""

    metrics: ModelMetrics
    curves: dict[str, Any]
    notes: list[str]


def _encode_model(m: ModelMetrics, curves: Mapping[str, Any], notes: Iterable[str]) -> dict[str, Any]:
    # the order of each split's estimates (and calibration keys) is kept: metrics.csv lists them in it, and
    # SplitMetrics.from_dict sorts the ones outside the measure table
    order = {s: {"estimates": list(sm.estimates), "calibration": list(sm.calibration or {})} for s, sm in m.splits.items()}
    return {"metrics": m.to_dict(), "order": order, "curves": curves, "notes": list(notes)}


def _decode_model(payload: Mapping[str, Any], source: str) -> CachedModel:
    data = Validation.from_dict({"models": {"m": payload["metrics"]}}, source)
    m = data.models["m"]
    order = payload["order"]
    splits: dict[str, SplitMetrics] = {}
    for s, sm in m.splits.items():
        want = order[s]
        if sorted(want["estimates"]) != sorted(sm.estimates) or sorted(want["calibration"]) != sorted(sm.calibration or {}):
            raise ValidateError(f"{source}: the order of split {s} does not match its measures")
        cal = None if sm.calibration is None else {k: sm.calibration[k] for k in want["calibration"]}
        splits[s] = SplitMetrics(sm.n, sm.n_positive, {k: sm.estimates[k] for k in want["estimates"]}, cal,
                                 sm.logrank, sm.n_survival, sm.n_events)
    curves, notes = payload["curves"], payload["notes"]
    if not isinstance(curves, dict) or not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ValidateError(f"{source}: curves or notes of the wrong type")
    return CachedModel(ModelMetrics(splits, m.centers, m.threshold, m.risk_cutpoints), curves, notes)


class ValidationCache:
    """The per-model and per-pair entries of one study's validation (see the module notes).

    Parameters
    ----------
    folder
        Where the entries live (``<study folder>/cache/validation``); made when the first entry is written.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, names: tuple[str, ...], key: str) -> Path:
        return self.folder / f"{kind}.{'.'.join(names)}.{key}.json"

    def _read(self, kind: str, names: tuple[str, ...], key: str) -> Any | None:
        """The payload of an entry, or None when it is missing, unreadable, or not what it says it is."""
        path = self._path(kind, names, key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            payload = entry["payload"]
            ok = (isinstance(entry, dict) and entry.get("format") == FORMAT and entry.get("key") == key
                  and entry.get("kind") == kind and entry.get("sha256") == hashlib.sha256(_text(payload).encode()).hexdigest())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            log.warning("%s: not a valid cache entry; recomputed", path)
            self.misses += 1
            return None
        self.hits += 1
        return payload

    def _write(self, kind: str, names: tuple[str, ...], key: str, payload: Any) -> None:
        """Write an entry and remove the older entries of the same kind and names (other keys)."""
        try:
            text = _text(payload)
        except (TypeError, ValueError) as exc:  # a value JSON cannot hold: computed every time, never cached
            log.info("%s %s not cached: %s", kind, ".".join(names), exc)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._path(kind, names, key)
        entry = {"format": FORMAT, "kind": kind, "names": list(names), "key": key,
                 "sha256": hashlib.sha256(text.encode()).hexdigest(), "payload": payload}
        atomic.write_text(target, _text(entry) + "\n")
        prefix = f"{kind}.{'.'.join(names)}."
        for old in self.folder.glob(f"{prefix}*.json"):
            # names hold no dots (model names are letters, digits, '_' and '-'), so the rest is a key
            if old != target and "." not in old.name[len(prefix):].removesuffix(".json"):
                old.unlink(missing_ok=True)

    # --- one model ------------------------------------------------------------------------------------

    def model(self, name: str, key: str) -> CachedModel | None:
        """The cached validation of model ``name`` under ``key``, or None (then computed and :meth:`put_model`)."""
        payload = self._read("model", (name,), key)
        if payload is None:
            return None
        try:
            return _decode_model(payload, str(self._path("model", (name,), key)))
        except (ValidateError, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("%s: cache entry not readable (%s); recomputed", self._path("model", (name,), key), exc)
            self.hits -= 1
            self.misses += 1
            return None

    def put_model(self, name: str, key: str, metrics: ModelMetrics, curves: Mapping[str, Any],
                  notes: Iterable[str]) -> None:
        self._write("model", (name,), key, _encode_model(metrics, curves, notes))

    # --- a pair -----------------------------------------------------------------------------------------

    def comparisons(self, a: str, b: str, key: str) -> list[PairedComparison] | None:
        """The cached paired comparisons of ``a`` and ``b`` under ``key``, or None."""
        payload = self._read("comparison", (a, b), key)
        if payload is None:
            return None
        try:
            if not isinstance(payload, list):
                raise TypeError("not a list")
            return [PairedComparison.from_dict(c, a, b, c["split"]) for c in payload]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("%s: cache entry not readable (%s); recomputed", self._path("comparison", (a, b), key), exc)
            self.hits -= 1
            self.misses += 1
            return None

    def put_comparisons(self, a: str, b: str, key: str, comparisons: Iterable[PairedComparison]) -> None:
        self._write("comparison", (a, b), key, [c.to_dict() for c in comparisons])
