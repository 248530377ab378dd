"""Multiple imputation by chained equations, as R ``mice``: the engine, the outcome's columns and the diagnostics.

>>> from analytics import impute
>>> imp = impute.impute(frame, impute.Settings(m=20, maxit=10, seed=1))   # doctest: +SKIP
>>> imp.complete(1)                                                        # doctest: +SKIP
"""

from .chains import Imputations, Settings, impute, impute_new
from .diagnostics import Diagnostics, Pattern, diagnose, md_pattern, split_rhat, trace_table
from .outcome import nelson_aalen
from .spec import ImputationError, Variable

__all__ = [
    "Diagnostics",
    "ImputationError",
    "Imputations",
    "Pattern",
    "Settings",
    "Variable",
    "diagnose",
    "impute",
    "impute_new",
    "md_pattern",
    "nelson_aalen",
    "split_rhat",
    "trace_table",
]
