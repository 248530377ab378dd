"""Radiomics features inside an ROI, with pyradiomics' names, definitions and defaults.

Three feature classes are computed from numpy arrays (no pyradiomics
dependency), following the pyradiomics documentation (van Griethuysen et al.,
"Computational Radiomics System to Decode the Radiographic Phenotype",
Cancer Research 2017; 77(21): e104-e107):

- first order (18 features) on the ROI's voxel values; ``Energy``,
  ``TotalEnergy`` and ``RootMeanSquared`` add ``voxel_array_shift`` to every
  value first (pyradiomics' ``voxelArrayShift``, default 0);
- shape in 3D (14 features) on the ROI mask: a marching-cubes mesh for the
  surface, volume and diameters, and the eigenvalues of the voxel-coordinate
  covariance for the axis lengths;
- GLCM (24 features; Haralick, Shanmugam and Dinstein, IEEE Trans. SMC 1973):
  symmetric co-occurrence matrices at distance 1 in the 13 directions of 3D,
  each normalised, a feature computed per direction and averaged over the
  directions that hold at least one pair.

Grey levels for ``Entropy``, ``Uniformity`` and the GLCM come from fixed bin
widths (``bin_width``, default 25): the first edge is the largest multiple of
the bin width at or below the ROI minimum, and a value falls in bin ``k`` when
``edge[k-1] <= value < edge[k]``. Images are used as they are: no resampling,
no normalisation (pyradiomics' defaults).

Features are returned in the fixed order of :data:`FEATURE_NAMES`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import marching_cubes

log = logging.getLogger("cohortlab.radiomics")

EPS = float(np.spacing(1))  # pyradiomics' epsilon inside logarithms

FIRSTORDER = (
    "Energy", "TotalEnergy", "Entropy", "Minimum", "10Percentile", "90Percentile", "Maximum", "Mean",
    "Median", "InterquartileRange", "Range", "MeanAbsoluteDeviation", "RobustMeanAbsoluteDeviation",
    "RootMeanSquared", "Skewness", "Kurtosis", "Variance", "Uniformity",
)
SHAPE = (
    "MeshVolume", "VoxelVolume", "SurfaceArea", "SurfaceVolumeRatio", "Sphericity", "Maximum3DDiameter",
    "Maximum2DDiameterSlice", "Maximum2DDiameterColumn", "Maximum2DDiameterRow", "MajorAxisLength",
    "MinorAxisLength", "LeastAxisLength", "Elongation", "Flatness",
)
GLCM = (
    "Autocorrelation", "JointAverage", "ClusterProminence", "ClusterShade", "ClusterTendency", "Contrast",
    "Correlation", "DifferenceAverage", "DifferenceEntropy", "DifferenceVariance", "JointEnergy",
    "JointEntropy", "Imc1", "Imc2", "Idm", "Idmn", "Id", "Idn", "InverseVariance", "MaximumProbability",
    "MCC", "SumAverage", "SumEntropy", "SumSquares",
)
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"original_firstorder_{n}" for n in FIRSTORDER)
    + tuple(f"original_shape_{n}" for n in SHAPE)
    + tuple(f"original_glcm_{n}" for n in GLCM)
)


class RadiomicsError(ValueError):
    """An ROI on which the features are not defined (empty, or arrays that do not match)."""


# --- discretisation ----------------------------------------------------------------


def bin_edges(values: np.ndarray, bin_width: float) -> np.ndarray:
    """Fixed-bin-width edges as pyradiomics builds them.

    The first edge is ``min - (min mod w)`` (the multiple of ``w`` at or below the
    minimum); edges run up to ``max + 2w`` so the maximum falls in a half-open bin.
    """
    lo = float(values.min())
    hi = float(values.max())
    low = lo - (lo % bin_width)
    edges = np.arange(low, hi + 2 * bin_width, bin_width)
    if len(edges) == 1:  # flat ROI on a bin edge: one bin around it
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def discretise(values: np.ndarray, bin_width: float) -> np.ndarray:
    """Grey levels 1, 2, ... of ``values`` under fixed bin width (``numpy.digitize`` on :func:`bin_edges`)."""
    return np.digitize(values, bin_edges(values, bin_width)).astype(np.int64)


# --- first order -------------------------------------------------------------------


def firstorder(
    values: np.ndarray, voxel_volume: float, bin_width: float = 25.0, voxel_array_shift: float = 0.0
) -> dict[str, float]:
    """First-order statistics of the ROI voxel values (pyradiomics ``firstorder``).

    Percentiles use linear interpolation; variance, skewness (m3 / m2^1.5) and
    kurtosis (m4 / m2^2, not excess) are population moments; a flat ROI has
    skewness and kurtosis 0.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    shifted = x + voxel_array_shift
    energy = float(np.sum(shifted**2))
    levels = discretise(x, bin_width)
    p = np.bincount(levels)[1:] / n
    p = p[p > 0]
    mean = float(x.mean())
    dev = x - mean
    m2 = float(np.mean(dev**2))
    m3 = float(np.mean(dev**3))
    m4 = float(np.mean(dev**4))
    p10, p25, p75, p90 = np.percentile(x, [10, 25, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    return {
        "Energy": energy,
        "TotalEnergy": energy * voxel_volume,
        "Entropy": float(-np.sum(p * np.log2(p + EPS))),
        "Minimum": float(x.min()),
        "10Percentile": float(p10),
        "90Percentile": float(p90),
        "Maximum": float(x.max()),
        "Mean": mean,
        "Median": float(np.median(x)),
        "InterquartileRange": float(p75 - p25),
        "Range": float(x.max() - x.min()),
        "MeanAbsoluteDeviation": float(np.mean(np.abs(dev))),
        "RobustMeanAbsoluteDeviation": float(np.mean(np.abs(robust - robust.mean()))),
        "RootMeanSquared": float(np.sqrt(energy / n)),
        "Skewness": m3 / m2**1.5 if m2 > 0 else 0.0,
        "Kurtosis": m4 / m2**2 if m2 > 0 else 0.0,
        "Variance": m2,
        "Uniformity": float(np.sum(p**2)),
    }


# --- shape -------------------------------------------------------------------------


def _mesh(mask: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh (vertices in mm, faces) of a binary mask padded by one voxel.

    Vertices of a 0/1 mask cut at 0.5 sit on the midpoints of cube edges, as in
    pyradiomics' C implementation (Lorensen and Cline, SIGGRAPH 1987). The mesh
    is extracted from the background (1 - mask) with skimage's Lorensen table:
    it is the same closed surface, but its resolution of the ambiguous cube
    configurations follows pyradiomics' table more closely than the foreground.
    """
    padded = np.pad(mask.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(1.0 - padded, 0.5, spacing=tuple(float(s) for s in spacing), method="lorensen")
    return verts, faces


def _max_distance(points: np.ndarray) -> float:
    """Largest pairwise distance; only convex-hull vertices can realise it."""
    if len(points) < 2:
        return 0.0
    if len(points) > 64:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # flat or collinear: every point may matter
            pass
    best = 0.0
    for k in range(0, len(points), 1024):  # blocks keep memory small for big flat sets
        d = points[k : k + 1024, None, :] - points[None, :, :]
        best = max(best, float(np.max(np.einsum("ijk,ijk->ij", d, d))))
    return float(np.sqrt(best))


def _max_planar_distance(verts: np.ndarray, spacing: np.ndarray, axis: int) -> float:
    """Largest distance between mesh vertices that share a coordinate along ``axis``."""
    # Vertices lie on a half-voxel lattice: twice the index is an exact integer key.
    keys = np.rint(2 * verts[:, axis] / spacing[axis]).astype(np.int64)
    other = [a for a in range(3) if a != axis]
    order = np.argsort(keys, kind="stable")
    keys, pts = keys[order], verts[order][:, other]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    return max((_max_distance(g) for g in np.split(pts, bounds)), default=0.0)


def shape(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """3D shape features of a binary mask (pyradiomics ``shape``).

    Parameters
    ----------
    mask : bool array in (z, y, x) order.
    spacing : voxel size in mm in the same (z, y, x) order.

    Notes
    -----
    ``MeshVolume`` sums the signed volumes of the tetrahedra between the origin
    and each mesh triangle (divergence theorem); ``SurfaceArea`` sums triangle
    areas. Diameters are taken between mesh vertices: ``Slice`` in planes of
    constant z (axial), ``Column`` of constant y, ``Row`` of constant x.
    Axis lengths are 4 sqrt(eigenvalue) of the covariance of the voxel centres
    in mm (population normalisation).
    """
    m = np.asarray(mask, dtype=bool)
    sp = np.asarray(spacing, dtype=np.float64)
    n = int(m.sum())
    verts, faces = _mesh(m, sp)
    tri = verts[faces].astype(np.float64)
    area = float(np.sum(0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)))
    volume = abs(float(np.sum(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])))) / 6.0)
    verts = verts.astype(np.float64)

    coords = np.argwhere(m).astype(np.float64) * sp
    coords -= coords.mean(axis=0)
    cov = coords.T @ coords / n
    eig = np.sort(np.linalg.eigvalsh(cov))
    eig[(eig < 0) & (eig > -1e-10)] = 0.0  # rounding on flat ROIs
    least, minor, major = eig
    return {
        "MeshVolume": volume,
        "VoxelVolume": n * float(np.prod(sp)),
        "SurfaceArea": area,
        "SurfaceVolumeRatio": area / volume,
        "Sphericity": float((36 * np.pi * volume**2) ** (1 / 3) / area),
        "Maximum3DDiameter": _max_distance(verts),
        "Maximum2DDiameterSlice": _max_planar_distance(verts, sp, 0),
        "Maximum2DDiameterColumn": _max_planar_distance(verts, sp, 1),
        "Maximum2DDiameterRow": _max_planar_distance(verts, sp, 2),
        "MajorAxisLength": 4 * float(np.sqrt(major)),
        "MinorAxisLength": 4 * float(np.sqrt(minor)),
        "LeastAxisLength": 4 * float(np.sqrt(least)),
        "Elongation": float(np.sqrt(minor / major)) if major > 0 else 0.0,
        "Flatness": float(np.sqrt(least / major)) if major > 0 else 0.0,
    }


# --- GLCM ----------------------------------------------------------------------------


def _directions() -> list[tuple[int, int, int]]:
    """The 13 undirected neighbour offsets at distance 1 (infinity norm) in 3D."""
    out = []
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dz, dy, dx) > (0, 0, 0):
                    out.append((dz, dy, dx))
    return out


def _shifted(a: np.ndarray, d: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Views of ``a`` at each voxel and at its neighbour ``+d``, over the voxels where both exist."""
    src, dst = [], []
    for off, size in zip(d, a.shape):
        src.append(slice(max(0, -off), size - max(0, off)))
        dst.append(slice(max(0, off), size - max(0, -off)))
    return a[tuple(src)], a[tuple(dst)]


def glcm_matrices(levels: np.ndarray, n_levels: int) -> np.ndarray:
    """Symmetric co-occurrence counts, shape (n_levels, n_levels, 13), of a grey-level volume.

    ``levels`` holds 1..n_levels inside the ROI and 0 outside; a pair counts
    when both voxels are in the ROI.
    """
    out = np.zeros((n_levels, n_levels, 13), dtype=np.float64)
    for k, d in enumerate(_directions()):
        a, b = _shifted(levels, d)
        both = (a > 0) & (b > 0)
        codes = (a[both] - 1) * n_levels + (b[both] - 1)
        counts = np.bincount(codes, minlength=n_levels * n_levels).reshape(n_levels, n_levels)
        out[:, :, k] = counts + counts.T
    return out


def glcm(levels: np.ndarray) -> dict[str, float]:
    """GLCM features (pyradiomics ``glcm``) of a grey-level volume (0 outside the ROI).

    Rows and columns of grey levels absent from the ROI are dropped; ``Ng`` in
    ``Idn``/``Idmn`` and the ranges of ``k`` are the highest grey level present.
    """
    levels = np.asarray(levels, dtype=np.int64)
    ng = int(levels.max())
    counts = glcm_matrices(levels, ng)
    present = np.unique(levels[levels > 0])
    counts = counts[present - 1][:, present - 1]
    totals = counts.sum(axis=(0, 1))
    keep = totals > 0
    if not keep.any():
        raise RadiomicsError("GLCM undefined: the ROI has no pair of neighbouring voxels")
    p = counts[:, :, keep] / totals[keep]
    g = present.astype(np.float64)
    i = g[:, None, None]
    j = g[None, :, None]
    px = p.sum(axis=1)  # (n, angles)
    py = p.sum(axis=0)
    ux = np.sum(i * p, axis=(0, 1))
    uy = np.sum(j * p, axis=(0, 1))
    sigx = np.sqrt(np.sum((i - ux) ** 2 * p, axis=(0, 1)))
    sigy = np.sqrt(np.sum((j - uy) ** 2 * p, axis=(0, 1)))
    n_angles = p.shape[2]

    ksum = np.arange(2, 2 * ng + 1, dtype=np.float64)
    kdiff = np.arange(0, ng, dtype=np.float64)
    s_idx = (g[:, None] + g[None, :]).astype(np.int64).ravel() - 2
    d_idx = np.abs(g[:, None] - g[None, :]).astype(np.int64).ravel()
    flat = p.reshape(-1, n_angles)
    pxy_sum = np.stack([np.bincount(s_idx, flat[:, a], minlength=ksum.size) for a in range(n_angles)], axis=1)
    pxy_diff = np.stack([np.bincount(d_idx, flat[:, a], minlength=kdiff.size) for a in range(n_angles)], axis=1)

    pxpy = px[:, None, :] * py[None, :, :]
    hx = -np.sum(px * np.log2(px + EPS), axis=0)
    hy = -np.sum(py * np.log2(py + EPS), axis=0)
    hxy = -np.sum(p * np.log2(p + EPS), axis=(0, 1))
    hxy1 = -np.sum(p * np.log2(pxpy + EPS), axis=(0, 1))
    hxy2 = -np.sum(pxpy * np.log2(pxpy + EPS), axis=(0, 1))

    kd = kdiff[:, None]
    ks = ksum[:, None]
    diff_avg = np.sum(kd * pxy_diff, axis=0)
    cross = np.sum(p * i * j, axis=(0, 1))
    spread = (i + j) - ux - uy
    sig = sigx * sigy
    corr = np.divide(np.sum(p * (i - ux) * (j - uy), axis=(0, 1)), sig, out=np.ones_like(sig), where=sig > 0)
    hmax = np.maximum(hx, hy)
    imc1 = np.divide(hxy - hxy1, hmax, out=np.zeros_like(hmax), where=hmax > 0)
    imc2 = np.sqrt(np.clip(1 - np.exp(-2 * (hxy2 - hxy)), 0, None))
    inv_var = np.sum(pxy_diff[1:] / kd[1:] ** 2, axis=0)

    # Maximal correlation coefficient: sqrt of the second largest eigenvalue of
    # Q(i, j) = sum_k p(i, k) p(j, k) / (px(i) py(k)).
    mcc = np.empty(n_angles)
    for a in range(n_angles):
        pa = p[:, :, a]
        q = (pa / (px[:, a][:, None] * py[:, a][None, :] + EPS)) @ pa.T
        ev = np.sort(np.linalg.eigvals(q).real)
        mcc[a] = np.sqrt(max(ev[-2], 0.0)) if ev.size >= 2 else 1.0

    per_angle = {
        "Autocorrelation": cross,
        "JointAverage": ux,
        "ClusterProminence": np.sum(spread**4 * p, axis=(0, 1)),
        "ClusterShade": np.sum(spread**3 * p, axis=(0, 1)),
        "ClusterTendency": np.sum(spread**2 * p, axis=(0, 1)),
        "Contrast": np.sum((i - j) ** 2 * p, axis=(0, 1)),
        "Correlation": corr,
        "DifferenceAverage": diff_avg,
        "DifferenceEntropy": -np.sum(pxy_diff * np.log2(pxy_diff + EPS), axis=0),
        "DifferenceVariance": np.sum((kd - diff_avg) ** 2 * pxy_diff, axis=0),
        "JointEnergy": np.sum(p**2, axis=(0, 1)),
        "JointEntropy": hxy,
        "Imc1": imc1,
        "Imc2": imc2,
        "Idm": np.sum(pxy_diff / (1 + kd**2), axis=0),
        "Idmn": np.sum(pxy_diff / (1 + kd**2 / ng**2), axis=0),
        "Id": np.sum(pxy_diff / (1 + kd), axis=0),
        "Idn": np.sum(pxy_diff / (1 + kd / ng), axis=0),
        "InverseVariance": inv_var,
        "MaximumProbability": p.max(axis=(0, 1)),
        "MCC": mcc,
        "SumAverage": np.sum(ks * pxy_sum, axis=0),
        "SumEntropy": -np.sum(pxy_sum * np.log2(pxy_sum + EPS), axis=0),
        "SumSquares": np.sum((i - ux) ** 2 * p, axis=(0, 1)),
    }
    return {name: float(np.mean(per_angle[name])) for name in GLCM}


# --- all together ----------------------------------------------------------------------


def features(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    bin_width: float = 25.0,
    voxel_array_shift: float = 0.0,
) -> dict[str, float]:
    """First-order, shape and GLCM features of the ROI, named and ordered as :data:`FEATURE_NAMES`.

    Parameters
    ----------
    image : voxel values (HU for CT), (z, y, x).
    mask : ROI, same shape; non-zero is inside.
    spacing : voxel size in mm, (z, y, x).
    bin_width : grey-level bin width for Entropy, Uniformity and the GLCM.
    voxel_array_shift : added to the values for Energy, TotalEnergy and RootMeanSquared.
    """
    img = np.asarray(image)
    roi = np.asarray(mask) != 0
    if img.shape != roi.shape:
        raise RadiomicsError(f"image {img.shape} and mask {roi.shape} differ in shape")
    if not roi.any():
        raise RadiomicsError("empty ROI")
    if not bin_width > 0:
        raise RadiomicsError(f"bin_width must be positive, not {bin_width}")
    # Work on the ROI's bounding box plus one voxel: every feature only sees the ROI.
    idx = np.argwhere(roi)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = idx.max(axis=0) + 2
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    img, roi = img[box].astype(np.float64), roi[box]
    sp = np.asarray(spacing, dtype=np.float64)

    values = img[roi]
    levels = np.zeros(img.shape, dtype=np.int64)
    levels[roi] = discretise(values, bin_width)

    out: dict[str, float] = {}
    for name, value in firstorder(values, float(np.prod(sp)), bin_width, voxel_array_shift).items():
        out[f"original_firstorder_{name}"] = value
    for name, value in shape(roi, sp).items():
        out[f"original_shape_{name}"] = value
    for name, value in glcm(levels).items():
        out[f"original_glcm_{name}"] = value
    return {name: out[name] for name in FEATURE_NAMES}
