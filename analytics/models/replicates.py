"""Internal-validation replicates on disk: one ``.npz`` of numpy arrays per replicate, read without pickle.

The fit stage (:mod:`analytics.internal_fit`) refits a model's whole procedure on each resample of its
training patients and writes replicate ``b`` as ``<models>/.internal/<model>/<key>/rep_<b>.npz``; validation
reads them back with :func:`load_replicates` as :class:`analytics.stats.resampling.Replicate` records,
without importing the fit stage. ``key`` digests what the replicates depend on (the model's fit key, the
resampling family, the seed, the folds): a changed model gets a new folder and the old one is removed.

Each file holds arrays only (``np.load(..., allow_pickle=False)``), written atomically with fixed zip
timestamps, so the same replicate gives the same bytes whichever engine and how many workers made it.
The model's manifest (``FitRecord.internal``) records the folder and the sha256 of the files; a file that
is not the one fit wrote is never read. Beside them, ``apparent.npz`` holds the final model's scores of the
same n training patients (:class:`Apparent`, rms's "original" column; :func:`load_apparent`), its sha256
recorded as ``internal["apparent"]``.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analytics.stats.resampling import Replicate
from pipeline import atomic
from pipeline.errors import CohortlabError

if TYPE_CHECKING:
    from analytics.models.artifacts import FitRecord

INTERNAL_FOLDER = ".internal"  # under the study's models folder, beside the models' own folders
_NAME = re.compile(r"\Arep_(\d{4,})\.npz\Z")
_ARRAYS = ("index", "apparent", "test", "apparent_risk", "test_risk")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: no wall-clock time in the bytes


class ReplicateError(CohortlabError, ValueError):
    """A replicate file that is missing, unreadable or not the one ``cohortlab fit`` wrote (names the file)."""


def replicate_name(b: int) -> str:
    """The file name of replicate ``b`` (0-based): ``rep_0000.npz``."""
    return f"rep_{b:04d}.npz"


def replicate_index(path: Path) -> int | None:
    """The replicate number of a file name made by :func:`replicate_name`, else None."""
    m = _NAME.match(Path(path).name)
    return None if m is None else int(m.group(1))


def encode(rep: Replicate) -> bytes:
    """The ``.npz`` bytes of a replicate: its arrays (absent ones left out) and ``error`` as a text array.

    Entries are stored uncompressed in a fixed order with a fixed timestamp, so equal replicates give equal
    bytes (``numpy.savez`` stamps the current time).
    """
    arrays: dict[str, np.ndarray] = {}
    for name in _ARRAYS:
        value = getattr(rep, name)
        if value is not None:
            arrays[name] = np.ascontiguousarray(value, dtype=np.int64 if name == "index" else np.float64)
    if rep.error is not None:
        arrays["error"] = np.array(rep.error, dtype=np.str_)
    return _zipped(arrays)


def _zipped(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as ``.npz`` bytes: stored uncompressed, in order, with a fixed timestamp."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, value, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buffer.getvalue()


def decode(data: bytes, where: str | Path = "replicate") -> Replicate:
    """The replicate of :func:`encode`'s bytes; arrays only (no pickle), checked for shape.

    Raises
    ------
    ReplicateError
        Not such a file (names ``where``).
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            got = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ReplicateError(f"{where}: not a replicate file ({exc})") from None
    for key in ("index", "apparent", "test"):
        if key not in got or got[key].ndim != 1:
            raise ReplicateError(f"{where}: not a replicate file (no one-dimensional array {key!r})")
    error = str(got["error"]) if "error" in got else None
    return Replicate(got["index"], got["apparent"], got["test"], got.get("apparent_risk"), got.get("test_risk"), error)


def write_replicate(folder: Path, b: int, rep: Replicate) -> Path:
    """Write replicate ``b`` into ``folder`` atomically (a temporary name, renamed when complete)."""
    path = Path(folder) / replicate_name(b)
    with atomic.staged(path) as tmp:
        tmp.write_bytes(encode(rep))
    return path


def files_digest(blobs: Sequence[bytes]) -> str:
    """sha256 over the replicates' files in replicate order (each file's sha256, then the next)."""
    h = hashlib.sha256()
    for data in blobs:
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def replicate_folder(models_dir: Path, model: str, key: str) -> Path:
    """Where a model's replicates of one key live: ``<models>/.internal/<model>/<key>``."""
    return Path(models_dir) / INTERNAL_FOLDER / model / key


def read_blobs(folder: Path, count: int) -> list[bytes]:
    """The bytes of replicates ``0 .. count-1`` of ``folder``.

    Raises
    ------
    ReplicateError
        A replicate file is missing.
    """
    out = []
    for b in range(count):
        path = Path(folder) / replicate_name(b)
        try:
            out.append(path.read_bytes())
        except FileNotFoundError:
            raise ReplicateError(f"{path}: missing; run `cohortlab fit` to make the model's replicates") from None
    return out


