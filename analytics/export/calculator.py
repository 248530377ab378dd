"""An offline risk calculator (``cohortlab export --calculator``): one self-contained HTML page, no network.

The page holds the model as plain numbers: its model-matrix columns (each a product of a number, a level
indicator or a restricted-cubic-spline basis term, as :class:`analytics.models.formula.RegressionDesign`
builds them), their coefficients, the intercept (a Cox model: the centring ``mean . beta``), and

* a logistic regression: ``risk = expit(lp)``, and for an unpenalised fit the Wald 95% interval of the risk
  from the coefficients' covariance (the delta method on the logit scale, as R's
  ``predict(glm, se.fit = TRUE)``);
* a Cox regression or a published Cox model: ``risk(t) = 1 - S0(t) ** exp(lp)`` at every horizon of the
  model (Breslow's baseline of the fit, or the published one), and for an unpenalised fit the interval of R's
  ``survfit(coxph_fit, newdata, ctype = 1)`` from the development risk sets' sums
  (:mod:`analytics.predict.cox_ci`: event times, events, sums of the weights and weighted covariates; no
  patient's row).

It has an input per predictor (levels as a menu; numbers with the development range, a value outside it shown
as extrapolation), computes the risk as the inputs change, and shows the model's nomogram where the report
draws one. The column descriptions are checked against the fitted design on the development rows before the
page is written: a page that would not reproduce the model is never written.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analytics.models.data import assemble
from analytics.models.fixed import INTERCEPT, FixedLearner
from analytics.models.persist import FittedModel, load_model
from analytics.predict.patients import PredictError
from analytics.predict.score import Development, clinical_inputs
from pipeline import atomic
from pipeline.config import StudyConfig
from pipeline.formula import parse_formula

Factor = dict[str, Any]


class CalculatorError(PredictError):
    """A model the calculator cannot hold (not a regression on clinical predictors); the message says why."""


def _factor_specs(design: Any, var: str, function: str, contrasts: bool) -> list[tuple[str, Factor]]:
    """(column name, factor description) of one factor's coded columns, as ``RegressionDesign`` codes them."""
    if function == "rcs":
        knots = [float(k) for k in design.knots_[var]]
        return [(f"rcs({var}, {len(knots)}){var}" + "'" * j, {"var": var, "f": "rcs", "knots": knots, "j": j})
                for j in range(len(knots) - 1)]
    if var not in design.levels_:
        return [(var, {"var": var, "f": "num"})]
    ref = design.reference_[var]
    return [(f"{var}{lv}", {"var": var, "f": "level", "level": lv})
            for lv in design.levels_[var] if not (contrasts and lv == ref)]


def design_columns(design: Any) -> list[tuple[str, list[Factor]]]:
    """Every column of a fitted design as (R's name, its factors), in the design's order."""
    parsed = parse_formula(design.formula)
    keys = {frozenset(f.key for f in t.factors) for t in parsed.terms}
    out: list[tuple[str, list[Factor]]] = []
    for term in parsed.terms:
        blocks = []
        for f in term.factors:
            rest = frozenset(g.key for g in term.factors if g is not f)
            contrasts = len(term.factors) == 1 or rest in keys
            label_fn = "rcs" if f.function == "rcs" else ""
            specs = _factor_specs(design, f.variable, label_fn, contrasts)
            if f.function == "rcs":  # R's label of the spline term, as the design names it
                specs = [(f"{f.label}{f.variable}" + "'" * s["j"], s) for _, s in specs]
            blocks.append(specs)
        combos: list[tuple[str, list[Factor]]] = [(n, [s]) for n, s in blocks[0]]
        for block in blocks[1:]:  # the first factor varies fastest
            combos = [(f"{a}:{b}", [*fa, fb]) for b, fb in block for a, fa in combos]
        out += combos
    return out


