"""The 95% confidence interval of a new patient's absolute risk from an unpenalised Cox regression, as R's
``survfit(coxph_fit, newdata, ctype = 1)`` gives it (``conf.type = "log"``).

With the Breslow cumulative hazard the model predicts with, ``H(t | x) = r(x) sum_{t_k <= t} d_k / S0_k``,
``r(x) = exp((x - m) b)``, its variance is (Tsiatis, JASA 1981;76:93-108; Therneau & Grambsch, *Modeling Survival
Data*, 2000, section 10.2.4)::

    var H(t | x) = r(x)^2 [ sum_{t_k <= t} d_k / S0_k^2 + q' V q ],   q = sum_{t_k <= t} (x - S1_k / S0_k) d_k / S0_k

with ``S0_k = sum_{j at risk at t_k} exp((z_j - m) b)``, ``S1_k`` the same sum of ``z_j``, and ``V`` the inverse of
the information of the Efron partial likelihood at ``b``. The interval of ``S = exp(-H)`` is
``S exp(-/+ z se(H))`` (upper end at most 1), and that of the risk is ``1 - S`` at the other end.

:class:`CoxRiskSets` holds what this needs from the development data (the event times up to the last horizon,
their sums and ``V``): aggregates, never a patient's row, so a bundle carries them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

LEVEL = 0.95


@dataclass(frozen=True)
class CoxRiskSets:
    """The development risk sets of a Cox regression at its event times up to the last horizon."""

    times: np.ndarray  # (K,) event times
    deaths: np.ndarray  # (K,) events at each
    s0: np.ndarray  # (K,) sum of exp((z - m) b) over the risk set
    s1: np.ndarray  # (K, p) sum of exp((z - m) b) z over the risk set
    cov: np.ndarray  # (p, p) inverse Efron information at b
    coef: np.ndarray  # (p,) b
    mean: np.ndarray  # (p,) m, the centring of the linear predictor

    @classmethod
    def fit(cls, x: np.ndarray, time: np.ndarray, event: np.ndarray, coef: np.ndarray, mean: np.ndarray,
            horizon: float) -> CoxRiskSets:
        """From the model matrix ``x`` of the training patients, their outcome and the fitted model."""
        from analytics.stats.competing_cox import _cox_loglik  # Efron's partial likelihood, score and information

        x = np.asarray(x, dtype=np.float64)
        b = np.asarray(coef, dtype=np.float64)
        _, _, info = _cox_loglik(x - x.mean(axis=0), time, event, b)
        w = np.exp((x - mean) @ b)
        times = np.unique(time[(event == 1) & (time <= horizon)])
        at = [time >= t for t in times]
        return cls(times, np.array([((time == t) & (event == 1)).sum() for t in times], dtype=np.float64),
                   np.array([w[a].sum() for a in at]), np.array([(w[a, None] * x[a]).sum(axis=0) for a in at]
                                                               ).reshape(len(times), x.shape[1]),
                   np.linalg.inv(info), b, np.asarray(mean, dtype=np.float64))

    def interval(self, x: np.ndarray, horizons: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Risk, its lower and upper 95% limits for each row of ``x`` (the model matrix) and horizon."""
        x = np.asarray(x, dtype=np.float64)
        r = np.exp((x - self.mean) @ self.coef)
        z = float(norm.ppf(0.5 + LEVEL / 2))
        shape = (len(x), len(horizons))
        risk, lower, upper = np.empty(shape), np.empty(shape), np.empty(shape)
        for j, t in enumerate(horizons):
            k = self.times <= t
            d, s0, s1 = self.deaths[k], self.s0[k], self.s1[k]
            h0 = float((d / s0).sum())
            q = (x * h0) - ((d / s0**2) @ s1 if k.any() else np.zeros(x.shape[1]))
            var = r**2 * (float((d / s0**2).sum()) + np.einsum("ij,jk,ik->i", q, self.cov, q))
            hazard = r * h0
            se = np.sqrt(var)
            surv = np.exp(-hazard)
            risk[:, j] = 1 - surv
            upper[:, j] = 1 - surv * np.exp(-z * se)
            lower[:, j] = 1 - np.minimum(surv * np.exp(z * se), 1.0)
        return risk, lower, upper

    def to_dict(self) -> dict[str, Any]:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("times", "deaths", "s0", "s1", "cov", "coef",
                                                                   "mean")}

    @classmethod
    def from_dict(cls, data: Any) -> CoxRiskSets:
        def arr(key: str) -> np.ndarray:
            return np.asarray(data[key], dtype=np.float64)

        p = len(data["coef"])
        return cls(arr("times"), arr("deaths"), arr("s0"), arr("s1").reshape(-1, p), arr("cov").reshape(p, p),
                   arr("coef"), arr("mean"))


__all__ = ["CoxRiskSets"]
