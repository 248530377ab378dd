"""A synthetic two-centre study: patients and outcome, H&E-like slides, CT scans, manifests and study.toml.

* :mod:`~pipeline.synth.study`: the patients, their latent truth and the study folder (:func:`make_study`);
* :mod:`~pipeline.synth.slides`: pyramidal TIFF slides whose lymphocytic foci carry the signal;
* :mod:`~pipeline.synth.ct`: CT volumes with an ROI mask whose lesion carries the signal.

Names are loaded from their module on first use.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

# public name -> the submodule that defines it
_EXPORTS = {
    "CENTRES": "study", "PATIENT_COLUMNS": "study", "SMALL_PATIENTS": "study", "Centre": "study",
    "Patient": "study", "make_patients": "study", "make_study": "study", "study_toml": "study",
    "MARKER": "study", "SynthFolderError": "study", "check_replaceable": "study", "is_synthetic": "study",
    "SlideSpec": "slides", "Stain": "slides", "pyramid": "slides", "render_slide": "slides", "write_slide": "slides",
    "ScanSpec": "ct", "Scanner": "ct", "render_scan": "ct", "write_scan": "ct",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
