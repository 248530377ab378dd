"""New patients' slides and scans, embedded exactly as the model's feature sets embedded the development patients.

The model (and every model whose scores it reads) names its feature sets; each new patient's slides (``--slides``)
or scans (``--scans``) are read as ``cohortlab ingest`` reads a manifest (paths relative to the manifest's
folder), probed, and embedded by the embedding stage's own code (:mod:`pipeline.embed`, the modality's embedder)
into the scoring area's store: a temporary folder, never the study's. Before any of them is embedded, the feature
set's record as it would be made now (encoder, weights identity such as ``file:<sha256>`` of a local file, mpp or
spacing, tile size, tissue detection, preprocessing, stain reference, pooling, dimension) must equal the one the
development store holds: a difference is refused, naming the setting. The instances are pooled per patient as in
development (:func:`pipeline.pooling.pool_feature_set`), so a development patient's slides give its development
features and score.

A slide or scan that cannot be read or embedded is that patient's problem only: a patient left without any source
of a feature set is not scored (the reason names the file and why); one that keeps some is scored and flagged.
A stain-normalised feature set uses the development stain reference (its file, checked by its sha256 in the
feature set's record), never one fitted on new slides.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from analytics.cohort import feature_key
from analytics.models.data import mil_feature_set
from analytics.predict.patients import PredictError
from pipeline import store
from pipeline.config import FeatureSet, StudyConfig
from pipeline.errors import CohortlabError

# modality -> (option, table, id column, path columns)
SOURCES = {"wsi": ("--slides", "slides", "slide_id", ["path"]),
           "ct": ("--scans", "scans", "scan_id", ["image_path", "mask_path"])}
STAIN_FILE = "stain_reference.json"


@dataclass(frozen=True)
class ImageFiles:
    """The new patients' image manifests and where to embed them.

    Attributes
    ----------
    slides, scans
        CSV manifests as ``cohortlab ingest`` reads them (``slide_id, patient_id, path[, mpp]``;
        ``scan_id, patient_id, image_path[, mask_path, mask_label]``), paths relative to the manifest's folder.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    slides: Path | None = None
    scans: Path | None = None
    device: str = "auto"

    def manifest(self, modality: str) -> Path | None:
        return self.slides if modality == "wsi" else self.scans


@dataclass
class Embedded:
    """What embedding the new patients' images left: per patient, why it cannot be scored, and its flags."""

    reasons: dict[str, str] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)
    feature_sets: list[str] = field(default_factory=list)


def image_feature_sets(study: StudyConfig, chain: Sequence[str]) -> list[FeatureSet]:
    """The feature sets the models of ``chain`` read (pooled blocks or MIL bags), in first-use order."""
    names: list[str] = []
    for n in chain:
        spec = study.model(n)
        if spec.traits.bags:
            refs = [mil_feature_set(spec)]
        else:
            refs = [feature_key(f)[0] for f in spec.features]
        names += [r for r in refs if r not in names]
    return [study.feature_set(n) for n in names]


def development_record(store_path: Path, name: str) -> dict[str, Any]:
    """The development store's ``feature_sets`` row of ``name`` (params parsed), read-only.

    Raises
    ------
    PredictError
        The study's store has no such feature set (it was never embedded).
    """
    con = store.connect(store_path, read_only=True)
    try:
        row = store.feature_set_record(con, name)
    finally:
        con.close()
    if row is None:
        raise PredictError(f"feature set '{name}' is not in the development store {store_path}: its settings are "
                           "unknown, so new images cannot be embedded as the development ones were")
    return {"name": name, "modality": row["modality"], "encoder": row["encoder"], "weights": row["weights"],
            "params": json.loads(row["params"]), "dim": row["dim"]}


