"""Multi-centre validation of one model: its measures per external centre, their random-effects
meta-analysis (split ``meta``), and the model updated for each external centre (split ``updating``).

Per centre (Riley et al., BMJ 2016;353:i3140; Debray et al., BMJ 2017;356:i6460): AUC with its DeLong
interval, calibration-in-the-large and the calibration slope (Wald intervals from ``glm``), O:E (interval on
the log scale), the Brier score, and the mean and SD of the linear predictor beside them, so a user can tell
case-mix from miscalibration. The pooled values are :func:`analytics.stats.meta_analysis.pool`'s: REML
random effects with a Hartung-Knapp-Sidik-Jonkman CI and two prediction intervals for three or more
centres, a fixed-effect estimate for two. A centre without events (or without non-events) is listed with
that reason and left out of pooling.

Updating (``[validation] updating = true``; Steyerberg 2009 ch. 20, Vergouwe et al. 2017): the closed test
on each external centre, and the chosen model's apparent performance there, under the name
``<model>-updated-<centre>``. Apparent performance is optimistic; it is never external validation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import norm

from analytics.stats import meta_analysis
from analytics.stats.calibrate import logit
from analytics.stats.updating import centre_measures, membership_c, update_logistic, updated_lp
from analytics.validation.values import Estimate, ValidateError, _mapping, clean, jsonable, safe
from pipeline.config import StudyConfig

# the measures pooled, as metrics.csv names them, and the key of each one's variance in centre_measures
POOLED = {"auc": "auc_var", "calibration_in_the_large": "citl_se", "calibration_recalibration_slope": "slope_se",
          "oe_ratio": "log_oe_var"}
UPDATED_WARNING = ("apparent performance of a model updated on this centre's own patients: optimistic, and not "
                   "a validation; validate the updated model on other patients before using it")
NO_EVENTS = "no events"
NO_NON_EVENTS = "no non-events"
EPS = 1e-12  # probabilities of exactly 0 or 1 are clipped before their logit, as the calibration measures do


# per-centre measures in the order they are written (metrics.json keeps its keys sorted)
ORDER = ("auc", "c_index", "calibration_in_the_large", "calibration_recalibration_slope", "lp_calibration_slope",
         "oe_ratio", "calibration_brier", "lp_mean", "lp_sd", "membership_c")


def _ordered(measures: Mapping[str, Estimate]) -> dict[str, Estimate]:
    rank = {k: i for i, k in enumerate(ORDER)}
    return {k: measures[k] for k in sorted(measures, key=lambda k: (rank.get(k, len(ORDER)), k))}


def _z(level: float) -> float:
    return float(norm.ppf(0.5 + level / 2))


@dataclass(frozen=True)
class CentreResult:
    """One centre: patients, events, and its measures (none, with ``note`` saying why, when it has no
    events or no non-events)."""

    center: str
    n: int
    events: int
    measures: Mapping[str, Estimate] = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"center": self.center, "n": self.n, "events": self.events, "note": self.note,
                "measures": {k: e.to_dict() for k, e in self.measures.items()}}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> CentreResult:
        d = _mapping(d, where, source)
        measures = _mapping(d.get("measures") or {}, f"{where}.measures", source)
        return cls(str(d.get("center")), int(d.get("n") or 0), int(d.get("events") or 0),
                   _ordered({k: Estimate.from_dict(e, f"{where}.measures.{k}", source) for k, e in measures.items()}),
                   d.get("note"))


@dataclass(frozen=True)
class Pooled:
    """One measure pooled across centres (:class:`analytics.stats.meta_analysis.MetaAnalysis`, as written)."""

    measure: str
    centers: tuple[str, ...]
    result: Mapping[str, Any]

    @property
    def estimate(self) -> Estimate:
        r = self.result
        return Estimate(clean(r["estimate"]), clean(r["low"]), clean(r["high"]), str(r["method_text"]),
                        clean(r["level"]))

    def rows(self) -> Iterator[tuple[str, Estimate]]:
        """(measure, value) rows of split ``meta``: the pooled value, then tau², I², both prediction intervals
        and the number of centres, where they exist."""
        r = self.result
        yield self.measure, self.estimate
        yield f"{self.measure}_k", Estimate(float(r["k"]), method="count")
        if r.get("tau2") is not None:
            yield f"{self.measure}_tau2", Estimate(clean(r["tau2"]), method=f"REML tau² ({r['scale']} scale)"
                                                   if r["method"] == "REML" else f"DerSimonian-Laird tau² ({r['scale']} scale)")
            yield f"{self.measure}_i2", Estimate(clean(r["i2"]), method="I² (percent), metafor")
        if r.get("pi_low") is not None:
            yield f"{self.measure}_prediction_interval", Estimate(
                clean(r["estimate"]), clean(r["pi_low"]), clean(r["pi_high"]),
                "prediction interval, metafor predict.rma (t, k − 1 df, Knapp-Hartung SE)", clean(r["level"]))
            yield f"{self.measure}_prediction_interval_riley", Estimate(
                clean(r["estimate"]), clean(r["pi_riley_low"]), clean(r["pi_riley_high"]),
                "prediction interval, Riley et al. 2011 (t, k − 2 df)", clean(r["level"]))

    def to_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "centers": list(self.centers), **dict(self.result)}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> Pooled:
        d = dict(_mapping(d, where, source))
        measure, centers = str(d.pop("measure", "")), tuple(str(c) for c in d.pop("centers", []))
        return cls(measure, centers, d)


@dataclass(frozen=True)
class UpdatedModel:
    """A model updated for one centre: the closed test (deviances, LR tests, choice) and the chosen model's
    apparent performance on that centre."""

    name: str
    model: str
    center: str
    choice: str
    deviance: Mapping[str, float | None]
    coef: Mapping[str, Sequence[float | None]]
    tests: Sequence[Mapping[str, Any]]
    measures: Mapping[str, Estimate]
    warning: str = UPDATED_WARNING
    # the chosen model as a published one (analytics.models.updated; None: not expressible so), and the
    # centre's patients with its apparent risks, which validation saves as a model of its own
    formula: str | None = None
    coefficients: Mapping[str, float] | None = None
    scored: tuple[tuple[str, float], ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "center": self.center, "choice": self.choice,
                "deviance": dict(self.deviance), "coef": {k: list(v) for k, v in self.coef.items()},
                "tests": [dict(t) for t in self.tests], "warning": self.warning,
                "measures": {k: e.to_dict() for k, e in self.measures.items()},
                **({"formula": self.formula, "coefficients": dict(self.coefficients)} if self.coefficients else {})}

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> UpdatedModel:
        d = _mapping(d, where, source)
        measures = _mapping(d.get("measures") or {}, f"{where}.measures", source)
        return cls(str(d["name"]), str(d["model"]), str(d["center"]), str(d["choice"]), dict(d.get("deviance") or {}),
                   {k: list(v) for k, v in (d.get("coef") or {}).items()}, list(d.get("tests") or []),
                   _ordered({k: Estimate.from_dict(e, f"{where}.measures.{k}", source) for k, e in measures.items()}),
                   str(d.get("warning", UPDATED_WARNING)), d.get("formula"), d.get("coefficients"))


@dataclass(frozen=True)
class ModelMulticentre:
    """One model across the external centres of ``split``: per-centre results, pooled measures, updated models."""

    model: str
    split: str
    centres: tuple[CentreResult, ...]
    pooled: tuple[Pooled, ...] = ()
    updated: tuple[UpdatedModel, ...] = ()
    notes: tuple[str, ...] = ()

    def rows(self) -> Iterator[tuple[str, str, str, Estimate, str | None]]:
        """(model, split, measure, value, centre) summary rows: per-centre measures (split ``split``), pooled
        ones (split ``meta``) and updated models (split ``updating``)."""
        for c in self.centres:
            if c.note is not None:
                yield self.model, self.split, "note", Estimate(None, method=c.note), c.center
            for name, e in c.measures.items():
                yield self.model, self.split, name, e, c.center
        pooled_split = "meta" if self.split == "external" else f"meta_{self.split}"
        for p in self.pooled:
            for name, e in p.rows():
                yield self.model, pooled_split, name, e, None
        for u in self.updated:
            yield u.name, "updating", "updating_choice", Estimate(None, method=f"closed test: {u.choice}"), u.center
            for name, e in u.measures.items():
                yield u.name, "updating", name, e, u.center

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "split": self.split, "centres": [c.to_dict() for c in self.centres],
                "pooled": [p.to_dict() for p in self.pooled], "updated": [u.to_dict() for u in self.updated],
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, model: str, d: Any, where: str, source: str) -> ModelMulticentre:
        """From its entry in metrics.json (``model``: the entry's key, where the entry does not name it)."""
        d = _mapping(d, where, source)
        return cls(str(d.get("model", model)), str(d.get("split", "external")),
                   tuple(CentreResult.from_dict(c, f"{where}.centres[{i}]", source)
                         for i, c in enumerate(d.get("centres") or [])),
                   tuple(Pooled.from_dict(p, f"{where}.pooled[{i}]", source) for i, p in enumerate(d.get("pooled") or [])),
                   tuple(UpdatedModel.from_dict(u, f"{where}.updated[{i}]", source)
                         for i, u in enumerate(d.get("updated") or [])),
                   tuple(str(n) for n in d.get("notes") or []))


def _wald(est: float, se: float, level: float, method: str) -> Estimate:
    if not (math.isfinite(est) and math.isfinite(se)):
        return Estimate(clean(est), None, None, "no CI", clean(level))
    z = _z(level)
    return Estimate(clean(est), clean(est - z * se), clean(est + z * se), method, clean(level))


def _estimates(m: Mapping[str, float], level: float, extra: Mapping[str, float] | None = None) -> dict[str, Estimate]:
    """A centre's measures of :func:`analytics.stats.updating.centre_measures` as written (NaN ones left out)."""
    z = _z(level)
    out: dict[str, Estimate] = {}
    if math.isfinite(m["auc"]):
        sd = math.sqrt(m["auc_var"]) if math.isfinite(m["auc_var"]) else math.nan
        out["auc"] = (Estimate(clean(m["auc"]), clean(max(0.0, m["auc"] - z * sd)), clean(min(1.0, m["auc"] + z * sd)),
                               "delong", clean(level)) if math.isfinite(sd) else
                      Estimate(clean(m["auc"]), None, None, "no CI", clean(level)))
    if math.isfinite(m["calibration_in_the_large"]):
        out["calibration_in_the_large"] = _wald(m["calibration_in_the_large"], m["citl_se"], level,
                                                "glm(y ~ offset(lp)), Wald CI")
    if math.isfinite(m["calibration_recalibration_slope"]):
        out["calibration_recalibration_slope"] = _wald(m["calibration_recalibration_slope"], m["slope_se"], level,
                                                       "glm(y ~ lp), Wald CI")
    if math.isfinite(m["oe_ratio"]) and m["oe_ratio"] > 0:
        half = z * math.sqrt(m["log_oe_var"]) if m["log_oe_var"] > 0 else math.nan
        out["oe_ratio"] = (Estimate(clean(m["oe_ratio"]), clean(m["oe_ratio"] * math.exp(-half)),
                                    clean(m["oe_ratio"] * math.exp(half)), "O/E, CI on the log scale (1/O − 1/N)",
                                    clean(level)) if math.isfinite(half) else
                           Estimate(clean(m["oe_ratio"]), None, None, "no CI", clean(level)))
    out["calibration_brier"] = Estimate(clean(m["brier"]), method="mean squared error")
    out["lp_mean"] = Estimate(clean(m["lp_mean"]), method="mean of the linear predictor")
    out["lp_sd"] = Estimate(clean(m["lp_sd"]), method="SD of the linear predictor")
    for k, val in (extra or {}).items():
        out[k] = Estimate(clean(val), method="membership model c-statistic (Debray et al. 2015)")
    return _ordered(out)


def _pool(results: Sequence[tuple[CentreResult, Mapping[str, float]]], level: float) -> tuple[list[Pooled], list[str]]:
    pooled: list[Pooled] = []
    notes: list[str] = []
    for measure, var_key in POOLED.items():
        names, est, var = [], [], []
        for c, m in results:
            v = m[var_key] ** 2 if var_key.endswith("_se") else m[var_key]
            ok = math.isfinite(m[measure]) and math.isfinite(v) and v > 0
            if measure == "auc":
                ok = ok and 0.0 < m[measure] < 1.0
            if ok:
                names.append(c.center)
                est.append(m[measure])
                var.append(v)
        if len(names) < 2:
            notes.append(f"{measure}: not pooled ({len(names)} centre(s) with an estimate and its variance)")
            continue
        res, why = safe(meta_analysis.pool, measure, est, var, level)
        if res is None:
            notes.append(f"{measure}: not pooled ({why})")
            continue
        d = jsonable(res.as_dict())
        d["method_text"] = res.method_text
        pooled.append(Pooled(measure, tuple(names), d))
        notes += [f"{measure}: {n}" for n in res.notes]
    return pooled, notes


@dataclass(frozen=True)
class Revise:
    """A regression model's formula and coefficients (:func:`analytics.models.updated.regression_terms`): revision
    re-estimates them on a centre's patients, and every updated model is saved as a published one."""

    formula: str
    coefficients: Mapping[str, float]
    references: Mapping[str, str]


def _updated(model: str, center: str, y: np.ndarray, lp: np.ndarray, level: float, revise: Revise | None = None,
             rows: pl.DataFrame | None = None) -> tuple[UpdatedModel | None, str | None]:
    from analytics.models.updated import design, updated_coefficients

    x: np.ndarray | None = None
    names: list[str] = []
    note: str | None = None
    if revise is not None and rows is not None:  # revision: glm(y ~ formula) on the centre's patients
        names, x, ok = design(revise.formula, revise.coefficients, rows.to_pandas(), revise.references)
        if not ok.all():
            x, note = None, f"{model} not revised for centre {center}: {int((~ok).sum())} patient(s) lack a predictor"
    u, why = safe(update_logistic, y, lp, x)
    if u is None:
        return None, f"{model} not updated for centre {center}: {why}"
    eta = updated_lp(u, lp, x)
    m = centre_measures(y, eta)
    tests = [jsonable({"reduced": s.reduced, "full": s.full, "statistic": s.statistic, "df": s.df, "p": s.p})
             for s in u.tests]
    measures = _estimates(m, level)
    measures = {k: Estimate(e.estimate, e.low, e.high, f"apparent, {e.method}", e.level) for k, e in measures.items()}
    coef = None if revise is None else updated_coefficients(u.choice, revise.coefficients, u.coef[u.choice], names)
    scored = () if rows is None else tuple(zip(rows.get_column("patient_id").to_list(), (1 / (1 + np.exp(-eta))).tolist()))
    return UpdatedModel(f"{model}-updated-{center}", model, center, u.choice, jsonable(u.deviance),
                        {k: jsonable(list(c)) for k, c in u.coef.items()}, tests, measures, UPDATED_WARNING,
                        None if revise is None else revise.formula, coef, scored), note


def check_centres(names: Sequence[str], known: Sequence[str], setting: str, source: str) -> None:
    """Every centre a setting names is one of ``known``, or a :class:`ValidateError` naming it."""
    bad = [c for c in names if c not in known]
    if bad:
        raise ValidateError(f"{source}: {setting}: no external centre named {', '.join(repr(c) for c in bad)} "
                            f"(the external centres: {', '.join(known) or 'none'})")


def _design(frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The membership model's predictors: the linear predictor, the model's clinical variables (numeric as they
    are, categorical as indicators of every level but the first) and the outcome."""
    parts = [frame.get_column("lp").to_numpy().reshape(-1, 1)]
    for col in columns:
        s = frame.get_column(col)
        if s.dtype.is_numeric() or s.dtype == pl.Boolean:
            parts.append(s.cast(pl.Float64).to_numpy().reshape(-1, 1))
        else:
            levels = sorted(str(x) for x in s.drop_nulls().unique().to_list())
            text = s.cast(pl.String).to_numpy()
            parts += [(text == lv).astype(np.float64).reshape(-1, 1) for lv in levels[1:]]
    parts.append(frame.get_column("label").cast(pl.Float64).to_numpy().reshape(-1, 1))
    return np.hstack(parts)


def _membership(dev: pl.DataFrame, centre: pl.DataFrame, columns: Sequence[str]) -> tuple[float | None, str | None]:
    """Membership c-statistic of one centre against the development patients (Debray et al. 2015)."""
    both = pl.concat([dev.select("lp", "label", *columns).with_columns(pl.lit(0).alias("_member")),
                      centre.select("lp", "label", *columns).with_columns(pl.lit(1).alias("_member"))],
                     how="vertical_relaxed").drop_nulls()
    member = both.get_column("_member").to_numpy()
    if member.sum() == 0 or member.sum() == member.size:
        return None, "no patients with every predictor"
    x = _design(both, columns)
    dev_x, cen_x = x[member == 0], x[member == 1]
    res, why = safe(membership_c, dev_x[:, :-1], dev_x[:, -1], cen_x[:, :-1], cen_x[:, -1])
    return res, why


def multicentre_metrics(model: str, frame: pl.DataFrame, level: float, *, split: str = "external",
                        updating: bool = False, updating_centers: Sequence[str] = (),
                        membership: Sequence[str] | None = None,
                        groups: pl.DataFrame | None = None, revise: Revise | None = None) -> ModelMulticentre | None:
    """The multi-centre results of one binary model on the patients of ``split`` (``frame``: its labelled
    predictions with ``label``, ``center``, ``score``, ``split``); None with fewer than two centres there.

    ``updating``: fit the updating methods on each centre (those of ``updating_centers`` when given);
    ``revise``: a regression model's terms, for revision (the formula's columns in ``frame``).
    ``membership``: the model's clinical columns of ``frame`` for the membership model of each centre against
    the development (train and internal) patients; None: no membership model.
    ``groups`` (split ``iecv``): the development patients with the model's own ``score``, ``label``, their
    left-out group as ``center`` and the ``membership`` columns; each left-out group's membership model is
    fitted against the other groups' patients, the development patients of its fold.
    """
    def with_lp(f: pl.DataFrame) -> pl.DataFrame:
        return f.with_columns(pl.col("score").cast(pl.Float64).clip(EPS, 1 - EPS).pipe(
            lambda p: (p / (1 - p)).log()).alias("lp"))

    frame = with_lp(frame)
    dev = frame.filter(pl.col("split").is_in(["train", "internal"]) & pl.col("label").is_not_null())
    by_group = None if groups is None else with_lp(groups.filter(pl.col("label").is_not_null()))
    part = frame.filter((pl.col("split") == split) & pl.col("label").is_not_null() & pl.col("center").is_not_null())
    centres = sorted(str(c) for c in part.get_column("center").unique().to_list())
    if len(centres) < 2:
        return None
    results: list[tuple[CentreResult, Mapping[str, float]]] = []
    listed: list[CentreResult] = []
    updated: list[UpdatedModel] = []
    notes: list[str] = []
    for center in centres:
        rows = part.filter(pl.col("center") == center)
        y = rows.get_column("label").to_numpy().astype(int)
        lp = logit(rows.get_column("score").to_numpy().astype(float), eps=EPS)
        n, events = int(y.size), int(y.sum())
        if events == 0 or events == n:
            reason = NO_EVENTS if events == 0 else NO_NON_EVENTS
            listed.append(CentreResult(center, n, events, {}, reason))
            notes.append(f"centre {center}: {reason}; left out of pooling")
            continue
        m = centre_measures(y, lp)
        extra: dict[str, float] = {}
        against = None
        if membership is not None and by_group is not None:  # IECV: this group against its fold's development
            against, rows_m = by_group.filter(pl.col("center") != center), by_group.filter(pl.col("center") == center)
        elif membership is not None and dev.height:
            against, rows_m = dev, rows
        if membership is not None and against is not None:
            mc, why = _membership(against, rows_m, membership)
            if mc is not None:
                extra["membership_c"] = mc
            else:
                notes.append(f"centre {center}: no membership c-statistic ({why})")
        c = CentreResult(center, n, events, _estimates(m, level, extra))
        listed.append(c)
        results.append((c, m))
        if updating and (not updating_centers or center in updating_centers):
            u, why = _updated(model, center, y, lp, level, revise, rows)
            updated += [u] if u is not None else []
            notes += [why] if why is not None else []
    pooled, pool_notes = _pool(results, level)
    return ModelMulticentre(model, split, tuple(listed), tuple(pooled), tuple(updated), tuple(notes + pool_notes))


def external_centres(outcomes: pl.DataFrame) -> list[str]:
    """The centres of the cohort's external patients (``outcomes``: with ``center`` and ``cohort_split``)."""
    ext = outcomes.filter((pl.col("cohort_split") == "external") & pl.col("center").is_not_null())
    return sorted(str(c) for c in ext.get_column("center").unique().to_list())


def check_settings(study: StudyConfig, outcomes: pl.DataFrame) -> None:
    """``[validation] updating_centers`` names external centres only (a :class:`ValidateError` naming the one
    that is not, before anything is computed)."""
    v = study.validation
    if v.updating_centers:
        check_centres(v.updating_centers, external_centres(outcomes), "[validation] updating_centers",
                      str(study.root / "study.toml"))


def _risks_by_patient(risks: pl.DataFrame | None) -> tuple[list[float], dict[str, list[float]]]:
    """Saved absolute risks (long: patient_id, horizon, risk) as the horizons and each patient's risks at them."""
    if risks is None or risks.height == 0:
        return [], {}
    horizons = sorted(set(risks.get_column("horizon").to_list()))
    wide = risks.sort("horizon").group_by("patient_id", maintain_order=True).agg(pl.col("risk"))
    return horizons, {p: list(r) for p, r in zip(wide["patient_id"].to_list(), wide["risk"].to_list())}


def _one(study: StudyConfig, name: str, frame: pl.DataFrame, split: str, risks: pl.DataFrame | None,
         cohort: pl.DataFrame | None, groups: pl.DataFrame | None = None) -> ModelMulticentre | None:
    """:func:`multicentre_metrics` (binary) or :func:`survival_multicentre_metrics` of one model on ``split``;
    ``groups``: for split ``iecv``, the development patients' own predictions with their left-out group as
    ``center`` (the membership models)."""
    v = study.validation
    spec = next((m for m in study.models if m.name == name), None)
    if spec is not None and study.endpoint(spec) == "survival":
        causes = getattr(study, "causes", None)
        if "time" not in frame.columns or (causes is not None and causes.is_competing):
            return None  # single-event measures only (no Kaplan-Meier O:E with competing causes)
        horizons, risk_of = _risks_by_patient(risks)
        return survival_multicentre_metrics(name, frame, v.level, horizons, risk_of, spec.traits.linear_predictor,
                                            split=split, updating=v.updating and split == "external",
                                            updating_centers=v.updating_centers)
    columns: list[str] | None = None
    if cohort is not None and (split == "external" or groups is not None):
        columns = [c for c in (spec.clinical if spec is not None else []) if c in cohort.columns]
        joined = [c for c in columns if c not in frame.columns]
        if joined:
            frame = frame.join(cohort.select("patient_id", *joined), on="patient_id", how="left")
        if groups is not None:
            extra = [c for c in columns if c not in groups.columns]
            groups = groups.join(cohort.select("patient_id", *extra), on="patient_id", how="left") if extra else groups
    updating = v.updating and split == "external"
    revise = None
    if updating and spec is not None and columns is not None and set(spec.clinical) <= set(frame.columns):
        from analytics.models.updated import regression_terms

        terms = regression_terms(study, spec)
        revise = Revise(terms[0], terms[1], spec.references) if isinstance(terms, tuple) else None
    return multicentre_metrics(name, frame, v.level, split=split, updating=updating, revise=revise,
                               updating_centers=v.updating_centers, membership=columns, groups=groups)


def _iecv_frame(study: StudyConfig, name: str, outcomes: pl.DataFrame) -> tuple[pl.DataFrame | None,
                                                                                pl.DataFrame | None, str | None]:
    """A model's IECV predictions joined to the outcomes (split ``iecv``, centre = its left-out group) and its
    risks at the horizons (long); or why there are none. The model's folder was checked against the store when
    validation began (``check_models``): its record is read here without opening the store again."""
    from analytics.iecv_files import read_iecv
    from analytics.models.artifacts import FitRecord

    path = study.models_dir / name / "manifest.json"
    fit_key = FitRecord.from_json(path.read_bytes(), path).fit_key if path.is_file() else None
    got = read_iecv(study.models_dir, name, fit_key)
    if got is None:
        return None, None, "no internal-external cross-validation of its current fit; run `cohortlab fit`"
    f = got.frame
    risks = None
    if got.horizons and all(f"risk_{j}" in f.columns for j in range(len(got.horizons))):
        risks = pl.concat([f.select("patient_id", pl.lit(float(h)).alias("horizon"), pl.col(f"risk_{j}").alias("risk"))
                           for j, h in enumerate(got.horizons)])
    frame = (f.select("patient_id", pl.col("group").alias("center"), "score")
             .with_columns(pl.lit("iecv").alias("split"))
             .join(outcomes.drop("center"), on="patient_id", how="inner"))
    return frame, risks, None


def study_multicentre(study: StudyConfig, preds: pl.DataFrame, outcomes: pl.DataFrame, models: Sequence[str],
                      cohort: pl.DataFrame | None = None) -> tuple[dict[str, ModelMulticentre], list[str]]:
    """The multi-centre results of every model in ``models``: on the external centres when there are two or more
    (keyed by the model's name), and across the left-out development centres of internal-external
    cross-validation when ``[validation] internal_external`` (keyed ``<model>/iecv``); notes (model-prefixed),
    including each updated model's warning. ``cohort``: the cohort frame, whose columns of each model's clinical
    variables feed the membership models."""
    from analytics.models.persist import read_horizon_risks

    out: dict[str, ModelMulticentre] = {}
    notes: list[str] = []
    for name in models:
        frame = preds.filter(pl.col("model") == name).join(outcomes, on="patient_id", how="inner")
        surv = any(m.name == name and study.endpoint(m) == "survival" for m in study.models)
        risks = read_horizon_risks(study.models_dir / name, study.store_path) if surv else None
        mc = _one(study, name, frame, "external", risks, cohort)
        if mc is not None:
            out[name] = mc
            notes += [f"{name}, multi-centre: {n}" for n in mc.notes]
            notes += [f"{u.name}: {u.warning}" for u in mc.updated]
        if not study.validation.internal_external:
            continue
        iframe, irisks, why = _iecv_frame(study, name, outcomes)
        imc = None
        if iframe is not None:
            # each left-out group's membership model: the model's own development predictions (one linear
            # predictor for every patient, as for the external centres), regrouped by IECV group
            groups = (frame.filter(pl.col("split").is_in(["train", "internal"])).drop("center")
                      .join(iframe.select("patient_id", "center"), on="patient_id", how="inner"))
            imc = _one(study, name, iframe, "iecv", irisks, cohort, groups)
        if imc is None:
            notes.append(f"{name}, internal-external cross-validation: {why or 'fewer than two left-out centres'}")
            continue
        out[f"{name}/iecv"] = imc
        notes += [f"{name}, internal-external cross-validation: {n}" for n in imc.notes]
    return out, notes


# --- survival models ----------------------------------------------------------------------------------


def _c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray, level: float) -> tuple[float, float]:
    """Harrell's C and its variance: the infinitesimal-jackknife one (R ``survival::concordance``) where
    :func:`analytics.stats.concordance` offers it, else from the width of its interval."""
    from analytics import stats

    ij: dict[str, Any] = {"interval": "ij"}
    try:
        iv = stats.concordance(time, event, risk, level=level, **ij)
    except TypeError:
        iv = stats.concordance(time, event, risk, level=level, n_boot=500, seed=0)
    se = (iv.high - iv.low) / (2 * _z(level))
    return float(iv.estimate), float(se) ** 2


