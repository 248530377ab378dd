"""Radiomics features inside an ROI, with pyradiomics' names, definitions and defaults.

Three feature classes are computed from numpy arrays (no pyradiomics
dependency), following the pyradiomics documentation (van Griethuysen et al.,
"Computational Radiomics System to Decode the Radiographic Phenotype",
Cancer Research 2017; 77(21): e104-e107):

- first order (18 features) on the ROI's voxel values; ``Energy``,
  ``TotalEnergy`` and ``RootMeanSquared`` add ``voxel_array_shift`` to every
  value first (pyradiomics' ``voxelArrayShift``, default 0);
- shape in 3D (14 features) on the ROI mask: marching-cubes triangles, looked
  up cube by cube as in pyradiomics' C extension, for the surface, volume and
  diameters, and the eigenvalues of the voxel-coordinate covariance for the
  axis lengths;
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
from functools import lru_cache

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from pipeline.errors import CohortlabError

log = logging.getLogger("cohortlab.ct.radiomics")

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


class RadiomicsError(CohortlabError, ValueError):
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


# Marching cubes on a 0/1 mask (Lorensen and Cline, "Marching cubes: a high
# resolution 3D surface construction algorithm", SIGGRAPH 1987). A cube joins
# eight neighbouring voxel centres, numbered as in pyradiomics' C extension
# (cshape.c), offsets in (z, y, x):
_CUBE_CORNERS = np.array(
    [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0)], dtype=np.int64
)
# The twelve cube edges join corners (0,1) (1,2) (2,3) (3,0) (4,5) (5,6) (6,7) (7,4)
# (0,4) (1,5) (2,6) (3,7). A mask is cut at 0.5 between 0 and 1, so every surface
# vertex sits at the midpoint of its edge:
_EDGE_MIDPOINTS = np.array(
    [
        (0, 0, 0.5), (0, 0.5, 1), (0, 1, 0.5), (0, 0.5, 0),
        (1, 0, 0.5), (1, 0.5, 1), (1, 1, 0.5), (1, 0.5, 0),
        (0.5, 0, 0), (0.5, 0, 1), (0.5, 1, 1), (0.5, 1, 0),
    ]
)
_CUBE_CORNERS.flags.writeable = False
_EDGE_MIDPOINTS.flags.writeable = False
# Triangles for the 128 cube codes without corner 7 (bit k set when corner k is in
# the ROI); a code with corner 7 uses its complement's triangles with the normal,
# and hence the signed volume, reversed. Each string holds three hexadecimal edge
# numbers per triangle. These are the first 128 cases of the classic table
# (Lorensen and Cline 1987, as tabulated by Paul Bourke, "Polygonising a scalar
# field", 1994), with the diagonals of non-planar polygons and the triangle
# orientation (normal out of the ROI) chosen as in pyradiomics >= 2.1, whose
# SurfaceArea and MeshVolume this reproduces.
_TRIANGLES = (
    "", "083", "019", "183198", "12a", "08312a", "2a9029", "2832a88a9",
    "23b", "0b208b", "01923b", "1b219b8b9", "13a3ba", "0a108a8ba", "0393b99ba", "8a98ba",
    "478", "043347", "019478", "194147173", "12a478", "34704312a", "2a9029478", "2a9297273479",
    "47823b", "47b24b042", "01947823b", "47b4b929b192", "13a3ba478", "1ba14b04147b", "4780393b99ba", "47b4b99ba",
    "495", "495083", "054015", "485358153", "12a495", "08312a495", "2a5254024", "2a5253354348",
    "49523b", "0b208b495", "05401523b", "15225828b485", "13a3ba495", "4950a108a8ba", "0540b55ba03b", "48558a8ba",
    "789579", "093395357", "078017157", "157173", "78957912a", "12a093395357", "0282585782a5", "2a5253357",
    "57978923b", "57929709227b", "23b018178157", "1b217b157", "78957913a3ba", "05709507b0a10ba", "0ba03b0a5078057", "5ba57b",
    "5a6", "0835a6", "0195a6", "1831985a6", "165126", "165126083", "596069026", "598258265283",
    "23b5a6", "0b208b5a6", "01923b5a6", "1b219b8b95a6", "3b6365135", "08b0b50515b6", "3b6036065059", "59669b8b9",
    "4785a6", "0433475a6", "0194785a6", "1941471735a6", "478165126", "043347165126", "478596069026", "397479293596269",
    "23b4785a6", "47b24b0425a6", "01923b4785a6", "47b4b929b1925a6", "4783b6365135", "1b55b60b147b04b", "4783b6036065059", "59669b4797b9",
    "49a4a6", "49a4a6083", "01a0a6064", "1831684861a6", "149124264", "149124264083", "024264", "283248264",
    "23b49a4a6", "0b208b49a4a6", "23b01a0a6064", "1641a61481b218b", "4963691393b6", "18b0811b6149164", "3b6036064", "48668b",
    "67a78a89a", "67a0a709a073", "67a1a7178018", "67a1a7173", "126168189678", "269129679093397", "078067026", "273267",
    "23b67a78a89a", "07227b09767a79a", "67a1a717801823b", "1b217b1a6167", "6896781693b6136", "09167b", "07806703b0b6", "67b",
)


@lru_cache(maxsize=1)
def _triangle_lookup() -> tuple[np.ndarray, np.ndarray]:
    """:data:`_TRIANGLES` as arrays: edges (128, 5, 3), -1 where unused, and triangle counts (128,)."""
    edges = np.full((128, 5, 3), -1, dtype=np.int64)
    counts = np.zeros(128, dtype=np.int64)
    for code, row in enumerate(_TRIANGLES):
        tris = [[int(ch, 16) for ch in row[i : i + 3]] for i in range(0, len(row), 3)]
        counts[code] = len(tris)
        if tris:
            edges[code, : len(tris)] = tris
    edges.flags.writeable = False
    counts.flags.writeable = False
    return edges, counts


def _padded_box(mask: np.ndarray) -> np.ndarray:
    """The mask's bounding box padded by one empty voxel on every side.

    The origin matters: where ambiguous cube cases leave the surface open, the
    signed volume depends on it. pyradiomics crops shape input to the bounding
    box and pads it by one voxel; doing the same here makes the result
    independent of how the caller cropped.
    """
    idx = np.argwhere(mask)
    if len(idx) == 0:
        raise RadiomicsError("empty ROI: no surface")
    box = tuple(slice(a, b + 1) for a, b in zip(idx.min(axis=0), idx.max(axis=0)))
    return np.pad(mask[box], 1)


def mesh_triangles(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes triangles of a binary mask, cube by cube, without a shared-vertex mesh.

    Every 2 x 2 x 2 block of voxel centres of the padded bounding box (see
    :func:`_padded_box`) is coded by which corners lie in the ROI and its
    triangles are looked up in :data:`_TRIANGLES` (Lorensen and Cline 1987), as
    pyradiomics' ``cshape.c`` does.

    Parameters
    ----------
    mask : bool array in (z, y, x) order with at least one voxel set.
    spacing : voxel size in mm, same order.

    Returns
    -------
    points : (n, 3, 3) triangle corners in mm, relative to the padded box's first voxel.
    sign : (n,) +1, or -1 for triangles of a complemented code (their normal points into the ROI).
    """
    m = _padded_box(np.asarray(mask, dtype=bool))
    nz, ny, nx = (s - 1 for s in m.shape)
    code = np.zeros((nz, ny, nx), dtype=np.uint8)
    for bit, (dz, dy, dx) in enumerate(_CUBE_CORNERS):
        code |= m[dz : dz + nz, dy : dy + ny, dx : dx + nx].astype(np.uint8) << bit
    complemented = code >= 128
    code = np.where(complemented, code ^ 0xFF, code)
    cells = np.nonzero(code)
    cube = code[cells].astype(np.int64)
    edges, counts = _triangle_lookup()
    k = counts[cube]
    owner = np.repeat(np.arange(len(cube)), k)
    slot = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    corner = np.stack(cells, axis=1)[owner].astype(np.float64)
    points = (corner[:, None, :] + _EDGE_MIDPOINTS[edges[cube[owner], slot]]) * np.asarray(spacing, dtype=np.float64)
    sign = np.where(complemented[cells][owner], -1.0, 1.0)
    return points, sign


def _surface_vertices(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Mesh vertices in mm: the midpoint of every edge between an ROI voxel and a background voxel."""
    m = _padded_box(mask)
    out = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        v = np.argwhere(m[tuple(lo)] != m[tuple(hi)]).astype(np.float64)
        v[:, axis] += 0.5
        out.append(v)
    return np.concatenate(out) * spacing


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
    and each marching-cubes triangle (divergence theorem), ``SurfaceArea`` the
    triangle areas, both from :func:`mesh_triangles`. Diameters are taken
    between mesh vertices: ``Slice`` in planes of constant z (axial),
    ``Column`` of constant y, ``Row`` of constant x. Axis lengths are
    4 sqrt(eigenvalue) of the covariance of the voxel centres in mm
    (population normalisation).
    """
    m = np.asarray(mask, dtype=bool)
    sp = np.asarray(spacing, dtype=np.float64)
    n = int(m.sum())
    tri, sign = mesh_triangles(m, sp)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = float(np.sum(0.5 * np.linalg.norm(np.cross(a - c, b - c), axis=1)))
    volume = float(np.sum(sign * np.einsum("ij,ij->i", np.cross(a, b), c))) / 6.0
    verts = _surface_vertices(m, sp)

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