def _differences(dev: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: development X, now Y`` for each setting that differs (nested params by dotted key)."""
    out = []
    for key in sorted(set(dev) | set(now)):
        a, b = dev.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: development {a!r}, now {b!r}")
    return out


def check_record(model: str, dev: dict[str, Any], rec: store.FeatureSetRecord) -> None:
    """Refuse an embedder whose record differs from the development one, naming each setting that differs."""
    now = {"modality": rec.modality, "encoder": rec.encoder, "weights": rec.weights,
           "params": json.loads(json.dumps(rec.params, sort_keys=True, default=str)), "dim": rec.dim}
    if str(dev["weights"]).startswith("file:"):  # a local file is known by its sha256, wherever it lies now
        now["params"].pop("weights_spec", None)
        dev = {**dev, "params": {k: v for k, v in dev["params"].items() if k != "weights_spec"}}
    diff = _differences({k: dev[k] for k in now}, now)
    if diff:
        raise PredictError(f"model '{model}': feature set '{dev['name']}' cannot be reproduced here, so new images "
                           f"would not be embedded as the development ones were: {'; '.join(diff)} (nothing was "
                           "scored)")


def add_sources(area: StudyConfig, modality: str, manifest: Path, patient_ids: Sequence[str]) -> dict[str, str]:
    """Read a slides or scans manifest of the new patients into the scoring area's store (absolute paths).

    Returns ``patient_id -> problem`` for the rows that could not be read or probed (the patient's other sources
    are kept). Rows of patients who are not in this call are skipped. A problem of the whole file (a missing
    column, a repeated id, an empty patient id) refuses it.
    """
    from pipeline.ingest import SCAN_SCHEMA, SLIDE_SCHEMA, _probe_scan, _probe_slide, _source_rows
    from pipeline.manifest import ManifestError, read_manifest, text_column

    option, table, id_col, path_cols = SOURCES[modality]
    path = Path(manifest).resolve()
    try:
        m = read_manifest(path, area.manifests.encoding)
    except ManifestError as exc:
        raise PredictError(f"{option} {manifest}: {exc}") from None
    reader = area.model_copy(update={"root": path.parent})  # the manifest's paths are relative to its folder
    probe = _probe_slide if modality == "wsi" else _probe_scan
    rows, errors = _source_rows(reader, str(path), id_col, path_cols, set(patient_ids), probe, table, False)
    owner = ({m.row_number(i): pid for i, pid in enumerate(text_column(m, "patient_id"))}
             if "patient_id" in m.frame.columns else {})
    known = set(patient_ids)
    problems: dict[str, str] = {}
    refused = []
    for err in errors:
        pid = owner.get(err.row) if err.row is not None else None
        if err.row is None or "duplicate" in err.message or (pid is None and err.column == "patient_id"):
            refused.append(str(err))
        elif pid in known:
            problems.setdefault(str(pid), str(err))
        # else: a row of a patient not in this call, never read further
    if refused:
        raise PredictError(f"{option}: {'; '.join(refused[:5])}{' ...' if len(refused) > 5 else ''} (nothing was "
                           "scored)")
    for row in rows:
        for c in path_cols:
            if row.get(c) is not None:
                row[c] = reader.path(row[c]).as_posix()
        row.pop("legacy_fingerprint", None)
    schema: Any = SLIDE_SCHEMA if modality == "wsi" else SCAN_SCHEMA
    frame = pl.DataFrame(rows, schema=schema)
    con = store.connect(area.store_path)
    try:
        con.register("_s", frame.to_arrow())
        con.execute(f"INSERT INTO {table} ({', '.join(frame.columns)}) SELECT * FROM _s")
        con.unregister("_s")
    finally:
        con.close()
    return problems


def _stain_reference(embedder: Any, fs: FeatureSet, reference: Path | None, folder: Path) -> None:
    """Give a stain-normalised embedder the development reference (never one fitted on the new slides)."""
    if fs.stain_norm == "none":
        return
    from pipeline.source import Source
    from pipeline.wsi.stain_reference import StainReference

    ref = StainReference.read(reference) if reference is not None else None
    if ref is None:
        raise PredictError(f"feature set '{fs.name}': its development stain reference ({reference or STAIN_FILE}) "
                           "is missing or unreadable; new slides cannot be normalised as the development ones were")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reference, folder / STAIN_FILE)  # type: ignore[arg-type]
    # the slides the reference was fitted on, as it recorded them: the stored reference is reused, never refitted
    used = [Source(t["slide_id"], "", t["fingerprint"]) for t in ref.tiles]
    settings = ref.settings
    try:
        got = embedder.prepare_stain(used, int(settings.get("seed", 0)), list(settings.get("external_centers", [])),
                                     folder, None)
    except (CohortlabError, ValueError, OSError, KeyError) as exc:
        raise PredictError(f"feature set '{fs.name}': the development stain reference does not fit its settings "
                           f"here ({exc})") from None
    if got is None or got.digest != ref.digest:
        raise PredictError(f"feature set '{fs.name}': the development stain reference does not fit its settings here")


def embed_new(model: str, area: StudyConfig, fs: FeatureSet, dev: dict[str, Any], device: str,
              stain_reference: Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """Embed the scoring area's sources of ``fs`` and pool them per patient, as development did.

    Returns ``patient_id -> [(source_id, error)]`` of the sources that failed.

    Raises
    ------
    PredictError
        The encoder cannot be built (a missing backbone or weights file), or its record differs from ``dev``.
    """
    from pipeline.embed import embed_source, finish_feature_set, make_embedder, plan_feature_set, tally

    plan = plan_feature_set(area, fs)
    try:
        embedder = make_embedder(fs, device)
    except (CohortlabError, ValueError, ImportError) as exc:
        raise PredictError(f"model '{model}': feature set '{fs.name}': its encoder cannot be built here, so new "
                           f"images cannot be embedded: {exc} (nothing was scored)") from None
    try:
        folder = store.instance_path(area.store_path, fs.name, "x").parent
        _stain_reference(embedder, fs, stain_reference, folder)
        rec = embedder.record()
        check_record(model, dev, rec)
        con = store.connect(area.store_path)
        try:
            store.register_feature_set(con, rec)
        finally:
            con.close()
        for src in plan.todo:
            tally(plan.run, embed_source(embedder, src, fs.name, area.store_path))
    finally:
        embedder.close()
    finish_feature_set(area, fs, plan)
    owner = {s.source_id: s.patient_id for s in plan.sources}
    failed: dict[str, list[tuple[str, str]]] = {}
    for sid, why in plan.run.failures:
        failed.setdefault(owner[sid], []).append((sid, why))
    return failed


def embed_patients(study: StudyConfig, model: str, chain: Sequence[str], area: StudyConfig, ids: Sequence[str],
                   files: ImageFiles | None) -> Embedded:
    """Embed the new patients' images for every feature set the model's chain reads (see the module notes).

    Raises
    ------
    PredictError
        A manifest the model needs is not given or cannot be read, or a feature set cannot be reproduced.
    """
    out = Embedded()
    sets = image_feature_sets(study, chain)
    if not sets:
        return out
    files = files or ImageFiles()
    problems: dict[str, dict[str, str]] = {}
    for modality in sorted({fs.modality for fs in sets}):
        option, table = SOURCES[modality][:2]
        manifest = files.manifest(modality)
        if manifest is None:
            names = ", ".join(f"'{fs.name}'" for fs in sets if fs.modality == modality)
            raise PredictError(f"model '{model}' reads image features (feature set {names}): give the new patients' "
                               f"{table} with {option} {table}.csv")
        problems[modality] = add_sources(area, modality, manifest, ids)
    con = store.connect(area.store_path, read_only=True)
    try:
        have = {m: {str(p): int(n) for p, n in con.execute(
            f"SELECT patient_id, count(*) FROM {SOURCES[m][1]} GROUP BY patient_id").fetchall()} for m in problems}
    finally:
        con.close()
    for fs in sets:
        dev = development_record(study.store_path, fs.name)
        failed = embed_new(model, area, fs, dev, files.device, stain_file(study, fs))
        out.feature_sets.append(fs.name)
        manifest = files.manifest(fs.modality)
        for pid in ids:
            bad = [f"{sid}: {why}" for sid, why in failed.get(pid, [])]
            probe = problems[fs.modality].get(pid)
            if probe is not None:
                bad.insert(0, probe)
            done = len(failed.get(pid, [])) < have[fs.modality].get(pid, 0)
            if not done:
                why = "; ".join(bad) or f"no {SOURCES[fs.modality][1][:-1]} in {Path(str(manifest)).name}"
                out.reasons.setdefault(pid, f"feature set '{fs.name}': {why}")
            elif bad:
                out.flags.setdefault(pid, []).extend(f"{fs.name}: not embedded: {b}" for b in bad)
    return out


def stain_file(study: StudyConfig, fs: FeatureSet) -> Path | None:
    """The development stain reference of a stain-normalised feature set (None when it has none)."""
    if fs.modality != "wsi" or fs.stain_norm == "none":
        return None
    path = store.instance_path(study.store_path, fs.name, "x").parent / STAIN_FILE
    return path if path.is_file() else None


__all__ = ["SOURCES", "STAIN_FILE", "Embedded", "ImageFiles", "add_sources", "check_record", "development_record",
           "embed_new", "embed_patients", "image_feature_sets", "stain_file"]
