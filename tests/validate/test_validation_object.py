"""The Validation object: validate's typed result, the files written from it, read back; and the
validate bugs it fixes (n_boot = 0 still bootstrapped; lost curve notes; a headline without a CI)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score, roc_auc_score
from study_builders import SPLIT_B, build_study, study_toml

from analytics import stats
from analytics.validation import SUMMARY_COLUMNS, Validation
from analytics.validation.stage import ValidateError, validate
from pipeline import store
from pipeline.config import StudyConfig

N = 120


def _study(root: Path, n_boot: int = 50, split_column: bool = False, compare: str = "") -> StudyConfig:
    """120 patients, centres A (development) and B (external), label, follow-up; two models ``good`` and
    ``weak`` whose predictions :func:`_predict` writes. ``split_column``: splits come from the cohort's
    ``split`` column instead (internal: one case and two controls)."""
    rng = np.random.default_rng(7)
    centers = np.where(np.arange(N) < 80, "A", "B")
    label = (rng.random(N) < 0.4).astype(int)
    split = np.where(centers == "B", "external", "train").astype(object)
    if split_column:
        cases, controls = np.flatnonzero((label == 1) & (centers == "A")), np.flatnonzero((label == 0) & (centers == "A"))
        split[[cases[0], controls[0], controls[1]]] = "internal"
    patients = pl.DataFrame(
        {"patient_id": [f"P{i:03d}" for i in range(N)], "center": centers, "age": rng.normal(55, 10, N).round(1),
         "label": label, "time": rng.exponential(30, N).round(2), "event": (rng.random(N) < 0.6).astype(int),
         "split": split.tolist()}
    )
    columns = f"c.label, c.time, c.event, c.age{', c.split' if split_column else ''}"
    return build_study(root, patients, columns, study_toml("obj", 3, f"""[[models]]
name = "good"
kind = "logistic"
clinical = ["age"]
[[models]]
name = "weak"
kind = "logistic"
clinical = ["age"]
[validation]
n_boot = {n_boot}
{compare}
""", split='column = "split"' if split_column else SPLIT_B))


def _predict(study: StudyConfig, weak_raw: bool = False) -> pl.DataFrame:
    """Scores: ``good`` tracks the label, ``weak`` barely (``weak_raw``: an unbounded decision value, not a
    probability). Written to the store; returned joined with the outcomes."""
    from analytics.cohort import load_cohort

    cohort = load_cohort(study)
    rng = np.random.default_rng(11)
    y = cohort.y.astype(float)
    good = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.2, len(y)))))
    weak_lin = 0.3 * y + rng.normal(0, 1.0, len(y))
    weak = weak_lin * 3 if weak_raw else 1 / (1 + np.exp(-weak_lin))
    rows = [(model, pid, sp, float(sc), 0 if sp == "train" else None)
            for model, s in (("good", good), ("weak", weak))
            for pid, sp, sc in zip(cohort.patient_ids, cohort.split, s)]
    con = store.connect(study.store_path)
    try:
        con.execute("DELETE FROM predictions")
        con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", rows)
    finally:
        con.close()
    return pl.DataFrame(rows, schema=["model", "patient_id", "split", "score", "fold"], orient="row").join(
        cohort.frame.select("patient_id", "label", "time", "event"), on="patient_id")


def _part(preds: pl.DataFrame, model: str, split: str) -> pl.DataFrame:
    return preds.filter((pl.col("model") == model) & (pl.col("split") == split)).sort("patient_id")


@contextlib.contextmanager
def _counting_draws(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count bootstrap resampling calls (every bootstrap of analytics.stats draws through group_draws)."""
    from analytics.stats import bootstrap, decision, survival, thresholds

    calls: list[int] = []
    original = bootstrap.group_draws

    def counted(*args: object, **kwargs: object) -> Iterator:
        calls.append(1)
        return original(*args, **kwargs)

    for module in (bootstrap, decision, survival, thresholds):
        monkeypatch.setattr(module, "group_draws", counted)
    yield calls


# --- the bugs ------------------------------------------------------------------------------------------------