def _rcs_term(x: np.ndarray, knots: Sequence[float], j: int) -> np.ndarray:
    if j == 0:
        return x
    t = np.asarray(knots, dtype=np.float64)
    kd = (t[-1] - t[0]) ** (2.0 / 3.0)
    tk, tk1, tj = t[-1], t[-2], t[j - 1]
    return (np.maximum((x - tj) / kd, 0) ** 3
            + ((tk1 - tj) * np.maximum((x - tk) / kd, 0) ** 3 - (tk - tj) * np.maximum((x - tk1) / kd, 0) ** 3)
            / (tk - tk1))


def evaluate(columns: Sequence[tuple[str, Sequence[Factor]]], frame: pd.DataFrame) -> np.ndarray:
    """The model-matrix columns described by ``columns`` for ``frame`` (what the page computes, in numpy)."""
    out = np.ones((len(frame), len(columns)))
    for j, (_, factors) in enumerate(columns):
        for f in factors:
            v = frame[f["var"]]
            if f["f"] == "level":
                out[:, j] *= (v.astype(object).map(str).to_numpy() == f["level"]).astype(np.float64)
            elif f["f"] == "rcs":
                out[:, j] *= _rcs_term(v.to_numpy(dtype=np.float64), f["knots"], f["j"])
            else:
                out[:, j] *= v.to_numpy(dtype=np.float64)
    return out


def _design_of(prep: Any) -> tuple[Any, bool]:
    """The fitted formula design inside a regression preprocessor, and whether only it feeds the model."""
    if prep is None:
        raise CalculatorError("the model has no formula design; the calculator holds regression models")
    parts = [(name, trans) for name, trans, _ in prep.transformers_ if name != "remainder" and trans != "drop"]
    if len(parts) != 1 or parts[0][0] != "design":
        raise CalculatorError("the calculator holds regressions on clinical predictors only (no image features or "
                              "input models' scores)")
    steps = parts[0][1].named_steps
    if "scale" in steps:
        raise CalculatorError("a penalised regression's coefficients are on standardised inputs; the calculator "
                              "holds unpenalised regressions and published models")
    return steps["design"], True


def model_spec(study: StudyConfig, fitted: FittedModel, development: Development) -> dict[str, Any]:
    """The numbers the page computes with (see the module notes)."""
    spec = fitted.spec
    learner = fitted.learner
    survival = study.endpoint(spec) == "survival"
    horizons = [float(t) for t in (fitted.record.horizons or [])]
    out: dict[str, Any] = {"model": spec.name, "link": "cox" if survival else "logit", "horizons": horizons}
    if isinstance(learner, FixedLearner):
        types = _levels_of(study)
        columns: list[tuple[str, list[Factor]]] = []
        for term in learner.parsed.terms:
            combos: list[tuple[str, list[Factor]]] = [("", [])]
            for f in term.factors:
                var = f.variable
                specs = ([(var, {"var": var, "f": "num"})] if var not in types else
                         [(f"{var}{lv}", {"var": var, "f": "level", "level": lv}) for lv in types[var]])
                combos = [(f"{a}:{n}" if a else n, [*fa, s]) for n, s in specs for a, fa in combos]
            columns += [c for c in combos if c[0] in learner.coefficients]
        out.update(columns=[{"name": n, "coef": learner.coefficients[n], "factors": fs} for n, fs in columns],
                   intercept=learner.coefficients.get(INTERCEPT, 0.0) - (learner.centre if survival else 0.0),
                   baseline={f"{t:g}": learner.baseline.get(t) for t in horizons}, cov=None)
        return out
    if survival:
        model = getattr(learner, "model_", None)
        if model is None or not hasattr(model, "coef_") or getattr(learner, "keep_", None) is not None:
            raise CalculatorError(f"model '{spec.name}': not a Cox regression with a formula design")
        design, _ = _design_of(getattr(learner, "prep_", None))
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = -float(np.dot(np.asarray(model.mean_, dtype=np.float64), coef))
        h0 = {f"{t:g}": float(np.exp(-(model.base_hazard_[model.base_times_ <= t][-1]
                                       if (model.base_times_ <= t).any() else 0.0))) for t in horizons}
        cov = None
    else:
        pipeline: Any = getattr(learner, "pipeline_", None)
        clf = None if pipeline is None else pipeline.steps[-1][1]
        if pipeline is None or clf is None or spec.traits.regression != "logit" or "prep" not in pipeline.named_steps:
            raise CalculatorError(f"model '{spec.name}' ({spec.kind}): the calculator holds regression models "
                                  "(logistic, cox, fixed)")
        design, _ = _design_of(pipeline.named_steps["prep"])
        coef = np.asarray(clf.coef_, dtype=np.float64).ravel()
        intercept = float(np.asarray(clf.intercept_).ravel()[0])
        cv = getattr(clf, "cov_", None)
        cov = None if cv is None else np.asarray(cv, dtype=np.float64).tolist()
        h0 = {}
    columns = design_columns(design)
    if [n for n, _ in columns] != list(design.names_) or len(columns) != len(coef):
        raise CalculatorError(f"model '{spec.name}': its design's columns could not be described")
    out.update(columns=[{"name": n, "coef": float(b), "factors": fs} for (n, fs), b in zip(columns, coef)],
               intercept=intercept, baseline=h0, cov=cov)
    if survival and development.cox is not None:  # survfit's interval: the development risk sets, aggregated
        sets = development.cox.to_dict()
        out["risk_sets"] = {k: sets[k] for k in ("times", "deaths", "s0", "s1", "cov")}
    return out


