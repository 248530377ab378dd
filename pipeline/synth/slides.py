"""Synthetic H&E whole-slide images of labial minor salivary gland biopsies.

A slide is rendered in optical density with the Beer-Lambert stain model of
Ruifrok & Johnston (Anal Quant Cytol Histol 2001;23:291-299): every pixel holds
a haematoxylin and an eosin concentration, and RGB = white * exp(-OD). Tissue is
pink stroma with fibre texture, lobules of acini (pale cytoplasm, basal nuclei,
small lumina) and lymphocytes: a diffuse scatter plus dense foci (clusters of
about 50 or more small dark nuclei, the unit of the Sjögren's focus score).
The number of foci and the diffuse lymphocyte density grow with the patient's
latent infiltration signal, which is what ties the slides to the outcome.

Slides are written as pyramidal tiled TIFFs (one page per level, 2x
downsamples, 256-pixel JPEG tiles, resolution tags in pixels per centimetre)
that OpenSlide 4 opens as ``generic-tiff`` and reports ``openslide.mpp-x``
from. OpenSlide ignores SubIFD pyramids, hence one page per level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

log = logging.getLogger("cohortlab.synth.slides")

TILE = 256
REFERENCE_TISSUE_PIXELS = 1.5e6  # tissue area of a full-size (1792 x 1344) slide: the unit of foci rates
JPEG_QUALITY = 90
SOFTWARE = "cohortlab synth"
DESCRIPTION = "cohortlab synthetic H&E slide (not patient data)"

# Optical-density vectors (R, G, B) of haematoxylin and eosin: the reference H&E
# stain matrix of Macenko et al. (ISBI 2009), as used for stain normalisation.
H_MACENKO = (0.5626, 0.7201, 0.4062)
E_MACENKO = (0.2159, 0.8012, 0.5581)


@dataclass(frozen=True)
class Stain:
    """A laboratory's stain and scanner: OD vectors, stain strength and background white level."""

    hematoxylin: tuple[float, float, float] = H_MACENKO
    eosin: tuple[float, float, float] = E_MACENKO
    strength: float = 1.0
    white: float = 0.955


@dataclass(frozen=True)
class SlideSpec:
    """Geometry of a synthetic slide: level-0 size in pixels and microns per pixel."""

    width: int = 1792
    height: int = 1344
    mpp: float = 0.5
    min_level_side: int = 128


@dataclass(frozen=True)
class SlideTruth:
    """What was drawn on a slide, for checking readers and measurements against."""

    n_foci: int
    n_lymphocytes: int
    tissue_fraction: float


def _linear_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (low, high) and the high weight of linear interpolation from n_in to n_out (centres aligned)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float | tuple[float, float]) -> np.ndarray:
    """Unit-variance noise with structure about ``cell`` pixels across (one size, or (rows, columns)).

    A coarse grid of white noise is blurred and bilinearly enlarged with
    gathers and element-wise sums (no BLAS, whose summation order can depend on
    the thread count, so the result is the same on every run).
    """
    cy, cx = (cell, cell) if isinstance(cell, (int, float)) else cell
    gh, gw = max(2, int(np.ceil(shape[0] / cy))), max(2, int(np.ceil(shape[1] / cx)))
    grid = ndimage.gaussian_filter(rng.standard_normal((gh, gw), dtype=np.float32), 1.0, mode="wrap")
    grid = (grid - grid.mean()) / (grid.std() + np.float32(1e-6))
    lo, hi, f = _linear_weights(shape[0], gh)
    rows = grid[lo] * (1 - f)[:, None] + grid[hi] * f[:, None]
    lo, hi, f = _linear_weights(shape[1], gw)
    return rows[:, lo] * (1 - f) + rows[:, hi] * f


