"""Synthetic paranasal-sinus CT volumes with a lesion outlined in a label mask.

The field of view is a block of the midface in patient (LPS) millimetres:
soft tissue (about 40 HU) with subcutaneous fat, the anterior skin surface
with air in front of it, two maxillary sinuses (air, about -1000 HU) walled by
thin bone (about +1000 HU), and the nasal cavity with its septum between them.
A soft-tissue lesion (a polyp or retention cyst) sits on the floor of one
sinus. Its mean density and texture follow the patient's latent lesion signal,
which ties the scans to the outcome. Scanner differences between centres are a
HU offset and the noise level.

Volumes are int16 HU and masks uint8, both written by SimpleITK with explicit
spacing, origin and identity direction (ITK's LPS convention); gzip headers
carry no time stamp, so the same arrays give the same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

log = logging.getLogger("cohortlab.synth.ct")

AIR, FAT, SOFT, BONE = -1000.0, -100.0, 40.0, 1000.0
DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Scanner:
    """A centre's scanner: HU calibration offset and noise standard deviation (HU)."""

    offset: float = 0.0
    noise: float = 12.0


@dataclass(frozen=True)
class ScanSpec:
    """Voxel grid: size (x, y, z) and spacing (x, y, z) in mm."""

    size: tuple[int, int, int] = (64, 64, 32)
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)

    @property
    def origin(self) -> tuple[float, float, float]:
        """Centre the field of view on (0, 0, 0)."""
        return tuple(-(n - 1) / 2.0 * s for n, s in zip(self.size, self.spacing))  # type: ignore[return-value]


@dataclass(frozen=True)
class ScanTruth:
    """What was drawn: lesion mean and texture SD (HU, before scanner noise), side and size."""

    lesion_mean: float
    lesion_sd: float
    side: str
    roi_voxels: int


def lesion_density(signal: float) -> tuple[float, float]:
    """Mean HU and texture SD of the lesion for a latent lesion signal (standard normal).

    Denser, more heterogeneous lesions (inspissated secretion, fibrosis) go
    with a higher signal.
    """
    return 30.0 + 18.0 * signal, float(np.clip(10.0 + 4.0 * signal, 4.0, None))


def _ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, c: tuple[float, float, float], r: tuple[float, float, float]) -> np.ndarray:
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def render_scan(
    rng: np.random.Generator,
    signal: float,
    scanner: Scanner = Scanner(),
    spec: ScanSpec = ScanSpec(),
    multilabel: bool = False,
) -> tuple[np.ndarray, np.ndarray, ScanTruth]:
    """Render one sinus CT and its ROI mask.

    Parameters
    ----------
    rng
        The scan's own random generator.
    signal
        Latent lesion signal (standard normal across patients), see :func:`lesion_density`.
    scanner, spec
        The centre's scanner and the voxel grid.
    multilabel
        Label the whole sinus cavity 1 and the lesion 2 (else the lesion is 1).

    Returns
    -------
    (hu, mask, truth)
        ``int16`` HU and ``uint8`` mask arrays in SimpleITK order (z, y, x).
    """
    nx, ny, nz = spec.size
    ox, oy, oz = spec.origin
    sx, sy, sz = spec.spacing
    z, y, x = np.meshgrid(oz + sz * np.arange(nz), oy + sy * np.arange(ny), ox + sx * np.arange(nx), indexing="ij")
    z, y, x = z.astype(np.float32), y.astype(np.float32), x.astype(np.float32)

    hu = np.full(x.shape, SOFT, np.float32)
    # anterior face: skin surface curving back laterally, fat beneath it (LPS: -y is anterior)
    skin = -21.0 + rng.uniform(-1.5, 1.5) + 0.012 * x**2
    hu[y < skin + 3.0] = FAT
    hu[y < skin] = AIR

    # maxillary sinuses: bone shell, air inside; left (+x) and right (-x)
    sinus: dict[str, np.ndarray] = {}
    geometry: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        c = (sign * rng.uniform(12.0, 14.0), rng.uniform(1.0, 3.0), rng.uniform(-3.0, 3.0))
        r = (rng.uniform(8.0, 9.5), rng.uniform(12.0, 14.0), rng.uniform(16.0, 19.0))
        outer = _ellipsoid(x, y, z, c, (r[0] + 1.8, r[1] + 1.8, r[2] + 1.8)) < 1.0
        inner = _ellipsoid(x, y, z, c, r) < 1.0
        hu[outer] = BONE
        hu[inner] = AIR
        sinus[side] = inner
        geometry[side] = (c, r)
    # nasal cavity and septum
    nasal = (np.abs(x) < 4.0) & (np.abs(y) < 16.0) & (np.abs(z) < 22.0)
    hu[nasal] = AIR
    hu[nasal & (np.abs(x) < 0.9)] = 700.0

    # the lesion on the sinus floor
    side = "left" if rng.random() < 0.5 else "right"
    (cx, cy, cz), (_, _, rz) = geometry[side]
    lr = (rng.uniform(4.5, 7.0), rng.uniform(5.0, 8.0), rng.uniform(6.0, 9.0))
    lc = (cx + rng.uniform(-2.0, 2.0), cy + rng.uniform(-3.0, 3.0), cz - rz + 0.6 * lr[2])
    lesion = (_ellipsoid(x, y, z, lc, lr) < 1.0) & sinus[side]
    mean, sd = lesion_density(signal)
    texture = ndimage.gaussian_filter(rng.standard_normal(x.shape).astype(np.float32), (0.4, 1.2, 1.2))
    texture /= texture.std() + 1e-6
    hu[lesion] = mean + sd * texture[lesion]

    # scanner: calibration offset and in-plane correlated quantum noise
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), (0.0, 0.6, 0.6))
    hu += scanner.offset + scanner.noise * noise / (noise.std() + 1e-6)
    hu_i16 = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    mask = np.zeros(x.shape, np.uint8)
    if multilabel:
        mask[sinus[side]] = 1
        mask[lesion] = 2
    else:
        mask[lesion] = 1
    return hu_i16, mask, ScanTruth(mean, sd, side, int(lesion.sum()))


def _image(array: np.ndarray, spec: ScanSpec) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spec.spacing))
    img.SetOrigin(tuple(float(o) for o in spec.origin))
    img.SetDirection(DIRECTION)
    return img


def write_scan(image_path: str | Path, mask_path: str | Path, hu: np.ndarray, mask: np.ndarray, spec: ScanSpec) -> None:
    """Write the CT (int16 HU) and its mask (uint8) as compressed NIfTI with the same geometry."""
    sitk.WriteImage(_image(hu, spec), str(image_path), useCompression=True)
    sitk.WriteImage(_image(mask, spec), str(mask_path), useCompression=True)
