"""Saving and loading fitted models: one folder per model under ``<study>/models/<name>/``.

Layout::

    manifest.json        what the model is and what it was fitted on (see below)
    model.skops          the fitted scikit-learn pipeline (logistic, svm, xgboost; a ComBat step
                         first when harmonised), stacking meta-learner, or survival learner (cox,
                         coxnet, rsf, xgboost_cox, mil_cox: preprocessing, model and baseline), in
                         skops' format; XGBoost boosters inside it as XGBoost's own JSON
    model.pt             a MIL network's state_dict (its config is in the manifest)
    predictions.parquet  the rows written to the store's predictions table
    attention.parquet    MIL only: every instance's attention weight
    horizon_risks.parquet  survival models: absolute risk 1 - S(t|x) at each horizon
                         (out-of-fold for training patients, as the scores)
    risk_grid.parquet    survival models: the same risk on a grid of times from 0 to the last
                         horizon (:func:`risk_grid_times`), for the integrated Brier score
    fitted.parquet       maximum-likelihood logistic regressions: the final model's fitted probability of
                         every training patient, for the likelihood-ratio test (``validate`` reads it
                         with the record's ``free_parameters`` and never refits)
    harmonize.json       harmonised models: the ComBat fit (training centres, new centres estimated
                         from their own features), the centre's share of feature variance and PCA
                         coordinates before / after harmonisation (the report's figure)
    zph.json             cox models: the proportional-hazards check of the final fit (cox.zph: table,
                         scaled Schoenfeld residuals), or why it was not made (penalised)
    imputed_predictions.parquet  ``[imputation] method = "mice"``: every predicted patient's score on each
                         completion (model, patient_id, split, fold, imp, score); the predictions keep the mean
    imputed_horizon_risks.parquet  the same for survival models' absolute risks (model, patient_id, imp,
                         horizon, risk)
    imputation.json      a model imputed by chained equations: what new patients' chains need besides
                         ``imputation_rows.parquet`` (the development rows' clinical and auxiliary columns,
                         without outcome); ``model.skops`` then holds the list of its fits (one: the pooled
                         regression)

The manifest is a :class:`analytics.models.artifacts.FitRecord` (read back typed). It lists the feature sets, clinical columns and input models, the
cohort hash, the outer folds, the hyper-parameters chosen, library versions
and ``fit_key``, the hash that ``cohortlab fit`` compares to skip a model
whose inputs have not changed. A folder is written under a temporary name and
renamed when complete.

No file of a model folder runs code when it is read:

* ``model.skops`` is loaded by :func:`skops.io.loads` with :data:`TRUSTED_TYPES`, the
  explicit list of types this project's models are made of, beyond those skops trusts
  itself (scikit-learn estimators, numpy arrays, builtins); a file naming any other type
  is refused, naming the file and the type. Nothing in it is a pickle.
* ``model.pt`` is read by ``torch.load(weights_only=True)``: tensors only.
* The rest is Parquet and JSON.

Every file's sha256 is recorded in the store's ``model_artifacts`` table when
``fit`` writes the folder (the store is the trust anchor: user SQL cannot
write it), and every reader checks the whole folder before it reads a byte:
a file whose digest differs, a file with no recorded digest, or a recorded
file that is gone is a one-line :class:`ArtifactError` naming the file, and
nothing is loaded. The bytes checked are the bytes parsed (each file is read
once). A folder written by an older cohortlab (``model.joblib``, a pickle; no
digest recorded) is never unpickled: readers raise :class:`LegacyModelError`
and ``cohortlab fit`` refits it.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from analytics.models.artifacts import FORMAT, FitRecord

# regression models' coefficient and per-term tables (ANOVA, COEFFICIENTS), and an imputed model's files
from analytics.models.coefficients import ANOVA, COEFFICIENTS
from analytics.models.data import ModelData
from analytics.models.imputed import IMPUTATION_ROWS, IMPUTATION_STATE, ImputedLearner
from analytics.models.learners import (
    Learner,
    StackingLearner,
    TabularLearner,
)
from analytics.models.mil import MILClassifier
from analytics.models.mil_learner import MILLearner
from pipeline import atomic, store
from pipeline.config import Model
from pipeline.errors import CohortlabError
from pipeline.model_kinds import KINDS

MANIFEST = "manifest.json"
PREDICTIONS = "predictions.parquet"
ATTENTION = "attention.parquet"
SKOPS = "model.skops"
TORCH = "model.pt"
LEGACY_PICKLE = "model.joblib"  # written by format 1; never read
HORIZON_RISKS = "horizon_risks.parquet"
RISK_GRID = "risk_grid.parquet"
HARMONIZATION = "harmonize.json"
ZPH = "zph.json"  # unpenalised cox models: the proportional-hazards check (analytics.models.ph_check)
FITTED = "fitted.parquet"  # maximum-likelihood regressions: the final model's training fitted probabilities
# multiple imputation inside the model (analytics.models.imputed)
IMPUTED_PREDICTIONS = "imputed_predictions.parquet"
IMPUTED_HORIZON_RISKS = "imputed_horizon_risks.parquet"
# evenly spaced times of the risk grid (besides the horizons)
GRID_POINTS = 100

# Types a model.skops file may hold beyond those skops trusts by itself (scikit-learn's estimators, numpy
# arrays, builtin containers): this project's learners and the scikit-learn / scikit-survival parts they are
# made of. A file that names any other type is refused before anything in it is built.
TRUSTED_TYPES: tuple[str, ...] = (
    "analytics.models.classical.CalibratedSVC",
    "analytics.models.classical.EarlyStoppedXGB",
    "analytics.models.classical.RowStablePCA",
    "analytics.models.competing.CompetingLearner",
    "analytics.models.data.Columns",
    "analytics.models.ensemble.Stacking",
    "analytics.models.formula.RegressionDesign",
    "analytics.models.glm.MLLogistic",
    "analytics.models.harmonize.ComBat",
    "analytics.models.survival.CoxStacking",
    "analytics.models.survival.MILCox",
    "analytics.models.survival.MILCoxLearner",
    "analytics.models.survival.SurvivalLearner",
    "analytics.models.survival.SurvivalModel",
    "analytics.stats.competing_cox.CauseSpecificCox",
    "analytics.stats.competing_cox.CoxFit",
    "analytics.stats.competing_finegray.FineGray",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.tree._tree.Tree",
    "sksurv.ensemble.forest.RandomSurvivalForest",
    "sksurv.linear_model.coxnet.CoxnetSurvivalAnalysis",
    "sksurv.tree.tree.SurvivalTree",
)


class PersistError(CohortlabError, RuntimeError):
    """A model folder that is missing, incomplete or from another format."""


class ArtifactError(PersistError):
    """A model folder's file that is not the one ``cohortlab fit`` wrote (or holds what is never loaded)."""