def load_replicates(source: Path | str, record: FitRecord | None = None) -> list[Replicate]:
    """A model's internal-validation replicates, in replicate order.

    Parameters
    ----------
    source
        The study's models folder (with ``record``: the files named by ``record.internal``, checked against
        the sha256 recorded there), or a replicate folder itself (every ``rep_*.npz`` in it, unchecked).
    record
        The model's fit record (``manifest.json``).

    Raises
    ------
    ReplicateError
        The record has no replicates, a file is missing, not a replicate file, or not the one fit wrote.
    """
    source = Path(source)
    if record is None:
        numbered = sorted((i, p) for p in source.glob("rep_*.npz") if (i := replicate_index(p)) is not None)
        return [decode(p.read_bytes(), p) for _, p in numbered]
    internal: dict[str, Any] | None = record.internal
    if not internal or not internal.get("folder"):
        raise ReplicateError(f"model {record.name}: no internal-validation replicates were fitted "
                             "([validation] internal = \"none\" when it was fitted)")
    folder = source / str(internal["folder"])
    blobs = read_blobs(folder, int(internal["replicates"]))
    if files_digest(blobs) != internal.get("digest"):
        raise ReplicateError(f"{folder}: the replicate files are not the ones `cohortlab fit` recorded for model "
                             f"{record.name} (sha256 differs); run `cohortlab fit` to refit them")
    return [decode(data, folder / replicate_name(b)) for b, data in enumerate(blobs)]


# --- the final model's own scores of its training patients (the "original" column of rms::validate) ---------

APPARENT = "apparent.npz"  # beside the replicates: the final model's scores of the n training patients


@dataclass(frozen=True, eq=False)
class Apparent:
    """The final model (fitted on all n training patients) scoring them: what the replicates are compared with.

    Attributes
    ----------
    patient_id
        The n training patients, in the replicates' row order.
    y
        Their outcome: 0/1 labels ``(n,)``, or times and events ``(n, 2)``.
    score
        The final model's scores of them (binary: probabilities; survival: the risk score).
    risk, horizons
        Survival models: absolute risk at each horizon ``(n, h)``; else None and empty.
    """

    patient_id: np.ndarray
    y: np.ndarray
    score: np.ndarray
    risk: np.ndarray | None = None
    horizons: np.ndarray = field(default_factory=lambda: np.empty(0))


def encode_apparent(a: Apparent) -> bytes:
    """The ``.npz`` bytes of :class:`Apparent` (arrays only, fixed order and timestamps, as :func:`encode`)."""
    arrays: dict[str, np.ndarray] = {
        "patient_id": np.asarray(a.patient_id, dtype=np.str_), "y": np.ascontiguousarray(a.y, dtype=np.float64),
        "score": np.ascontiguousarray(a.score, dtype=np.float64),
        "horizons": np.ascontiguousarray(a.horizons, dtype=np.float64)}
    if a.risk is not None:
        arrays["risk"] = np.ascontiguousarray(a.risk, dtype=np.float64)
    return _zipped(arrays)


def write_apparent(folder: Path, a: Apparent) -> str:
    """Write :data:`APPARENT` into ``folder`` atomically; returns the sha256 of its bytes (for the manifest)."""
    data = encode_apparent(a)
    with atomic.staged(Path(folder) / APPARENT) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_apparent(models_dir: Path | str, record: FitRecord) -> Apparent:
    """The final model's scores of its training patients, as ``cohortlab fit`` recorded them for ``record``.

    Raises
    ------
    ReplicateError
        The record has none (fitted before they were saved), the file is missing, not such a file, or not
        the one fit wrote (sha256 differs); the message names the file.
    """
    internal: dict[str, Any] | None = record.internal
    if not internal or not internal.get("folder"):
        raise ReplicateError(f"model {record.name}: no internal-validation replicates were fitted "
                             "([validation] internal = \"none\" when it was fitted)")
    path = Path(models_dir) / str(internal["folder"]) / APPARENT
    if not internal.get("apparent"):
        raise ReplicateError(f"{path}: model {record.name} was fitted before its apparent scores were saved; "
                             "run `cohortlab fit` to refit it")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReplicateError(f"{path}: missing; run `cohortlab fit` to refit model {record.name}") from None
    if hashlib.sha256(data).hexdigest() != internal["apparent"]:
        raise ReplicateError(f"{path}: not the file `cohortlab fit` recorded for model {record.name} "
                             "(sha256 differs); run `cohortlab fit` to refit it")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            got = {k: npz[k] for k in npz.files}
        score, y = got["score"], got["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise ReplicateError(f"{path}: not an apparent-scores file ({exc})") from None
    if score.ndim != 1 or y.shape[0] != score.shape[0]:
        raise ReplicateError(f"{path}: not an apparent-scores file (scores and outcomes differ in length)")
    return Apparent(got["patient_id"], y, score, got.get("risk"), got.get("horizons", np.empty(0)))


def apparent_current(models_dir: Path | str, recorded: dict[str, Any]) -> bool:
    """Whether the apparent-scores file a manifest's ``internal`` record names is there and is the one recorded."""
    if not recorded.get("apparent") or not recorded.get("folder"):
        return False
    try:
        data = (Path(models_dir) / str(recorded["folder"]) / APPARENT).read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == recorded["apparent"]


__all__ = ["APPARENT", "INTERNAL_FOLDER", "Apparent", "ReplicateError", "apparent_current", "decode", "encode",
           "encode_apparent", "files_digest", "load_apparent", "load_replicates", "read_blobs", "replicate_folder",
           "replicate_index", "replicate_name", "write_apparent", "write_replicate"]
