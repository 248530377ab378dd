"""The synthetic CT volumes and ROI masks, read back with SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.stats import spearmanr

from pipeline import synth
from pipeline.synth import ct as synth_ct

SMALL = synth_ct.ScanSpec((32, 32, 16), (1.6, 1.6, 5.0))


def _read(study: Path, row: dict[str, str]) -> tuple[sitk.Image, sitk.Image]:
    return sitk.ReadImage(str(study / row["image_path"])), sitk.ReadImage(str(study / row["mask_path"]))


def test_every_scan_has_the_stated_geometry(small_study: Path, manifests: dict) -> None:
    assert len(manifests["scans"]) == len(manifests["patients"])
    for row in manifests["scans"]:
        image, mask = _read(small_study, row)
        assert image.GetPixelID() == sitk.sitkInt16
        assert mask.GetPixelID() == sitk.sitkUInt8
        for img in (image, mask):
            assert img.GetSize() == SMALL.size
            assert img.GetSpacing() == pytest.approx(SMALL.spacing, abs=1e-5)
            assert img.GetOrigin() == pytest.approx(SMALL.origin, abs=1e-4)
            assert img.GetDirection() == pytest.approx(synth_ct.DIRECTION)


def test_full_size_scans_are_anisotropic_like_sinus_ct() -> None:
    spec = synth_ct.ScanSpec()
    assert spec.size == (64, 64, 32) and spec.spacing == (0.8, 0.8, 2.5)
    hu, mask, truth = synth_ct.render_scan(np.random.default_rng(0), 0.0, spec=spec)
    assert hu.shape == (32, 64, 64) and hu.dtype == np.int16  # (z, y, x)
    assert truth.roi_voxels == int(mask.sum()) > 200


def test_tissue_classes_have_their_densities(small_study: Path, manifests: dict) -> None:
    image, _ = _read(small_study, manifests["scans"][0])
    hu = sitk.GetArrayFromImage(image).astype(float)
    assert (hu < -900).mean() > 0.1, "sinus and nasal air"
    assert (hu > 600).mean() > 0.01, "bone walls"
    assert abs(np.median(hu[(hu > -200) & (hu < 200)]) - 40) < 15, "soft tissue near 40 HU"
    assert hu.min() >= -1024 and hu.max() <= 3071


def test_roi_is_nonempty_for_its_label_and_multilabel_masks_exist(small_study: Path, manifests: dict) -> None:
    labels = {row["mask_label"] for row in manifests["scans"]}
    assert labels == {"1", "2"}
    for row in manifests["scans"]:
        image, mask = _read(small_study, row)
        m = sitk.GetArrayFromImage(mask)
        label = int(row["mask_label"])
        assert (m == label).sum() > 20, row["scan_id"]
        assert set(np.unique(m)) == ({0, 1, 2} if label == 2 else {0, 1})
        if label == 2:  # label 1 is the sinus cavity, which contains the lesion
            hu = sitk.GetArrayFromImage(image)
            assert np.median(hu[m == 1]) < -800
            assert np.median(hu[m == 2]) > -200


def test_lesion_density_follows_the_latent_signal(small_study: Path, manifests: dict, small_truth: dict) -> None:
    means, signals = [], []
    for row in manifests["scans"]:
        image, mask = _read(small_study, row)
        hu, m = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask)
        means.append(hu[m == int(row["mask_label"])].mean())
        signals.append(small_truth[row["patient_id"]].lesion)
    assert spearmanr(means, signals)[0] > 0.85


def test_lesion_is_denser_in_high_risk_patients() -> None:
    """On the full 60-patient cohort, rendered at the small grid in memory."""
    patients = synth.make_patients(60, 0)
    means = np.array([
        hu[mask == 1].mean()
        for hu, mask, _ in (
            synth_ct.render_scan(np.random.default_rng(i), p.lesion, synth.CENTRES[p.center].scanner, SMALL)
            for i, p in enumerate(patients)
        )
    ])
    high = np.array([p.high_risk for p in patients])
    assert means[high == 1].mean() > means[high == 0].mean() + 10


def test_scanner_offset_and_noise_differ() -> None:
    """Same anatomy and lesion, two scanners: the lesion mean moves by the offset, air gets noisier."""
    a, mask, _ = synth_ct.render_scan(np.random.default_rng(5), 0.0, synth_ct.Scanner(0.0, 10.0))
    b, _, _ = synth_ct.render_scan(np.random.default_rng(5), 0.0, synth_ct.Scanner(20.0, 30.0))
    roi = mask == 1
    assert b[roi].mean() - a[roi].mean() == pytest.approx(20.0, abs=4.0)
    soft = (a > 0) & (a < 80) & ~roi
    assert b[soft].std() > 1.5 * a[soft].std()
