"""Coefficient tables of regression models, as R prints them.

* :func:`coefficient_table`: per coefficient β, its standard error, exp(β) (odds or hazard ratio),
  the Wald confidence interval (exponentiated), z and the two-sided p-value, as ``summary(glm)``
  with ``confint.default`` and ``summary(coxph)``.
* :func:`term_wald`: Wald χ² tests of whole terms, in the layout of ``rms::anova`` (Harrell,
  *Regression Modeling Strategies*, 2nd ed. 2015, §9.3 and ``anova.rms``): each variable pooled
  with the interactions it enters ("Factor+Higher Order Factors"), its non-linear part, each
  interaction, and the totals.
* :func:`model_summary`: n, events, likelihood-ratio χ², df, p, AIC (and glm's deviances).
* :func:`unstandardise`: coefficients (and covariance) of a model fitted on standardised inputs
  put back on the inputs' original scale.

Wald tests (Wald 1943, Trans. Amer. Math. Soc. 54:426): for coefficients ``b`` of a set ``S`` with
covariance ``V``, ``χ² = b_S' V_SS^-1 b_S`` on ``rank(V_SS)`` degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats as sps

from analytics.stats.terms import Term

_LINKS = ("logit", "cox")


def coefficient_table(names: Sequence[str], beta: Sequence[float] | np.ndarray, cov: np.ndarray | None,
                      link: str = "logit", intercept: bool = True, penalised: bool = False,
                      level: float = 0.95) -> pl.DataFrame:
    """Per-coefficient table: β, SE, exp(β), Wald CI of exp(β), z and p.

    Parameters
    ----------
    names, beta
        Coefficient names and estimates, the intercept first when ``intercept`` (a logistic model).
    cov
        Their covariance (same order); may be None for a penalised model.
    link
        ``"logit"`` (the ratio column is ``odds_ratio``) or ``"cox"`` (``hazard_ratio``).
    intercept
        Whether the first coefficient is the intercept (its ratio is the baseline odds, printed as exp(β)).
    penalised
        A penalised fit: its Wald statistics are not valid (the estimates are biased towards zero and
        the inverse Hessian is not their sampling covariance), so se, CI, z and p are null and the
        ``penalised`` column flags the rows.
    level
        Confidence level of the Wald interval ``exp(β ± z_{1-α/2} SE)`` (R's ``confint.default``).

    Returns
    -------
    polars.DataFrame
        ``term, estimate, se, odds_ratio|hazard_ratio, ci_low, ci_high, z, p, penalised``; p is
        ``2 Φ(-|z|)`` as ``summary(glm)`` (binomial: z-test) and ``summary(coxph)``.
    """
    if link not in _LINKS:
        raise ValueError(f"link {link!r}: use 'logit' or 'cox'")
    if not 0 < level < 1:
        raise ValueError(f"level {level}: give a confidence level between 0 and 1")
    b = np.asarray(beta, dtype=np.float64).ravel()
    if len(names) != b.size:
        raise ValueError(f"{len(names)} names for {b.size} coefficients")
    ratio = "odds_ratio" if link == "logit" else "hazard_ratio"
    if penalised or cov is None:
        if not penalised:
            raise ValueError("a covariance is needed for an unpenalised model's table")
        nulls = pl.Series([None] * b.size, dtype=pl.Float64)
        return pl.DataFrame({"term": list(names), "estimate": b, "se": nulls, ratio: np.exp(b), "ci_low": nulls,
                             "ci_high": nulls, "z": nulls, "p": nulls, "penalised": [True] * b.size})
    v = np.asarray(cov, dtype=np.float64)
    if v.shape != (b.size, b.size):
        raise ValueError(f"covariance of shape {v.shape} for {b.size} coefficients")
    se = np.sqrt(np.diag(v))
    z = b / se
    q = sps.norm.ppf(0.5 + level / 2)
    return pl.DataFrame({
        "term": list(names), "estimate": b, "se": se, ratio: np.exp(b), "ci_low": np.exp(b - q * se),
        "ci_high": np.exp(b + q * se), "z": z, "p": 2 * sps.norm.sf(np.abs(z)), "penalised": [False] * b.size,
    })


@dataclass(frozen=True)
class _Row:
    label: str
    columns: tuple[int, ...]


def _wald(beta: np.ndarray, cov: np.ndarray, columns: Sequence[int]) -> tuple[float, int, float]:
    """Wald χ², df (the rank of the block) and p of H0: β_S = 0 (a pseudo-inverse, as rms's ``solvet``
    with its tolerance, for a singular block)."""
    idx = np.asarray(sorted(set(columns)), dtype=np.int64)
    b, v = beta[idx], cov[np.ix_(idx, idx)]
    df = int(np.linalg.matrix_rank(v))
    chisq = float(b @ np.linalg.pinv(v, hermitian=True) @ b)
    return chisq, df, float(sps.chi2.sf(chisq, df))


def _anova_rows(terms: Sequence[Term]) -> list[_Row]:
    """The rows of ``rms::anova`` (``anova.rms`` with its defaults ``main.effect = FALSE``, ``india`` and
    ``indnl`` true) for ``terms``: main effects first, then interactions, as R's ``terms`` orders them."""
    ordered = sorted(terms, key=lambda t: len(t.variables))  # stable: formula order within an order
    interactions = [t for t in ordered if len(t.variables) > 1]
    rows: list[_Row] = []
    all_nonlinear: set[int] = set()
    all_interaction: set[int] = set()
    n_nonlinear = 0
    for term in ordered:
        inter = len(term.variables) > 1
        higher = [t for t in interactions if t is not term and set(term.variables) <= set(t.variables)]
        ia_cols = tuple(c for t in higher for c in t.columns)
        nonlin_ia = tuple(c for t in higher for c in t.nonlinear)
        name = " * ".join(term.variables) if inter else term.variables[0]
        if not higher and not inter:
            rows.append(_Row(name, term.columns))
        else:
            # a main effect with interactions, or an interaction (pooled with any of higher order)
            rows.append(_Row(f"{name}  (Factor+Higher Order Factors)", term.columns + ia_cols))
            if not inter:
                rows.append(_Row(" All Interactions", ia_cols))
        linear = [c for c in term.columns if c not in term.nonlinear]
        if term.nonlinear and linear:
            cols = tuple(term.nonlinear) + nonlin_ia
            n_nonlinear += 1
            all_nonlinear.update(cols)
            rows.append(_Row(" Nonlinear (Factor+Higher Order Factors)" if nonlin_ia else " Nonlinear", cols))
        if inter:
            all_interaction.update(term.columns)
            if term.nonlinear:
                # rms's f(A,B) vs. AB row; the rows splitting a two-spline interaction by variable need to know
                # which variable makes each column non-linear, which a Term does not record
                n_nonlinear += 1
                all_nonlinear.update(term.nonlinear)
                rows.append(_Row(" Nonlinear Interaction : f(A,B) vs. AB", tuple(term.nonlinear)))
    if n_nonlinear > 1:
        rows.append(_Row("TOTAL NONLINEAR", tuple(sorted(all_nonlinear))))
    if len(interactions) > 1:
        rows.append(_Row("TOTAL INTERACTION", tuple(sorted(all_interaction))))
    if n_nonlinear and interactions:
        rows.append(_Row("TOTAL NONLINEAR + INTERACTION", tuple(sorted(all_nonlinear | all_interaction))))
    rows.append(_Row("TOTAL", tuple(sorted({c for t in terms for c in t.columns}))))
    if all("(Factor+Higher Order Factors)" in r.label for r in rows):
        rows = [_Row(r.label.replace("(Factor+Higher Order Factors)", ""), r.columns) for r in rows]
    return rows


def term_wald(beta: Sequence[float] | np.ndarray, cov: np.ndarray, terms: Sequence[Term]) -> pl.DataFrame:
    """Wald χ² tests of a model's terms, in the layout of ``rms::anova`` (Harrell 2015, RMS §9.3).

    Rows, as ``anova.rms`` prints them: each variable, pooled with every interaction it enters
    (``"histol  (Factor+Higher Order Factors)"``) followed by ``" All Interactions"`` (those
    interactions alone), or alone (``"age"``) when it enters none; ``" Nonlinear"`` after a variable
    that enters through a spline (its non-linear basis columns, with those of its interactions);
    each interaction (``"histol * stage  (Factor+Higher Order Factors)"``, with ``" Nonlinear"`` and
    ``" Nonlinear Interaction : f(A,B) vs. AB"`` when it has non-linear columns); ``"TOTAL NONLINEAR"``
    (when more than one non-linear test), ``"TOTAL INTERACTION"`` (more than one interaction),
    ``"TOTAL NONLINEAR + INTERACTION"`` (both kinds present) and ``"TOTAL"``. The rows rms adds to
    split an interaction of two splines by variable are not produced.

    Parameters
    ----------
    beta, cov
        Coefficients and covariance WITHOUT the intercept (a Cox model has none; drop a logistic
        model's first row and column), in model-matrix column order.
    terms
        The formula's terms; ``Term.columns`` index ``beta``.

    Returns
    -------
    polars.DataFrame
        ``row, chisq, df, p``.
    """
    b = np.asarray(beta, dtype=np.float64).ravel()
    v = np.asarray(cov, dtype=np.float64)
    if v.shape != (b.size, b.size):
        raise ValueError(f"covariance of shape {v.shape} for {b.size} coefficients")
    bad = sorted({c for t in terms for c in t.columns if not 0 <= c < b.size})
    if bad:
        raise ValueError(f"term columns {bad} outside the {b.size} coefficients")
    out: dict[str, list[str | float | int]] = {"row": [], "chisq": [], "df": [], "p": []}
    for row in _anova_rows(terms):
        chisq, df, p = _wald(b, v, row.columns)
        out["row"].append(row.label)
        out["chisq"].append(chisq)
        out["df"].append(df)
        out["p"].append(p)
    return pl.DataFrame(out, schema={"row": pl.String, "chisq": pl.Float64, "df": pl.Int64, "p": pl.Float64})


def model_summary(n: int, events: int, loglik: float, loglik_null: float, df: int,
                  link: str = "logit") -> dict[str, float | int]:
    """Model-level statistics: n, events, likelihood-ratio χ² against the null model, its df and p, AIC.

    ``LR = 2 (loglik - loglik_null)`` on ``df`` (coefficients besides the intercept) degrees of freedom
    (Wilks 1938). AIC (Akaike 1974) is ``-2 loglik + 2 k`` with ``k = df + 1`` for a logistic model (its
    intercept; R's ``AIC(glm)``) and ``k = df`` for a Cox model (``AIC(coxph)``, partial likelihood).
    A logistic model of a 0/1 outcome also gets glm's ``null_deviance = -2 loglik_null`` and
    ``residual_deviance = -2 loglik`` with their degrees of freedom ``n - 1`` and ``n - df - 1``.
    """
    if link not in _LINKS:
        raise ValueError(f"link {link!r}: use 'logit' or 'cox'")
    lr = 2.0 * (loglik - loglik_null)
    k = df + 1 if link == "logit" else df
    out: dict[str, float | int] = {"n": int(n), "events": int(events), "lr_chisq": float(lr), "df": int(df),
                                   "p": float(sps.chi2.sf(lr, df)), "aic": float(-2.0 * loglik + 2.0 * k)}
    if link == "logit":
        out.update(null_deviance=float(-2.0 * loglik_null), null_df=int(n) - 1,
                   residual_deviance=float(-2.0 * loglik), residual_df=int(n) - int(df) - 1)
    return out


def unstandardise(beta: Sequence[float] | np.ndarray, mean: Sequence[float] | np.ndarray,
                  scale: Sequence[float] | np.ndarray, cov: np.ndarray | None = None, intercept: bool = True,
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Coefficients of a model fitted on standardised inputs ``z_j = (x_j - m_j) / s_j``, on the scale of x.

    The linear predictor ``b_0 + Σ b_j z_j`` equals ``(b_0 - Σ b_j m_j / s_j) + Σ (b_j / s_j) x_j``: the
    map ``β_x = A β_z`` is linear, so the covariance is ``A V A'`` (exact for unpenalised fits, whose
    estimates are equivariant under the rescaling). Columns that were not standardised (one-hot
    levels, a PCA score) have ``m = 0, s = 1``.

    Parameters
    ----------
    beta
        ``(b_0, b_1 .. b_p)`` with ``intercept``, else ``(b_1 .. b_p)`` (a Cox model: the centring is absorbed
        by its baseline hazard, so only ``b_j / s_j`` changes).
    mean, scale
        Per input column (p values), e.g. a :class:`sklearn.preprocessing.StandardScaler`'s ``mean_`` and
        ``scale_``.
    cov
        Covariance of ``beta`` (same order), or None (a penalised model: estimates only).

    Returns
    -------
    (beta on the original scale, its covariance or None)
    """
    b = np.asarray(beta, dtype=np.float64).ravel()
    m = np.asarray(mean, dtype=np.float64).ravel()
    s = np.asarray(scale, dtype=np.float64).ravel()
    p = b.size - (1 if intercept else 0)
    if m.size != p or s.size != p:
        raise ValueError(f"{m.size} means and {s.size} scales for {p} coefficients")
    if np.any(s == 0) or not np.isfinite(s).all():
        raise ValueError("a scale is zero or not finite")
    a = np.diag(np.concatenate([[1.0], 1.0 / s]) if intercept else 1.0 / s)
    if intercept:
        a[0, 1:] = -m / s
    out = a @ b
    return out, (None if cov is None else a @ np.asarray(cov, dtype=np.float64) @ a.T)


__all__ = ["coefficient_table", "model_summary", "term_wald", "unstandardise"]