def test_n_boot_zero_means_no_bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``n_boot = 0``: no resample is drawn (F1 keeps its point estimate, without an interval); DeLong and
    Wilson intervals are unaffected, and so is the C-index's infinitesimal-jackknife interval (no resampling)."""
    study = _study(tmp_path, n_boot=0)
    preds = _predict(study)
    with _counting_draws(monkeypatch) as calls:
        validate(study, progress=False)
    assert calls == [], f"{len(calls)} bootstrap draws with n_boot = 0"
    metrics = json.loads((study.report_dir / "metrics.json").read_text())
    part = _part(preds, "good", "external")
    y, s = part["label"].to_numpy(), part["score"].to_numpy()
    thr = metrics["models"]["good"]["threshold"]["value"]
    got = metrics["models"]["good"]["splits"]["external"]
    assert "auc_bootstrap" not in got
    assert got["f1"]["estimate"] == pytest.approx(f1_score(y, (s >= thr).astype(int)), abs=1e-12)
    assert got["f1"]["low"] is None and got["f1"]["high"] is None
    want_c = stats.concordance(part["time"].to_numpy(), part["event"].to_numpy(), s, interval="ij")
    assert (got["c_index"]["low"], got["c_index"]["high"]) == pytest.approx((want_c.low, want_c.high), abs=1e-11)
    assert got["c_index"]["method"] == "ij-normal"
    from lifelines.utils import concordance_index

    assert got["c_index"]["estimate"] == pytest.approx(
        concordance_index(part["time"].to_numpy(), -s, part["event"].to_numpy()), abs=1e-9)
    d = stats.auc_ci(y, s)
    assert (got["auc"]["low"], got["auc"]["high"]) == pytest.approx((d.low, d.high), abs=1e-11)
    k = int(((s >= thr) & (y == 1)).sum())
    assert (got["sensitivity"]["low"], got["sensitivity"]["high"]) == pytest.approx(
        stats.wilson_interval(k, int(y.sum()), 0.95), abs=1e-11)


