"""``cohortlab predict``: a developed model's risks for new patients (``study.model(name).predict(frame)``).

1. The new patients are checked against the development schema (:mod:`analytics.predict.patients`).
2. They are loaded into a scoring area: a store of their own in a temporary folder, with the development
   ``variables`` and the development ``clinical`` column types. The study's store is only read.
3. The study's cohort SQL runs over the scoring area (the same views and parameters), so derived columns are
   computed as for development patients; a patient it leaves out is not scored ("excluded by the cohort's
   inclusion criteria").
   A model that reads image features gets the new patients' slides or scans embedded into the scoring area with
   its feature sets' development settings (:mod:`analytics.predict.images`), and a ComBat-harmonised one checks
   their centres (:mod:`analytics.predict.combat`).
4. The saved model (every file checked against the study's store) scores the rest, as ``cohortlab fit``
   scored its held-out patients (:func:`analytics.scoring.saved_scores`): predicting the internal and
   external patients gives their stored predictions.

Columns: ``patient_id, lp, risk, risk_lower, risk_upper, group, flags, reason`` (survival models: ``risk``,
``risk_lower``, ``risk_upper`` at the first horizon and ``risk_<t>``, ``risk_lower_<t>``, ``risk_upper_<t>`` at
each), one row per new patient in file order. ``lp`` is the linear
predictor where the model has one; a survival model without absolute risks (soft voting of survival members)
gives its score as ``lp`` and no ``risk``. ``risk_lower`` / ``risk_upper`` is the 95% confidence interval of the
predicted risk of an unpenalised logistic regression by the delta method on the logit scale, as R's
``predict(glm, se.fit = TRUE)`` then ``plogis`` (Wald interval; Harrell, *Regression Modeling Strategies*, 2nd
ed., 2015, section 10.5); of an unpenalised Cox regression's risk at each horizon as R's
``survfit(coxph_fit, newdata, ctype = 1)`` (:mod:`analytics.predict.cox_ci`). Neither is a prediction interval
for the patient's outcome. ``group`` is ``high`` / ``low``
at the model's threshold (validation's, or a published model's own). ``flags`` name predictors that were
missing and imputed, values outside the range of the development (training) patients (extrapolation), a slide
or scan that could not be embedded while others of the patient were, and a new centre harmonised by ComBat.
``reason`` says why a patient was not scored.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from analytics.cohort import Cohort, CohortError, load_cohort, read_block
from analytics.cohort.checks import check_cohort
from analytics.cohort.files import cohort_name, cohort_params, find_cohort, view_files
from analytics.cohort.sql import read_only, run_select
from analytics.fit_plan import targets
from analytics.models import fusion, imputed
from analytics.models.data import assemble, input_models, pooled_refs
from analytics.models.fixed import FixedLearner
from analytics.models.persist import FittedModel, load_model
from analytics.models.updated import with_updated
from analytics.predict.combat import MIN_PATIENTS, new_centres
from analytics.predict.cox_ci import CoxRiskSets
from analytics.predict.images import ImageFiles, embed_patients
from analytics.predict.patients import NewPatients, PredictError, Schema, check, read_csv
from analytics.scoring import check_columns, saved_scores
from pipeline import atomic, store
from pipeline.config import RESERVED, StudyConfig

EXCLUDED = "excluded by the cohort's inclusion criteria"
LEVEL = 0.95


@dataclass(frozen=True)
class Development:
    """What scoring compares new patients with: the development (training) range of each numeric input, the
    threshold of the risk groups (None: no groups) and, for an unpenalised Cox regression, the risk sets its
    confidence intervals need (:class:`analytics.predict.cox_ci.CoxRiskSets`)."""

    ranges: dict[str, tuple[float, float]]
    threshold: float | None = None
    cox: CoxRiskSets | None = None

    @classmethod
    def of(cls, study: StudyConfig, name: str) -> Development:
        """From the study: its cohort's training patients, the model's threshold."""
        return _development(study, name, clinical_inputs(study, name))

    def to_dict(self) -> dict[str, Any]:
        return {"ranges": {c: list(r) for c, r in self.ranges.items()}, "threshold": self.threshold,
                "cox": None if self.cox is None else self.cox.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Development:
        ranges = {str(c): (float(r[0]), float(r[1])) for c, r in dict(data.get("ranges") or {}).items()}
        thr, cox = data.get("threshold"), data.get("cox")
        return cls(ranges, None if thr is None else float(thr), None if cox is None else CoxRiskSets.from_dict(cox))


def scoring_chain(study: StudyConfig, name: str) -> list[str]:
    """The model and, recursively, the models whose scores it reads."""
    out = [name]
    for n in input_models(study.model(name)):
        out += [m for m in scoring_chain(study, n) if m not in out]
    return out


def clinical_inputs(study: StudyConfig, name: str) -> list[str]:
    """Every clinical column the model (and its input models) reads."""
    cols: list[str] = []
    for n in scoring_chain(study, name):
        cols += [c for c in study.model(n).clinical if c not in cols]
    return cols


def pooled_inputs(study: StudyConfig, name: str) -> list[str]:
    """Every pooled feature block (``feature_set:pooling``) the model (and its input models) reads."""
    refs: list[str] = []
    for n in scoring_chain(study, name):
        refs += [r for r in pooled_refs(study.model(n)) if r not in refs]
    return refs


def _scoring_store(folder: Path, study: StudyConfig, new: NewPatients, source: str) -> Path:
    """A store in ``folder`` holding only the new patients, typed and described as the development ones."""
    path = folder / "scoring.duckdb"
    dev = duckdb_read(study.store_path)
    con = store.connect(path)
    try:
        frame = new.frame
        ids = frame["patient_id"].to_list()
        con.register("_p", pa.table({
            "patient_id": pa.array(ids, type=pa.string()), "center": pa.array(frame["center"].to_list(), pa.string()),
            "source_file": pa.array([source] * len(ids), type=pa.string()),
            "source_row": pa.array([new.rows[p] for p in ids], type=pa.int32())}))
        con.execute("INSERT INTO patients SELECT * FROM _p")
        con.unregister("_p")
        cols = ",\n    ".join(f"{store.quote_ident(c)} {t}" for c, t in dev["types"].items())
        con.execute("DROP TABLE IF EXISTS clinical")
        con.execute(f"CREATE TABLE clinical (\n    patient_id VARCHAR PRIMARY KEY{',' if cols else ''}\n    {cols}\n)")
        clinical = frame.drop("center")
        con.register("_c", clinical.to_arrow())
        names = ", ".join(store.quote_ident(c) for c in clinical.columns)
        con.execute(f"INSERT INTO clinical ({names}) SELECT {names} FROM _c")
        con.unregister("_c")
        con.register("_v", dev["variables"].to_arrow())
        con.execute("INSERT INTO variables SELECT * FROM _v")
        con.unregister("_v")
    finally:
        con.close()
    return path


def duckdb_read(store_path: Path) -> dict[str, Any]:
    """The development ``clinical`` column types and ``variables`` table (read-only)."""
    con = store.connect(store_path, read_only=True)
    try:
        types = {str(r[0]): str(r[1]) for r in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'clinical' "
            "AND column_name <> 'patient_id' ORDER BY ordinal_position").fetchall()}
        variables = store.query(con, "SELECT * FROM variables")
    finally:
        con.close()
    return {"types": types, "variables": variables}


def _area_study(study: StudyConfig, area: Path) -> StudyConfig:
    """The study as the embedding stage sees the scoring area: its folder and store are the area's."""
    return study.model_copy(update={"root": area.parent,
                                    "study": study.study.model_copy(update={"store": str(area)})})


