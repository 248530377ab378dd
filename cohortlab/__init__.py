"""cohortlab in a notebook: a study's stages as methods, results as objects.

>>> import cohortlab
>>> study = cohortlab.load_study("demo/study.toml")      # doctest: +SKIP
>>> study.ingest(); study.embed(); study.fit()           # doctest: +SKIP
>>> cohort = study.cohort()                              # analytics.cohort.Cohort
>>> v = study.validation()                               # analytics.validation.Validation
>>> v.summary                                            # model, split, measure, estimate, low, high, method, ...
>>> v.summary.filter(pl.col("m").is_not_null())          # pooled over imputations: m, fmi
>>> v.print_summary(); v.compare("fusion", "clinical")   # doctest: +SKIP

Every error a user can act on is a :class:`CohortlabError`. Names load on first
use, so ``import cohortlab`` is quick (no torch, no scikit-learn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import CohortlabError
from pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from analytics.validation import Validation
    from cohortlab.study import Study, load_study

# public name -> the module that defines it (imported on first use)
_LAZY = {"Study": "cohortlab.study", "load_study": "cohortlab.study", "Validation": "analytics.validation"}

__all__ = ["CohortlabError", "Study", "Validation", "load_study"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
