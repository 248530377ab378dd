"""Validation statistics: AUC and its CIs, thresholds, calibration, decision
curves, survival, optimism-corrected internal validation, added value (NRI,
IDI, likelihood-ratio test) and development sample size.

Conventions: ``y`` is 0/1 (1 = case); a higher score means more likely a case;
ties count one half (Mann-Whitney).  Same inputs and seed give byte-identical
results.

>>> from analytics import stats
>>> stats.auc_ci(y, score)            # doctest: +SKIP
Interval(0.893 (95% CI 0.833–0.953), method='delong')
"""

from .added_value import (
    IDI,
    NRI,
    LRTest,
    NRIComponent,
    SampleSize,
    idi,
    lr_test,
    nri,
    r2_cs_from_auc,
    reclassification,
    sample_size,
)
from .calibrate import CalibrationCurve, calibration, calibration_curve
from .competing_cif import (
    CumulativeIncidence,
    GrayTest,
    aalen_johansen_risk,
    cif_curve,
    cumulative_incidence,
    gray_test,
    pseudo_values,
)
from .competing_cox import CauseSpecificCox, CoxFit, cause_specific_cox, cox_efron
from .competing_finegray import FineGray, fine_gray
from .competing_score import (
    BrierIPA,
    brier_ipa,
    calibration_competing,
    net_benefit_competing,
    observed_by_group,
)
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
from .survival_time import (
    SurvivalCalibration,
    TimeMetric,
    brier,
    calibration_at,
    integrated_brier,
    net_benefit_survival,
    time_auc,
)
from .thresholds import binary_metrics, confusion, roc_curve, threshold, wilson_interval
from .types import Comparison, Interval

__all__ = [
    "IDI",
    "LRTest",
    "NRI",
    "NRIComponent",
    "SampleSize",
    "CalibrationCurve",
    "Comparison",
    "CoxResult",
    "Interval",
    "KMResult",
    "SurvivalCalibration",
    "TimeMetric",
    "auc",
    "auc_ci",
    "binary_metrics",
    "brier",
    "calibration",
    "calibration_at",
    "calibration_curve",
    "compare_auc",
    "concordance",
    "confusion",
    "cox",
    "delong_covariance",
    "km_by_group",
    "idi",
    "integrated_brier",
    "lr_test",
    "net_benefit",
    "net_benefit_survival",
    "nri",
    "r2_cs_from_auc",
    "reclassification",
    "sample_size",
    "optimism_corrected",
    "risk_cutpoints",
    "risk_groups",
    "roc_band",
    "roc_curve",
    "sensitivity_at",
    "threshold",
    "time_auc",
    "wilson_interval",
]

# competing risks: Aalen-Johansen, Gray's test, cause-specific Cox, Fine-Gray, a cause validated at horizons
__all__ += [
    "BrierIPA",
    "CauseSpecificCox",
    "CoxFit",
    "CumulativeIncidence",
    "FineGray",
    "GrayTest",
    "aalen_johansen_risk",
    "brier_ipa",
    "calibration_competing",
    "cause_specific_cox",
    "cif_curve",
    "cox_efron",
    "cumulative_incidence",
    "fine_gray",
    "gray_test",
    "net_benefit_competing",
    "observed_by_group",
    "pseudo_values",
]
