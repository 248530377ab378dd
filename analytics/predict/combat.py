"""New patients of a ComBat-harmonised model: centres seen in development, and centres that were not.

A harmonised model's pipeline begins with its fitted ComBat step (:mod:`analytics.models.harmonize`; Johnson, Li
& Rabinovic, Biostatistics 2007; Fortin et al., NeuroImage 2018). A new patient of a centre the step was fitted
on is harmonised with that centre's estimates. A centre it was not fitted on (or a training centre too small to
be fitted) is harmonised as the fit stage harmonises an external centre: its batch effects are estimated from its
own new patients' image features, unsupervised, with the same empirical-Bayes shrinkage. That needs enough of
them in one call: fewer than ``min_patients`` (default :data:`MIN_PATIENTS`) are not scored, with that reason;
otherwise each is scored and flagged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from analytics.cohort import Cohort
from analytics.models.harmonize import HarmonizeSpec, combat_step
from analytics.models.persist import load_model
from pipeline.config import StudyConfig

MIN_PATIENTS = 20


@dataclass
class Centres:
    """Per patient of a new centre: why it is not scored, or its flag."""

    reasons: dict[str, str] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)


def new_centres(study: StudyConfig, chain: Sequence[str], cohort: Cohort, refused: Mapping[str, str],
                min_patients: int = MIN_PATIENTS) -> Centres:
    """Check the centres of the cohort's patients (those not ``refused`` already) against every harmonised model
    of ``chain``; see the module notes."""
    out = Centres()
    for name in chain:
        h = HarmonizeSpec.of(study.model(name))
        if h is None or h.batch not in cohort.frame.columns:
            continue  # not harmonised; a missing batch column is the model's own input error
        step = combat_step(getattr(load_model(study.models_dir / name, study.store_path).learner, "pipeline_", None))
        if step is None:
            continue
        fitted = set(step.batches_)
        by_centre: dict[str, list[str]] = {}
        for pid, centre in zip(cohort.patient_ids, cohort.frame[h.batch].to_list()):
            if pid not in refused and pid not in out.reasons and centre is not None and str(centre) not in fitted:
                by_centre.setdefault(str(centre), []).append(pid)
        for centre, ids in sorted(by_centre.items()):
            if len(ids) < min_patients:
                why = (f"model '{name}': centre {centre} was not seen in development; ComBat harmonises a new centre "
                       f"from at least {min_patients} of its patients in one call (this call has {len(ids)})")
                out.reasons.update({p: why for p in ids})
            else:
                note = (f"centre {centre} not seen in development: harmonised by ComBat from its {len(ids)} new "
                        "patients (unsupervised)")
                for p in ids:
                    if note not in out.flags.setdefault(p, []):
                        out.flags[p].append(note)
    return out


__all__ = ["MIN_PATIENTS", "Centres", "new_centres"]