def _levels_of(study: StudyConfig) -> dict[str, list[str]]:
    """Categorical variables' levels, from the study store."""
    from analytics.predict.patients import Schema

    schema = Schema.of_store(study.store_path)
    return {n: list(lv) for n, lv in schema.levels.items() if schema.types.get(n, "").upper() == "VARCHAR"}


def _inputs(study: StudyConfig, name: str, development: Development) -> list[dict[str, Any]]:
    levels = _levels_of(study)
    out: list[dict[str, Any]] = []
    for c in clinical_inputs(study, name):
        if c in levels:
            out.append({"name": c, "type": "level", "levels": levels[c]})
        else:
            lo, hi = development.ranges.get(c, (None, None))
            unit = study.variables[c].unit if c in study.variables else None
            out.append({"name": c, "type": "number", "min": lo, "max": hi, "unit": unit})
    return out


def _check(study: StudyConfig, fitted: FittedModel, spec: Mapping[str, Any]) -> None:
    """The page's arithmetic (in numpy) equals the model's on the development patients, or nothing is written."""
    from analytics.cohort import load_cohort

    cohort = load_cohort(study, on_missing="keep")
    data = assemble(fitted.spec, cohort, {}).data
    table = data.table
    assert table is not None
    complete = table.notna().all(axis=1).to_numpy()
    frame = table[complete]
    if not len(frame):
        return
    cols = [(c["name"], c["factors"]) for c in spec["columns"]]
    lp = spec["intercept"] + evaluate(cols, frame) @ np.array([c["coef"] for c in spec["columns"]])
    rows = data.take(np.flatnonzero(complete))
    got = fitted.learner.predict_score(rows)
    want = lp if spec["link"] == "cox" else 1 / (1 + np.exp(-lp))
    if not np.allclose(got, want, rtol=0, atol=1e-9, equal_nan=True):
        raise CalculatorError(f"model '{fitted.spec.name}': the calculator's arithmetic does not reproduce the model "
                              f"(largest difference {np.nanmax(np.abs(got - want)):.3g}); nothing was written")