def _disk(radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (dy, dx) of a disk and an anti-aliased weight per offset."""
    r = int(np.ceil(radius)) + 1
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    w = np.clip(radius + 0.5 - np.hypot(dy, dx), 0.0, 1.0)
    keep = w > 0
    return dy[keep], dx[keep], w[keep].astype(np.float32)


def _stamp(canvas: np.ndarray, centres: np.ndarray, radius: float, values: np.ndarray) -> None:
    """Draw disks at ``centres`` (n, 2: y, x) into ``canvas`` keeping the per-pixel maximum."""
    if len(centres) == 0:
        return
    dy, dx, w = _disk(radius)
    cy = np.round(centres[:, 0]).astype(np.int64)[:, None] + dy[None, :]
    cx = np.round(centres[:, 1]).astype(np.int64)[:, None] + dx[None, :]
    val = values[:, None].astype(np.float32) * w[None, :]
    ok = (cy >= 0) & (cy < canvas.shape[0]) & (cx >= 0) & (cx < canvas.shape[1])
    np.maximum.at(canvas.reshape(-1), (cy * canvas.shape[1] + cx)[ok], val[ok])


def _inside(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    y = np.clip(np.round(points[:, 0]).astype(np.int64), 0, mask.shape[0] - 1)
    x = np.clip(np.round(points[:, 1]).astype(np.int64), 0, mask.shape[1] - 1)
    return points[mask[y, x]]


def _tissue_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An irregular ellipse: never touches the corners, always covers the centre."""
    cy, cx = h * (0.5 + rng.uniform(-0.02, 0.02)), w * (0.5 + rng.uniform(-0.02, 0.02))
    ry, rx = h * rng.uniform(0.42, 0.46), w * rng.uniform(0.43, 0.47)
    dy2 = ((np.arange(h, dtype=np.float32)[:, None] - np.float32(cy)) / np.float32(ry)) ** 2
    dx2 = ((np.arange(w, dtype=np.float32)[None, :] - np.float32(cx)) / np.float32(rx)) ** 2
    wobble = np.clip(_smooth_noise(rng, (h, w), cell=max(h, w) / 5), -2.0, 2.0)
    return (np.sqrt(dy2 + dx2) + np.float32(0.12) * wobble) < 1.0


def _acini(rng: np.random.Generator, tissue: np.ndarray, n_lobules: int) -> tuple[list[tuple[float, float, float, float]], np.ndarray]:
    """Acinus circles (y, x, radius, lumen fraction) in lobules, and their basal nuclei centres."""
    h, w = tissue.shape
    acini: list[tuple[float, float, float, float]] = []
    nuclei: list[np.ndarray] = []
    ty, tx = np.nonzero(tissue[::8, ::8])
    for _ in range(n_lobules):
        k = rng.integers(len(ty))
        ly, lx = ty[k] * 8.0, tx[k] * 8.0
        lr = rng.uniform(110, 190)
        step = rng.uniform(58, 68)
        gy, gx = np.mgrid[-lr:lr:step, -lr:lr:step]
        gx = gx + (np.arange(gy.shape[0])[:, None] % 2) * step / 2  # hexagonal packing
        pts = np.stack([gy.ravel(), gx.ravel()], 1) + rng.normal(0, step * 0.12, (gy.size, 2))
        pts = pts[np.hypot(pts[:, 0], pts[:, 1]) < lr] + (ly, lx)
        pts = _inside(tissue, pts)
        for y, x in pts:
            rad = rng.uniform(22, 30)
            acini.append((y, x, rad, rng.uniform(0.15, 0.3)))
            m = rng.integers(8, 13)
            ang = np.linspace(0, 2 * np.pi, m, endpoint=False) + rng.uniform(0, 2 * np.pi)
            rr = rad * rng.uniform(0.68, 0.8, m)
            nuclei.append(np.stack([y + rr * np.sin(ang), x + rr * np.cos(ang)], 1))
    # a couple of excretory ducts: wider lumen, eosinophilic wall
    for _ in range(rng.integers(1, 3)):
        k = rng.integers(len(ty))
        y, x, rad = ty[k] * 8.0, tx[k] * 8.0, rng.uniform(34, 48)
        acini.append((y, x, rad, 0.55))
        m = rng.integers(18, 26)
        ang = np.linspace(0, 2 * np.pi, m, endpoint=False)
        nuclei.append(np.stack([y + 0.7 * rad * np.sin(ang), x + 0.7 * rad * np.cos(ang)], 1))
    cents = np.concatenate(nuclei) if nuclei else np.zeros((0, 2))
    return acini, cents


def render_slide(
    rng: np.random.Generator,
    infiltration: float,
    stain: Stain = Stain(),
    spec: SlideSpec = SlideSpec(),
) -> tuple[np.ndarray, SlideTruth]:
    """Render one H&E slide at level 0.

    Parameters
    ----------
    rng
        The slide's own random generator (slides are independent of each other).
    infiltration
        Latent lymphocytic infiltration (standard normal across patients); the
        expected number of foci is ``exp(1.0 + 0.8 * infiltration)`` per
        ``REFERENCE_TISSUE_PIXELS`` of tissue, a focus holds
        ``50 + Poisson(40 * exp(0.5 * infiltration))`` lymphocytes, and the
        diffuse lymphocyte density grows as ``exp(0.8 * infiltration)``. The count is the expectation
        rounded up or down at random (not Poisson), so that even a small
        slide shows its patient's infiltration.
    stain, spec
        The centre's stain/scanner and the slide geometry.

    Returns
    -------
    (rgb, truth)
        ``uint8`` array (height, width, 3) and what was drawn.
    """
    h, w = spec.height, spec.width
    tissue = _tissue_mask(rng, h, w)
    n_tissue = int(tissue.sum())
    area_factor = n_tissue / REFERENCE_TISSUE_PIXELS

    # eosin: loose and dense stroma with fibres running in one direction per slide
    fibre = _smooth_noise(rng, (h, w), cell=(6, 36) if rng.random() < 0.5 else (36, 6))
    loose = _smooth_noise(rng, (h, w), cell=90)
    eosin = np.maximum(0.34 + 0.07 * loose + 0.06 * fibre, np.float32(0.05))
    eosin *= tissue
    hema = tissue * np.float32(0.05)

    acini, acinar_nuclei = _acini(rng, tissue, n_lobules=max(1, int(round(rng.uniform(2.5, 4.5) * area_factor))))
    for y, x, rad, lumen in acini:
        r = int(np.ceil(rad)) + 1
        y0, y1, x0, x1 = max(0, int(y) - r), min(h, int(y) + r + 1), max(0, int(x) - r), min(w, int(x) + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d = np.hypot(yy - y, xx - x) / rad
        cell = d < 1.0
        duct = lumen > 0.5
        eosin[y0:y1, x0:x1] = np.where(cell, 0.42 if duct else 0.17, eosin[y0:y1, x0:x1])
        hema[y0:y1, x0:x1] = np.where(cell, 0.06 if duct else 0.16, hema[y0:y1, x0:x1])
        hole = d < lumen
        eosin[y0:y1, x0:x1][hole] = 0.02
        hema[y0:y1, x0:x1][hole] = 0.0

    nuclei = np.zeros((h, w), np.float32)
    _stamp(nuclei, acinar_nuclei, 4.5, rng.uniform(0.7, 0.95, len(acinar_nuclei)))
    # fibroblasts: sparse, pale
    fib = _inside(tissue, rng.uniform((0, 0), (h, w), (int(n_tissue / 3500), 2)))
    _stamp(nuclei, fib, 3.0, rng.uniform(0.45, 0.65, len(fib)))
    # lymphocytes: a diffuse scatter plus foci
    diffuse = _inside(tissue, rng.uniform((0, 0), (h, w), (int(n_tissue / 9000 * np.exp(0.8 * infiltration)), 2)))
    n_foci = int(np.floor(area_factor * np.exp(1.0 + 0.8 * infiltration) + rng.random()))
    foci = [diffuse]
    ty, tx = np.nonzero(tissue[::8, ::8])
    for _ in range(n_foci):
        k = rng.integers(len(ty))
        sigma = rng.uniform(26, 40)
        n = 50 + rng.poisson(40 * np.exp(0.5 * infiltration))  # a focus is 50 or more lymphocytes
        foci.append(_inside(tissue, rng.normal((ty[k] * 8.0, tx[k] * 8.0), sigma, (n, 2))))
    lymph = np.concatenate(foci)
    _stamp(nuclei, lymph, 5.0, rng.uniform(1.15, 1.5, len(lymph)))

    hema = np.maximum(hema, nuclei)
    eosin *= 1.0 - 0.75 * np.minimum(nuclei, 1.0)

    # one grain field: stain speckle in tissue, sensor noise on the glass
    grain = rng.standard_normal((h, w), dtype=np.float32)
    grain *= np.where(tissue, np.float32(0.025), np.float32(0.006))
    rgb = np.empty((h, w, 3), np.uint8)
    od = np.empty((h, w), np.float32)
    for c in range(3):  # per channel keeps the temporaries 2-D
        np.multiply(hema, np.float32(stain.strength * stain.hematoxylin[c]), out=od)
        od += eosin * np.float32(stain.strength * stain.eosin[c])
        od += grain
        np.maximum(od, np.float32(-0.02), out=od)
        np.exp(-od, out=od)
        od *= np.float32(255.0 * stain.white)
        np.clip(od, 0, 255, out=od)
        rgb[..., c] = np.rint(od)
    truth = SlideTruth(n_foci=n_foci, n_lymphocytes=len(lymph), tissue_fraction=n_tissue / (h * w))
    return rgb, truth


def pyramid(rgb: np.ndarray, min_side: int = 128) -> list[np.ndarray]:
    """Level 0 and its 2x box-filtered downsamples until a side would drop below ``min_side``."""
    levels = [rgb]
    while min(levels[-1].shape[:2]) // 2 >= min_side:
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))  # 2x2 box mean
    return levels


def write_slide(path: str | Path, levels: list[np.ndarray], mpp: float) -> Path:
    """Write a pyramidal tiled JPEG TIFF that OpenSlide reads as ``generic-tiff``.

    One page per level (later pages marked reduced-resolution), 256-pixel
    tiles, RGB input that tifffile stores as 2x2-subsampled YCbCr JPEG (as
    scanners do; telling tifffile the input *is* YCbCr would garble the
    colours), and X/YResolution in pixels per centimetre with
    ResolutionUnit CENTIMETER, so OpenSlide reports ``openslide.mpp-x`` =
    ``mpp`` (it also exposes the raw ``tiff.XResolution``). No date tag is
    written, so the same pixels give the same bytes.
    """
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for k, level in enumerate(levels):
            ppcm = 1e4 / (mpp * 2**k)
            tif.write(
                level,
                tile=(TILE, TILE),
                compression="jpeg",
                compressionargs={"level": JPEG_QUALITY},
                photometric="rgb",
                resolution=(ppcm, ppcm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if k == 0 else 1,
                description=DESCRIPTION if k == 0 else None,
                metadata=None,
                software=SOFTWARE,
            )
    return path
