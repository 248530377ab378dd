"""A portable model bundle (``cohortlab export``) and scoring from it without the study (``predict --bundle``).

A bundle is a zip holding, each under a fixed name:

* ``models/<name>/...``: the model's folder (and those of the models whose scores it reads), the code-free files
  ``cohortlab fit`` wrote (skops with its trusted types, XGBoost JSON inside it, Parquet, JSON), which carry the
  preprocessing (imputation, coding, knots, scaling) inside the fitted pipeline;
* ``study.json``: the part of ``study.toml`` scoring reads (variables, cohort, the models' entries, horizons);
* ``schema.json``: the development store's clinical column types and ``variables`` table;
* ``cohorts/<cohort>.sql`` and ``views/*.sql``: the cohort SQL and the study's own views;
* ``development.json``: the development range of each numeric predictor and the risk-group threshold;
* for a model that reads image features, ``feature_sets.json``: each feature set's development record (encoder,
  weights identity, every embedding setting, dimension) and the name and sha256 of a local weights file, and
  ``stain/<feature set>/stain_reference.json`` (a stain-normalised set's reference); with ``--with-weights``,
  the weights file itself as ``weights/<feature set>/<file>``;
* ``model_card.md`` (:mod:`analytics.export.model_card`);
* ``MANIFEST.json``: the sha256 of every other part.

Opening a bundle checks, before anything in it is read: that it is a zip whose every name is a plain relative
path (no ``..``, no absolute path, no link, no repeated name), that its parts are exactly those ``MANIFEST.json``
lists with those sha256, that no part is a pickle, and that it is not larger than :data:`MAX_BYTES`
unpacked. It is then laid out as a minimal study in a temporary folder (a store holding the schema and the
parts' sha256), so scoring reads it exactly as it reads a study; the model files load only through
:func:`analytics.models.persist.load_model`. A local weights file an image model needs is taken from the bundle,
else from where the study had it, else beside the bundle, and must have the sha256 recorded at embedding
(torch files load as tensors only); otherwise the bundle is refused, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl

from analytics.cohort.files import cohort_name, find_cohort
from analytics.export.model_card import model_card
from analytics.models.persist import load_model, read_files
from analytics.predict.images import STAIN_FILE, development_record, image_feature_sets, stain_file
from analytics.predict.patients import PredictError
from analytics.predict.score import Development, clinical_inputs, duckdb_read, scoring_chain
from pipeline import atomic, store
from pipeline.config import StudyConfig, parse_study

FORMAT = "cohortlab-bundle/1"
MANIFEST = "MANIFEST.json"
MAX_BYTES = 1 << 30  # unpacked size a bundle may reach (a zip bomb is refused before it is unpacked)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # every entry's date: the same model gives the same bytes
# the suffixes a part may have; a pickle (.pkl, .joblib ...) is never one of them
_SUFFIXES = frozenset({".json", ".parquet", ".skops", ".csv", ".md", ".sql", ".pt", ".pth", ".bin", ".safetensors"})
_PICKLE_OPCODES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


class BundleError(PredictError):
    """A bundle that is not one ``cohortlab export`` wrote, or was changed since; the message names the part."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _study_record(study: StudyConfig, chain: list[str]) -> dict[str, Any]:
    """The part of ``study.toml`` scoring reads, as ``parse_study`` takes it."""
    return {
        "study": {"name": study.study.name, "seed": study.study.seed, "endpoint": study.study.endpoint,
                  "description": study.study.description, "store": "store.duckdb"},
        "manifests": {"patients": "patients.csv", "encoding": study.manifests.encoding},
        "variables": {k: v.model_dump(mode="json", exclude_none=True) for k, v in study.variables.items()},
        "cohort": None if study.cohort is None else study.cohort.model_dump(mode="json"),
        "models": [study.model(m).model_dump(mode="json") for m in reversed(chain)],
        "feature_sets": [fs.model_dump(mode="json", exclude_unset=True) for fs in image_feature_sets(study, chain)],
        # the cause of interest: a competing-risk model's study is not read without it
        "validation": {"horizons": list(study.validation.horizons),
                       **({"cause": study.validation.cause} if study.validation.cause is not None else {})},
        "sql": study.sql.model_dump(mode="json"),
    }


def _outcomes(study: StudyConfig) -> pl.DataFrame | None:
    from analytics.cohort import load_cohort

    frame = load_cohort(study, on_missing="keep").frame
    return frame.select([c for c in ("patient_id", "label", "time", "event", "center") if c in frame.columns])