def test_the_count_of_draws_is_seen_when_bootstrapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control of the test above: with n_boot > 0 the same counter sees the resampling."""
    study = _study(tmp_path, n_boot=20)
    _predict(study)
    with _counting_draws(monkeypatch) as calls:
        validate(study, progress=False)
    assert calls


def test_binary_metrics_without_bootstrap_keep_their_wilson_intervals() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(60) < 0.4).astype(int)
    s = rng.random(60) + 0.3 * y
    with_boot = stats.binary_metrics(y, s, 0.6, n_boot=50)
    without = stats.binary_metrics(y, s, 0.6, n_boot=0)
    for k in ("sensitivity", "specificity", "accuracy", "ppv", "npv"):
        assert without[k] == with_boot[k]
    assert without["f1"].estimate == pytest.approx(f1_score(y, (s >= 0.6).astype(int)), abs=1e-12)
    assert np.isnan(without["f1"].low) and np.isnan(without["f1"].high) and without["f1"].method == "none"


def test_failed_calibration_and_decision_curves_keep_their_notes(tmp_path: Path) -> None:
    """Scores that are not probabilities: no calibration or decision curve can be drawn, and the notes say
    why (the same reason the statistics give)."""
    study = _study(tmp_path)
    preds = _predict(study, weak_raw=True)
    validate(study, progress=False)
    notes = json.loads((study.report_dir / "metrics.json").read_text())["notes"]
    curves = json.loads((study.report_dir / "curves.json").read_text())
    part = _part(preds, "weak", "external")
    y, s = part["label"].to_numpy(), part["score"].to_numpy()
    for fn, what in ((stats.calibration_curve, "calibration curve"), (stats.net_benefit, "decision curve")):
        with pytest.raises(ValueError) as caught:
            fn(y, s)
        assert what.split()[0] not in curves["weak"]["external"]
        mine = [n for n in notes if n.startswith("weak / external: ") and what in n]
        assert mine and str(caught.value) in mine[0], (what, notes)
    assert "calibration" in curves["good"]["external"] and "decision" in curves["good"]["external"]
    assert not [n for n in notes if n.startswith("good /") and "curve" in n]


def test_a_split_whose_auc_has_no_interval_gets_a_headline(tmp_path: Path) -> None:
    """One case and two controls in the internal split: DeLong gives no CI; validate reports the AUC alone
    (it failed formatting the missing bounds)."""
    study = _study(tmp_path, split_column=True)
    preds = _predict(study)
    result = validate(study, progress=False)
    part = _part(preds, "good", "internal")
    y, s = part["label"].to_numpy(), part["score"].to_numpy()
    assert (len(y), int(y.sum())) == (3, 1)
    auc = json.loads((study.report_dir / "metrics.json").read_text())["models"]["good"]["splits"]["internal"]["auc"]
    assert auc["low"] is None and auc["method"] == "no CI"
    line = next(h for h in result.headline if h.split()[:2] == ["good", "internal"])
    assert line.split("AUC ")[1] == f"{roc_auc_score(y, s):.3f} (no CI)"
    assert "good" in str(result)


# --- the object -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, pl.DataFrame, Validation]:
    root = tmp_path_factory.mktemp("validated")
    study = _study(root, n_boot=50, compare='compare = [["good", "weak"]]')
    preds = _predict(study)
    result = validate(study, progress=False)
    assert result.validation is not None
    return study, preds, result.validation


def test_summary_columns_and_values(validated: tuple[StudyConfig, pl.DataFrame, Validation]) -> None:
    _, preds, v = validated
    assert v.summary.columns[:7] == ["model", "split", "measure", "estimate", "low", "high", "method"]
    assert v.summary.columns == list(SUMMARY_COLUMNS)
    for model in ("good", "weak"):
        for split in ("train", "internal", "external"):
            part = _part(preds, model, split)
            y, s = part["label"].to_numpy(), part["score"].to_numpy()
            rows = v.summary.filter((pl.col("model") == model) & (pl.col("split") == split) & pl.col("center").is_null())
            auc = rows.filter(pl.col("measure") == "auc").row(0, named=True)
            assert auc["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-12) and auc["method"] == "delong"
            d = stats.auc_ci(y, s)
            assert (auc["low"], auc["high"]) == pytest.approx((d.low, d.high), abs=1e-11) and auc["level"] == 0.95
            assert rows.filter(pl.col("measure") == "n")["estimate"].item() == len(y)
            typed = v.models[model].splits[split]
            assert typed.n == len(y) and typed.get("auc") is not None and typed.get("auc").estimate == auc["estimate"]


def test_files_are_written_from_the_object(validated: tuple[StudyConfig, pl.DataFrame, Validation]) -> None:
    """metrics.json, metrics.csv and curves.json hold what the object holds, and read back to it."""
    study, _, v = validated
    out = study.report_dir
    assert json.loads((out / "metrics.json").read_text()) == v.to_dict()
    assert (out / "metrics.csv").read_text() == v.to_csv()
    assert json.loads((out / "curves.json").read_text()) == v.curves
    # metrics.csv, parsed on its own, holds the summary's numbers exactly
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert len(rows) == v.summary.height
    for r, s in zip(rows, v.summary.iter_rows(named=True)):
        assert (r["model"], r["split"], r["metric"], r["method"]) == (s["model"], s["split"], s["measure"], s["method"])
        assert (r["center"] or None) == s["center"]
        for col in ("estimate", "low", "high", "z", "p"):
            assert (float(r[col]) if r[col] else None) == s[col]
    back = Validation.from_json(out / "metrics.json", order=list(v.models))
    assert back == v
    assert back.to_csv() == v.to_csv()
    assert back.summary.equals(v.summary)


def test_from_json_names_the_file_and_key(tmp_path: Path, validated: tuple[StudyConfig, pl.DataFrame, Validation]) -> None:
    _, _, v = validated
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(ValidateError, match=r"metrics\.json: not valid JSON \(line 1, column 2\)"):
        Validation.from_json(bad)
    data = v.to_dict()
    del data["models"]["good"]["splits"]["external"]["n"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValidateError, match=r"metrics\.json: key 'models\.good\.splits\.external\.n' is missing"):
        Validation.from_json(bad)
    with pytest.raises(ValidateError, match="no metrics yet"):
        Validation.from_json(tmp_path / "nowhere" / "metrics.json")


def test_compare_stored_reversed_and_computed(validated: tuple[StudyConfig, pl.DataFrame, Validation]) -> None:
    study, preds, v = validated
    stored = v.compare("good", "weak")
    assert list(stored) == ["train", "internal", "external"]
    for split, cmp in stored.items():
        a, b = _part(preds, "good", split), _part(preds, "weak", split)
        ref = stats.compare_auc(a["label"].to_numpy(), a["score"].to_numpy(), b["score"].to_numpy())
        assert (cmp.difference, cmp.low, cmp.high, cmp.p, cmp.z) == pytest.approx(
            (ref.difference, ref.low, ref.high, ref.p, ref.z), abs=1e-11)
        back = stats.compare_auc(a["label"].to_numpy(), b["score"].to_numpy(), a["score"].to_numpy())
        rev = v.compare("weak", "good")[split]
        assert (rev.difference, rev.low, rev.high, rev.p, rev.z, rev.auc_a) == pytest.approx(
            (back.difference, back.low, back.high, back.p, back.z, back.auc_a), abs=1e-11)
    # without the stored comparison, it is computed from the predictions, to the same numbers
    bare = dataclasses.replace(v, comparisons=())
    computed = bare.compare("good", "weak")
    assert list(computed) == list(stored)
    for split in stored:
        assert dataclasses.astuple(computed[split]) == pytest.approx(dataclasses.astuple(stored[split]), abs=1e-11)
    # read from the file alone, there are no predictions to compute it from: a clear error
    alone = dataclasses.replace(Validation.from_json(study.report_dir / "metrics.json"), comparisons=())
    with pytest.raises(ValidateError, match="good vs weak.*no predictions"):
        alone.compare("good", "weak")
    with pytest.raises(ValidateError, match="no model 'nope'"):
        v.compare("good", "nope")


def test_print_summary_is_a_fixed_width_table(validated: tuple[StudyConfig, pl.DataFrame, Validation],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, preds, v = validated
    v.print_summary()
    text = capsys.readouterr().out
    head, body = text.split("\n---\n", 1)
    assert "study = obj" in head and "cohort = all" in head
    n = {s: _part(preds, "good", s).height for s in ("train", "internal", "external")}
    assert f"n = {sum(n.values())} (train {n['train']}, internal {n['internal']}, external {n['external']})" in head
    lines = body.split("\n---\n")[0].strip("\n").splitlines()
    header, rows = lines[0], lines[1:]
    end = header.index("estimate") + len("estimate")
    part = _part(preds, "good", "external")
    want = f"{roc_auc_score(part['label'].to_numpy(), part['score'].to_numpy()):.3f}"
    row = next(r for r in rows if r.split()[:3] == ["good", "external", "auc"])
    assert row[end - len(want):end] == want
    assert all(r[end - 1] != " " or r[end - 5:end].strip() == "-" for r in rows)  # numbers end under the header
    assert "fusion" not in text and "good vs weak" not in body.split("\n---\n")[0]


def test_curves_read_as_frames(validated: tuple[StudyConfig, pl.DataFrame, Validation]) -> None:
    _, preds, v = validated
    roc = v.curve("good", "external", "roc").sort("fpr", "tpr")
    part = _part(preds, "good", "external")
    assert np.trapezoid(roc["tpr"].to_numpy(), roc["fpr"].to_numpy()) == pytest.approx(
        roc_auc_score(part["label"].to_numpy(), part["score"].to_numpy()), abs=1e-9)
    assert {"threshold", "net_benefit", "treat_all"} <= set(v.curve("good", "external", "decision").columns)
    with pytest.raises(ValidateError, match="no 'nope' curve for good / external"):
        v.curve("good", "external", "nope")


def test_curves_file_is_compact_and_reads_back_to_the_same_numbers(
        validated: tuple[StudyConfig, pl.DataFrame, Validation]) -> None:
    """curves.json grows with the patients: written without spaces, every float reading back to its value."""
    study, _, v = validated
    text = (study.report_dir / "curves.json").read_text()
    assert json.loads(text) == v.curves and len(v.curves["good"]["external"]["roc"]["fpr"]) > 10
    assert text == json.dumps(v.curves, sort_keys=True, separators=(",", ":"))
    assert len(text) < 0.95 * len(json.dumps(v.curves, sort_keys=True))