def _nomogram(fitted: FittedModel, study: StudyConfig) -> str | None:
    """The report's nomogram of a logistic or Cox regression as a data URI (None where it has none)."""
    from analytics.cohort import load_cohort
    from analytics.report.nomogram import NomogramError, cox_nomogram, cox_nomogram_figure, nomogram, nomogram_figure

    learner = fitted.learner
    pipeline = getattr(learner, "pipeline_", None)
    survival = study.endpoint(fitted.spec) == "survival"
    if pipeline is None and not (survival and getattr(learner, "prep_", None) is not None):
        return None  # a published model: its coefficients are on the page
    cohort = load_cohort(study, on_missing="keep")
    table: Any = assemble(fitted.spec, cohort, {}).data.table
    train = table[cohort.split == "train"]  # the axes cover the training values
    try:
        png = (nomogram_figure(nomogram(fitted.spec.name, pipeline, train)) if pipeline is not None else
               cox_nomogram_figure(cox_nomogram(fitted.spec.name, learner, train, fitted.record.horizons or [])))
    except NomogramError:  # e.g. image features: the page is complete without it
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>Risk calculator: __TITLE__</title>
<style>body{font-family:sans-serif;max-width:44em;margin:2em auto}label{display:block;margin:.4em 0}
.extrapolation{color:#a40}#result{font-size:1.3em;margin:1em 0}img{max-width:100%}</style></head>
<body><h1>Risk calculator: __TITLE__</h1>
<p>__ENDPOINT__ For use by clinicians with the patients the model was developed for; see its model card.</p>
<form id="inputs"></form>
<div id="result" data-risk="" data-lower="" data-upper="" data-extrapolation="false"></div>
<ul id="horizons"></ul>
<div id="flags" class="extrapolation"></div>
__NOMOGRAM__
<script id="model" type="application/json">__MODEL__</script>
<script>
"use strict";
const M = JSON.parse(document.getElementById("model").textContent);
const form = document.getElementById("inputs");
for (const v of M.inputs) {
  const label = document.createElement("label");
  label.textContent = v.name + (v.unit ? " (" + v.unit + ")" : "") + " ";
  let el;
  if (v.type === "level") {
    el = document.createElement("select");
    for (const lv of v.levels) { const o = document.createElement("option"); o.value = lv; o.textContent = lv; el.appendChild(o); }
  } else {
    el = document.createElement("input"); el.type = "number"; el.step = "any";
    if (v.min !== null) { el.placeholder = "development range " + v.min + " to " + v.max; }
  }
  el.name = v.name; el.id = "in-" + v.name;
  el.addEventListener("input", update); el.addEventListener("change", update);
  label.appendChild(el); form.appendChild(label);
}
function rcs(x, t, j) {
  if (j === 0) return x;
  const k = t.length, kd = Math.pow(t[k - 1] - t[0], 2 / 3), tk = t[k - 1], tk1 = t[k - 2], tj = t[j - 1];
  const p = (u) => Math.pow(Math.max(u / kd, 0), 3);
  return p(x - tj) + ((tk1 - tj) * p(x - tk) - (tk - tj) * p(x - tk1)) / (tk - tk1);
}
function compute(values, t) {
  const row = [1];
  let lp = M.intercept;
  for (const c of M.columns) {
    let x = 1;
    for (const f of c.factors) {
      const v = values[f.var];
      if (f.f === "level") x *= (String(v) === f.level) ? 1 : 0;
      else if (f.f === "rcs") x *= rcs(Number(v), f.knots, f.j);
      else x *= Number(v);
    }
    row.push(x);
    lp += c.coef * x;
  }
  const out = {lp: lp, lower: null, upper: null};
  if (M.link === "logit") {
    out.risk = 1 / (1 + Math.exp(-lp));
    if (M.cov) {
      let s = 0;
      for (let i = 0; i < row.length; i++) for (let j = 0; j < row.length; j++) s += row[i] * M.cov[i][j] * row[j];
      const se = Math.sqrt(s), z = 1.959963984540054;
      out.lower = 1 / (1 + Math.exp(-(lp - z * se))); out.upper = 1 / (1 + Math.exp(-(lp + z * se)));
    }
  } else {
    const s0 = M.baseline[String(t)];
    out.risk = 1 - Math.pow(s0, Math.exp(lp));
    const R = M.risk_sets;
    if (R) {  // survfit(coxph, newdata, ctype = 1): the variance of the cumulative hazard, log interval
      const x = row.slice(1), p = x.length, r = Math.exp(lp);
      let h0 = 0, v0 = 0;
      const q = new Array(p).fill(0);
      for (let k = 0; k < R.times.length; k++) {
        if (R.times[k] > t) continue;
        h0 += R.deaths[k] / R.s0[k];
        v0 += R.deaths[k] / (R.s0[k] * R.s0[k]);
        for (let i = 0; i < p; i++) q[i] -= R.deaths[k] / (R.s0[k] * R.s0[k]) * R.s1[k][i];
      }
      for (let i = 0; i < p; i++) q[i] += x[i] * h0;
      let s = 0;
      for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) s += q[i] * R.cov[i][j] * q[j];
      const se = Math.sqrt(r * r * (v0 + s)), surv = Math.exp(-r * h0), z = 1.959963984540054;
      out.upper = 1 - surv * Math.exp(-z * se); out.lower = 1 - Math.min(surv * Math.exp(z * se), 1);
    }
  }
  return out;
}
function update() {
  const values = {}, flags = [];
  let complete = true;
  for (const v of M.inputs) {
    const raw = document.getElementById("in-" + v.name).value;
    if (raw === "") { complete = false; continue; }
    values[v.name] = v.type === "number" ? Number(raw) : raw;
    if (v.type === "number" && v.min !== null && (Number(raw) < v.min || Number(raw) > v.max))
      flags.push("extrapolation: " + v.name + " = " + raw + " is outside the development range " + v.min + " to " + v.max);
  }
  const res = document.getElementById("result"), list = document.getElementById("horizons");
  document.getElementById("flags").textContent = flags.join("; ");
  res.dataset.extrapolation = flags.length ? "true" : "false";
  list.replaceChildren();
  if (!complete) { res.textContent = "Enter every predictor."; res.dataset.risk = ""; return; }
  const pct = (p) => (100 * p).toFixed(1) + "%";
  const say = (el, r, t) => {  // the risk (at horizon t) as text and as data attributes
    el.dataset.risk = String(r.risk);
    el.dataset.lower = r.lower === null ? "" : String(r.lower);
    el.dataset.upper = r.upper === null ? "" : String(r.upper);
    el.textContent = "Predicted risk" + (t === null ? "" : " by " + t) + ": " + pct(r.risk)
      + (r.lower === null ? "" : " (95% CI " + pct(r.lower) + " to " + pct(r.upper) + ")")
      + (flags.length ? " (extrapolation)" : "");
  };
  // the first horizon in the headline; every horizon (a Cox model) in the list
  const times = M.link === "cox" ? M.horizons : [null];
  say(res, compute(values, times[0]), times[0]);
  if (M.link === "cox") {
    for (const t of times) {
      const li = document.createElement("li");
      li.dataset.horizon = String(t);
      say(li, compute(values, t), t);
      list.appendChild(li);
    }
  }
}
update();
</script></body></html>
"""


def calculator_page(study: StudyConfig, name: str) -> str:
    """The calculator page of model ``name`` (see the module notes).

    Raises
    ------
    CalculatorError
        Not a regression on clinical predictors, or its arithmetic would not reproduce the model.
    """
    fitted = load_model(study.models_dir / name, study.store_path)
    development = Development.of(study, name)
    spec = model_spec(study, fitted, development)
    _check(study, fitted, spec)
    spec["inputs"] = _inputs(study, name, development)
    endpoint = ("The risk of the outcome." if spec["link"] == "logit" else
                f"The risk of the event by time {', '.join(f'{t:g}' for t in spec['horizons'])}."
                if spec["horizons"] else "")
    nomo = _nomogram(fitted, study)
    text = json.dumps(spec, allow_nan=False).replace("</", "<\\/")
    return (_PAGE.replace("__TITLE__", html.escape(name)).replace("__ENDPOINT__", html.escape(endpoint))
            .replace("__NOMOGRAM__", "" if nomo is None else f'<h2>Nomogram</h2><img alt="nomogram" src="{nomo}">')
            .replace("__MODEL__", text))


def write_calculator(study: StudyConfig, name: str, out: Path) -> Path:
    """Write the calculator page of model ``name`` to ``out`` in one step."""
    target = Path(out)
    if target.is_symlink() or target.is_dir():
        raise CalculatorError(f"--out {out}: a {'link' if target.is_symlink() else 'folder'}; give a file path "
                              "(nothing was written)")
    page = calculator_page(study, name)
    atomic.write_text(target, page)
    return target


__all__ = ["CalculatorError", "calculator_page", "design_columns", "evaluate", "model_spec", "write_calculator"]