def _feature_set_parts(study: StudyConfig, chain: list[str], with_weights: bool) -> dict[str, bytes]:
    """``feature_sets.json``, the stain references and (``with_weights``) the local weights files of the
    feature sets the models of ``chain`` read; nothing for a model on clinical inputs only."""
    parts: dict[str, bytes] = {}
    record: dict[str, Any] = {}
    for fs in image_feature_sets(study, chain):
        dev = development_record(study.store_path, fs.name)
        entry: dict[str, Any] = {"record": dev, "weights": None}
        if str(dev["weights"]).startswith("file:"):
            path = Path(fs.weights_source())
            entry["weights"] = {"file": path.name, "sha256": dev["weights"][5:], "bundled": with_weights,
                                "path": fs.weights}
            if with_weights:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise BundleError(f"--with-weights: feature set '{fs.name}': cannot read its weights file "
                                      f"{path} ({exc.strerror or exc}); nothing was written") from None
                if _sha256(data) != entry["weights"]["sha256"]:
                    raise BundleError(f"--with-weights: feature set '{fs.name}': weights file {path} has sha256 "
                                      f"{_sha256(data)}, not {entry['weights']['sha256']} recorded when the "
                                      "development slides or scans were embedded; nothing was written")
                parts[f"weights/{fs.name}/{path.name}"] = data
        reference = stain_file(study, fs)
        if reference is not None:
            parts[f"stain/{fs.name}/{STAIN_FILE}"] = reference.read_bytes()
        record[fs.name] = entry
    if record:
        parts["feature_sets.json"] = json.dumps(record, indent=1, sort_keys=True, default=str).encode()
    return parts


def bundle_parts(study: StudyConfig, name: str, with_weights: bool = False) -> dict[str, bytes]:
    """Every part of model ``name``'s bundle (``MANIFEST.json`` aside), by its name in the zip."""
    chain = scoring_chain(study, name)
    inputs = clinical_inputs(study, name)
    parts: dict[str, bytes] = _feature_set_parts(study, chain, with_weights)
    for m in chain:
        files = read_files(study.models_dir / m, study.store_path)
        if not files:
            raise BundleError(f"model '{m}' is not fitted yet ({study.models_dir / m}): run `cohortlab fit`")
        for file, data in files.items():
            parts[f"models/{m}/{file}"] = data
    dev = duckdb_read(study.store_path)
    schema = {"types": dev["types"], "variables": dev["variables"].to_dicts()}
    parts["schema.json"] = json.dumps(schema, indent=1, sort_keys=True, default=str).encode()
    parts["study.json"] = json.dumps(_study_record(study, chain), indent=1, sort_keys=True).encode()
    cohort = find_cohort(study, cohort_name(study, None))
    parts[f"cohorts/{cohort.name}"] = cohort.read_bytes()
    views = study.root / "views"
    if views.is_dir():
        for p in sorted(views.glob("*.sql")):
            parts[f"views/{p.name}"] = p.read_bytes()
    development = Development.of(study, name)
    parts["development.json"] = json.dumps(development.to_dict(), indent=1, sort_keys=True).encode()
    fitted = load_model(study.models_dir / name, study.store_path)
    images = json.loads(parts["feature_sets.json"]) if "feature_sets.json" in parts else None
    parts["model_card.md"] = model_card(study, fitted, _outcomes(study), development.to_dict(), inputs,
                                        images).encode()
    return parts


