"""The Schoenfeld residual figure renders, and flags the terms whose proportional-hazards test has p < 0.05."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np

from analytics import figures
from analytics.stats.terms import Term
from analytics.stats.zph import cox_zph

FIXTURE = json.loads((Path(__file__).parent / "zph_lung.json").read_text())


def _zph():
    terms = [Term(k, (k,), tuple(np.atleast_1d(v).tolist())) for k, v in FIXTURE["assign"].items()]
    return cox_zph(np.array(FIXTURE["X"]), FIXTURE["time"], FIXTURE["status"], FIXTURE["coefficients"], terms)


def test_figure_renders_as_png() -> None:
    png = figures.schoenfeld_figure("cox: proportional hazards", figures.schoenfeld_panels(_zph()), "Days")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 600 and height > 400


def test_term_with_p_below_005_is_flagged_in_its_title() -> None:
    z = _zph()
    # R: ph.karno has p = 0.024 (the one term below 0.05), the others do not
    p = {t.term: t.p for t in z.tests}
    assert p["ph.karno"] < 0.05 and all(v >= 0.05 for k, v in p.items() if k != "ph.karno")
    panels = figures.schoenfeld_panels(z)
    with figures._styled():
        fig = figures.new_figure(8, 6)
        axes = figures.schoenfeld_axes(fig, panels)
    by_term = {pn.term: ax for pn, ax in zip(panels, axes)}
    flagged = by_term["ph.karno"].title
    assert "non-proportional" in flagged.get_text() and "p = 0.024" in flagged.get_text()
    assert mcolors.same_color(flagged.get_color(), figures.PH_FLAG_COLOR)
    calm = by_term["sex"].title
    assert "non-proportional" not in calm.get_text()
    assert not mcolors.same_color(calm.get_color(), figures.PH_FLAG_COLOR)