def survival_centre_measures(time: np.ndarray, event: np.ndarray, score: np.ndarray, horizons: Sequence[float],
                             risk: np.ndarray | None, linear_predictor: bool, level: float,
                             ) -> tuple[dict[str, Estimate], dict[str, tuple[float, float]], list[str]]:
    """A survival model's measures on one centre, and the (estimate, variance) of each poolable one.

    ``c_index`` (Harrell; pooled on the logit scale), ``oe_ratio_t{t}`` at each horizon (Kaplan-Meier observed
    risk over the mean predicted risk; variance of log O:E from the Greenwood SE, Debray et al. 2017),
    ``lp_calibration_slope`` (Cox regression on the linear predictor), ``lp_mean``/``lp_sd``."""
    from analytics.stats.cox_validation import cox_one

    z = _z(level)
    out: dict[str, Estimate] = {}
    pool: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    c, why = safe(_c_index, time, event, score, level)
    if c is not None:
        est, var = c
        sd = math.sqrt(var)
        out["c_index"] = Estimate(clean(est), clean(est - z * sd), clean(est + z * sd), "harrell, infinitesimal "
                                  "jackknife SE", clean(level))
        if 0 < est < 1 and var > 0:
            pool["c_index"] = (est, var)
    else:
        notes.append(f"no C ({why})")
    if risk is not None:
        from analytics import stats

        for name, fn in (("auc", stats.time_auc), ("brier", stats.brier)):
            tm, why_t = safe(fn, time, event, risk, list(horizons), level=level)
            if tm is None:
                notes.append(f"no {name}(t) ({why_t})")
                continue
            for j, t in enumerate(horizons):
                est, se_t = float(tm.estimate[j]), float(tm.se[j])
                if not math.isfinite(est):
                    continue
                out[f"{name}_t{t:g}"] = Estimate(clean(est), clean(float(tm.low[j])), clean(float(tm.high[j])),
                                                 tm.method, clean(level))
                if name == "auc" and 0 < est < 1 and math.isfinite(se_t) and se_t > 0:
                    pool[f"auc_t{t:g}"] = (est, se_t**2)  # pooled on the logit scale as the AUC
        for j, t in enumerate(horizons):
            obs, se = meta_analysis.km_risk(time, event, t)
            exp_ = float(np.mean(risk[:, j]))
            key = f"oe_ratio_t{t:g}"
            if obs > 0 and exp_ > 0 and math.isfinite(se) and se > 0:
                lo, var = meta_analysis.log_oe_survival(obs, se, exp_)
                half = z * math.sqrt(var)
                out[key] = Estimate(clean(obs / exp_), clean(math.exp(lo - half)), clean(math.exp(lo + half)),
                                    "Kaplan-Meier risk / mean predicted risk, Greenwood SE (log scale)", clean(level))
                pool[key] = (obs / exp_, var)
            else:
                notes.append(f"no O:E at {t:g} (no observed events by then)")
    if linear_predictor:
        fit, why = safe(cox_one, time, event, score)
        if fit is not None:
            out["lp_calibration_slope"] = _wald(fit.coef, fit.se, level, "Cox regression on the linear predictor, Wald CI")
            pool["lp_calibration_slope"] = (fit.coef, fit.se**2)
        else:
            notes.append(f"no calibration slope ({why})")
        out["lp_mean"] = Estimate(clean(float(score.mean())), method="mean of the linear predictor")
        out["lp_sd"] = Estimate(clean(float(score.std(ddof=1))) if score.size > 1 else None,
                                method="SD of the linear predictor")
    return out, pool, notes