def _scoring_cohort(study: StudyConfig, area: Path, refs: Sequence[str] = ()) -> Cohort:
    """The study's cohort SQL (its views and parameters) run over the scoring area, on a read-only sandbox, with
    the pooled feature blocks ``refs`` of the new patients (from the scoring area; bags are read on demand).

    New patients have no outcome: the checks of :func:`analytics.cohort.checks.check_cohort` run with the
    outcome columns stood in for, which stay NULL. Every patient's split is ``external`` (none is trained on).
    """
    name = cohort_name(study, None)
    file = find_cohort(study, name)
    params = cohort_params(study, name, None)
    views = view_files(study)
    with read_only(area, views, [study.root], study.sql) as session:
        raw = run_select(session, file.read_text(encoding="utf-8"), params, str(file))
        patients = store.query(session.con, "SELECT patient_id, center AS _store_center FROM patients")
        variables = store.query(session.con, "SELECT name, type, unit, role, label, n_missing, levels FROM variables "
                                             "ORDER BY name")
    empty = [c for c in ("label", "event") if c in raw.columns and raw[c].null_count() == raw.height]
    stand_in = raw.with_columns(*(pl.lit(0).alias(c) for c in empty))
    frame = check_cohort(stand_in, str(file), patients["patient_id"])
    frame = frame.with_columns(*(pl.lit(None, dtype=pl.Int8).alias(c) for c in empty))
    if "center" not in frame.columns:
        frame = frame.join(patients, on="patient_id", how="left").rename({"_store_center": "center"})
    frame = frame.drop("split", strict=False).with_columns(pl.lit("external").alias("split"))
    order = [c for c in RESERVED if c in frame.columns] + [c for c in frame.columns if c not in RESERVED]
    frame = frame.select(order).sort("patient_id")
    blocks = {}
    if refs:
        with read_only(area) as session:
            for ref in refs:
                try:
                    block = read_block(session.con, ref, frame["patient_id"].to_list())
                except CohortError:  # no new patient has these features: every one is refused already
                    continue
                blocks[block.key] = block
    return Cohort(name=Path(name).stem, file=file, sql=file.read_text(encoding="utf-8"),
                  params=dict(params), split_rule={}, frame=frame, blocks=blocks, variables=variables,
                  store_path=area)


