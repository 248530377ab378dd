"""Marching-cubes shape features: the lookup table, convex solids against Qhull, vertices against skimage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist
from skimage.measure import marching_cubes

from pipeline.ct import radiomics_features as rad

EDGE_CORNERS = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def _blob(seed: int, shape: tuple[int, int, int] = (7, 8, 9), p: float = 0.55) -> np.ndarray:
    """A random mask: many ambiguous cube configurations, several components."""
    return np.random.default_rng(seed).random(shape) < p


def test_edge_midpoints_lie_between_their_corners():
    corners = rad._CUBE_CORNERS
    for e, (a, b) in enumerate(EDGE_CORNERS):
        assert np.array_equal(rad._EDGE_MIDPOINTS[e], (corners[a] + corners[b]) / 2)


@pytest.mark.parametrize("code", range(128))
def test_table_cuts_exactly_the_crossing_edges_with_outward_normals(code):
    inside = [(code >> k) & 1 for k in range(8)]
    crossing = {e for e, (a, b) in enumerate(EDGE_CORNERS) if inside[a] != inside[b]}
    row = rad._TRIANGLES[code]
    tris = [[int(ch, 16) for ch in row[i : i + 3]] for i in range(0, len(row), 3)]
    assert {e for t in tris for e in t} == crossing
    assert len(tris) <= 5
    for t in tris:
        assert len(set(t)) == 3
        p = rad._EDGE_MIDPOINTS[t]
        normal = np.cross(p[1] - p[0], p[2] - p[0])
        # Each vertex sits on an edge from an ROI corner to a background corner;
        # the normal must point along those edges, out of the ROI.
        outward = 0.0
        for e in t:
            a, b = EDGE_CORNERS[e]
            step = rad._CUBE_CORNERS[b] - rad._CUBE_CORNERS[a]
            outward += float(normal @ step) * (1 if inside[a] else -1)
        assert outward > 0, (code, t)


@pytest.mark.parametrize(
    ("block", "spacing"),
    [
        ((1, 1, 1), (1.0, 1.0, 1.0)),
        ((2, 3, 4), (2.0, 1.0, 0.5)),
        ((5, 2, 3), (6.5, 0.78125, 0.78125)),
        ((3, 3, 3), (1.3, 0.7, 2.2)),
    ],
)
def test_box_mesh_is_its_convex_hull(block, spacing):
    # The mesh of a box of voxels is convex (faces on the voxel boundary, edges
    # and corners bevelled), so Qhull's volume and area of its vertices are an
    # independent truth for MeshVolume and SurfaceArea.
    mask = np.zeros(tuple(n + 4 for n in block), dtype=bool)
    mask[tuple(slice(2, 2 + n) for n in block)] = True
    s = rad.shape(mask, spacing)
    verts = rad._surface_vertices(mask, np.asarray(spacing))
    hull = ConvexHull(verts)
    assert s["MeshVolume"] == pytest.approx(hull.volume, rel=1e-12)
    assert s["SurfaceArea"] == pytest.approx(hull.area, rel=1e-12)
    assert s["Maximum3DDiameter"] == pytest.approx(float(pdist(verts).max()), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_vertices_and_diameters_match_skimage_vertices(seed):
    # skimage's marching cubes at 0.5 on the padded mask puts its vertices on the
    # same edge midpoints; diameters are then brute-force pairwise maxima.
    mask = _blob(seed)
    spacing = np.array([2.5, 0.8, 0.6])
    verts_sk, _, _, _ = marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5, spacing=tuple(spacing), method="lorensen")
    ours = rad._surface_vertices(mask, spacing)
    offset = ours.min(axis=0) - verts_sk.min(axis=0)  # both start at the padded box's first voxel plane
    as_set = lambda v: {tuple(np.round(x / spacing * 2).astype(int)) for x in v}  # noqa: E731
    assert as_set(ours) == as_set(verts_sk + offset)

    s = rad.shape(mask, spacing)
    assert s["Maximum3DDiameter"] == pytest.approx(float(pdist(verts_sk).max()), rel=1e-12)
    key = np.rint(verts_sk / spacing * 2).astype(int)
    for axis, name in enumerate(("Slice", "Column", "Row")):
        best = 0.0
        for k in np.unique(key[:, axis]):
            plane = verts_sk[key[:, axis] == k]
            if len(plane) > 1:
                best = max(best, float(pdist(plane).max()))
        assert s[f"Maximum2DDiameter{name}"] == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_result_does_not_depend_on_how_the_mask_was_cropped(seed):
    # Ambiguous cubes can leave the surface open, so the signed volume depends
    # on the origin; the walk always starts at the bounding box minus one voxel,
    # as pyradiomics does, whatever margin the caller leaves.
    mask = _blob(seed)
    spacing = (3.0, 0.7, 0.9)
    ref = rad.shape(mask, spacing)
    for pad in itertools.product((0, 1, 3), repeat=3):
        got = rad.shape(np.pad(mask, [(p, 3 - p) for p in pad]), spacing)
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), (pad, k)


def test_complemented_cubes_reverse_the_normal():
    # Around a 2 x 2 x 2 block, cubes with corner 7 in the ROI use their
    # complement's triangles with the sign reversed; the total must still be the
    # (convex) solid's volume.
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    tri, sign = rad.mesh_triangles(mask, (1.0, 1.0, 1.0))
    assert (sign < 0).any() and (sign > 0).any()
    volume = float(np.sum(sign * np.einsum("ij,ij->i", np.cross(tri[:, 0], tri[:, 1]), tri[:, 2]))) / 6
    assert volume == pytest.approx(ConvexHull(rad._surface_vertices(mask, np.ones(3))).volume, rel=1e-12)


def test_empty_mask_is_refused():
    with pytest.raises(rad.RadiomicsError, match="empty ROI"):
        rad.shape(np.zeros((3, 3, 3), dtype=bool), (1.0, 1.0, 1.0))
