"""The TRIPOD+AI checklist: every item of Collins et al. (BMJ 2024), filled only from what the run knows."""

from __future__ import annotations

from analytics.report import tripod

# TRIPOD+AI item numbers as published (BMJ 2024;385:e078378, Table 1): 27 items, with these sub-items.
PUBLISHED = (
    "1 2 3a 3b 3c 4 5a 5b 6a 6b 6c 7 8a 8b 8c 9a 9b 9c 10 11 12a 12b 12c 12d 12e 12f 12g 13 14 15 16 17 "
    "18a 18b 18c 18d 18e 18f 19 20a 20b 20c 21 22 23a 23b 24 25 26 27a 27b 27c"
).split()


def test_items_are_the_published_ones_in_order() -> None:
    assert [i.number for i in tripod.ITEMS] == PUBLISHED
    assert all(i.requirement and i.topic for i in tripod.ITEMS)


def test_an_empty_run_leaves_everything_to_the_author() -> None:
    rows = tripod.checklist(tripod.RunFacts())
    assert len(rows) == len(PUBLISHED)
    filled = [r.item.number for r in rows if r.filled]
    assert filled == ["18f"]  # only the code version is always known
    assert all(r.text == "" for r in rows if not r.filled)


def test_a_full_run_fills_the_items_it_can_answer() -> None:
    facts = tripod.RunFacts(
        centers=("A", "B"), external_centers=("B",), cohort="demo", cohort_params="min_age=18", n_store=60,
        n_cohort=58, n_labelled=58, n_events=22, split_rule="external = B", feature_sets="wsi (resnet18)",
        random_weights=("wsi",), models="svm on wsi", threshold_rules=("youden (train)",),
        per_analysis=("svm/train: 30 patients, 11 events",), missing=("age 2 (3.4%)",), excluded=("2 without an outcome",),
        has_metrics=True, has_centers=True, has_survival=True, has_comparisons=True, code_version="0.1.0",
        has_table1=True, n_boot=500,
    )
    rows = {r.item.number: r for r in tripod.checklist(facts)}
    for n in ("6b", "7", "11", "12a", "12c", "12d", "12e", "15", "20a", "20b", "20c", "21", "23a", "23b"):
        assert rows[n].status == tripod.FILLED, n
        assert rows[n].links, n
    for n in ("6a", "9b", "10", "12b", "16", "22"):
        assert rows[n].status == tripod.PARTLY, n
    for n in ("1", "3a", "5b", "8a", "13", "14", "17", "18a", "19", "24", "25", "26", "27a"):
        assert rows[n].status == tripod.AUTHOR, n
    assert "58 patients in the cohort" in rows["10"].text and "22 events" in rows["10"].text
    assert "random, untrained" in rows["7"].text
    assert "svm/train: 30 patients, 11 events" in rows["21"].text
    assert "500 resamples" in rows["12e"].text and "C-index" in rows["12e"].text