def export_bundle(study: StudyConfig, name: str, out: Path, with_weights: bool = False) -> str:
    """Write model ``name``'s bundle to ``out`` in one step; returns the sha256 of its ``MANIFEST.json``.

    ``with_weights``: also pack the local weights file of each feature set an image model reads.

    Raises
    ------
    PredictError
        The model is not fitted, ``out`` is a folder or a link, or (``with_weights``) a weights file is missing
        or no longer the one the development images were embedded with.
    """
    target = Path(out)
    if target.is_symlink() or target.is_dir():
        raise BundleError(f"--out {out}: a {'link' if target.is_symlink() else 'folder'}; give a file path "
                          "(nothing was written)")
    parts = bundle_parts(study, name, with_weights)
    manifest = json.dumps({"format": FORMAT, "model": name,
                           "files": {k: _sha256(v) for k, v in sorted(parts.items())}}, indent=1).encode()
    with atomic.staged(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for part, data in [(MANIFEST, manifest), *sorted(parts.items())]:
            info = zipfile.ZipInfo(part, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)
    return _sha256(manifest)


# --- reading a bundle ----------------------------------------------------------------------------


def _safe_name(name: str, where: Path) -> None:
    """Refuse a zip entry name that is not a plain relative path (zip-slip and kin)."""
    bits = name.split("/")
    if not name or "\\" in name or name.startswith("/") or ":" in bits[0] or any(b in ("", ".", "..") for b in bits):
        raise BundleError(f"{where}: part {name!r} is not a plain relative name; the bundle is refused")


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its parts by name and the model it scores."""

    path: Path
    model: str
    parts: dict[str, bytes]
    digest: str


def read_bundle(path: Path) -> Bundle:
    """Every part of the bundle at ``path``, checked (see the module notes).

    Raises
    ------
    BundleError
        Not a zip, a name that is not plain, a link, a repeated, added or missing part, a sha256 that differs,
        a pickle, or more than :data:`MAX_BYTES` unpacked.
    """
    where = Path(path)
    try:
        zf = zipfile.ZipFile(where)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{where}: not a cohortlab bundle ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for info in infos:
            _safe_name(info.filename, where)
            if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
                raise BundleError(f"{where}: part {info.filename!r} is a link or a folder; the bundle is refused")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise BundleError(f"{where}: part {repeated[0]!r} appears twice; the bundle is refused")
        if sum(i.file_size for i in infos) > MAX_BYTES:
            raise BundleError(f"{where}: unpacks to more than {MAX_BYTES} bytes; the bundle is refused")
        if MANIFEST not in names:
            raise BundleError(f"{where}: no {MANIFEST}; not a bundle cohortlab export wrote")
        raw_manifest = zf.read(MANIFEST)
        try:
            manifest = json.loads(raw_manifest)
            files = dict(manifest["files"])
            model = str(manifest["model"])
        except (ValueError, KeyError, TypeError):
            raise BundleError(f"{where}: {MANIFEST} is not a bundle manifest") from None
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{where}: format {manifest.get('format')!r}, not {FORMAT}")
        added = sorted(set(names) - set(files) - {MANIFEST})
        if added:
            raise BundleError(f"{where}: part {added[0]!r} is not listed in {MANIFEST}; the bundle is refused")
        missing = sorted(set(files) - set(names))
        if missing:
            raise BundleError(f"{where}: part {missing[0]!r} listed in {MANIFEST} is missing; the bundle is refused")
        parts: dict[str, bytes] = {}
        for name in sorted(files):
            _safe_name(name, where)
            if PurePosixPath(name).suffix not in _SUFFIXES:
                raise BundleError(f"{where}: part {name!r} is of a kind a bundle never holds; the bundle is refused")
            data = zf.read(name)
            if _sha256(data) != files[name]:
                raise BundleError(f"{where}: part {name!r}: its sha256 differs from the one in {MANIFEST}; the "
                                  "bundle was changed and is refused")
            if data.startswith(_PICKLE_OPCODES):
                raise BundleError(f"{where}: part {name!r} is a pickle (never loaded); the bundle is refused")
            parts[name] = data
    if not any(n.startswith(f"models/{model}/") for n in parts):
        raise BundleError(f"{where}: holds no files of model {model!r}")
    return Bundle(where, model, parts, _sha256(raw_manifest))


@contextmanager
def opened(path: Path) -> Iterator[tuple[StudyConfig, Bundle]]:
    """A checked bundle laid out as a minimal study in a temporary folder (removed on exit)."""
    bundle = read_bundle(path)
    with tempfile.TemporaryDirectory(prefix="cohortlab-bundle-") as tmp:
        root = Path(tmp)
        for name, data in bundle.parts.items():
            if name.startswith(("models/", "cohorts/", "views/", "weights/")):
                target = root.joinpath(*PurePosixPath(name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        try:
            record = json.loads(bundle.parts["study.json"])
            schema = json.loads(bundle.parts["schema.json"])
            images = json.loads(bundle.parts.get("feature_sets.json", b"{}"))
        except (KeyError, ValueError):
            raise BundleError(f"{path}: study.json, schema.json or feature_sets.json missing or unreadable") from None
        for fs in record.get("feature_sets") or []:
            entry = images.get(fs.get("name")) or {}
            if entry.get("weights"):
                fs["weights"] = str(_weights_file(bundle, root, fs["name"], entry["weights"]))
        study = parse_study(record, root, source=f"{path}:study.json")
        _store(study.store_path, schema, bundle)
        _register_feature_sets(study, images, bundle)
        yield study, bundle


def _weights_file(bundle: Bundle, root: Path, feature_set: str, weights: dict[str, Any]) -> Path:
    """The local weights file a feature set of the bundle needs: the bundle's own, else where the study had it,
    else beside the bundle; it must have the recorded sha256.

    Raises
    ------
    BundleError
        No such file anywhere, or one whose sha256 differs (naming it and both digests).
    """
    import torch

    from pipeline.store import sha256_file

    name, want = str(weights["file"]), str(weights["sha256"])
    if PurePosixPath(name).name != name or name in ("", ".", ".."):
        raise BundleError(f"{bundle.path}: feature set '{feature_set}': weights file name {name!r} is not a plain "
                          "file name; the bundle is refused")
    packed = f"weights/{feature_set}/{name}"
    if packed in bundle.parts:
        file, shown = root / "weights" / feature_set / name, packed
    else:
        places = [p for p in (Path(str(weights.get("path") or "")), bundle.path.resolve().parent / name)
                  if p.is_absolute()]
        found = [p for p in places if p.is_file()]
        if not found:
            raise BundleError(f"{bundle.path}: feature set '{feature_set}' needs its weights file {name} (sha256 "
                              f"{want}): the bundle does not hold it (export --with-weights packs it) and it is not at "
                              f"{' or '.join(str(p) for p in places)}; nothing was scored")
        file = found[0]
        shown = str(file)
    got = sha256_file(file)
    if got != want:
        raise BundleError(f"{bundle.path}: feature set '{feature_set}': weights file {shown} has sha256 {got}, not "
                          f"{want} recorded when the development images were embedded; nothing was scored")
    if file.suffix != ".safetensors":  # a torch file must load as tensors only (no code runs when it is read)
        try:
            torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BundleError(f"{bundle.path}: feature set '{feature_set}': weights file {name} is not a tensors-only "
                              f"torch file ({type(exc).__name__}); it is never loaded") from None
    return file


def _register_feature_sets(study: StudyConfig, images: dict[str, Any], bundle: Bundle) -> None:
    """The bundle's store gets each feature set's development record, and its folder the stain references."""
    if not images:
        return
    con = store.connect(study.store_path)
    try:
        for name, entry in images.items():
            rec = entry["record"]
            store.register_feature_set(con, store.FeatureSetRecord(name, rec["modality"], rec["encoder"],
                                                                   rec["weights"], rec["params"], rec["dim"]))
    finally:
        con.close()
    for name in images:
        reference = bundle.parts.get(f"stain/{name}/{STAIN_FILE}")
        if reference is not None:
            target = store.instance_path(study.store_path, name, "x").parent / STAIN_FILE
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(reference)


def _store(path: Path, schema: dict[str, Any], bundle: Bundle) -> None:
    """The bundle's store: the development schema (no patients) and the sha256 of each model file."""
    con = store.connect(path)
    try:
        cols = ",\n    ".join(f"{store.quote_ident(c)} {t}" for c, t in schema["types"].items())
        con.execute("DROP TABLE IF EXISTS clinical")
        con.execute(f"CREATE TABLE clinical (\n    patient_id VARCHAR PRIMARY KEY{',' if cols else ''}\n    {cols}\n)")
        rows = [[r.get(k) for k in ("name", "type", "unit", "role", "label", "n_missing", "levels")]
                for r in schema["variables"]]
        if rows:
            con.executemany("INSERT INTO variables (name, type, unit, role, label, n_missing, levels) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        digests: dict[str, dict[str, str]] = {}
        for name, data in bundle.parts.items():
            bits = PurePosixPath(name).parts
            if bits[0] == "models" and len(bits) == 3:
                digests.setdefault(bits[1], {})[bits[2]] = _sha256(data)
        for model, files in digests.items():
            store.record_model_artifacts(con, model, files)
    finally:
        con.close()


def development_of(bundle: Bundle) -> Development:
    """The development ranges and threshold the bundle carries."""
    return Development.from_dict(json.loads(bundle.parts.get("development.json", b"{}")))


def read_card(bundle: Bundle) -> str:
    """The bundle's ``model_card.md``."""
    return bundle.parts.get("model_card.md", b"").decode("utf-8")


__all__ = ["FORMAT", "MANIFEST", "MAX_BYTES", "Bundle", "BundleError", "bundle_parts", "development_of",
           "export_bundle", "opened", "read_bundle", "read_card"]
