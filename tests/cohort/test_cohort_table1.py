"""Table 1 on a real data set (GBSG2, 686 breast-cancer patients), checked against scipy and pandas.

Centres: a patient is at centre "B" (external) when crc32 of its row number
(as decimal text) is divisible by 4, else at "A". Label: ``cens`` (1 =
recurrence or death). Published facts used as fixed points (Schumacher et al.
1994; R's TH.data::GBSG2): 686 patients, 299 events, 246 on hormone therapy.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines.datasets import load_gbsg2
from scipy import stats as sps

from analytics.cohort import load_cohort
from analytics.table1 import table1

from cohort_helpers import build_store, make_study

CONTINUOUS = ["age", "tsize", "pnodes", "progrec", "estrec"]
CATEGORICAL = ["horTh", "menostat", "tgrade"]
VARIABLES = [
    {"name": "horTh", "type": "categorical", "label": "Hormone therapy", "levels": ["no", "yes"]},
    {"name": "age", "type": "integer", "unit": "years", "label": "Age"},
    {"name": "menostat", "type": "categorical", "label": "Menopausal status", "levels": ["Post", "Pre"]},
    {"name": "tsize", "type": "integer", "unit": "mm", "label": "Tumour size"},
    {"name": "tgrade", "type": "categorical", "label": "Tumour grade", "levels": ["I", "II", "III"]},
    {"name": "pnodes", "type": "integer", "label": "Positive nodes"},
    {"name": "progrec", "type": "integer", "unit": "fmol/l", "label": "Progesterone receptor"},
    {"name": "estrec", "type": "integer", "unit": "fmol/l", "label": "Oestrogen receptor"},
    {"name": "time", "type": "integer", "unit": "days", "role": "time"},
    {"name": "cens", "type": "binary", "role": "outcome"},
]
COHORT = ("SELECT patient_id, center, cens AS label, time, cens AS event, horTh, age, menostat, tsize, tgrade, "
          "pnodes, progrec, estrec FROM patient_clinical")


def gbsg2() -> pd.DataFrame:
    d = load_gbsg2().reset_index(drop=True)
    d.insert(0, "patient_id", [f"G{i:03d}" for i in range(len(d))])
    d.insert(1, "center", ["B" if zlib.crc32(str(i).encode()) % 4 == 0 else "A" for i in range(len(d))])
    return d


@pytest.fixture(scope="module")
def gbsg2_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("gbsg2")
    build_store(root / "store.duckdb", pl.from_pandas(gbsg2()), VARIABLES)
    study = make_study(root, cohorts={"gbsg2": COHORT},
                       split={"external_centers": ["B"], "internal_fraction": 0.25, "seed": 0})
    cohort = load_cohort(study, "gbsg2")
    truth = gbsg2().set_index("patient_id").loc[cohort.patient_ids]
    truth["split"] = cohort.split
    return cohort, cohort.table1(), truth


def _groups(truth: pd.DataFrame):
    yield "cohort", truth
    for g in ("train", "internal", "external"):
        yield g, truth[truth["split"] == g]


def test_published_counts(gbsg2_cohort):
    cohort, t1, truth = gbsg2_cohort
    n_row = t1.frame.row(0, named=True)
    assert (n_row["cohort | all"], n_row["cohort | label 1"], n_row["cohort | label 0"]) == ("686", "299", "387")
    yes = t1.stats.filter((pl.col("variable") == "horTh") & (pl.col("level") == "yes") &
                          (pl.col("group") == "cohort") & (pl.col("outcome") == "all"))
    assert yes["count"].item() == 246
    assert t1.groups == ("cohort", "train", "internal", "external")
    assert sum(int(n_row[f"{g} | all"]) for g in ("train", "internal", "external")) == 686


def _normal(x: pd.Series, y: pd.Series) -> bool:
    return all(sps.shapiro(x[y == k]).pvalue >= 0.05 for k in (0, 1))


def test_continuous_summaries_and_tests_match_scipy(gbsg2_cohort):
    cohort, t1, truth = gbsg2_cohort
    stats, tests = t1.stats, t1.tests
    for var in CONTINUOUS:
        normal = _normal(truth[var], truth["cens"])
        for group, part in _groups(truth):
            for outcome, sub in (("all", part), ("0", part[part.cens == 0]), ("1", part[part.cens == 1])):
                row = stats.filter((pl.col("variable") == var) & (pl.col("group") == group) &
                                   (pl.col("outcome") == outcome)).to_dicts()[0]
                x = sub[var].astype(float)
                assert row["normal"] == normal
                assert row["n"] == len(x) and row["missing"] == 0
                assert row["mean"] == pytest.approx(x.mean(), rel=1e-12)
                assert row["sd"] == pytest.approx(x.std(ddof=1), rel=1e-12)
                assert row["median"] == pytest.approx(x.median(), rel=1e-12)
                assert (row["q1"], row["q3"]) == pytest.approx((x.quantile(0.25), x.quantile(0.75)), rel=1e-12)
            a, b = part[part.cens == 0][var], part[part.cens == 1][var]
            ref = sps.ttest_ind(a, b, equal_var=False) if normal else sps.mannwhitneyu(a, b, alternative="two-sided")
            got = tests.filter((pl.col("variable") == var) & (pl.col("group") == group)).to_dicts()[0]
            assert got["test"] == ("Welch t" if normal else "Mann-Whitney U")
            assert got["p"] == pytest.approx(ref.pvalue, rel=1e-10)


def test_categorical_counts_and_tests_match_scipy(gbsg2_cohort):
    cohort, t1, truth = gbsg2_cohort
    for var in CATEGORICAL:
        for group, part in _groups(truth):
            table = pd.crosstab(part[var], part["cens"])
            for level in table.index:
                for outcome in ("0", "1"):
                    row = t1.stats.filter((pl.col("variable") == var) & (pl.col("level") == level) &
                                          (pl.col("group") == group) & (pl.col("outcome") == outcome)).to_dicts()[0]
                    k = int(outcome)
                    assert row["count"] == table.loc[level, k]
                    assert row["percent"] == pytest.approx(100 * table.loc[level, k] / table[k].sum(), rel=1e-12)
            chi2, p, _, expected = sps.chi2_contingency(table.to_numpy())
            got = t1.tests.filter((pl.col("variable") == var) & (pl.col("group") == group)).to_dicts()[0]
            if (expected >= 5).all():
                assert got["test"] == "chi-square" and got["p"] == pytest.approx(p, rel=1e-10)
            elif table.shape == (2, 2):
                assert got["test"] == "Fisher exact"
                assert got["p"] == pytest.approx(sps.fisher_exact(table.to_numpy()).pvalue, rel=1e-10)
            else:
                assert got["test"] == "Fisher exact (Monte Carlo)"


def test_display_uses_labels_units_and_the_rule(gbsg2_cohort):
    cohort, t1, truth = gbsg2_cohort
    shown = t1.frame["variable"].to_list()
    assert "Age (years)" in shown and "Tumour size (mm)" in shown and "Hormone therapy" in shown
    assert "time" not in shown and "cens" not in shown  # roles time / outcome are not baseline variables
    age = t1.frame.filter(pl.col("variable") == "Age (years)").row(0, named=True)
    x = truth["age"]
    if _normal(x, truth["cens"]):
        assert age["cohort | all"] == f"{x.mean():.1f} ± {x.std(ddof=1):.1f}"
    else:
        assert age["cohort | all"] == f"{x.median():.1f} [{x.quantile(0.25):.1f}, {x.quantile(0.75):.1f}]"
    grades = t1.frame.filter(pl.col("variable") == "").filter(pl.col("level").is_in(["I", "II", "III"]))
    assert grades["level"].to_list() == ["I", "II", "III"]  # declared level order
    n_i = int((truth.tgrade == "I").sum())
    assert grades.row(0, named=True)["cohort | all"] == f"{n_i} ({100 * n_i / 686:.1f}%)"


def test_csv_and_html(gbsg2_cohort, tmp_path):
    cohort, t1, truth = gbsg2_cohort
    again = cohort.table1().to_csv(tmp_path / "again.csv")
    assert again.read_bytes() == t1.to_csv(tmp_path / "first.csv").read_bytes()  # same inputs, same bytes
    back = pl.read_csv(t1.to_csv(tmp_path / "t1.csv"), infer_schema=False)
    assert back.fill_null("").equals(t1.frame.fill_null(""))
    html = t1.to_html()
    assert html.startswith('<table class="table1">')
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr") == t1.frame.height
    assert re.findall(r'<th colspan="5">(\w+)</th>', html) == list(t1.groups)


def test_hand_computed_fisher_and_missing_rows():
    # 2x2 table [[3, 1], [1, 3]]: hypergeometric two-sided p = (1 + 16 + 16 + 1) / 70
    frame = pl.DataFrame({
        "label": [0, 0, 0, 0, 1, 1, 1, 1, 1],
        "drug": ["a", "a", "a", "b", "a", "b", "b", "b", None],
        "dose": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0, None, 9.0],
        "note": ["<b>", "x", "x", "x", "x", "x", "x", "x", "x"],
    })
    t1 = table1(frame, columns=["drug", "dose", "note"])
    drug = t1.tests.filter(pl.col("variable") == "drug").to_dicts()[0]
    assert drug["test"] == "Fisher exact" and drug["p"] == pytest.approx(34 / 70, rel=1e-12)
    missing = t1.frame.filter(pl.col("level") == "missing")
    assert missing["cohort | all"].to_list() == ["1 (11.1%)", "2 (22.2%)"]  # drug, then dose
    assert missing["cohort | label 1"].to_list() == ["1 (20.0%)", "1 (20.0%)"]
    dose = t1.stats.filter((pl.col("variable") == "dose") & (pl.col("outcome") == "0")).to_dicts()[0]
    assert (dose["n"], dose["missing"], dose["mean"]) == (3, 1, pytest.approx(7 / 3))
    assert dose["normal"] is True  # Shapiro-Wilk p >= 0.05 on [1, 2, 4] and [5, 6, 7, 9]
    welch = t1.tests.filter(pl.col("variable") == "dose").to_dicts()[0]
    assert welch["test"] == "Welch t"
    assert welch["p"] == pytest.approx(sps.ttest_ind([1, 2, 4], [5, 6, 7, 9], equal_var=False).pvalue, rel=1e-12)
    assert "&lt;b&gt;" in t1.to_html() and "<b>" not in t1.to_html().split("<tbody>")[1]


def test_larger_tables_with_small_counts_use_a_seeded_monte_carlo_fisher():
    frame = pl.DataFrame({"label": [0] * 6 + [1] * 6,
                          "grade": ["I", "I", "I", "II", "II", "III", "II", "III", "III", "III", "III", "I"]})
    a = table1(frame, columns=["grade"]).tests.to_dicts()[0]
    b = table1(frame, columns=["grade"]).tests.to_dicts()[0]
    assert a["test"] == "Fisher exact (Monte Carlo)" and a["p"] == b["p"]
    exact = _freeman_halton(np.array([[3, 1], [2, 1], [1, 4]]))
    assert a["p"] == pytest.approx(exact, abs=0.01)  # 20,000 tables: Monte Carlo error about 0.003


def _freeman_halton(table: np.ndarray) -> float:
    """Exact r x 2 Freeman-Halton p by enumerating every table with the observed margins."""
    rows, col0 = table.sum(axis=1), table[:, 0].sum()
    def prob(t0):
        t = np.column_stack([t0, rows - t0])
        return sps.multivariate_hypergeom.pmf(t[:, 0], rows, col0)
    observed = prob(table[:, 0])
    total = 0.0
    for a in range(rows[0] + 1):
        for b in range(rows[1] + 1):
            c = col0 - a - b
            if 0 <= c <= rows[2]:
                p = prob(np.array([a, b, c]))
                if p <= observed * (1 + 1e-7):
                    total += p
    return total
