"""Curves at a horizon ``t`` for censored data: the Kaplan-Meier risk by ``t``, the cumulative/dynamic ROC
curve with inverse-probability-of-censoring weights, and observed against predicted risk by group.

References: Kaplan & Meier, JASA 1958;53:457-481; the IPCW cumulative/dynamic ROC of Uno, Cai, Tian & Wei,
JASA 2007;102:1394-1400 and Hung & Chiang, Biometrics 2010;66:1085-1093 (as riskRegression::Score's ROC
at ``times``); calibration at ``t`` by groups of predicted risk as in Royston & Altman, BMC Med Res Methodol
2013;13:33.
"""

from __future__ import annotations

import numpy as np

from .survival import censoring_km
from .survival_time import _km_risk_at


def km_risk(time: np.ndarray, event: np.ndarray, t: float) -> float:
    """Kaplan-Meier estimate of the risk of an event by ``t``, ``1 - S(t)`` (R: ``1 - survfit(...)$surv`` at ``t``).

    Parameters
    ----------
    time, event : ndarray, shape (n,)
        Follow-up time and event indicator (1 = event); censored subjects are at risk at their own time.
    t : float
        Horizon.
    """
    return _km_risk_at(time, event, t)


def time_roc_curve(time: np.ndarray, event: np.ndarray, risk: np.ndarray, t: float) -> dict[str, list[float]]:
    """Cumulative/dynamic ROC curve at ``t`` with inverse-probability-of-censoring weights.

    Cases: event at or before ``t``, weighted ``1 / G(T_i-)``; controls: time past ``t``, weighted
    ``1 / G(t)`` (``G`` the Kaplan-Meier of censoring). The area under it is the IPCW AUC(t) of
    Uno et al. (2007) and Hung & Chiang (2010).

    Returns
    -------
    dict
        ``fpr``, ``tpr`` (from (0, 0), one point per distinct risk, highest first: the weighted shares of
        controls and cases with ``risk >= threshold``) and ``threshold`` (``inf`` first).

    Raises
    ------
    ValueError
        No case or no control at ``t``.
    """
    g_times, g_surv = censoring_km(time, event)

    def g_before(u: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(g_times, u, side="left") - 1
        return np.where(idx >= 0, g_surv[np.clip(idx, 0, None)], 1.0)

    def g_at(u: float) -> float:
        idx = np.searchsorted(g_times, u, side="right") - 1
        return float(g_surv[idx]) if idx >= 0 else 1.0

    case = (time <= t) & (event == 1)
    ctrl = time > t
    if not case.any() or not ctrl.any():
        raise ValueError(f"no {'cases' if not case.any() else 'controls'} at {t:g}")
    w_case = 1.0 / g_before(time[case])
    w_ctrl = np.full(int(ctrl.sum()), 1.0 / g_at(t))
    cuts = np.unique(np.concatenate([risk[case], risk[ctrl]]))[::-1]
    tpr = [0.0] + [float(w_case[risk[case] >= c].sum() / w_case.sum()) for c in cuts]
    fpr = [0.0] + [float(w_ctrl[risk[ctrl] >= c].sum() / w_ctrl.sum()) for c in cuts]
    return {"fpr": fpr, "tpr": tpr, "threshold": [float("inf"), *map(float, cuts)]}


def km_calibration_points(time: np.ndarray, event: np.ndarray, risk: np.ndarray, t: float,
                          groups: int = 10) -> dict[str, list[float]]:
    """Mean predicted risk by ``t`` against the Kaplan-Meier observed risk (:func:`km_risk`), per group of
    predicted risk: the patients sorted by risk (stably) and cut into at most ``groups`` groups of equal size
    (at least five patients each; the first groups one patient larger when the sizes cannot be equal)."""
    order = np.argsort(risk, kind="stable")
    parts = [p for p in np.array_split(order, min(groups, max(1, len(risk) // 5))) if len(p)]
    return {"predicted": [float(risk[p].mean()) for p in parts],
            "observed": [km_risk(time[p], event[p], t) for p in parts],
            "n": [int(len(p)) for p in parts]}
