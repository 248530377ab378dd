"""A binary model on a censored endpoint ("event by t"): beside its complete-case measures, validation
evaluates its probabilities at the label's horizon with IPCW on every patient with follow-up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from censored_helpers import HORIZON, censored_study, write_toml

from analytics import stats
from analytics.cohort import load_cohort
from analytics.fit import fit, stored_predictions
from analytics.validation.stage import validate
from pipeline.config import load_config
from pipeline.errors import CohortlabError

SPLITS = ("train", "internal", "external")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from analytics.report import write_report

    root = tmp_path_factory.mktemp("censored")
    study = censored_study(root)
    fit(study, progress=False)
    validate(study, progress=False, force=True)
    with_ipcw = json.loads((study.report_dir / "metrics.json").read_text())
    html = write_report(study, progress=False).path.read_text(encoding="utf-8")
    write_toml(root, "")  # the same study without label_horizon
    plain = load_config(root / "study.toml")
    validate(plain, progress=False, force=True)
    without = json.loads((plain.report_dir / "metrics.json").read_text())
    yield {"study": study, "ipcw": with_ipcw, "plain": without, "html": html}


def _followed(study: Any, model: str, split: str) -> pl.DataFrame:
    cohort = load_cohort(study)
    return (stored_predictions(study.store_path, model).filter(pl.col("split") == split)
            .join(cohort.frame.select("patient_id", "label", "time", "event"), on="patient_id")
            .filter(pl.col("time").is_not_null() & pl.col("event").is_not_null()))


def test_ipcw_measures_equal_time_auc_and_brier_on_every_followed_patient(run: dict[str, Any]) -> None:
    study, metrics = run["study"], run["ipcw"]
    for split in ("internal", "external"):
        part = _followed(study, "logit", split)
        # patients censored before the horizon have no label but are followed: IPCW uses them
        assert part["label"].null_count() > 0
        time, event = part["time"].to_numpy(), part["event"].to_numpy()
        prob = part["score"].to_numpy()
        m = metrics["models"]["logit"]["splits"][split]
        auc = stats.time_auc(time, event, prob, [HORIZON]).at(HORIZON)
        brier = stats.brier(time, event, prob, [HORIZON]).at(HORIZON)
        got_auc, got_brier = m[f"auc_ipcw_t{HORIZON:g}"], m[f"brier_ipcw_t{HORIZON:g}"]
        for got, want in ((got_auc, auc), (got_brier, brier)):
            assert got["estimate"] == pytest.approx(want.estimate, rel=1e-10)
            assert got["low"] == pytest.approx(want.low, rel=1e-10)
            assert got["high"] == pytest.approx(want.high, rel=1e-10)
            assert "IPCW" in got["method"] and f"{part.height} (" in got["method"]
        # the complete-case AUC uses only the labelled patients, and differs
        labelled = part.filter(pl.col("label").is_not_null())
        assert m["n"] == labelled.height < part.height
        assert m["auc"]["estimate"] == pytest.approx(stats.auc(labelled["label"].to_numpy(), labelled["score"].to_numpy()))
        assert abs(m["auc"]["estimate"] - got_auc["estimate"]) > 1e-4
        # Brier(t) by hand (Graf 1999): cases by t weighted 1/G(T-), event-free past t weighted 1/G(t)
        g_t, g_surv = stats.survival.censoring_km(time, event)

        def g(u: float, before: bool, g_t: np.ndarray = g_t, g_surv: np.ndarray = g_surv) -> float:
            k = np.searchsorted(g_t, u, side="left" if before else "right") - 1
            return float(g_surv[k]) if k >= 0 else 1.0
        case = (time <= HORIZON) & (event == 1)
        ctrl = time > HORIZON
        hand = (sum((1 - p) ** 2 / g(u, True) for u, p in zip(time[case], prob[case]))
                + (prob[ctrl] ** 2).sum() / g(HORIZON, False)) / len(time)
        assert got_brier["estimate"] == pytest.approx(hand, rel=1e-9)


def test_no_ipcw_where_followed_patients_lack_a_score(run: dict[str, Any]) -> None:
    # the training split's out-of-fold scores are of labelled patients only: IPCW on them would be complete
    # cases again, so it is left out with a note
    metrics = run["ipcw"]
    assert f"auc_ipcw_t{HORIZON:g}" not in metrics["models"]["logit"]["splits"]["train"]
    assert any(n.startswith("logit / train: no IPCW evaluation at the label horizon 10") for n in metrics["notes"])


def test_complete_case_measures_are_unchanged(run: dict[str, Any]) -> None:
    for model in ("logit", "cox"):
        for split in SPLITS:
            with_ipcw = run["ipcw"]["models"][model]["splits"][split]
            plain = run["plain"]["models"][model]["splits"][split]
            extra = set(with_ipcw) - set(plain)
            ipcw = model == "logit" and split != "train"
            assert extra == ({f"auc_ipcw_t{HORIZON:g}", f"brier_ipcw_t{HORIZON:g}"} if ipcw else set())
            assert {k: with_ipcw[k] for k in plain} == plain


@pytest.mark.parametrize("value", ["-1", "0", '"ten"', "nan"])
def test_label_horizon_is_validated(tmp_path: Path, value: str) -> None:
    write_toml(tmp_path, f"label_horizon = {value}")
    (tmp_path / "patients.csv").write_text("patient_id,center\n")
    with pytest.raises(CohortlabError, match="label_horizon"):
        load_config(tmp_path / "study.toml")


def test_report_says_which_patients_each_number_uses(run: dict[str, Any]) -> None:
    html, metrics = run["html"], run["ipcw"]
    for split in ("internal", "external"):
        e = metrics["models"]["logit"]["splits"][split][f"auc_ipcw_t{HORIZON:g}"]
        assert f'data-metric="logit|{split}|auc_ipcw_t{HORIZON:g}">{e["estimate"]:.3f}' in html
    assert f"AUC({HORIZON:g}), IPCW, all with follow-up" in html
    assert '<td class="note" data-basis="auc">complete cases (label known)</td>' in html
    assert f'<td class="note" data-basis="auc_ipcw_t{HORIZON:g}">all with follow-up, IPCW</td>' in html
    assert 'data-ipcw-note="logit"' in html and 'data-ipcw-note="cox"' not in html
    assert "These AUCs use complete cases" in html
