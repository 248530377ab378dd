"""The synthetic two-centre study folder: patients and their outcome, slides and CT, manifests, study.toml.

:func:`make_study` writes a complete study folder (``study.toml``, manifests,
pyramidal TIFF slides, NIfTI CT volumes with ROI masks) that looks like the
real ones, so every stage of cohortlab can be run and checked end to end
without patient data. Nothing in it is real.

The outcome is built from a latent risk::

    risk = 1.2 * anti_ssa + 0.3 * (igg - 14) + 1.4 * infiltration + 0.9 * lesion
           + 0.08 * (esr - 25) / 5 + noise,            noise ~ N(0, 1)

``infiltration`` (lymphocytic foci in the slides) and ``lesion`` (density of
the sinus lesion on CT) are standard-normal image signals, independent of the
clinical variables, so imaging-only and clinical-only models each beat chance
and a fusion of both is best. Within each centre the ``round(0.38 * n)``
patients of highest risk are ``high_risk = 1``. Follow-up comes from an
exponential (proportional-hazards) model of the same risk with uniform
censoring. Centre B ("external") is older, stains a little stronger, scans
slides with a darker white and has a different CT scanner (HU offset, more
noise).

Files are byte-identical for the same arguments (on one platform and library
stack): TIFFs carry no date tag, NIfTI gzip streams no time stamp, CSV floats
a fixed number of decimals, no step depends on thread scheduling, and every
slide and scan has its own random stream derived from the seed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.config import ConfigError, parse_study, to_toml
from pipeline.errors import CohortlabError
from pipeline.synth.ct import Scanner, ScanSpec, render_scan, write_scan
from pipeline.synth.slides import SlideSpec, Stain, pyramid, render_slide, write_slide

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger("cohortlab.synth")

PATIENT_COLUMNS = (
    "patient_id", "center", "age", "sex", "esr", "anti_ssa", "igg",
    "focus_score", "high_risk", "followup_months", "event",
)
MARKER = ".cohortlab-demo"
"""The file that marks a folder as a synthetic study written here (so ``demo --fresh`` may replace it)."""
MARKER_TAG = "cohortlab synthetic study"
SYNTH_VERSION = 1
# the marker moves in first, so a folder left half-replaced (killed mid-move) is still recognised as synthetic
OUTPUTS = (MARKER, "study.toml", "manifests", "slides", "scans")
SMALL_PATIENTS = 16
POSITIVE_SHARE = 0.38
# latent-risk weights (see the module docstring)
W_ANTI_SSA, W_IGG, W_INFILTRATION, W_LESION, W_ESR = 1.2, 0.3, 1.4, 0.9, 0.08

# Stream ids keep the patient table, slides and scans independent of each other.
_PATIENTS, _SLIDES, _SCANS = 0, 1, 2


@dataclass(frozen=True)
class Centre:
    """What differs between centres: age mix, stain and CT scanner."""

    name: str
    age_mean: float
    age_sd: float
    stain: Stain
    scanner: Scanner


CENTRES = {
    "A": Centre("A", 48.0, 12.0, Stain(), Scanner(offset=0.0, noise=12.0)),
    # a modest shift: stronger staining and a darker scanner white, not a different stain
    "B": Centre("B", 57.0, 11.0, Stain(strength=1.06, white=0.94), Scanner(offset=6.0, noise=18.0)),
}


@dataclass(frozen=True)
class Patient:
    """One synthetic patient: the manifest row plus the latent signals behind it."""

    patient_id: str
    center: str
    age: float
    sex: str
    esr: float | None
    anti_ssa: str
    igg: float | None
    focus_score: float
    high_risk: int
    followup_months: float
    event: int
    # latent truth (not written to the manifest)
    infiltration: float
    lesion: float
    risk: float
    n_slides: int
    multilabel_mask: bool

    def row(self) -> list[str]:
        """The patients.csv cells, with fixed decimals; missing values are empty."""
        return [
            self.patient_id, self.center, f"{self.age:.1f}", self.sex,
            "" if self.esr is None else f"{self.esr:.0f}", self.anti_ssa,
            "" if self.igg is None else f"{self.igg:.1f}", f"{self.focus_score:.1f}",
            str(self.high_risk), f"{self.followup_months:.1f}", str(self.event),
        ]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def make_patients(n_patients: int = 60, seed: int = 0) -> list[Patient]:
    """Draw the clinical table and the latent image signals of a synthetic cohort.

    About 60 % of patients are from centre A (development) and 40 % from
    centre B (external validation); about 38 % of each centre is high-risk.
    ``n_patients // 30`` patients of centre A are under 18, so a cohort's age
    filter has something to exclude.

    Parameters
    ----------
    n_patients
        Number of patients (at least 10).
    seed
        Seed of every random draw.
    """
    if n_patients < 10:
        raise ValueError(f"n_patients must be at least 10 (got {n_patients}): each centre needs positives and negatives")
    rng = _rng(seed, _PATIENTS)
    n_a = int(round(0.6 * n_patients))
    centers = np.array(["A"] * n_a + ["B"] * (n_patients - n_a))
    rng.shuffle(centers)

    age = np.array([rng.normal(CENTRES[c].age_mean, CENTRES[c].age_sd) for c in centers])
    age = np.clip(age, 19.0, 86.0)
    minors = [i for i in range(n_patients) if centers[i] == "A"][: n_patients // 30]
    age[minors] = rng.uniform(15.0, 17.9, len(minors))
    sex = np.where(rng.random(n_patients) < 0.9, "F", "M")
    anti_ssa = (rng.random(n_patients) < 0.65).astype(float)
    # hypergammaglobulinaemia goes with seropositivity
    igg = np.clip(12.0 + 3.0 * anti_ssa + 3.5 * rng.standard_normal(n_patients), 5.0, 40.0)
    esr = np.clip(np.exp(np.log(18.0) + 0.05 * (igg - 14.0) + 0.45 * rng.standard_normal(n_patients)), 2.0, 120.0)
    infiltration = rng.standard_normal(n_patients)
    lesion = rng.standard_normal(n_patients)
    noise = rng.standard_normal(n_patients)
    risk = (
        W_ANTI_SSA * anti_ssa + W_IGG * (igg - 14.0) + W_INFILTRATION * infiltration
        + W_LESION * lesion + W_ESR * (esr - 25.0) / 5.0 + noise
    )
    high = np.zeros(n_patients, int)
    for c in ("A", "B"):
        idx = np.flatnonzero(centers == c)
        k = max(1, int(round(POSITIVE_SHARE * len(idx))))
        high[idx[np.argsort(-risk[idx], kind="stable")[:k]]] = 1

    # focus score (foci per 4 mm^2) rises with the infiltration drawn on the slides
    focus = np.clip(np.exp(0.2 + 0.6 * infiltration + 0.3 * rng.standard_normal(n_patients)) - 0.3, 0.0, None)
    # exponential survival with hazard rising with risk; uniform staggered censoring
    hazard = np.log(2.0) / 60.0 * np.exp(0.7 * (risk - 0.8))
    t_event = rng.exponential(1.0 / hazard)
    t_censor = rng.uniform(6.0, 84.0, n_patients)
    time = np.maximum(np.minimum(t_event, t_censor), 0.1)
    event = (t_event <= t_censor).astype(int)

    esr_missing = rng.random(n_patients) < 0.08
    igg_missing = rng.random(n_patients) < 0.06
    two_slides = rng.random(n_patients) < 0.1
    return [
        Patient(
            patient_id=f"P{i + 1:03d}",
            center=str(centers[i]),
            age=round(float(age[i]), 1),
            sex=str(sex[i]),
            esr=None if esr_missing[i] else float(round(esr[i])),
            anti_ssa="positive" if anti_ssa[i] else "negative",
            igg=None if igg_missing[i] else round(float(igg[i]), 1),
            focus_score=round(float(focus[i]), 1),
            high_risk=int(high[i]),
            followup_months=round(float(time[i]), 1),
            event=int(event[i]),
            infiltration=float(infiltration[i]),
            lesion=float(lesion[i]),
            risk=float(risk[i]),
            n_slides=2 if two_slides[i] else 1,
            multilabel_mask=(i % 7 == 3),
        )
        for i in range(n_patients)
    ]


# --- study.toml ------------------------------------------------------------------


def study_toml(seed: int, report_dir: str | None = None, small: bool = False) -> str:
    """The demo study's ``study.toml`` text (validated by :func:`make_study` before writing)."""
    variables = {
        "patient_id": {"role": "id"},
        "center": {"type": "categorical", "role": "strata", "label": "Centre"},
        "age": {"type": "numeric", "unit": "years", "role": "predictor", "label": "Age"},
        "sex": {"type": "categorical", "role": "predictor", "label": "Sex"},
        "esr": {"type": "numeric", "unit": "mm/h", "role": "predictor", "label": "Erythrocyte sedimentation rate"},
        "anti_ssa": {"type": "categorical", "role": "predictor", "label": "Anti-SSA/Ro antibodies"},
        "igg": {"type": "numeric", "unit": "g/L", "role": "predictor", "label": "Serum IgG"},
        "focus_score": {"type": "numeric", "unit": "foci/4 mm2", "role": "predictor", "label": "Focus score"},
        "high_risk": {"type": "binary", "role": "outcome", "label": "High-risk extra-glandular involvement"},
        "followup_months": {"type": "numeric", "unit": "months", "role": "time", "label": "Follow-up"},
        "event": {"type": "binary", "role": "event", "label": "Extra-glandular event"},
    }
    feature_sets = [
        {"name": "wsi_resnet18", "modality": "wsi", "encoder": "resnet18", "weights": "random",
         "mpp": 1.0, "tile_size": 224, "tissue_threshold": 0.25, "batch_size": 16, "num_workers": 0},
        {"name": "ct_r3d18", "modality": "ct", "encoder": "r3d_18", "weights": "random", "mode": "3d",
         "spacing": [1.0, 1.0, 1.0], "margin_mm": 5.0, "input_size": [16, 64, 64], "batch_size": 4, "num_workers": 0},
        {"name": "ct_radiomics", "modality": "ct", "encoder": "radiomics", "mode": "radiomics",
         "bin_width": 25.0, "pooling": ["mean"], "num_workers": 0},
    ]
    models = [
        {"name": "clinical", "kind": "logistic", "clinical": ["age", "sex", "esr", "anti_ssa", "igg"],
         "grid": {"C": [0.1, 1.0]}},
        # linear kernels: 512-d embeddings of a few dozen patients defeat an RBF kernel
        {"name": "wsi_svm", "kind": "svm", "features": ["wsi_resnet18:mean"], "grid": {"C": [0.01, 0.1]},
         "params": {"kernel": "linear"}},
        {"name": "wsi_mil", "kind": "mil", "features": ["wsi_resnet18"]},
        {"name": "ct_svm", "kind": "svm", "features": ["ct_radiomics:mean"], "grid": {"C": [0.01, 0.1]},
         "params": {"kernel": "linear"}},
        # gradient-boosted trees on the radiomics features with the clinical variables beside them
        {"name": "ct_xgb", "kind": "xgboost", "features": ["ct_radiomics:mean"],
         "clinical": ["age", "sex", "esr", "anti_ssa", "igg"], "grid": {"max_depth": [2, 3]}},
        {"name": "fusion", "kind": "svm", "scores": ["wsi_svm", "ct_svm"], "clinical": ["anti_ssa", "igg"],
         "grid": {"C": [0.1, 1.0]}},
        {"name": "ensemble", "kind": "voting", "members": ["wsi_svm", "wsi_mil"]},
    ]
    if not small:
        # time to the extra-glandular event: Cox on clinical variables, Cox-loss attention-MIL on the
        # slides, and a Cox fusion of their risks (a light ridge penalty keeps small folds stable). The
        # small variant's few training patients hold too few events for survival folds.
        models += [
            {"name": "clinical_cox", "kind": "cox", "clinical": ["age", "esr", "anti_ssa", "igg"],
             "params": {"penalizer": 0.1}},
            {"name": "wsi_mil_cox", "kind": "mil_cox", "features": ["wsi_resnet18"]},
            {"name": "survival_fusion", "kind": "cox", "scores": ["clinical_cox", "wsi_mil_cox"],
             "params": {"penalizer": 0.1}},
            # the slide SVM with ComBat across centres, fitted in each training fold; the external centre's
            # batch effect is estimated from its own features (the centres' stains differ by design)
            {"name": "wsi_svm_combat", "kind": "svm", "features": ["wsi_resnet18:mean"], "grid": {"C": [0.01, 0.1]},
             "params": {"kernel": "linear"}, "harmonize": "combat"},
            # a clinical model as R's glm fits it (maximum likelihood; a restricted cubic spline of age), with its
            # coefficient and per-term Wald tables in the report. Anti-SSA and sex are left out: in the 20-odd
            # training patients of a fold they separate the outcome, and such a fit is refused, not returned
            {"name": "clinical_glm", "kind": "logistic", "formula": "rcs(age, 3) + esr", "params": {"penalty": "none"}},
        ]
    data: dict[str, Any] = {
        "study": {
            "name": "demo",
            "description": "Synthetic Sjögren's cohort: labial-gland biopsy slides, sinus CT and clinical data"
            + (" (small variant)" if small else ""),
            "seed": seed,
        },
        "manifests": {"patients": "manifests/patients.csv", "slides": "manifests/slides.csv",
                      "scans": "manifests/scans.csv"},
        "variables": variables,
        "feature_sets": feature_sets,
        "cohort": {"name": "demo", "params": {"min_age": 18}},
        "split": {"external_centers": ["B"], "internal_fraction": 0.25, "seed": 0},
        "models": models,
        "validation": {"n_boot": 500, "compare": [["fusion", "clinical"]], "horizons": [12, 36, 60],
                       "added_value": [["fusion", "clinical"]], "risk_cutoffs": [0.2, 0.5],
                       "subgroups": {"sex": {}, "age": {"cuts": [60]}}},
    }
    if not small:
        # optimism-corrected bootstrap of every model's whole procedure (rms::validate, rms::calibrate); a small B
        # keeps the demo quick (a real study uses the default 200); the small variant, for tests, goes without
        data["validation"].update(internal="bootstrap", B=10)
    if report_dir is not None:
        data["report"] = {"dir": report_dir}
    header = ("# Synthetic two-centre demo study written by pipeline.synth (not patient data).\n"
              "# Paths are relative to this file's folder.\n")
    return header + "\n" + to_toml(data)


