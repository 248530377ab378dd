"""Small clinical-only studies with degenerate data, written as files, for the never-crash tests.

A :class:`Design` says which degenerate cases a study holds (a model at or below chance, constant
predictions, a centre with one patient, a subgroup with one class, a column all missing in one split, a
calibration fit that cannot converge, a single feature, a survival model whose risks are all equal, no
event before a horizon); :func:`write_design` writes ``patients.csv``, the cohort and ``study.toml``.
The split comes from a cohort column, so each split's patients are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
from study_builders import study_toml, write_study


@dataclass(frozen=True)
class Design:
    """What one generated study holds.

    Attributes
    ----------
    n, centres, noise
        Patients (split 60/20/20 % train/internal/external), centres (the last one external), noise predictors.
    signal
        ``"null"`` (the label independent of every predictor), ``"weak"``, or ``"perfect"`` (``x0`` separates
        the classes: the recalibration fit cannot converge).
    constant
        A model on a column that is the same for every patient (constant predictions).
    single_patient_centre
        One more centre holding a single development patient.
    missing_split
        A predictor that is missing for every patient of this split (``""``: none).
    subgroup_one_class
        A subgroup variable one of whose groups holds only non-events.
    survival
        Adds time and event, a Cox model on the predictors, a Cox model on the constant column (all risks
        equal) and horizons; ``late_events``: no event before the first horizon.
    xgboost
        Adds a small xgboost model.
    added_value
        ``[validation] added_value`` of ``noise`` over ``single`` (NRI, IDI, reclassification at 0.3).
    seed
        Of the simulated data.
    """

    n: int = 80
    centres: int = 2
    noise: int = 2
    signal: str = "null"
    constant: bool = False
    single_patient_centre: bool = False
    missing_split: str = ""
    subgroup_one_class: bool = False
    survival: bool = False
    late_events: bool = False
    xgboost: bool = False
    added_value: bool = False
    seed: int = 0

    def models(self) -> list[str]:
        """The model names the study defines."""
        names = ["single", "noise"]
        if self.constant:
            names.append("flat")
        if self.xgboost:
            names.append("boost")
        if self.survival:
            names += ["cox", "cox_flat"]
        return names


def patients(d: Design) -> pl.DataFrame:
    """The patients of a design: ids, centre, split, label, predictors (and follow-up)."""
    rng = np.random.default_rng(d.seed)
    n = d.n
    n_ext = max(4, n // 5)
    n_int = max(4, n // 5)
    split = np.array(["train"] * (n - n_int - n_ext) + ["internal"] * n_int + ["external"] * n_ext)
    dev_centres = [f"C{i}" for i in range(max(1, d.centres - 1))]
    centre = np.where(split == "external", "EXT", np.array(dev_centres)[np.arange(n) % len(dev_centres)]).astype(object)
    x = rng.normal(size=(n, max(1, d.noise)))
    if d.signal == "null":
        label = (rng.random(n) < 0.35).astype(int)
    elif d.signal == "weak":
        label = (rng.random(n) < 1 / (1 + np.exp(-(0.8 * x[:, 0] - 0.6)))).astype(int)
    else:  # perfect separation on x0
        label = (x[:, 0] > 0.3).astype(int)
    # every split needs both classes (the split check refuses one otherwise)
    for s in ("train", "internal", "external"):
        idx = np.flatnonzero(split == s)
        label[idx[0]], label[idx[1]] = 1, 0
        if d.signal == "perfect":
            x[idx[0], 0], x[idx[1], 0] = 1.0, -1.0
    if d.single_patient_centre:
        centre[0] = "SOLO"
    cols: dict[str, object] = {
        "patient_id": [f"P{i:03d}" for i in range(n)], "center": centre.tolist(), "split": split.tolist(),
        "label": label,
    }
    for j in range(x.shape[1]):
        cols[f"x{j}"] = x[:, j].round(4)
    miss = x[:, -1].round(4).astype(object)
    if d.missing_split:
        miss[split == d.missing_split] = None
    cols["m"] = pl.Series(miss.tolist(), dtype=pl.Float64)
    # varies among training patients, constant elsewhere: the final model's predictions are all equal there
    cols["k"] = np.where(split == "train", x[:, 0], 0.0).round(4)
    group = np.where(np.arange(n) % 2 == 0, "a", "b").astype(object)
    if d.subgroup_one_class:
        group[(label == 0) & (np.arange(n) % 3 == 0)] = "c"  # group c: non-events only
    cols["grp"] = group.tolist()
    if d.survival:
        base = rng.exponential(20.0, n)
        t_event = base + (15.0 if d.late_events else 0.0)
        t_cens = rng.uniform(5.0, 60.0, n) + (15.0 if d.late_events else 0.0)
        time = np.minimum(t_event, t_cens).round(3)
        event = (t_event <= t_cens).astype(int)
        for s in ("train", "internal", "external"):
            idx = np.flatnonzero(split == s)
            event[idx[2]] = 1
        cols["time"], cols["event"] = time, event
    return pl.DataFrame(cols)


def toml(d: Design) -> str:
    """``study.toml`` of a design: logistic models, optionally xgboost and Cox models; explain off."""
    noise = ", ".join(f'"x{j}"' for j in range(max(1, d.noise))) + ', "m"'
    body = f"""[[models]]
