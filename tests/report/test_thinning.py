"""Figures thinned by Ramer–Douglas–Peucker: the drawn curve stays within the stated tolerance of the exact one."""

from __future__ import annotations

import numpy as np

from analytics import figures
from analytics.stats.thresholds import roc_curve


def _distance_to_polyline(px: np.ndarray, py: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Each point's distance to the polyline through ``(qx, qy)`` (every segment tried)."""
    ax, ay, dx, dy = qx[:-1], qy[:-1], np.diff(qx), np.diff(qy)
    length2 = np.where(dx * dx + dy * dy > 0, dx * dx + dy * dy, 1.0)
    out = np.empty(px.size)
    for start in range(0, px.size, 2000):
        x, y = px[start:start + 2000, None], py[start:start + 2000, None]
        t = np.clip(((x - ax) * dx + (y - ay) * dy) / length2, 0.0, 1.0)
        out[start:start + 2000] = np.hypot(x - ax - t * dx, y - ay - t * dy).min(axis=1)
    return out


def _exact_roc(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    score = np.round(rng.normal(y * 0.9, 1.0), 3)  # rounded: tied scores make diagonal steps
    roc = roc_curve(y, score)
    return 1.0 - roc.get_column("specificity").to_numpy()[::-1], roc.get_column("sensitivity").to_numpy()[::-1]


def test_thinned_roc_stays_within_the_tolerance_of_the_exact_curve() -> None:
    fpr, tpr = _exact_roc(20_000)
    tx, ty = figures.thin(fpr, tpr)
    assert tx.size < fpr.size / 10  # thinned
    assert (tx[0], ty[0], tx[-1], ty[-1]) == (fpr[0], tpr[0], fpr[-1], tpr[-1])  # the ends kept
    assert np.isin(tx, fpr).all() and np.isin(ty, tpr).all()  # kept vertices are exact vertices
    gap = _distance_to_polyline(fpr, tpr, tx, ty)
    assert gap.max() <= figures.THIN_TOLERANCE + 1e-12
    # a tighter tolerance keeps more, and still holds
    fx, fy = figures.thin(fpr, tpr, tolerance=1e-4)
    assert fx.size > tx.size and _distance_to_polyline(fpr, tpr, fx, fy).max() <= 1e-4 + 1e-12


def test_tolerance_is_a_fraction_of_each_axis_span() -> None:
    """A Kaplan-Meier step curve over 0..40 time units: the x tolerance is 0.001 of 40, the y one 0.001 of 1."""
    rng = np.random.default_rng(4)
    time = np.sort(rng.exponential(10, 5000))
    time = time[time < 40]
    surv = np.cumprod(1 - 1 / np.arange(time.size + 50, 50, -1))
    low, high = surv * 0.95, np.minimum(surv * 1.05, 1.0)
    sx, sy, lx, ly, hx, hy = figures.thin_steps(time, surv, low, high, span=(40.0, 1.0))
    exact_x, exact_y = np.repeat(time, 2)[1:], np.repeat(surv, 2)[:-1]
    assert sx.size < exact_x.size / 5
    gap = _distance_to_polyline(exact_x / 40.0, exact_y, sx / 40.0, sy)
    assert gap.max() <= figures.THIN_TOLERANCE + 1e-12
    exact_low = np.repeat(low, 2)[:-1]
    assert _distance_to_polyline(exact_x / 40.0, exact_low, lx / 40.0, ly).max() <= figures.THIN_TOLERANCE + 1e-12
    assert hx.size and hy.size


def test_gaps_and_short_curves_are_kept() -> None:
    x = np.linspace(0, 1, 101)
    y = x.copy()
    y[50] = np.nan
    tx, ty = figures.thin(x, y)
    assert np.isnan(ty).sum() == 1  # the break in the line stays
    assert {0.49, 0.51} <= set(np.round(tx, 2))  # with its neighbours
    one, two = figures.thin(np.array([0.5]), np.array([0.2])), figures.thin(np.array([0, 1.0]), np.array([0, 1.0]))
    assert one[0].tolist() == [0.5] and two[0].tolist() == [0.0, 1.0]


def test_rug_keeps_one_tick_per_tolerance_step_and_inputs_are_not_changed() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(100_000)
    before = p.copy()
    rug = figures.thin_rug(p)
    assert rug.size <= 1001 and np.abs(rug[:, None] - p[None, :200]).min(axis=0).max() <= 0.0005 + 1e-12
    np.testing.assert_array_equal(p, before)


def test_large_curves_draw_the_same_figure_as_their_thinned_copy() -> None:
    """The figure of 20,000 ROC points is the figure of its thinned vertices: what is drawn is the thinned curve."""
    fpr, tpr = _exact_roc(20_000, seed=1)
    tx, ty = figures.thin(fpr, tpr)
    exact = figures.roc_split_figure("external", [("m", fpr, tpr, "m: 0.700")])
    thinned = figures.roc_split_figure("external", [("m", tx, ty, "m: 0.700")])
    assert exact == thinned
