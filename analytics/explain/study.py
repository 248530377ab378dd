"""``cohortlab explain``: SHAP explanations and MIL attention figures for a study's fitted models.

For each fitted model (``<study>/models/<name>/``, written by ``cohortlab fit``):

* **logistic / svm / xgboost** (including fusion models, whose inputs are
  other models' scores plus clinical variables): SHAP values of the
  internal and external patients with the training patients as background
  (:mod:`analytics.explain.shap_values`), grouped per input block, written
  as Parquet with a beeswarm, a bar chart, a grouped bar chart and one
  waterfall per chosen patient;
* **voting / stacking**: Kernel SHAP over the members' scores (the
  ensemble's direct inputs);
* **mil**: attention heatmaps and top / bottom tiles per slide (WSI) or a
  per-slice strip (2.5D CT) of the chosen patients.

Chosen patients: ``patients`` (``--patients``), else ``[report]
explain_patients`` in study.toml, else the highest- and lowest-scored
external patient of each model.

Everything lands under ``<report_dir>/explain/<model>/`` and is listed in
``<report_dir>/explain/manifest.json`` (:mod:`analytics.explain.manifest`).
A model whose saved manifest, settings and chosen patients are unchanged,
and whose files are all present, is not explained again. Each model's files
are written to a temporary folder that replaces the old one when complete.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from analytics.cohort import Cohort, load_cohort
from analytics.explain import manifest as mf
from analytics.explain.attention import default_patients, mil_outputs
from analytics.explain.grouping import SCORE_PREFIX, labels_for
from analytics.explain.shap_outputs import chosen_patients, write_shap
from analytics.explain.shap_values import (
    ADDITIVITY_TOLERANCE,
    DEFAULT_BACKGROUND,
    DEFAULT_MAX_BACKGROUND,
    DEFAULT_MAX_UNITS,
    DEFAULT_NSAMPLES,
    ExplainError,
    ShapExplanation,
    explain_function,
    explain_pipeline,
)
from analytics.models.artifacts import FitRecord
from analytics.models.data import (
    Columns,
    assemble,
    input_models,
    mil_feature_set,
    pooled_refs,
)
from analytics.models.fusion import training_scores
from analytics.models.harmonize import harmonised_inputs
from analytics.models.persist import (
    FittedModel,
    load_model,
    read_manifest,
    read_record,
)
from pipeline import atomic, store
from pipeline.config import ExplainSection, Model, StudyConfig
from pipeline.store import feature_set_params

log = logging.getLogger("cohortlab.explain")

FORMAT_VERSION = 1  # part of every digest: bump when the outputs change meaning


@dataclass(frozen=True)
class Settings:
    """Size limits that keep explanations fast (the demo's explain stage takes seconds)."""

    background: int = DEFAULT_BACKGROUND  # k-means centres (model-agnostic explainer)
    max_background: int = DEFAULT_MAX_BACKGROUND  # training rows (tree and linear explainers)
    nsamples: int = DEFAULT_NSAMPLES  # coalitions per patient (model-agnostic explainer)
    max_units: int = DEFAULT_MAX_UNITS  # inputs above which an image block is one player
    max_rows: int = 200  # explained patients per model (a seeded sample when more)
    top_k: int = 8  # tiles per gallery row

    @classmethod
    def from_config(cls, section: ExplainSection) -> Settings:
        """The ``[explain]`` budget of study.toml; a key left out keeps its default."""
        given = {k: v for k, v in section.model_dump().items() if k != "enabled" and v is not None}
        return cls(**given)

    def budget(self, explainer: str) -> dict[str, int]:
        """The knobs that bound an explanation made by ``explainer`` (recorded with it, shown in the report)."""
        if explainer == "attention":
            return {"top_k": self.top_k}
        if explainer == "kernel":
            return {"max_rows": self.max_rows, "background": self.background, "nsamples": self.nsamples,
                    "max_units": self.max_units}
        return {"max_rows": self.max_rows, "max_background": self.max_background}


@dataclass
class ModelSummary:
    """What ``explain`` did for one model."""

    name: str
    kind: str
    status: str  # explained | up to date | not fitted
    explainer: str = ""
    space: str = ""
    explained: int = 0
    additivity_error: float | None = None
    figures: int = 0
    seconds: float = 0.0


@dataclass
class ExplainResult:
    """Per model: status, explainer, patients explained, figures; plus notes and the manifest."""

    folder: Path
    models: list[ModelSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.folder / mf.NAME

    @property
    def skipped(self) -> list[str]:
        return [m.name for m in self.models if m.status == "up to date"]

    def __str__(self) -> str:
        lines = [f"explanations: {self.manifest}"]
        if not self.models:
            lines.append("no models to explain")
        header = ("model", "kind", "status", "explainer", "output", "patients", "additivity", "figures", "seconds")
        rows = [header]
        for m in self.models:
            add = "-" if m.additivity_error is None else f"{m.additivity_error:.1e}"
            rows.append((m.name, m.kind, m.status, m.explainer or "-", m.space or "-", str(m.explained), add,
                         str(m.figures), f"{m.seconds:.1f}"))
        if self.models:
            widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --- inputs ---------------------------------------------------------------------------------------


@dataclass
class _Context:
    """Lazily loaded things several models share."""

    study: StudyConfig
    features: list[str]
    _cohort: Cohort | None = None

    @property
    def cohort(self) -> Cohort:
        if self._cohort is None:
            self._cohort = load_cohort(self.study, features=self.features, on_missing="keep")
        return self._cohort


def _predictions(study: StudyConfig, names: Sequence[str]) -> dict[str, pl.DataFrame]:
    """Input models' predictions, from the store's one reader (each model's folder checked first)."""
    for name in names:
        folder = study.models_dir / name
        if read_manifest(folder, study.store_path) is None:
            raise ExplainError(f"model '{name}' (an input) is not fitted: no complete {folder}; run `cohortlab fit`")
    if not names:
        return {}
    con = store.connect(study.store_path, read_only=True)
    try:
        return {name: store.read_predictions(con, name) for name in names}
    finally:
        con.close()


def _rows(cohort: Cohort, available: np.ndarray, wanted: Sequence[str], max_rows: int, seed: int) -> np.ndarray:
    """Explained rows: internal and external patients with inputs (a seeded sample above ``max_rows``),
    plus the patients asked for (any split) that have inputs."""
    split = cohort.split
    ids = np.asarray(cohort.patient_ids, dtype=object)
    held = np.flatnonzero(available & np.isin(split, ["internal", "external"]))
    if len(held) > max_rows:
        held = np.sort(np.random.default_rng(seed).choice(held, max_rows, replace=False))
    extra = np.flatnonzero(available & np.isin(ids, list(wanted)))
    return np.union1d(held, extra)


def _background(cohort: Cohort, available: np.ndarray) -> np.ndarray:
    labelled = cohort.frame["label"].is_not_null().to_numpy()
    return np.flatnonzero(available & (cohort.split == "train") & labelled)


def _check_columns(fitted: FittedModel, columns: Columns | None) -> None:
    # input_columns: what the model reads from a cohort ("columns" holds those it uses, less any left out)
    saved = fitted.record.saved_columns
    if saved is not None and columns is not None and Columns.from_dict(saved).names() != columns.names():
        raise ExplainError(f"model '{fitted.spec.name}': the cohort's input columns differ from those it was "
                           f"fitted on ({fitted.path / 'manifest.json'}); run `cohortlab fit` again")


def _compare_scores(expl: ShapExplanation, saved: pl.DataFrame, name: str) -> str | None:
    """A note when the explained output does not reproduce the saved held-out predictions."""
    lookup = dict(zip(saved["patient_id"].to_list(), saved["score"].to_list()))
    split = dict(zip(saved["patient_id"].to_list(), saved["split"].to_list()))
    idx = [i for i, p in enumerate(expl.patient_ids) if split.get(p) in ("internal", "external")]
    if not idx:
        return None
    out = expl.output[idx]
    prob = 1 / (1 + np.exp(-out)) if expl.space == "log-odds" else out
    ref = np.array([lookup[expl.patient_ids[i]] for i in idx])
    gap = float(np.max(np.abs(prob - ref)))
    if gap > 1e-6:
        return f"{name}: explained outputs differ from the saved predictions by up to {gap:.2e}"
    return None


def _labels(cohort: Cohort, names: Sequence[str]) -> dict[str, str]:
    return labels_for(names, cohort.variables, cohort.feature_sets)


def _explain_table(ctx: _Context, fitted: FittedModel, wanted: Sequence[str],
                   settings: Settings) -> tuple[ShapExplanation, int]:
    """The model's explanation and the number of training patients behind its background."""
    study, spec = ctx.study, fitted.spec
    cohort = ctx.cohort
    inputs = input_models(spec)
    assembled = assemble(spec, cohort, training_scores(inputs, _predictions(study, inputs)))
    data = assembled.data
    pipeline_shap = spec.traits.explainer == "shap-pipeline"
    if pipeline_shap:
        _check_columns(fitted, data.columns)
    rows = _rows(cohort, assembled.available, wanted, settings.max_rows, study.study.seed)
    bg = _background(cohort, assembled.available)
    if len(bg) == 0:
        raise ExplainError(f"model '{spec.name}': no training patients with its inputs to serve as background")
    ids = [cohort.patient_ids[i] for i in rows]
    splits = [str(cohort.split[i]) for i in rows]
    seed = study.study.seed
    if pipeline_shap:
        assert data.table is not None and data.columns is not None
        # a harmonised model is explained on its ComBat-harmonised features (the classifier's inputs)
        table, pipeline = harmonised_inputs(fitted.learner.pipeline_, data.table, cohort.split, assembled.available)
        labels = _labels(cohort, list(table.columns) + pooled_refs(spec))
        return explain_pipeline(
            pipeline, table.iloc[bg].reset_index(drop=True), table.iloc[rows].reset_index(drop=True),
            data.columns.features, data.columns.categorical, ids, splits, labels, background=settings.background,
            max_background=settings.max_background, nsamples=settings.nsamples, max_units=settings.max_units,
            seed=seed), len(bg)
    scores = data.scores
    assert scores is not None
    names = [f"{SCORE_PREFIX}{m}" for m in data.score_names]
    model = fitted.learner.model_
    return explain_function(model.predict_score, scores[bg], scores[rows], names, ids, splits,
                            _labels(cohort, names), settings.background, settings.nsamples, seed,
                            method=f"KernelExplainer on the {spec.kind} ensemble's member scores"), len(bg)


def _background_text(expl: ShapExplanation, n_bg: int, settings: Settings) -> str:
    if expl.explainer == "kernel":
        k = min(settings.background, n_bg)
        return f"k-means summary ({k} weighted centres) of {n_bg} training patients"
    return f"{min(n_bg, settings.max_background)} training patients"


def _shap_model(ctx: _Context, fitted: FittedModel, patients: Sequence[str] | None, settings: Settings,
                out_dir: Path, summary: ModelSummary, notes: list[str]) -> mf.ModelOutputs:
    expl, n_bg = _explain_table(ctx, fitted, patients or (), settings)
    name = fitted.spec.name
    err = expl.additivity_error()
    if err > ADDITIVITY_TOLERANCE:
        notes.append(f"{name}: SHAP values miss additivity by {err:.2e} ({expl.space})")
    saved = fitted.predictions
    gap = _compare_scores(expl, saved, name)
    if gap:
        notes.append(gap)
    if patients:
        missing = [p for p in patients if p not in expl.patient_ids]
        if missing:
            notes.append(f"{name}: no inputs (or not in the cohort) for patient(s) {', '.join(missing)}")
    outputs = write_shap(expl, out_dir, name, chosen_patients(expl, patients), _background_text(expl, n_bg, settings))
    summary.explainer, summary.space, summary.explained = expl.explainer, expl.space, len(expl)
    summary.additivity_error = err
    outputs.record.update(explainer=expl.explainer, space=expl.space, method=expl.method, explained=len(expl),
                          additivity_error=err, background=_background_text(expl, n_bg, settings))
    return outputs


def _mil_model(study: StudyConfig, fitted: FittedModel, patients: Sequence[str] | None, settings: Settings,
               out_dir: Path, summary: ModelSummary, notes: list[str]) -> mf.ModelOutputs:
    from analytics.models.persist import ATTENTION

    name = fitted.spec.name
    path = fitted.path / ATTENTION
    attention = fitted.attention  # the bytes checked against the store when the model was loaded
    if attention is None:
        notes.append(f"{name}: no attention weights saved ({path})")
        return mf.ModelOutputs()
    fs = mil_feature_set(fitted.spec)
    con = store.connect(study.store_path, read_only=True)
    try:
        record = store.feature_set_record(con, fs)
        if record is None:
            raise ExplainError(f"model '{name}': feature set '{fs}' is not in the store")
        sources = store.source_rows(con, record["modality"], study.root)
    finally:
        con.close()
    chosen = {p: "chosen" for p in patients} if patients else default_patients(fitted.predictions)
    run = mil_outputs(name, attention, chosen, sources, record["modality"], feature_set_params(record), out_dir,
                      settings.top_k)
    notes += run.notes
    summary.explainer, summary.space = "attention", "attention weight"
    summary.explained = len({f.patient_id for f in run.outputs.figures})
    run.outputs.record.update(explainer="attention", space=summary.space,
                              method=f"attention weights from {ATTENTION}", explained=summary.explained)
    return run.outputs


# --- files ------------------------------------------------------------------------------------------


def model_digest(fit: FitRecord, settings: Settings, patients: Sequence[str] | None) -> str:
    """What a model's explanation depends on: its fit (key, cohort hash, predictions), settings, patients."""
    return store.json_digest({
        "format": FORMAT_VERSION, "fit_key": fit.fit_key, "cohort": fit.cohort.get("hash"),
        "predictions": fit.predictions_hash, "created_at": fit.created_at,
        "settings": asdict(settings), "patients": list(patients) if patients else None,
    })


def _select(study: StudyConfig, names: Sequence[str] | None) -> list[Model]:
    if not names:
        return list(study.models)
    known = [m.name for m in study.models]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ExplainError(f"{study.root / 'study.toml'}: no model named {', '.join(unknown)} "
                           f"(models: {', '.join(known) or 'none'})")
    return [m for m in study.models if m.name in names]


def explain(
    study: StudyConfig,
    models: list[str] | None = None,
    patients: list[str] | None = None,
    settings: Settings | None = None,
    progress: bool = True,
) -> ExplainResult:
    """Explain the study's fitted models (or ``models``); see the module notes.

    Parameters
    ----------
    study
        The validated study.
    models
        Only these models (default: every model in study.toml).
    patients
        Patients for waterfall plots and attention figures (default:
        ``[report] explain_patients``, else each model's highest- and
        lowest-scored external patient).
    settings
        Size limits (:class:`Settings`; default: study.toml's ``[explain]``).
    progress
        Show a progress bar over models.

    Returns
    -------
    ExplainResult
        Nothing is done when study.toml says ``[explain] enabled = false`` (a note says so).
    """
    settings = settings or Settings.from_config(study.explain)
    folder = study.report_dir / "explain"
    result = ExplainResult(folder)
    if not study.explain.enabled:
        result.notes.append("explanations are switched off in study.toml ([explain] enabled = false); nothing done")
        return result
    atomic.remove_stale_temporaries(folder)
    wanted = list(patients or study.report.explain_patients or []) or None
    with threadpool_limits(limits=1):
        specs = _select(study, models)
        old = mf.read(folder)
        features = sorted({r for s in study.models if s.traits.explainer == "shap-pipeline" for r in pooled_refs(s)})
        ctx = _Context(study, features)
        if wanted:
            _check_patients(ctx, wanted)
        current: dict[str, mf.ModelOutputs] = {}
        for spec in tqdm(specs, desc="explaining models", unit="model", disable=not progress):
            t0 = time.perf_counter()
            summary = ModelSummary(spec.name, spec.kind, "not fitted")
            result.models.append(summary)
            fit_record = read_record(study.models_dir / spec.name, study.store_path)
            if fit_record is None:
                result.notes.append(f"{spec.name}: not fitted (run `cohortlab fit`); nothing to explain")
                continue
            digest = model_digest(fit_record, settings, wanted)
            prev = old.get(spec.name)
            if prev is not None and prev.record.get("digest") == digest and mf.complete(folder, prev):
                prev.record.setdefault("budget", settings.budget(str(prev.record.get("explainer", ""))))
                current[spec.name] = prev
                summary.status = "up to date"
                _fill(summary, prev)
                continue
            explainer = spec.traits.explainer
            if explainer is None or (study.endpoint(spec) == "survival" and explainer != "attention"):
                # SHAP of a survival model's risk is not computed; a MIL network has its attention
                summary.status = "not explained"
                why = "of a survival endpoint; no SHAP explanation" if study.endpoint(spec) == "survival" else (
                    "has no explainer; nothing to explain")
                result.notes.append(f"{spec.name}: a {spec.kind} model {why}")
                continue
            fitted = load_model(study.models_dir / spec.name, study.store_path)
            notes: list[str] = []
            with atomic.staged_dir(folder / spec.name) as tmp:
                if explainer == "attention":
                    outputs = _mil_model(study, fitted, wanted, settings, tmp, summary, notes)
                else:
                    outputs = _shap_model(ctx, fitted, wanted, settings, tmp, summary, notes)
                outputs.record.update(digest=digest, kind=spec.kind, notes=notes,
                                      budget=settings.budget("attention" if explainer == "attention" else summary.explainer))
            current[spec.name] = outputs
            result.notes += notes
            summary.status = "explained"
            summary.figures = len(outputs.figures)
            summary.seconds = time.perf_counter() - t0
            log.info("model %s: %s, %d figures in %.1f s", spec.name, summary.explainer, summary.figures,
                     summary.seconds)
        # models not asked for this time keep their entries while their files exist
        names = [m.name for m in study.models]
        asked = {spec.name for spec in specs}
        for name, prev in old.items():
            if name in names and name not in asked and mf.complete(folder, prev):
                current[name] = prev
        mf.write(folder, current, names)
        _prune(folder, set(names) | set(old), set(current))
    return result


def _prune(folder: Path, known: set[str], kept: set[str]) -> None:
    """Remove output folders of models that are no longer listed (removed from study.toml, or not fitted now)."""
    for name in sorted(known - kept):
        target = folder / name
        if target.is_dir():
            log.info("removing explanations of %s (no longer fitted or in the study)", name)
            shutil.rmtree(target)


def _fill(summary: ModelSummary, prev: mf.ModelOutputs) -> None:
    rec = prev.record
    summary.explainer = rec.get("explainer", "")
    summary.space = rec.get("space", "")
    summary.explained = int(rec.get("explained", 0))
    err = rec.get("additivity_error")
    summary.additivity_error = None if err is None or not math.isfinite(err) else float(err)
    summary.figures = len(prev.figures)


def _check_patients(ctx: _Context, wanted: Sequence[str]) -> None:
    con = store.connect(ctx.study.store_path, read_only=True)
    try:
        known = store.patient_ids(con)
    finally:
        con.close()
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise ExplainError(f"--patients: {', '.join(unknown)} not in the store's patients table "
                           f"({ctx.study.store_path})")