class LegacyModelError(PersistError):
    """A model folder written by an older cohortlab, as a pickle: never loaded, refitted by ``cohortlab fit``."""


def artifact_name(kind: str) -> str | None:
    """The file that holds a fitted ``kind`` model (None: the manifest alone describes it)."""
    return {"torch": TORCH, "none": None}.get(KINDS[kind].artifact, SKOPS)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a fitted model."""
    import sklearn
    import skops
    import torch
    import xgboost

    from pipeline.store import code_version

    return {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "xgboost": xgboost.__version__, "torch": torch.__version__, "polars": pl.__version__,
            "skops": skops.__version__, "cohortlab": code_version()}


def predictions_hash(frame: pl.DataFrame) -> str:
    """sha256 of a predictions frame's rows (ids, splits, folds and the exact score bits)."""
    f = frame.sort("patient_id")
    h = hashlib.sha256()
    h.update("\0".join(f["patient_id"].to_list()).encode())
    h.update("\0".join(f["split"].to_list()).encode())
    h.update(np.asarray(f["fold"].fill_null(-1).to_numpy(), dtype=np.int64).tobytes())
    h.update(np.asarray(f["score"].to_numpy(), dtype=np.float64).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class FittedModel:
    """A saved model, loaded: its config, fitted learner, manifest and folder.

    ``files``: the folder's files as read and checked against the store (name -> bytes). Stages read the
    typed :attr:`record`, never the manifest's keys.
    """

    spec: Model
    learner: Learner
    manifest: dict[str, Any]
    path: Path
    files: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def record(self) -> FitRecord:
        """The manifest, typed."""
        return FitRecord.from_dict(self.manifest, self.path / MANIFEST)

    def predict_score(self, data: ModelData) -> np.ndarray:
        """Probability of the positive class for every row of ``data``."""
        return self.learner.predict_score(data)

    def frame(self, name: str) -> pl.DataFrame | None:
        """One of the folder's Parquet files (``PREDICTIONS``, ``ATTENTION`` ...), from the checked bytes."""
        data = self.files.get(name)
        return None if data is None else pl.read_parquet(io.BytesIO(data))

    @property
    def predictions(self) -> pl.DataFrame:
        """The predictions the folder holds."""
        frame = self.frame(PREDICTIONS)
        if frame is None:
            raise PersistError(f"{self.path / PREDICTIONS}: missing")
        return frame

    @property
    def attention(self) -> pl.DataFrame | None:
        """A MIL model's attention weight of every instance; None for other kinds."""
        return self.frame(ATTENTION)

    @property
    def horizon_risks(self) -> pl.DataFrame | None:
        """A survival model's absolute risks at the study's horizons; None for other kinds."""
        return self.frame(HORIZON_RISKS)

    @property
    def fitted(self) -> pl.DataFrame | None:
        """The final model's fitted probabilities of the labelled training patients (``patient_id``, ``score``),
        saved for the likelihood-ratio test; None where the model is not a maximum-likelihood regression."""
        return self.frame(FITTED)

    @property
    def coefficients(self) -> np.ndarray | None:
        """The fitted coefficients of a linear classifier (one row per class contrast); None where the learner
        has none (trees, networks, kernels other than linear, ensembles)."""
        pipeline = getattr(self.learner, "pipeline_", None)
        steps = getattr(pipeline, "named_steps", None)
        coef = None if steps is None or "clf" not in steps else getattr(steps["clf"], "coef_", None)
        return None if coef is None else np.asarray(coef, dtype=float)


def parameter_count(fitted: FittedModel) -> tuple[int | None, str]:
    """Candidate predictor parameters of a fitted model: the columns its classifier sees after one-hot encoding
    and PCA (a pipeline), or its members (a stacking meta-learner); None and why for other kinds."""
    learner = fitted.learner
    if isinstance(learner, TabularLearner):
        prep = learner.pipeline_.named_steps["prep"]
        return len(prep.get_feature_names_out()), "columns after one-hot encoding and PCA"
    if isinstance(learner, StackingLearner):
        return len(fitted.spec.members), "member scores"
    return None, f"{fitted.spec.kind}: no parameter count"


# --- writing --------------------------------------------------------------------------------------


def _canonical_skops(data: bytes) -> bytes:
    """A skops archive rewritten so that equal objects give equal bytes.

    skops names objects and array members by ``id()`` (and byte strings by a random uuid) and stamps
    members with the current time; here ids are numbered in order of first appearance, members renamed
    after them and stamped 1980-01-01, so that two identical fits write identical files (their sha256 and the
    determinism checks compare bytes).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read("schema.json"))
        members = {n: src.read(n) for n in src.namelist() if n != "schema.json"}
    ids: dict[int, int] = {}
    names: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            # a str, number or bool (JsonNode) is written whole wherever it occurs; whether two occurrences are
            # one object (a fit here shares column names that a fit in a worker process got unpickled apart)
            # is not part of the file: each gets its own number
            primitive = node.get("__loader__") == "JsonNode"
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    out[key] = ids.setdefault(-1 - len(ids) if primitive else value, len(ids))
                elif key == "file" and isinstance(value, str) and value in members:
                    out[key] = names.setdefault(value, f"{len(names)}{Path(value).suffix}")
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    schema = walk(schema)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as dst:
        def put(name: str, payload: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            dst.writestr(info, payload)

        put("schema.json", json.dumps(schema, indent=2).encode("utf-8"))
        for old, new in sorted(names.items(), key=lambda kv: int(Path(kv[1]).stem)):
            put(new, members[old])
    return buffer.getvalue()


def dump_skops(obj: Any) -> bytes:
    """``obj`` in skops' format (canonical bytes, see :func:`_canonical_skops`)."""
    import skops.io as sio

    return _canonical_skops(sio.dumps(obj))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(
    folder: Path,
    learner: Learner,
    manifest: FitRecord | dict[str, Any],
    predictions: pl.DataFrame,
    attention: pl.DataFrame | None = None,
    horizon_risks: pl.DataFrame | None = None,
    risk_grid: pl.DataFrame | None = None,
    *,
    store_path: str | Path,
    harmonization: dict[str, Any] | None = None,
    fitted: pl.DataFrame | None = None,
    tables: Mapping[str, bytes] | None = None,
    zph: Mapping[str, Any] | None = None,
    imputed: tuple[pl.DataFrame | None, pl.DataFrame | None] = (None, None),
) -> Path:
    """Write a fitted model's folder (replacing an older one), record its files' sha256 in the store, return it.

    ``harmonization``: a harmonised model's ComBat record (:func:`analytics.models.harmonize.record`).
    ``store_path``: the study's store, where each file's sha256 is recorded (``model_artifacts``) once the
    folder is in place. ``fitted``: a maximum-likelihood regression's training fitted probabilities.
    ``tables``: a regression's ``COEFFICIENTS`` / ``ANOVA`` files (name -> bytes).
    ``zph``: a Cox regression's proportional-hazards record (:func:`analytics.models.ph_check.ph_check`).
    ``imputed``: a model imputed by chained equations: its per-imputation predictions and horizon risks.
    """
    import torch

    folder = Path(folder)
    record = manifest if isinstance(manifest, FitRecord) else FitRecord.from_dict(manifest)
    with atomic.staged_dir(folder) as tmp:
        kind = record.kind
        name = artifact_name(kind)
        if isinstance(learner, ImputedLearner):  # its fits (or the pooled one) and its new patients' chains
            (tmp / SKOPS).write_bytes(dump_skops(learner.saved_fits if KINDS[kind].saved == "learner"
                                                 else [f.pipeline_ for f in learner.saved_fits]))
            learner.development_.write_parquet(tmp / IMPUTATION_ROWS)
            atomic.write_json(tmp / IMPUTATION_STATE, learner.state(), end="\n")
        elif KINDS[kind].saved == "learner":  # e.g. preprocessing, estimator and Breslow baseline in one file
            (tmp / SKOPS).write_bytes(dump_skops(learner))
        elif isinstance(learner, TabularLearner):
            (tmp / SKOPS).write_bytes(dump_skops(learner.pipeline_))
        elif isinstance(learner, StackingLearner):
            (tmp / SKOPS).write_bytes(dump_skops(learner.model_))
        elif isinstance(learner, MILLearner):
            torch.save(learner.classifier_.state_dict(), tmp / TORCH)
            record = record.replace(mil=learner.classifier_.config())
        predictions.write_parquet(tmp / PREDICTIONS)
        if attention is not None:
            attention.write_parquet(tmp / ATTENTION)
        if horizon_risks is not None:
            horizon_risks.write_parquet(tmp / HORIZON_RISKS)
        if risk_grid is not None:
            risk_grid.write_parquet(tmp / RISK_GRID)
        for frame, file in zip(imputed, (IMPUTED_PREDICTIONS, IMPUTED_HORIZON_RISKS), strict=True):
            if frame is not None:
                frame.write_parquet(tmp / file)
        if fitted is not None:
            fitted.write_parquet(tmp / FITTED)
        for table, payload in (tables or {}).items():
            if table not in (COEFFICIENTS, ANOVA):
                raise PersistError(f"{table}: not a regression table file")
            (tmp / table).write_bytes(payload)
        if harmonization is not None:
            atomic.write_json(tmp / HARMONIZATION, harmonization, indent=1, end="\n")
        if zph is not None:
            atomic.write_json(tmp / ZPH, dict(zph), end="\n")
        atomic.write_text(tmp / MANIFEST, record.replace(format=FORMAT, artifact=name).to_json())
        # the digests of the bytes written here, before the folder is renamed into place
        digests = {p.name: _sha256(p.read_bytes()) for p in sorted(tmp.iterdir())}
    con = store.connect(store_path)
    try:
        store.record_model_artifacts(con, folder.name, digests)
    finally:
        con.close()
    return folder


# --- reading: every file checked against the store first -------------------------------------------


def _legacy(folder: Path, entries: Sequence[Path]) -> Path | None:
    """The file that shows a folder was written by an older cohortlab (a pickle, format 1), if any."""
    names = {p.name for p in entries}
    if LEGACY_PICKLE in names:
        return folder / LEGACY_PICKLE
    if MANIFEST in names:
        try:
            fmt = json.loads((folder / MANIFEST).read_bytes()).get("format")
        except (OSError, ValueError, AttributeError):
            return None
        if isinstance(fmt, int) and fmt < FORMAT:
            return folder / MANIFEST
    return None


def legacy_message(path: Path, model: str) -> str:
    """The one line said about a model folder written by an older cohortlab."""
    return (f"{path}: model {model} was saved by an older cohortlab in a format that can run code; "
            "run `cohortlab fit` to refit it")


def read_files(folder: str | Path, store_path: str | Path) -> dict[str, bytes] | None:
    """Every file of a model folder, read once and checked against the sha256 the store recorded for it.

    Returns
    -------
    dict or None
        ``file name -> bytes``; None when no model is saved there (no folder, or an empty one).

    Raises
    ------
    LegacyModelError
        The folder was written by an older cohortlab (``model.joblib``, no digest recorded).
    ArtifactError
        A file whose sha256 differs from the recorded one, a file (or anything else) with no digest
        recorded, a recorded file that is missing, or no digest recorded for the folder at all.
    """
    folder = Path(folder)
    model = folder.name
    if not folder.is_dir():
        return None
    entries = sorted(folder.iterdir())
    if not entries:
        return None
    recorded = store.recorded_model_artifacts(store_path, model)
    if not recorded:
        legacy = _legacy(folder, entries)
        if legacy is not None:
            raise LegacyModelError(legacy_message(legacy, model))
        raise ArtifactError(f"{entries[0]}: no sha256 recorded in the store ({store_path}) for model {model}'s "
                            "files; nothing in its folder is read (run `cohortlab fit` to refit it)")
    out: dict[str, bytes] = {}
    for entry in entries:
        if entry.name not in recorded:
            raise ArtifactError(f"{entry}: not a file `cohortlab fit` wrote for model {model} (no sha256 recorded in "
                                f"the store {store_path}); nothing in its folder is read")
        if entry.is_symlink() or not entry.is_file():
            raise ArtifactError(f"{entry}: not a regular file; nothing in model {model}'s folder is read")
        data = entry.read_bytes()
        if _sha256(data) != recorded[entry.name]:
            raise ArtifactError(f"{entry}: its sha256 differs from the one recorded in the store when model {model} "
                                "was fitted; nothing in its folder is read (run `cohortlab fit` to refit it)")
        out[entry.name] = data
    missing = sorted(set(recorded) - set(out))
    if missing:
        raise ArtifactError(f"{folder / missing[0]}: missing (recorded in the store when model {model} was fitted); "
                            "run `cohortlab fit` to refit it")
    return out


def manifest_of(folder: Path, files: Mapping[str, bytes]) -> dict[str, Any] | None:
    """The manifest of a complete folder of this format (from checked bytes), else None."""
    try:
        manifest = json.loads(files[MANIFEST])
    except (KeyError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or PREDICTIONS not in files:
        return None
    art = manifest.get("artifact")
    if art is not None and art not in files:
        return None
    return manifest


def read_manifest(folder: Path, store_path: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete model folder of this format, its files checked (:func:`read_files`), else None.

    Raises
    ------
    LegacyModelError, ArtifactError
        As :func:`read_files`.
    """
    files = read_files(folder, store_path)
    return None if files is None else manifest_of(Path(folder), files)


def read_record(folder: Path, store_path: str | Path) -> FitRecord | None:
    """The typed record of a complete model folder of this format, its files checked, else None.

    Raises
    ------
    LegacyModelError, ArtifactError
        As :func:`read_files`.
    RecordError
        The manifest lacks its name or kind, or holds a field of the wrong type.
    """
    manifest = read_manifest(folder, store_path)
    return None if manifest is None else FitRecord.from_dict(manifest, Path(folder) / MANIFEST)


def _frame(folder: Path, store_path: str | Path, name: str) -> pl.DataFrame | None:
    files = read_files(folder, store_path)
    data = None if files is None else files.get(name)
    return None if data is None else pl.read_parquet(io.BytesIO(data))


def read_horizon_risks(folder: Path, store_path: str | Path) -> pl.DataFrame | None:
    """A survival model's absolute risks at the study's horizons (model, patient_id, horizon, risk), if saved."""
    return _frame(Path(folder), store_path, HORIZON_RISKS)


def read_imputed_predictions(folder: Path, store_path: str | Path) -> pl.DataFrame | None:
    """A model imputed by chained equations: each predicted patient's score on each completion (model,
    patient_id, split, fold, imp 1..m, score), checked against the store; None for other models."""
    return _frame(Path(folder), store_path, IMPUTED_PREDICTIONS)


def read_imputed_horizon_risks(folder: Path, store_path: str | Path) -> pl.DataFrame | None:
    """A survival model imputed by chained equations: absolute risks per completion (model, patient_id, imp,
    horizon, risk); None for other models."""
    return _frame(Path(folder), store_path, IMPUTED_HORIZON_RISKS)


def risk_grid_times(horizons: Sequence[float], points: int = GRID_POINTS) -> list[float]:
    """The times a survival model's risk is saved at for the integrated Brier score: ``points`` evenly spaced
    times ``t_max / points, 2 t_max / points, ..., t_max`` (``t_max`` the last horizon) and the horizons,
    sorted and rounded to 9 significant digits; empty without horizons.

    The integrated Brier score (Graf et al. 1999) is a step integral of Brier(t) over this grid on
    ``[0, t_max]`` (:func:`analytics.stats.integrated_brier`); a grid fixed by the horizons alone, not by a
    split's event times, integrates every split and model over the same times.
    """
    if not horizons:
        return []
    top = float(max(horizons))
    grid = {float(f"{top * k / points:.9g}") for k in range(1, points + 1)} | {float(f"{t:.9g}") for t in horizons}
    return sorted(t for t in grid if t > 0)


def read_risk_grid(folder: Path, store_path: str | Path) -> pl.DataFrame | None:
    """A survival model's absolute risks on its time grid (model, patient_id, time, risk), if saved."""
    return _frame(Path(folder), store_path, RISK_GRID)


def read_predictions(folder: Path, store_path: str | Path) -> pl.DataFrame:
    """The predictions a model folder holds."""
    frame = _frame(Path(folder), store_path, PREDICTIONS)
    if frame is None:
        raise PersistError(f"{Path(folder) / PREDICTIONS}: missing (run `cohortlab fit`)")
    return frame


def _json_record(folder: Path, store_path: str | Path, name: str) -> dict[str, Any] | None:
    """A model folder's JSON record ``name`` (checked against the store), if saved."""
    files = read_files(folder, store_path)
    data = None if files is None else files.get(name)
    if data is None:
        return None
    try:
        out = json.loads(data)
    except ValueError as exc:
        raise PersistError(f"{Path(folder) / name}: not valid JSON ({exc})") from None
    return out if isinstance(out, dict) else None


def read_harmonization(folder: Path, store_path: str | Path) -> dict[str, Any] | None:
    """A harmonised model's ComBat record (``harmonize.json``), if saved."""
    return _json_record(folder, store_path, HARMONIZATION)


def read_zph(folder: Path, store_path: str | Path) -> dict[str, Any] | None:
    """A Cox regression's proportional-hazards record (``zph.json``, :mod:`analytics.models.ph_check`), if saved."""
    return _json_record(folder, store_path, ZPH)


def check_models(models_dir: Path, store_path: str | Path, names: Sequence[str]) -> None:
    """Check the saved folders of ``names`` (those that exist) against the store, before a stage reads them.

    Raises
    ------
    LegacyModelError, ArtifactError
        As :func:`read_files`, for the first folder that fails.
    """
    for name in names:
        read_files(Path(models_dir) / name, store_path)


def _load_skops(path: Path, data: bytes) -> Any:
    """The object of a model.skops file, built only from :data:`TRUSTED_TYPES` and what skops trusts itself."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a damaged archive or schema: say so in one line
        raise ArtifactError(f"{path}: not a model file cohortlab can read ({type(exc).__name__}: {exc})") from None
    refused = [t for t in untrusted if t not in TRUSTED_TYPES]
    if refused:
        raise ArtifactError(f"{path}: holds type {refused[0]}, which cohortlab never loads; nothing loaded")
    try:
        return sio.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise ArtifactError(f"{path}: not a model file cohortlab can read ({type(exc).__name__}: {exc})") from None


def expect_type(path: Path, obj: Any, types: tuple[type, ...], kind: str) -> Any:
    """``obj`` when it is one of ``types`` (what a ``kind`` model saves); an ArtifactError naming ``path`` otherwise."""
    if not isinstance(obj, types):
        raise ArtifactError(f"{path}: holds a {type(obj).__name__}, not what a {kind} model saves; nothing loaded")
    return obj


def load_model(path: str | Path, store_path: str | Path) -> FittedModel:
    """Load a model folder written by ``cohortlab fit``, every file checked against the store first.

    Parameters
    ----------
    path
        The model's folder (``<study>/models/<name>``).
    store_path
        The study's store, which holds the sha256 of each of the folder's files.

    Raises
    ------
    PersistError
        The folder is missing, incomplete or of another format.
    LegacyModelError
        The folder was written by an older cohortlab (a pickle): never loaded; refit it.
    ArtifactError
        A file is not the one ``fit`` wrote (sha256), or its model file holds a type cohortlab never loads.
    """
    import torch
    from sklearn.pipeline import Pipeline

    from analytics.models.competing import CompetingLearner
    from analytics.models.ensemble import Stacking
    from analytics.models.survival import CoxStacking, MILCoxLearner, SurvivalLearner

    folder = Path(path)
    files = read_files(folder, store_path)
    manifest = None if files is None else manifest_of(folder, files)
    if files is None or manifest is None:
        raise PersistError(f"{folder}: no complete saved model here (run `cohortlab fit` first)")
    spec = Model.model_validate(manifest["config"])
    chosen = manifest.get("chosen", {})
    learner: Learner
    saved = spec.traits.saved
    if saved == "weights":
        try:
            state = torch.load(io.BytesIO(files[TORCH]), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ArtifactError(f"{folder / TORCH}: not a weights file cohortlab can read ({exc})") from None
        learner = MILLearner.fitted(MILClassifier.from_state(manifest["mil"], state), chosen)
    elif saved == "none":  # the entry describes it whole (soft voting; a published model)
        from analytics.models.registry import build_learner

        learner = build_learner(spec, int(manifest.get("seed") or 0))
    else:
        file = folder / SKOPS
        if SKOPS not in files:
            raise PersistError(f"{file}: missing (run `cohortlab fit`)")
        obj = _load_skops(file, files[SKOPS])
        if manifest.get("imputation") is not None:  # its fits (a list), development rows and chains' state
            missing = [n for n in (IMPUTATION_ROWS, IMPUTATION_STATE) if n not in files]
            if missing or not isinstance(obj, list) or not obj:
                raise ArtifactError(f"{folder / (missing[0] if missing else SKOPS)}: missing, or not the files of "
                                    "an imputed model; nothing loaded")
            fits = [expect_type(file, f, (SurvivalLearner, CompetingLearner), spec.kind) if saved == "learner" else
                    TabularLearner.fitted(spec.kind, spec.params, expect_type(file, f, (Pipeline,), spec.kind), chosen)
                    for f in obj]
            learner = ImputedLearner.loaded(spec, fits, pl.read_parquet(io.BytesIO(files[IMPUTATION_ROWS])),
                                            {**manifest["imputation"], **json.loads(files[IMPUTATION_STATE])})
        elif saved == "learner":
            learner = expect_type(file, obj, (SurvivalLearner, MILCoxLearner, CompetingLearner), spec.kind)
        elif saved == "meta":
            learner = StackingLearner.fitted(expect_type(file, obj, (Stacking, CoxStacking), spec.kind))
        else:
            learner = TabularLearner.fitted(spec.kind, spec.params, expect_type(file, obj, (Pipeline,), spec.kind),
                                            chosen)
    return FittedModel(spec, learner, manifest, folder, files)
