"""Thinning of drawn curves: a figure of a million points costs what one of a few hundred does, and stays
within a stated tolerance of the exact curve (the stored ``curves.json`` keeps every point)."""

from __future__ import annotations

import numpy as np

THIN_TOLERANCE = 0.001
"""How far a drawn curve may depart from the exact one, as a fraction of each axis's span."""
PRE_THIN_ABOVE = 5000  # vertices above which a vectorised pass thins before RDP (see :func:`thin`)


def thin(x: np.ndarray, y: np.ndarray, tolerance: float = THIN_TOLERANCE,
         span: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of the polyline ``(x, y)`` that the Ramer–Douglas–Peucker algorithm keeps (Ramer 1972;
    Douglas & Peucker 1973): every dropped vertex lies within ``tolerance`` of the kept polyline, distances
    measured with each axis scaled by its ``span`` (the axis's drawn range), so the figure of a curve of a
    million points costs what one of a few hundred does. The first and last vertices are always kept; a
    non-finite vertex is kept with its neighbours (a gap in a line stays a gap). Above
    :data:`PRE_THIN_ABOVE` vertices one vectorised pass drops the vertices close to a kept one first, and
    RDP runs with what is left of the tolerance, so the time grows linearly with the vertices.

    Parameters
    ----------
    x, y
        The vertices, in drawing order.
    tolerance
        The largest distance of a dropped vertex from the kept polyline, in units of each axis's span.
    span
        The drawn range of the x and y axes.

    Returns
    -------
    tuple of numpy.ndarray
        The kept vertices' x and y.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size <= 2:
        return x, y
    u, v = x / (span[0] or 1.0), y / (span[1] or 1.0)
    finite = np.isfinite(u) & np.isfinite(v)
    if x.size > PRE_THIN_ABOVE and finite.all():
        # one vectorised pass first: of each run of vertices in one square of side tolerance / 4 only the run's
        # first and last stay; a dropped vertex is within the square's diagonal (0.354 tolerance) of a kept one,
        # so RDP then runs with the rest of the tolerance over at most a few thousand vertices
        cell = tolerance / 4
        cu, cv = np.floor(u / cell), np.floor(v / cell)
        moved = (cu[1:] != cu[:-1]) | (cv[1:] != cv[:-1])
        pre = np.flatnonzero(np.concatenate([[True], moved]) | np.concatenate([moved, [True]]))
        keep = _rdp(u[pre], v[pre], finite[pre], tolerance - cell * np.sqrt(2.0))
        return x[pre][keep], y[pre][keep]
    keep = _rdp(u, v, finite, tolerance)
    return x[keep], y[keep]


def _rdp(u: np.ndarray, v: np.ndarray, finite: np.ndarray, tolerance: float) -> np.ndarray:
    """The mask of the vertices RDP keeps of the polyline ``(u, v)`` (axes already scaled) at ``tolerance``."""
    n = u.size
    keep = np.zeros(n, dtype=bool)
    keep[[0, -1]] = True
    if not finite.all():  # a NaN breaks the line: keep it and its neighbours, thin the finite runs between
        bad = np.flatnonzero(~finite)
        keep[bad] = True
        keep[np.clip(bad - 1, 0, n - 1)] = True
        keep[np.clip(bad + 1, 0, n - 1)] = True
    anchors = np.flatnonzero(keep)
    a, b = anchors[:-1], anchors[1:]
    open_ = (b - a > 1) & finite[a] & finite[b]
    a, b = a[open_], b[open_]
    # every open segment of one depth of the recursion at once (the segments split do not depend on the order
    # they are visited in, so this keeps what the one-segment-at-a-time recursion keeps, in a few array passes)
    while a.size:
        inner = b - a - 1
        first = np.concatenate([[0], np.cumsum(inner)[:-1]])
        seg = np.repeat(np.arange(a.size), inner)
        idx = a[seg] + 1 + (np.arange(seg.size) - first[seg])
        du, dv = (u[b] - u[a])[seg], (v[b] - v[a])[seg]
        pu, pv = u[idx] - u[a][seg], v[idx] - v[a][seg]
        length2 = du * du + dv * dv
        flat = length2 == 0
        # distance to the segment (not the infinite line): a curve that turns back is kept where it turns
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip((pu * du + pv * dv) / length2, 0.0, 1.0)
        t[flat] = 0.0
        dist = np.hypot(pu - t * du, pv - t * dv)
        peak = np.maximum.reduceat(dist, first)
        # the first vertex at each segment's largest distance (np.argmax's choice)
        at_peak = np.flatnonzero(dist == peak[seg])
        _, where = np.unique(seg[at_peak], return_index=True)
        split = peak > tolerance
        m = idx[at_peak[where]][split]
        keep[m] = True
        a, b = a[split], b[split]
        left, right = m - a > 1, b - m > 1
        a, b = np.concatenate([a[left], m[right]]), np.concatenate([m[left], b[right]])
    return keep


def thin_steps(x: np.ndarray, *ys: np.ndarray, tolerance: float = THIN_TOLERANCE,
               span: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, ...]:
    """A right-continuous step function (``drawstyle="steps-post"``) of one or more ``ys`` over ``x``, as
    polylines thinned by :func:`thin` (each ``y`` its own): ``(x_0, y_0, x_1, y_1, ...)``. The steps become
    explicit vertices first, so the thinned line is drawn as a plain line and still steps where the
    exact one does (to within ``tolerance``)."""
    x = np.asarray(x, dtype=np.float64)
    out: list[np.ndarray] = []
    for y in ys:
        y = np.asarray(y, dtype=np.float64)
        if x.size < 2:
            out += [x, y]
            continue
        sx = np.repeat(x, 2)[1:]
        sy = np.repeat(y, 2)[:-1]
        out += list(thin(sx, sy, tolerance, span))
    return tuple(out)


def thin_rug(values: np.ndarray, tolerance: float = THIN_TOLERANCE, span: float = 1.0) -> np.ndarray:
    """The distinct positions of a rug of ``values`` to within ``tolerance`` of the axis ``span`` (each value
    moved to the nearest multiple of ``tolerance * span``): ticks closer than that draw as one."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    step = tolerance * (span or 1.0)
    return np.unique(np.round(values / step)) * step


__all__ = ["PRE_THIN_ABOVE", "THIN_TOLERANCE", "thin", "thin_rug", "thin_steps"]