def _development(study: StudyConfig, name: str, columns: Sequence[str]) -> Development:
    """The range of each numeric input over the training patients the model was developed on, its threshold and
    (an unpenalised Cox regression) its risk sets."""
    cohort = load_cohort(study, on_missing="keep")
    train = cohort.frame.filter(pl.col("split") == "train")
    ranges = {}
    for c in columns:
        if c in train.columns and train[c].dtype.is_numeric() and train[c].drop_nulls().len():
            ranges[c] = (float(train[c].min()), float(train[c].max()))  # type: ignore[arg-type]
    return Development(ranges, _threshold(study, name), _cox_risk_sets(study, name, cohort))


def _cox_risk_sets(study: StudyConfig, name: str, cohort: Cohort) -> CoxRiskSets | None:
    """The risk sets of an unpenalised Cox regression on its final model's training patients; None otherwise."""
    spec = study.model(name)
    if spec.traits.regression != "cox" or float(spec.params.get("penalizer", 0.0) or 0.0) > 0 or input_models(spec):
        return None
    fitted = load_model(study.models_dir / name, study.store_path)
    learner = fitted.learner
    model, prep = getattr(learner, "model_", None), getattr(learner, "prep_", None)
    horizons = list(fitted.record.horizons or [])
    if model is None or prep is None or not hasattr(model, "coef_") or getattr(learner, "keep_", None) is not None \
            or not horizons:
        return None
    assembled = assemble(spec, cohort, {})
    y = targets(study, spec, cohort)
    # the final model's training patients: training split, with follow-up and every input (as fit chose them)
    use = (cohort.split == "train") & np.isfinite(y).all(axis=1) & assembled.available
    rows = assembled.data.take(np.flatnonzero(use))
    assert rows.table is not None
    x = np.asarray(prep.transform(rows.table), dtype=np.float64)
    return CoxRiskSets.fit(x, y[use, 0], y[use, 1], model.coef_, model.mean_, max(horizons))


def _threshold(study: StudyConfig, name: str) -> float | None:
    """A published model's own threshold, else the one validation chose (``metrics.json``), else None."""
    spec = study.model(name)
    if spec.threshold is not None:
        return float(spec.threshold)
    file = study.report_dir / "metrics.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        value = data["models"][name]["threshold"]["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if value is None else float(value)