def survival_multicentre_metrics(model: str, frame: pl.DataFrame, level: float, horizons: Sequence[float],
                                 risk_of: Mapping[str, Sequence[float]], linear_predictor: bool, *,
                                 split: str = "external", updating: bool = False,
                                 updating_centers: Sequence[str] = ()) -> ModelMulticentre | None:
    """:func:`multicentre_metrics` for a survival model (``frame``: its predictions with ``time``, ``event``,
    ``center``, ``split``; ``risk_of``: each patient's saved risks at ``horizons``). ``updating``: a model with
    a linear predictor is recalibrated for each centre (:func:`_updated_cox`)."""
    part = frame.filter((pl.col("split") == split) & pl.col("time").is_not_null() & pl.col("event").is_not_null()
                        & pl.col("center").is_not_null())
    centres = sorted(str(c) for c in part.get_column("center").unique().to_list())
    if len(centres) < 2:
        return None
    listed: list[CentreResult] = []
    updated: list[UpdatedModel] = []
    values: dict[str, list[tuple[str, float, float]]] = {}
    notes: list[str] = []
    for center in centres:
        rows = part.filter(pl.col("center") == center)
        t = rows.get_column("time").cast(pl.Float64).to_numpy()
        e = rows.get_column("event").cast(pl.Float64).to_numpy()
        s = rows.get_column("score").cast(pl.Float64).to_numpy()
        n, events = int(t.size), int(e.sum())
        if events == 0:
            listed.append(CentreResult(center, n, events, {}, NO_EVENTS))
            notes.append(f"centre {center}: {NO_EVENTS}; left out of pooling")
            continue
        risk = None
        if horizons:
            risk = np.array([risk_of.get(p, [np.nan] * len(horizons)) for p in rows.get_column("patient_id")],
                            dtype=np.float64).reshape(-1, len(horizons))
            if not np.isfinite(risk).all():
                risk = None
        measures, pool, why = survival_centre_measures(t, e, s, horizons, risk, linear_predictor, level)
        notes += [f"centre {center}: {w}" for w in why]
        listed.append(CentreResult(center, n, events, _ordered(measures)))
        if updating and linear_predictor and horizons and (not updating_centers or center in updating_centers):
            u, why_u = _updated_cox(model, center, t, e, s, horizons, level)
            if u is not None:
                updated.append(u)
            else:
                notes.append(str(why_u))
        for k, (est, var) in pool.items():
            values.setdefault(k, []).append((center, est, var))
    pooled: list[Pooled] = []
    for measure, vals in values.items():
        if len(vals) < 2:
            notes.append(f"{measure}: not pooled ({len(vals)} centre(s) with an estimate and its variance)")
            continue
        res, why2 = safe(meta_analysis.pool, measure, [v[1] for v in vals], [v[2] for v in vals], level)
        if res is None:
            notes.append(f"{measure}: not pooled ({why2})")
            continue
        d = jsonable(res.as_dict())
        d["method_text"] = res.method_text
        pooled.append(Pooled(measure, tuple(v[0] for v in vals), d))
        notes += [f"{measure}: {n}" for n in res.notes]
    return ModelMulticentre(model, split, tuple(listed), tuple(pooled), tuple(updated), tuple(notes))


