"""A fitted regression model's coefficient tables: per coefficient, per term and for the model, as R prints them.

:func:`regression_tables` reads them off the FINAL fit of a ``logistic`` or ``cox`` model (every training
patient) and :class:`RegressionTables` carries them to the model folder (``coefficients.csv``, ``anova.csv``
and the model line in the record), the notebook (:meth:`RegressionTables.text`, lifelines' layout) and the
report. The statistics are :mod:`analytics.stats.coefficients`:

* coefficients on the ORIGINAL scale of the inputs: β, SE, odds or hazard ratio, 95% Wald CI, z, p
  (``summary(glm)`` with ``confint.default``, ``summary(coxph)``). A penalised fit's inputs were
  standardised: its coefficients are put back on the inputs' scale (:func:`~analytics.stats.coefficients.
  unstandardise`) and carry no SE, CI or p (a penalised estimate's Wald statistics are not valid);
* per term, the Wald χ² of ``rms::anova`` (Harrell, *Regression Modeling Strategies*, 2nd ed. 2015, §9.3),
  unpenalised fits only; a factor or a spline is one term (:func:`analytics.models.formula.design_terms`);
* the model line: n, events, likelihood-ratio χ² against the null model, df, AIC (unpenalised fits).

The covariance of an unpenalised logistic fit is its inverse Fisher information
(:class:`analytics.models.glm.MLLogistic`); that of an unpenalised Cox fit is the inverse observed information
of Efron's partial likelihood at the fitted β (Efron 1977, JASA 72:557), as ``coxph`` reports.

No table is made for a model with image features (a principal component or an embedding dimension has
no unit a reader could interpret); input models' scores (fusions) are fine. This module reads fitted
learners by their attributes and imports none of them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from analytics.stats.coefficients import coefficient_table, model_summary, term_wald, unstandardise

log = logging.getLogger("cohortlab.models.coefficients")

# a regression model folder's coefficient and per-term tables (analytics.models.persist lists the folder's files)
COEFFICIENTS = "coefficients.csv"
ANOVA = "anova.csv"

INTERCEPT = "(Intercept)"
ONE_HOT_NOTE = "one column per level, no reference level: compare levels with each other"
INTERCEPT_NOTE = "with one column per level of a factor the intercept has no reference to be read against"


@dataclass(frozen=True)
class RegressionTables:
    """The coefficient table, the per-term Wald table and the model line of one fitted regression.

    Attributes
    ----------
    link
        ``"logit"`` (odds ratios) or ``"cox"`` (hazard ratios).
    penalised
        A penalised fit: no SE, CI, z, p, Wald tests or likelihood-ratio statistics.
    coefficients
        :func:`analytics.stats.coefficients.coefficient_table` plus a ``note`` column.
    anova
        ``row, chisq, df, p`` (:func:`analytics.stats.coefficients.term_wald`); None when penalised.
    summary
        ``n`` and ``events``, and for an unpenalised fit :func:`analytics.stats.coefficients.model_summary`'s
        ``lr_chisq, df, p, aic`` (and glm's deviances).
    """

    link: str
    penalised: bool
    coefficients: pl.DataFrame
    anova: pl.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> str:
        """The name of the exp(β) column: ``odds_ratio`` or ``hazard_ratio``."""
        return "odds_ratio" if self.link == "logit" else "hazard_ratio"

    def record(self) -> dict[str, Any]:
        """What the fit record keeps (``FitRecord.regression``): the link, the penalty flag and the model line."""
        return {"link": self.link, "penalised": self.penalised, **self.summary}

    def files(self) -> dict[str, bytes]:
        """The model folder's files: ``coefficients.csv`` and (unpenalised) ``anova.csv``, full precision."""
        out = {COEFFICIENTS: _csv(self.coefficients)}
        if self.anova is not None:
            out[ANOVA] = _csv(self.anova)
        return out

    @classmethod
    def from_files(cls, record: Mapping[str, Any], files: Mapping[str, bytes]) -> RegressionTables | None:
        """The tables of a model folder (its checked files and its record's ``regression``); None without them."""
        if COEFFICIENTS not in files or not record:
            return None
        coef = pl.read_csv(io.BytesIO(files[COEFFICIENTS]), schema_overrides={"note": pl.String, "term": pl.String})
        anova = pl.read_csv(io.BytesIO(files[ANOVA]), schema_overrides={"row": pl.String}) if ANOVA in files else None
        summary = {k: v for k, v in record.items() if k not in ("link", "penalised")}
        return cls(str(record.get("link", "logit")), bool(record.get("penalised")), coef, anova, summary)

    def model_line(self) -> str:
        """``n = 3000, events = 412, LR χ² = 81.2 on 7 df (p < 0.0001), AIC = 2400.5`` (n and events when penalised)."""
        s = self.summary
        parts = [f"n = {s.get('n')}", f"events = {s.get('events')}"]
        if s.get("pooled") is not None:  # multiple imputation (analytics.models.pooling)
            parts.append(f"pooled over m = {s.get('m')} imputations "
                         + ("by Rubin's rules" if s["pooled"] == "rubin" else "as the mean of the estimates"))
            return ", ".join(parts)
        if not self.penalised and s.get("lr_chisq") is not None:
            parts.append(f"LR χ² = {s['lr_chisq']:.2f} on {s['df']} df (p {_p(s['p'])})")
            parts.append(f"AIC = {s['aic']:.2f}")
        else:
            parts.append("penalised: no standard errors, likelihood-ratio test or AIC")
        return ", ".join(parts)

    def text(self, name: str, kind: str = "") -> str:
        """The tables as lifelines' ``print_summary`` lays them out: the model's facts, the coefficients, the
        per-term Wald tests."""
        ratio = "exp(coef)"
        head = [("model", f"{name}" + (f" ({kind}{', penalised' if self.penalised else ', maximum likelihood'})"
                                       if kind else "")),
                ("number of subjects", str(self.summary.get("n"))), ("number of events", str(self.summary.get("events")))]
        if not self.penalised and self.summary.get("lr_chisq") is not None:
            s = self.summary
            head += [("log-likelihood ratio test", f"{s['lr_chisq']:.2f} on {s['df']} df"),
                     ("-log2(p) of ll-ratio test", f"{-np.log2(max(float(s['p']), 1e-300)):.2f}"),
                     ("AIC", f"{s['aic']:.2f}")]
        if self.summary.get("pooled") is not None:
            head.append(("imputations", f"{self.summary.get('m')} (pooled: {self.summary['pooled']})"))
        width = max(len(k) for k, _ in head)
        lines = [f"{k:>{width}} = {v}" for k, v in head]
        c = self.coefficients
        rows = [["", "coef", ratio, "se(coef)", "coef lower 95%", "coef upper 95%", "z", "p"]]
        for r in c.iter_rows(named=True):
            term = f"{r['cause']}: {r['term']}" if "cause" in c.columns else str(r["term"])  # per cause (CSC)
            rows.append([term, _num(r["estimate"]), _num(r[self.ratio]), _num(r["se"]),
                         _num(None if r["ci_low"] is None else np.log(r["ci_low"])),
                         _num(None if r["ci_high"] is None else np.log(r["ci_high"])), _num(r["z"], 2),
                         "–" if r["p"] is None else _p(r["p"], bare=True)])
        lines += ["---", *_aligned(rows)]
        notes = sorted({str(n) for n in c["note"].to_list() if n}) if "note" in c.columns else []
        if self.penalised:
            notes.insert(0, "penalised: no standard errors, confidence intervals or p-values")
        lines += [f"note: {n}" for n in notes]
        if self.anova is not None:
            lines += ["---", "D1 tests per term (mice::D1; chi2 = F x d.f.)" if "method" in self.anova.columns
                      else "Wald tests per term (rms::anova)"]
            lines += _aligned([["", "chi2", "d.f.", "p"]] + [[r["row"], _num(r["chisq"], 2), str(r["df"]),
                                                              "–" if r["p"] is None else _p(r["p"], bare=True)]
                                                             for r in self.anova.iter_rows(named=True)])
        return "\n".join(lines)


def _csv(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer)  # floats in their shortest round-trip form: read back bit for bit
    return buffer.getvalue()


def _num(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _p(p: float, bare: bool = False) -> str:
    if p < 0.0001:
        return "<0.0001" if bare else "< 0.0001"
    return f"{p:.4f}" if bare else f"= {p:.4f}"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


# --- reading a fitted learner -----------------------------------------------------------------------------


def _scales(prep: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output column of a fitted ColumnTransformer: the mean and scale its standardisation used (0 and 1
    where a column was not standardised: one-hot levels, an unpenalised design)."""
    mean, scale = np.zeros(width), np.ones(width)
    for part, trans, _ in prep.transformers_:
        if part == "remainder" or trans == "drop":
            continue
        steps = getattr(trans, "named_steps", {})
        scaler = steps.get("scale")
        if scaler is None:
            continue
        block = prep.output_indices_[part]
        mean[block] = np.asarray(scaler.mean_, dtype=np.float64)
        scale[block] = np.asarray(scaler.scale_, dtype=np.float64)
    return mean, scale


def _one_hot_names(prep: Any) -> tuple[list[str], list[bool]]:
    """The output columns of a classical (one-hot) preprocessor, unprefixed, and which are one-hot levels."""
    names: list[str] = []
    one_hot: list[bool] = []
    for part, trans, _ in prep.transformers_:
        if part == "remainder" or trans == "drop":
            continue
        out = [str(n) for n in trans.get_feature_names_out()]
        names += out
        one_hot += [part == "categorical"] * len(out)
    return names, one_hot


def _design(prep: Any) -> bool:
    """Whether a fitted preprocessor is a formula's (``regression_preprocessor``: parts design / features / scores)
    rather than the classical one (numeric / categorical one-hot)."""
    return not {"numeric", "categorical"} & {part for part, _, _ in prep.transformers_}


def _names_and_terms(prep: Any) -> tuple[list[str], list[Any], list[bool]]:
    """Coefficient names, terms (none without a formula design) and one-hot flags of a fitted preprocessor."""
    from analytics.models.formula import design_terms

    if _design(prep):
        names, terms = design_terms(prep)
        return names, terms, [False] * len(names)
    names, one_hot = _one_hot_names(prep)
    return names, [], one_hot


def _logistic(learner: Any, data: Any, y: np.ndarray) -> RegressionTables | Estimates | None:
    pipeline = learner.pipeline_
    clf = pipeline.steps[-1][1]
    prep = pipeline.named_steps.get("prep")
    if prep is None or not hasattr(clf, "coef_") or np.asarray(clf.coef_).shape[0] != 1:
        return None
    names, terms, one_hot = _names_and_terms(prep)
    beta = np.r_[np.asarray(clf.intercept_, dtype=np.float64).ravel()[:1], np.asarray(clf.coef_, dtype=np.float64)[0]]
    if len(names) + 1 != beta.size:
        return None
    label = [INTERCEPT, *names]
    target = (np.asarray(y) == clf.classes_[1]).astype(np.int64)
    base = {"n": int(target.size), "events": int(target.sum())}
    cov = getattr(clf, "cov_", None)
    if cov is None:  # penalised (scikit-learn's LogisticRegression): estimates only, back on the inputs' scale
        mean, scale = _scales(prep, len(names))
        beta, _ = unstandardise(beta, mean, scale)
        table = coefficient_table(label, beta, None, link="logit", penalised=True)
        notes = ([INTERCEPT_NOTE] if any(one_hot) else [None]) + [ONE_HOT_NOTE if h else None for h in one_hot]
        return RegressionTables("logit", True, table.with_columns(pl.Series("note", notes, dtype=pl.String)), None,
                                base)
    return Estimates("logit", label, beta, np.asarray(cov, dtype=np.float64), terms, base["n"], base["events"],
                     float(clf.loglik_), float(clf.loglik_null_))


@dataclass(frozen=True)
class Estimates:
    """An unpenalised regression's coefficients and covariance, as its tables and Rubin's rules read them.

    Attributes
    ----------
    link
        ``"logit"`` (``names`` and ``beta`` start with the intercept) or ``"cox"``.
    names, beta, cov
        R's coefficient names, the estimates and their covariance (inverse information).
    terms
        The formula's terms over the columns without the intercept (empty without a formula design).
    n, events
        Training patients and events.
    loglik, loglik_null
        Log-likelihood at the estimates and of the null model.
    """

    link: str
    names: list[str]
    beta: np.ndarray
    cov: np.ndarray
    terms: list[Any]
    n: int
    events: int
    loglik: float
    loglik_null: float

    @property
    def slopes(self) -> slice:
        """The coefficients a term's column indices count from (after a logistic model's intercept)."""
        return slice(1, None) if self.link == "logit" else slice(0, None)


def _unpenalised(e: Estimates) -> RegressionTables:
    """The tables of an unpenalised fit: Wald coefficients, per-term Wald χ² and the model line."""
    s = e.slopes
    table = coefficient_table(e.names, e.beta, e.cov, link=e.link, intercept=e.link == "logit")
    anova = term_wald(e.beta[s], e.cov[s, s], e.terms) if e.terms else None
    summary = model_summary(e.n, e.events, e.loglik, e.loglik_null, len(e.names) - (e.link == "logit"), e.link)
    return RegressionTables(e.link, False, table.with_columns(pl.lit(None, dtype=pl.String).alias("note")), anova,
                            summary)


def _cox(learner: Any, data: Any, y: np.ndarray) -> RegressionTables | Estimates | None:
    from analytics.stats.competing_cox import _cox_loglik  # Efron's partial likelihood, score and information

    model, prep = getattr(learner, "model_", None), getattr(learner, "prep_", None)
    if model is None or prep is None or not hasattr(model, "coef_") or getattr(learner, "keep_", None) is not None:
        return None
    names, terms, _ = _names_and_terms(prep)
    beta = np.asarray(model.coef_, dtype=np.float64).ravel()
    if len(names) != beta.size:
        return None
    time, event = np.asarray(y, dtype=np.float64)[:, 0], np.asarray(y, dtype=np.float64)[:, 1]
    base = {"n": int(time.size), "events": int(event.sum())}
    if float(model.params.get("penalizer", 0.0)) > 0:
        mean, scale = _scales(prep, len(names))
        beta, _ = unstandardise(beta, mean, scale, intercept=False)
        table = coefficient_table(names, beta, None, link="cox", intercept=False, penalised=True)
        return RegressionTables("cox", True, table.with_columns(pl.lit(None, dtype=pl.String).alias("note")), None,
                                base)
    x = np.asarray(prep.transform(data.table), dtype=np.float64)
    x = x - x.mean(axis=0)  # centred as coxph iterates: the likelihood and information do not change
    loglik, _, info = _cox_loglik(x, time, event, beta)
    loglik_null = _cox_loglik(x, time, event, np.zeros_like(beta))[0]
    return Estimates("cox", names, beta, np.linalg.inv(info), terms, base["n"], base["events"], float(loglik),
                     float(loglik_null))


def _competing(learner: Any, y: np.ndarray) -> RegressionTables | None:
    """A competing-risk learner's tables: cause-specific hazard ratios per cause (``riskRegression::CSC``, one
    ``coxph`` per cause) or subdistribution hazard ratios (``cmprsk::crr``), with a ``cause`` column; the
    model line is that of the cause of interest's model (the Fine–Gray pseudo-likelihood's LR test)."""
    fit, prep = getattr(learner, "fit_", None), getattr(learner, "prep_", None)
    if fit is None or prep is None:
        return None
    names, terms, _ = _names_and_terms(prep)
    labels: dict[int, str] = learner.labels
    models = getattr(fit, "models", None)
    per_cause = dict(models) if models is not None else {learner.cause: fit}
    tables, anova = [], None
    for code, one in per_cause.items():
        if len(names) != np.size(one.coef):
            return None
        table = coefficient_table(names, one.coef, np.asarray(one.var), link="cox", intercept=False)
        tables.append(table.select(pl.lit(labels.get(code, str(code))).alias("cause"), *table.columns))
        if code == learner.cause and terms:
            anova = term_wald(one.coef, np.asarray(one.var), terms)
    main = per_cause[learner.cause]
    loglik = main.loglik if models is None else main.loglik[1]
    loglik_null = main.loglik_null if models is None else main.loglik[0]
    events = int(np.sum(np.asarray(y, dtype=np.float64)[:, 1] == learner.cause))
    summary: dict[str, Any] = {**model_summary(int(main.n), events, float(loglik), float(loglik_null), len(names), "cox"),
                               "cause": labels.get(learner.cause, str(learner.cause))}
    coef = pl.concat(tables).with_columns(pl.lit(None, dtype=pl.String).alias("note"))
    return RegressionTables("cox", False, coef, anova, summary)


def regression_tables(learner: Any, data: Any, y: np.ndarray) -> RegressionTables | None:
    """The tables of a fitted ``logistic`` or ``cox`` learner, from its final fit on ``data`` (its training rows,
    a :class:`analytics.models.data.ModelData`) and their outcome ``y`` (0/1, or ``(n, 2)`` times and events).

    None for any other learner, and for a model with image features (see the module notes). A learner that
    makes its own tables (multiple imputation: Rubin's rules over its fits, :mod:`analytics.models.imputed`)
    gives them.
    """
    own = getattr(learner, "tables_", None)
    if own is not None:
        return own if isinstance(own, RegressionTables) else None
    out = _read(learner, data, y)
    return _unpenalised(out) if isinstance(out, Estimates) else out


def estimates(learner: Any, data: Any, y: np.ndarray) -> Estimates | None:
    """An unpenalised ``logistic`` or ``cox`` fit's coefficients and covariance (None for any other fit)."""
    out = _read(learner, data, y)
    return out if isinstance(out, Estimates) else None


def _read(learner: Any, data: Any, y: np.ndarray) -> RegressionTables | Estimates | None:
    from pipeline.model_kinds import traits_of

    traits = traits_of(str(getattr(learner, "kind", "")))
    columns = getattr(learner, "columns_", None)
    if traits is None or traits.regression is None or columns is None or columns.features or data.table is None:
        return None
    try:
        if traits.competing:
            return _competing(learner, y)
        if traits.regression == "logit" and hasattr(learner, "pipeline_"):
            return _logistic(learner, data, y)
        if traits.regression == "cox" and np.ndim(y) == 2:
            return _cox(learner, data, y)
    except (np.linalg.LinAlgError, ValueError) as exc:  # e.g. a singular information matrix: the fit itself stands
        log.warning("%s model: no coefficient table (%s)", traits.regression, exc)
    return None


__all__ = ["ANOVA", "COEFFICIENTS", "Estimates", "RegressionTables", "estimates", "regression_tables"]
