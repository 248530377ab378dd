"""Saving and loading fitted models: one folder per model under ``<study>/models/<name>/``.

Layout::

    manifest.json        what the model is and what it was fitted on (see below)
    model.joblib         the fitted scikit-learn pipeline (logistic, svm, xgboost),
                         stacking meta-learner, or survival learner (cox, coxnet,
                         rsf, xgboost_cox, mil_cox: preprocessing, model and baseline)
    model.pt             a MIL network's state_dict (its config is in the manifest)
    predictions.parquet  the rows written to the store's predictions table
    attention.parquet    MIL only: every instance's attention weight
    horizon_risks.parquet  survival models: absolute risk 1 - S(t|x) at each horizon
                         (out-of-fold for training patients, as the scores)
    risk_grid.parquet    survival models: the same risk on a grid of times from 0 to the last
                         horizon (:func:`risk_grid_times`), for the integrated Brier score
    harmonize.json       harmonised models: the ComBat fit (training centres, new centres estimated
                         from their own features), the centre's share of feature variance and PCA
                         coordinates before / after harmonisation (the report's figure)

The manifest lists the feature sets, clinical columns and input models, the
cohort hash, the outer folds, the hyper-parameters chosen, library versions
and ``fit_key``, the hash that ``cohortlab fit`` compares to skip a model
whose inputs have not changed. A folder is written under a temporary name and
renamed when complete. ``model.joblib`` is a pickle: load only folders this
project wrote.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import polars as pl

from analytics.models.data import ModelData
from analytics.models.learners import (
    Learner,
    StackingLearner,
    TabularLearner,
    VotingLearner,
)
from analytics.models.mil import MILClassifier
from analytics.models.mil_learner import MILLearner
from pipeline import atomic
from pipeline.config import SURVIVAL_KINDS, Model
from pipeline.errors import CohortlabError

FORMAT = 1
MANIFEST = "manifest.json"
PREDICTIONS = "predictions.parquet"
ATTENTION = "attention.parquet"
JOBLIB = "model.joblib"
TORCH = "model.pt"
HORIZON_RISKS = "horizon_risks.parquet"
RISK_GRID = "risk_grid.parquet"
HARMONIZATION = "harmonize.json"
# evenly spaced times of the risk grid (besides the horizons)
GRID_POINTS = 100


class PersistError(CohortlabError, RuntimeError):
    """A model folder that is missing, incomplete or from another format."""


def artifact_name(kind: str) -> str | None:
    """The file that holds a fitted ``kind`` model (None: the manifest alone describes it)."""
    return {"mil": TORCH, "voting": None}.get(kind, JOBLIB)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a fitted model."""
    import sklearn
    import torch
    import xgboost

    from pipeline.store import code_version

    return {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "xgboost": xgboost.__version__, "torch": torch.__version__, "polars": pl.__version__,
            "cohortlab": code_version()}


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
    """A saved model, loaded: its config, fitted learner, manifest and folder."""

    spec: Model
    learner: Learner
    manifest: dict[str, Any]
    path: Path

    def predict_score(self, data: ModelData) -> np.ndarray:
        """Probability of the positive class for every row of ``data``."""
        return self.learner.predict_score(data)


def save_model(
    folder: Path,
    learner: Learner,
    manifest: dict[str, Any],
    predictions: pl.DataFrame,
    attention: pl.DataFrame | None = None,
    horizon_risks: pl.DataFrame | None = None,
    risk_grid: pl.DataFrame | None = None,
    *,
    harmonization: dict[str, Any] | None = None,
) -> Path:
    """Write a fitted model's folder (replacing an older one) and return it.

    ``harmonization``: a harmonised model's ComBat record (:func:`analytics.models.harmonize.record`).
    """
    import torch

    folder = Path(folder)
    with atomic.staged_dir(folder) as tmp:
        kind = manifest["kind"]
        name = artifact_name(kind)
        if kind in SURVIVAL_KINDS:  # preprocessing, estimator and Breslow baseline in one pickle
            joblib.dump(learner, tmp / JOBLIB)
        elif isinstance(learner, TabularLearner):
            joblib.dump(learner.pipeline_, tmp / JOBLIB)
        elif isinstance(learner, StackingLearner):
            joblib.dump(learner.model_, tmp / JOBLIB)
        elif isinstance(learner, MILLearner):
            torch.save(learner.classifier_.state_dict(), tmp / TORCH)
            manifest = {**manifest, "mil": learner.classifier_.config()}
        predictions.write_parquet(tmp / PREDICTIONS)
        if attention is not None:
            attention.write_parquet(tmp / ATTENTION)
        if horizon_risks is not None:
            horizon_risks.write_parquet(tmp / HORIZON_RISKS)
        if risk_grid is not None:
            risk_grid.write_parquet(tmp / RISK_GRID)
        if harmonization is not None:
            atomic.write_json(tmp / HARMONIZATION, harmonization, indent=1, end="\n")
        atomic.write_json(tmp / MANIFEST, {**manifest, "format": FORMAT, "artifact": name}, indent=2, default=str,
                          end="\n")
    return folder


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete model folder of this format, else None."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("format") != FORMAT or not (Path(folder) / PREDICTIONS).exists():
        return None
    art = manifest.get("artifact")
    if art is not None and not (Path(folder) / art).exists():
        return None
    return manifest


def read_horizon_risks(folder: Path) -> pl.DataFrame | None:
    """A survival model's absolute risks at the study's horizons (model, patient_id, horizon, risk), if saved."""
    path = Path(folder) / HORIZON_RISKS
    return pl.read_parquet(path) if path.exists() else None


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


def read_risk_grid(folder: Path) -> pl.DataFrame | None:
    """A survival model's absolute risks on its time grid (model, patient_id, time, risk), if saved."""
    path = Path(folder) / RISK_GRID
    return pl.read_parquet(path) if path.exists() else None


def read_predictions(folder: Path) -> pl.DataFrame:
    """The predictions a model folder holds."""
    return pl.read_parquet(Path(folder) / PREDICTIONS)


def load_model(path: str | Path) -> FittedModel:
    """Load a model folder written by ``cohortlab fit``.

    Raises
    ------
    PersistError
        The folder is missing, incomplete or of another format.
    """
    import torch

    folder = Path(path)
    manifest = read_manifest(folder)
    if manifest is None:
        raise PersistError(f"{folder}: no complete saved model here (run `cohortlab fit` first)")
    spec = Model.model_validate(manifest["config"])
    chosen = manifest.get("chosen", {})
    if spec.kind in SURVIVAL_KINDS:
        learner = joblib.load(folder / JOBLIB)
    elif spec.kind == "mil":
        state = torch.load(folder / TORCH, map_location="cpu", weights_only=True)
        learner: Learner = MILLearner.fitted(MILClassifier.from_state(manifest["mil"], state), chosen)
    elif spec.kind == "voting":
        learner = VotingLearner(list(spec.members), spec.params)
    elif spec.kind == "stacking":
        learner = StackingLearner.fitted(joblib.load(folder / JOBLIB))
    else:
        learner = TabularLearner.fitted(spec.kind, spec.params, joblib.load(folder / JOBLIB), chosen)
    return FittedModel(spec, learner, manifest, folder)