def _updated_cox(model: str, center: str, time: np.ndarray, event: np.ndarray, lp: np.ndarray,
                 horizons: Sequence[float], level: float, alpha: float = 0.05) -> tuple[UpdatedModel | None, str | None]:
    """A Cox model recalibrated for one centre (:func:`analytics.stats.updating.update_cox`): the baseline
    survival at each horizon re-estimated, and the slope of the linear predictor when the LR test of slope 1
    rejects at ``alpha``; its apparent C and O:E at the horizons there."""
    from analytics.stats.updating import update_cox

    u, why = safe(update_cox, time, event, lp, horizons)
    if u is None:
        return None, f"{model} not updated for centre {center}: {why}"
    slope = u.lr_slope.p < alpha
    b = u.slope if slope else 1.0
    s0 = np.asarray(u.baseline_survival_slope if slope else u.baseline_survival)
    risk = 1.0 - s0[None, :] ** np.exp(b * lp)[:, None]
    measures, _, _ = survival_centre_measures(time, event, b * lp, horizons, risk, False, level)
    measures = {k: Estimate(x.estimate, x.low, x.high, f"apparent, {x.method}", x.level) for k, x in measures.items()}
    test = jsonable({"reduced": "baseline", "full": "baseline and slope", "statistic": u.lr_slope.statistic,
                     "df": 1, "p": u.lr_slope.p})
    return UpdatedModel(f"{model}-updated-{center}", model, center, "baseline and slope" if slope else "baseline",
                        {}, {"slope": [clean(u.slope)], "baseline_survival": jsonable(list(u.baseline_survival)),
                             "baseline_survival_slope": jsonable(list(u.baseline_survival_slope))},
                        [test], _ordered(measures)), None