name = "single"
kind = "logistic"
clinical = ["x0"]
grid = {{ C = [1.0] }}
[[models]]
name = "noise"
kind = "logistic"
clinical = [{noise}]
grid = {{ C = [1.0] }}
"""
    if d.constant:
        body += '[[models]]\nname = "flat"\nkind = "logistic"\nclinical = ["k"]\ngrid = { C = [1.0] }\n'
    if d.xgboost:
        body += ('[[models]]\nname = "boost"\nkind = "xgboost"\nclinical = [' + noise + ']\n'
                 'grid = { n_estimators = [5], max_depth = [2] }\n')
    if d.survival:
        body += (f'[[models]]\nname = "cox"\nkind = "cox"\nclinical = [{noise}]\nparams = {{ penalizer = 0.1 }}\n'
                 '[[models]]\nname = "cox_flat"\nkind = "cox"\nclinical = ["k"]\nparams = { penalizer = 0.1 }\n')
    body += "[validation]\nn_boot = 20\nfolds = 3\nsubgroups = { grp = {} }\n"
    if d.added_value:
        body += 'added_value = [["noise", "single"]]\nrisk_cutoffs = [0.3]\n'
    if d.survival:
        body += "horizons = [5, 15]\n"
    body += "[explain]\nenabled = false\n"
    return study_toml("degenerate", d.seed, body, split='column = "split"')


def write_design(root: Path, d: Design) -> Path:
    """Write the study of ``d`` under ``root``; returns the path of ``study.toml``."""
    frame = patients(d)
    cols = [c for c in frame.columns if c not in ("patient_id", "center")]
    return write_study(root, frame, ", ".join(f"c.{c}" for c in cols), toml(d))


# --- what a report must hold: every model, and a reason for every missing number -------------------------------

# tables of numbers: every cell holds a number, or "–" with class "na" and the reason as its title
METRIC_TABLES = frozenset({"headline", "performance", "centers", "sample-size", "subgroups", "comparisons",
                           "added-value", "models"})
BARE = re.compile(r"(?<![\w-])(nan|NaN|None|inf|-inf|null)(?![\w-])")


@dataclass
class CellRecord:
    """One table cell (or ``data-metric`` element) of a report: where, its classes, title and text."""

    table: str
    classes: tuple[str, ...]
    title: str | None
    text: str
    metric: str | None


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[str] = []
        self.cells: list[CellRecord] = []
        self.ids: set[str] = set()
        self.open: list[tuple[str, dict[str, str | None], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "table":
            self.tables.append((a.get("class") or "").split(" ")[0])
        if tag == "td" or (tag == "span" and ("data-metric" in a or "na" in (a.get("class") or "").split())):
            self.open.append((tag, a, []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.tables:
            self.tables.pop()
        if self.open and self.open[-1][0] == tag:
            _, a, buf = self.open.pop()
            self.cells.append(CellRecord(self.tables[-1] if self.tables else "", tuple((a.get("class") or "").split()),
                                         a.get("title"), "".join(buf).strip(), a.get("data-metric")))
            if self.open:
                self.open[-1][2].extend(buf)

    def handle_data(self, data: str) -> None:
        if self.open:
            self.open[-1][2].append(data)


def report_problems(html: str, models: list[str]) -> list[str]:
    """What breaks the report's promises: a model missing, a bare nan/None/inf or empty number cell, or a
    missing number ("–") without class ``na`` and a non-empty reason."""
    parser = _Cells()
    parser.feed(html)
    problems = [f"model {m}: no row in the models table" for m in models if f"model-{m}" not in parser.ids]
    problems += [f"model {m}: no performance table" for m in models if f"performance-{m}" not in parser.ids]
    for c in parser.cells:
        if c.table not in METRIC_TABLES and c.metric is None and "na" not in c.classes:
            continue
        if "note" in c.classes or (c.table == "models" and "num" not in c.classes):
            continue  # notes and descriptions, not numbers
        where = f"{c.table or 'text'} cell {c.metric or ''} {c.text!r}"
        if c.text == "" and c.table != "sample-size":
            problems.append(f"{where}: empty")
        if BARE.search(c.text):
            problems.append(f"{where}: a bare undefined value")
        if c.text in ("–", "—"):
            if "na" not in c.classes or not (c.title or "").strip():
                problems.append(f"{where}: a missing number without a reason (class na and a title)")
    return problems