def _logit_ci(fitted: FittedModel, table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Linear predictor of a logistic regression, and the Wald 95% limits of its risk when it is unpenalised
    (a maximum-likelihood fit keeps its covariance); None for any other classifier."""
    pipeline = getattr(fitted.learner, "pipeline_", None)
    if pipeline is None or fitted.spec.traits.regression != "logit":
        return None
    clf = pipeline.steps[-1][1]
    prep = pipeline[:-1].transform(table) if len(pipeline.steps) > 1 else table
    lp = np.asarray(clf.decision_function(prep), dtype=np.float64).ravel()
    cov = getattr(clf, "cov_", None)
    if cov is None:
        return lp, np.full(len(lp), np.nan), np.full(len(lp), np.nan)
    design = np.column_stack([np.ones(len(lp)), np.asarray(prep, dtype=np.float64)])
    se = np.sqrt(np.einsum("ij,jk,ik->i", design, np.asarray(cov, dtype=np.float64), design))
    z = float(norm.ppf(0.5 + LEVEL / 2))
    return lp, 1 / (1 + np.exp(-(lp - z * se))), 1 / (1 + np.exp(-(lp + z * se)))


def _score(study: StudyConfig, name: str, cohort: Cohort, dev: Development, explain: int = 0
           ) -> dict[str, np.ndarray]:
    """lp, risk (and per horizon), CI of every cohort patient; with ``explain``, its top SHAP contributions."""
    memo: dict[str, pl.DataFrame] = {}
    fitted = load_model(study.models_dir / name, study.store_path)
    spec = fitted.spec
    # scored as analytics.scoring.saved_scores scores it (input models' scores first), with the model loaded once
    scores = {n: fusion.score_lookup(saved_scores(study, n, cohort, memo)) for n in input_models(spec)}
    assembled = assemble(spec, cohort, scores)
    # a model imputed by chained equations imputes with its auxiliary columns, as fit did; one the new patients
    # were not given (all NULL) leaves their chains rather than being imputed itself
    aux = [c for c in imputed.auxiliary_of(fitted.learner)
           if c in cohort.frame.columns and cohort.frame[c].null_count() < cohort.frame.height]
    assembled = imputed.with_auxiliary(spec, cohort.frame, assembled, str(cohort.file), names=aux)
    check_columns(fitted, assembled)
    n = len(cohort)
    out = {"risk": np.full(n, np.nan), "lp": np.full(n, np.nan), "risk_lower": np.full(n, np.nan),
           "risk_upper": np.full(n, np.nan)}
    ok = assembled.available
    if not ok.any():
        return out
    data = assembled.data.take(ok)
    out["risk"][ok] = fitted.predict_score(data)
    risk = out["risk"]
    if explain > 0:
        from analytics.predict.explain import top_contributions

        texts = np.full(n, None, dtype=object)
        texts[ok] = top_contributions(study, fitted, data, explain)
        out["explain"] = texts
    learner = fitted.learner
    survival = study.endpoint(spec) == "survival"
    if isinstance(learner, FixedLearner):
        out["lp"][ok] = learner.linear_predictor(data)
    elif survival and spec.traits.linear_predictor:
        out["lp"][ok] = risk[ok]
    elif not survival and data.table is not None:
        ci = _logit_ci(fitted, data.table)
        if ci is not None:
            out["lp"][ok], out["risk_lower"][ok], out["risk_upper"][ok] = ci
    if survival:
        horizons = list(fitted.record.horizons or [])
        at = learner.risk_at(data, horizons) if horizons and hasattr(learner, "risk_at") else None
        lower: np.ndarray | None = None
        upper: np.ndarray | None = None
        if dev.cox is not None and horizons and data.table is not None:  # survfit's interval at each horizon
            prep: Any = getattr(learner, "prep_", None)
            x = np.asarray(prep.transform(data.table), dtype=np.float64)
            _, lower, upper = dev.cox.interval(x, horizons)
        for j, t in enumerate(horizons):
            for key, values in (("", at), ("lower_", lower), ("upper_", upper)):
                col = np.full(n, np.nan)
                if values is not None:
                    col[ok] = values[:, j]
                out[f"risk_{key}{t:g}"] = col
        if horizons:  # the unsuffixed columns are the first horizon's
            for key in ("risk", "risk_lower", "risk_upper"):
                out[key] = out[f"{key}_{horizons[0]:g}"]
        else:
            out["risk"] = np.full(n, np.nan)
    return out


def predict_frame(study: StudyConfig, name: str, patients: pl.DataFrame, source: str = "patients",
                  development: Development | None = None, explain: int = 0, images: ImageFiles | None = None,
                  combat_min_patients: int = MIN_PATIENTS) -> pl.DataFrame:
    """Risks of model ``name`` for new patients (see the module notes).

    Parameters
    ----------
    study
        The study whose model it is.
    name
        The model (fitted by ``cohortlab fit``).
    patients
        ``patient_id``, optionally ``center``, and the clinical columns (text as read from a file, or typed).
    source
        The patients' file name, for the reasons.
    development
        The development ranges and threshold (default: read from the study; a bundle carries its own).
    explain
        Add column ``explain``: each scored patient's ``explain`` largest SHAP contributions
        (:mod:`analytics.predict.explain`; classical pipelines on clinical inputs, in a study).
    images
        The new patients' slides and scans, for a model that reads image features (:mod:`analytics.predict.images`).
    combat_min_patients
        New patients a centre unseen in development needs in this call to be harmonised by a ComBat-harmonised
        model (:mod:`analytics.predict.combat`).

    Raises
    ------
    PredictError
        The model is not fitted; it reads images and no manifest of them is given, or its feature sets cannot be
        reproduced here; ``explain`` for a model that reads image features.
    """
    study = with_updated(study, name)  # a model updated for a centre by validation, saved beside the others
    spec = study.model(name)
    required = clinical_inputs(study, name)
    chain, refs = scoring_chain(study, name), pooled_inputs(study, name)
    if explain and (refs or any(study.model(n).traits.bags for n in chain)):
        raise PredictError(f"--explain: model '{name}' reads image features; SHAP contributions are given for models "
                           "on clinical inputs only (an image feature column has no meaning to read)")
    new = check(patients, Schema.of_store(study.store_path), required, source)
    dev = development or Development.of(study, name)
    with tempfile.TemporaryDirectory(prefix="cohortlab-scoring-") as tmp:
        area = _scoring_store(Path(tmp), study, new, source)
        ids = new.frame["patient_id"].to_list()
        embedded = embed_patients(study, name, chain, _area_study(study, area), ids, images)
        cohort = _scoring_cohort(study, area, refs)
        included = set(cohort.patient_ids)
        refused = {**embedded.reasons, **new.reasons}
        centres = new_centres(study, chain, cohort, refused, combat_min_patients)
        refused.update(centres.reasons)
        keep = np.array([p not in refused for p in cohort.patient_ids], dtype=bool)
        if not keep.all() and keep.any():  # refused patients take no part (a new centre is estimated without them)
            cohort = cohort.subset(keep)
        with threadpool_limits(limits=1):
            scored = _score(study, name, cohort, dev, explain) if keep.any() else \
                {k: np.full(len(cohort), np.nan) for k in ("lp", "risk", "risk_lower", "risk_upper")}
    notes = {p: embedded.flags.get(p, []) + centres.flags.get(p, []) for p in ids}
    thr = dev.threshold
    at = {p: i for i, p in enumerate(cohort.patient_ids)}
    survival = study.endpoint(spec) == "survival"
    # per horizon: risk_<t>, risk_lower_<t>, risk_upper_<t> (in _score's order)
    horizons = [k for k in scored if k.startswith("risk_") and k not in ("risk_lower", "risk_upper")]
    extra = ["explain"] if "explain" in scored else []
    rows: dict[str, list[Any]] = {k: [] for k in ("patient_id", "lp", "risk", "risk_lower", "risk_upper",
                                                  *horizons, "group", "flags", *extra, "reason")}
    table = new.frame
    numbers = {k: scored[k].tolist() for k in ("lp", "risk", "risk_lower", "risk_upper", *horizons)}
    # the cohort's values of the inputs with a development range (as the cohort SQL returned them)
    ranged = {c: (lo, hi, cohort.frame[c].cast(pl.Float64).to_list()) for c, (lo, hi) in dev.ranges.items()
              if c in cohort.frame.columns}
    for pid in table["patient_id"].to_list():
        i = at.get(pid)
        reason = new.reasons.get(pid) or (EXCLUDED if pid not in included else refused.get(pid, ""))
        values = {k: (None if reason or i is None or not math.isfinite(v[i]) else v[i]) for k, v in numbers.items()}
        # scored: a risk, or only a score (a survival ensemble averaging its members' relative scores has no
        # absolute risk, so its score is all there is: lp)
        if not reason and values["risk"] is None and values["lp"] is None:
            reason = "the model could not score it (an input is missing)"
        flags = [f"{c} missing (imputed)" for c in new.missing.get(pid, [])] + notes[pid] if not reason else []
        if not reason and i is not None:
            for c, (lo, hi, cells) in ranged.items():
                v = cells[i]
                if v is not None and not (lo <= v <= hi):
                    flags.append(f"extrapolation: {c} = {v:g} outside development range {lo:g} to {hi:g}")
        group = None
        if values["risk"] is not None and thr is not None and not survival:
            group = "high" if values["risk"] >= thr else "low"
        rows["patient_id"].append(pid)
        for k, v in values.items():
            rows[k].append(v)
        rows["group"].append(group)
        rows["flags"].append("; ".join(flags) or None)
        if extra:
            rows["explain"].append(None if reason or i is None else scored["explain"][i])
        rows["reason"].append(reason or None)
    schema = {k: pl.Float64 for k in ("lp", "risk", "risk_lower", "risk_upper", *horizons)}
    return pl.DataFrame(rows, schema={"patient_id": pl.String, **schema, "group": pl.String, "flags": pl.String,
                                      **{k: pl.String for k in extra}, "reason": pl.String})


def predict_file(study: StudyConfig, name: str, patients: Path, out: Path,
                 development: Development | None = None, protect: Sequence[Path] = (), explain: int = 0,
                 images: ImageFiles | None = None, combat_min_patients: int = MIN_PATIENTS) -> pl.DataFrame:
    """:func:`predict_frame` of a CSV of new patients (and, for an image model, their slides or scans),
    written to ``out`` (CSV) in one step.

    Raises
    ------
    PredictError
        ``out`` is the patients file, an existing folder or a link, or lies inside the study's ``models/``
        folder or is its store.
    """
    manifests = [p for p in (images.slides, images.scans) if p is not None] if images else []
    target = _output(out, [patients, study.store_path, *manifests, *protect], [study.models_dir])
    frame = predict_frame(study, name, read_csv(patients, study.manifests.encoding), Path(patients).name,
                          development, explain, images, combat_min_patients)
    with atomic.staged(target) as tmp:
        frame.write_csv(tmp)
    return frame


def _output(out: Path, never: Sequence[Path], never_inside: Sequence[Path]) -> Path:
    """``out`` as given, refused when writing it would replace or reach something it should not."""
    path = Path(out)
    if path.is_symlink():
        raise PredictError(f"--out {out}: a link; give a plain file path (nothing was written)")
    if path.is_dir():
        raise PredictError(f"--out {out}: a folder; give a file path (nothing was written)")
    if not path.parent.is_dir():
        raise PredictError(f"--out {out}: folder {path.parent} does not exist (nothing was written)")
    resolved = path.resolve()
    for p in never:
        if Path(p).exists() and resolved == Path(p).resolve():
            raise PredictError(f"--out {out}: is {p}; it would be overwritten (nothing was written)")
    for folder in never_inside:
        if resolved.is_relative_to(Path(folder).resolve()):
            raise PredictError(f"--out {out}: inside {folder}, which cohortlab fit owns (nothing was written)")
    return resolved


__all__ = ["EXCLUDED", "Development", "clinical_inputs", "predict_file", "predict_frame", "scoring_chain"]