# --- writing ---------------------------------------------------------------------


def _write_csv(path: Path, header: list[str] | tuple[str, ...], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _report_dir_text(report_dir: str | Path | None, folder: Path) -> str | None:
    """The report folder as study.toml should hold it: relative to the study folder when possible."""
    if report_dir is None:
        return None
    target = Path(report_dir).resolve()
    try:
        return Path(os.path.relpath(target, folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return target.as_posix()


def _write_study(tmp: Path, patients: list[Patient], seed: int, small: bool, report_dir: str | None) -> None:
    slide_spec = SlideSpec(896, 896) if small else SlideSpec()
    scan_spec = ScanSpec((32, 32, 16), (1.6, 1.6, 5.0)) if small else ScanSpec()
    for sub in ("manifests", "slides", "scans"):
        (tmp / sub).mkdir(parents=True)
    text = study_toml(seed, report_dir, small)
    try:
        parse_study(tomllib.loads(text), tmp, source="study.toml")
    except (ConfigError, tomllib.TOMLDecodeError) as exc:  # a bug here, not the user's
        raise RuntimeError(f"the synthetic study.toml does not validate: {exc}") from exc
    (tmp / "study.toml").write_text(text, encoding="utf-8")
    _write_csv(tmp / "manifests" / "patients.csv", PATIENT_COLUMNS, [p.row() for p in patients])

    slide_rows: list[list[str]] = []
    scan_rows: list[list[str]] = []
    for i, p in enumerate(tqdm(patients, desc="synthesising patients", unit="patient", leave=False)):
        centre = CENTRES[p.center]
        for k in range(p.n_slides):
            slide_id = f"{p.patient_id}-S{k + 1}"
            rgb, _ = render_slide(_rng(seed, _SLIDES, i, k), p.infiltration, centre.stain, slide_spec)
            write_slide(tmp / "slides" / f"{slide_id}.tiff", pyramid(rgb, slide_spec.min_level_side), slide_spec.mpp)
            slide_rows.append([slide_id, p.patient_id, f"slides/{slide_id}.tiff"])
        scan_id = f"{p.patient_id}-CT"
        hu, mask, _ = render_scan(_rng(seed, _SCANS, i), p.lesion, centre.scanner, scan_spec, p.multilabel_mask)
        write_scan(tmp / "scans" / f"{scan_id}_ct.nii.gz", tmp / "scans" / f"{scan_id}_roi.nii.gz", hu, mask, scan_spec)
        scan_rows.append([scan_id, p.patient_id, f"scans/{scan_id}_ct.nii.gz", f"scans/{scan_id}_roi.nii.gz",
                          "2" if p.multilabel_mask else "1"])
    _write_csv(tmp / "manifests" / "slides.csv", ["slide_id", "patient_id", "path"], slide_rows)
    _write_csv(tmp / "manifests" / "scans.csv", ["scan_id", "patient_id", "image_path", "mask_path", "mask_label"], scan_rows)
    marker = {"written_by": MARKER_TAG, "synth_version": SYNTH_VERSION, "seed": seed, "n_patients": len(patients),
              "small": small}  # no date: the same arguments give the same bytes
    (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True, indent=1) + "\n", encoding="utf-8")


class SynthFolderError(CohortlabError):
    """A folder the synthetic study must not be written into (it would replace files cohortlab did not write)."""


def is_synthetic(folder: str | Path) -> bool:
    """Whether ``folder`` holds a synthetic study written by :func:`make_study` (its :data:`MARKER` file).

    The marker is a plain file (not a link) holding a JSON object tagged
    :data:`MARKER_TAG`; it guards against replacing a real study by mistake,
    not against a user who copies it on purpose.
    """
    marker = Path(folder) / MARKER
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("written_by") == MARKER_TAG and isinstance(data.get("seed"), int)


def _protected(folder: Path) -> str | None:
    """Why ``folder`` (resolved) may never be written over, or None: the file-system root, the home folder or
    a folder above it, or a folder above the current one."""
    home = Path.home().resolve()
    cwd = Path.cwd().resolve()
    if folder.parent == folder:
        return "the file-system root"
    if folder == home or folder in home.parents:
        return "the home folder" if folder == home else f"a folder above the home folder {home}"
    if folder in cwd.parents:
        return f"a folder above the current folder {cwd}"
    return None


_LEFT_BY_SYNTH = re.compile(r"\.synth-\d+\.tmp\Z")


def check_replaceable(folder: str | Path) -> None:
    """Refuse to write the synthetic study into ``folder`` unless that cannot replace anything of the user's.

    Allowed: a missing or empty folder, or one that holds a synthetic study
    (:func:`is_synthetic`). Refused, whatever they hold: a symbolic link, the
    file-system root, the home folder and the folders above it or above the
    current folder.

    Raises
    ------
    SynthFolderError
        Naming the folder and why it is refused.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise SynthFolderError(f"{folder}: is a symbolic link; give the folder itself (nothing was written)")
    why = _protected(folder.resolve())
    if why is not None:
        raise SynthFolderError(f"{folder}: is {why}; the synthetic study goes in a folder of its own (nothing was "
                               "written)")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise SynthFolderError(f"{folder}: is not a folder (nothing was written)")
    if is_synthetic(folder):
        return
    # what a killed earlier run left (its temporary folder) does not make the folder someone's study
    held = sorted(p.name for p in folder.iterdir() if not _LEFT_BY_SYNTH.match(p.name))
    if held:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise SynthFolderError(
            f"{folder}: holds files that are not a synthetic study written by cohortlab ({shown}; no valid "
            f"{MARKER} marker); nothing was written or deleted. Choose an empty folder, or delete this one yourself if "
            "nothing in it is needed"
        )


def make_study(
    folder: str | Path,
    n_patients: int = 60,
    seed: int = 0,
    *,
    report_dir: str | Path | None = None,
    small: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic two-centre study and return the path of its ``study.toml``.

    Layout::

        study.toml
        manifests/patients.csv   one row per patient (see PATIENT_COLUMNS)
        manifests/slides.csv     slide_id, patient_id, path
        manifests/scans.csv      scan_id, patient_id, image_path, mask_path, mask_label
        slides/<slide_id>.tiff   pyramidal JPEG TIFF, 0.5 um/px at level 0
        scans/<scan_id>_ct.nii.gz, scans/<scan_id>_roi.nii.gz

    The study is built in a temporary folder beside ``folder`` and moved in
    when complete, so a failure leaves nothing half-written.

    Parameters
    ----------
    folder
        Study folder; created if needed. Other files in it (a store, reports)
        are left alone.
    n_patients, seed
        Cohort size and the seed of every random draw; the same arguments give
        byte-identical files.
    report_dir
        Report folder to put in ``[report] dir`` (written relative to the study
        folder); left out, the study uses the default ``reports/demo`` beside
        ``study.toml``.
    small
        A tiny variant for fast tests: at most 16 patients, 896x896-pixel
        slides and 32x32x16 CT volumes at 1.6x1.6x5 mm.
    overwrite
        Replace a synthetic study already written in ``folder`` (its marker,
        study.toml, manifests, slides and scans) instead of refusing. Only a
        missing or empty folder or a synthetic study is replaced
        (:func:`check_replaceable`), so a real study is never deleted.

    Raises
    ------
    FileExistsError
        When ``folder`` already holds a study and ``overwrite`` is false.
    SynthFolderError
        When ``overwrite`` is true and ``folder`` is not one :func:`check_replaceable` allows.
    """
    folder = Path(folder)
    if small:
        n_patients = min(n_patients, SMALL_PATIENTS)
    if overwrite:
        check_replaceable(folder)
    existing = [name for name in OUTPUTS if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{folder}: already holds {', '.join(existing)}; choose an empty folder or pass overwrite=True")
    patients = make_patients(n_patients, seed)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".synth-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_study(tmp, patients, seed, small, _report_dir_text(report_dir, folder))
        for name in OUTPUTS:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():  # a link is removed, never what it points to
                target.unlink()
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_slides = sum(p.n_slides for p in patients)
    log.info("synthetic study: %d patients, %d slides, %d scans in %s", len(patients), n_slides, len(patients), folder)
    return folder / "study.toml"
