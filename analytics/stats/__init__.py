"""Validation statistics: AUC and its CIs, thresholds, calibration, decision
curves, survival, and optimism-corrected internal validation.

Conventions: ``y`` is 0/1 (1 = case); a higher score means more likely a case;
ties count one half (Mann-Whitney).  Same inputs and seed give byte-identical
results.

>>> from analytics import stats
>>> stats.auc_ci(y, score)            # doctest: +SKIP
Interval(0.893 (95% CI 0.833–0.953), method='delong')
"""

from .calibrate import CalibrationCurve, calibration, calibration_curve
from .decision import net_benefit
from .optimism import optimism_corrected
from .roc import auc, auc_ci, compare_auc, delong_covariance
from .roc_band import roc_band, sensitivity_at
from .survival import (
    CoxResult,
    KMResult,
    concordance,
    cox,
    km_by_group,
    risk_cutpoints,
    risk_groups,
)
from .thresholds import binary_metrics, confusion, roc_curve, threshold, wilson_interval
from .types import Comparison, Interval

__all__ = [
    "CalibrationCurve",
    "Comparison",
    "CoxResult",
    "Interval",
    "KMResult",
    "auc",
    "auc_ci",
    "binary_metrics",
    "calibration",
    "calibration_curve",
    "compare_auc",
    "concordance",
    "confusion",
    "cox",
    "delong_covariance",
    "km_by_group",
    "net_benefit",
    "optimism_corrected",
    "risk_cutpoints",
    "risk_groups",
    "roc_band",
    "roc_curve",
    "sensitivity_at",
    "threshold",
    "wilson_interval",
]
