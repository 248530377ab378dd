"""Model updating inside ``cohortlab validate`` (issue 29): revision beside recalibration in the closed test, and
each centre's chosen update saved as a model of its own (``models/<model>-updated-<centre>``, a published model
with a record of what it updates), scored by ``study.model(name).predict`` / ``cohortlab predict``, never over
the original. The closed test's arithmetic is checked against R (glm/anova) in test_meta_stats.py; here
validate's numbers must be those of analytics.stats.updating on the R model matrix of each centre."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from study_builders import build_study, study_toml

from analytics.fit import fit, stored_predictions
from analytics.models.updated import design, updated_coefficients
from analytics.stats.calibrate import logit
from analytics.stats.updating import update_logistic, updated_lp
from analytics.validation.stage import validate
from pipeline.config import StudyConfig

SPLIT = 'external_centers = ["C", "D", "E"]\ninternal_fraction = 0.2\nseed = 1'
MODELS = """[[models]]
name = "glf"
kind = "logistic"
formula = "age + sex + marker"
params = { penalty = "none" }
[[models]]
name = "ridge"
kind = "logistic"
clinical = ["age", "marker"]
params = { C = 1.0 }
[validation]
n_boot = 20
folds = 2
updating = true
"""


def _patients(seed: int = 29) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    # centre, patients, shift of the intercept, effect of sex: D is miscalibrated, E has another effect of sex
    for center, n, shift, b_sex in (("A", 250, 0.0, 0.5), ("B", 250, 0.0, 0.5), ("C", 200, 0.0, 0.5),
                                    ("D", 300, 1.0, 0.5), ("E", 300, 0.0, -1.5)):
        age = rng.normal(60, 10, n)
        sex = rng.choice(["female", "male"], n)
        marker = rng.normal(0, 1, n)
        eta = -1.0 + 0.03 * (age - 60) + marker + b_sex * (sex == "male") + shift
        frames.append(pl.DataFrame({"patient_id": [f"{center}{i:03d}" for i in range(n)], "center": center,
                                    "label": rng.binomial(1, 1 / (1 + np.exp(-eta))), "age": age.round(2),
                                    "sex": sex, "marker": marker.round(4)}))
    return pl.concat(frames)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, dict[str, str]]:
    root = tmp_path_factory.mktemp("updated")
    s = build_study(root, _patients(), "c.label, c.age, c.sex, c.marker", study_toml("upd", 3, MODELS, split=SPLIT))
    fit(s, progress=False)
    before = _digests(s.models_dir / "glf")
    validate(s, progress=False)
    return s, before


def _centre(s: StudyConfig, center: str) -> pl.DataFrame:
    preds = stored_predictions(s.store_path, "glf").filter(pl.col("split") == "external")
    return preds.join(_patients(), on="patient_id").filter(pl.col("center") == center).sort("patient_id")


def _design(part: pl.DataFrame) -> np.ndarray:
    """R's model.matrix(~ age + sex + marker) without the intercept: sexmale the indicator of male."""
    return np.column_stack([part["age"].to_numpy(), (part["sex"] == "male").to_numpy().astype(float),
                            part["marker"].to_numpy()])


def _updated(s: StudyConfig) -> dict[str, dict]:
    data = json.loads((s.report_dir / "metrics.json").read_text())
    return {u["center"]: u for u in data["multicentre"]["glf"]["updated"]}


def test_revision_enters_the_closed_test_with_the_deviance_of_glm_on_the_formula(study) -> None:
    s, _ = study
    upd = _updated(s)
    for center in ("C", "D", "E"):
        part = _centre(s, center)
        want = update_logistic(part["label"].to_numpy(), logit(part["score"].to_numpy()), _design(part))
        got = upd[center]
        assert set(got["deviance"]) == {"original", "recalibration_in_the_large", "logistic_recalibration", "revision"}
        for method, dev in want.deviance.items():
            assert got["deviance"][method] == pytest.approx(dev, rel=1e-9), (center, method)
        assert got["choice"] == want.choice
    # centre E: sex acts the other way round, which only revision can follow
    assert upd["E"]["choice"] == "revision"
    assert upd["D"]["choice"] in ("recalibration_in_the_large", "logistic_recalibration")


def test_each_chosen_update_is_saved_as_a_model_that_scores_as_the_update(study) -> None:
    import cohortlab

    s, _ = study
    nb = cohortlab.load_study(s.root / "study.toml")
    for center in ("D", "E"):
        name = f"glf-updated-{center}"
        m = nb.model(name)
        assert m.kind == "fixed"
        assert m.record.updates is not None
        assert (m.record.updates["model"], m.record.updates["center"]) == ("glf", center)
        assert m.record.updates["method"] == _updated(s)[center]["choice"]
        part = _centre(s, center)
        u = update_logistic(part["label"].to_numpy(), logit(part["score"].to_numpy()), _design(part))
        want = 1 / (1 + np.exp(-updated_lp(u, logit(part["score"].to_numpy()), _design(part))))
        got = m.predict(part.select("patient_id", "center", "age", "sex", "marker"))
        assert got["reason"].null_count() == got.height
        assert got["risk"].to_numpy() == pytest.approx(want, rel=1e-7, abs=1e-12)


def test_the_original_model_folder_is_left_as_fitted(study) -> None:
    s, before = study
    assert _digests(s.models_dir / "glf") == before
    assert json.loads((s.models_dir / "glf" / "manifest.json").read_text())["kind"] == "logistic"


def test_a_model_no_published_model_can_hold_is_reported_not_saved(study) -> None:
    s, _ = study
    notes = json.loads((s.report_dir / "metrics.json").read_text())["notes"]
    assert any(n.startswith("ridge-updated-D: not saved as a model (ridge is a penalised logistic regression")
               for n in notes)
    assert not (s.models_dir / "ridge-updated-D").exists()
    assert any(n.startswith("glf-updated-E: saved as a model in ") for n in notes)


def test_cli_predict_scores_with_an_updated_model(study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analytics.cli import main

    s, _ = study
    part = _centre(s, "E").head(4).select("patient_id", "center", "age", "sex", "marker")
    part.write_csv(tmp_path / "new.csv")
    out = tmp_path / "risks.csv"
    args = ["predict", str(s.root / "study.toml"), "--patients", str(tmp_path / "new.csv"), "--out"]
    assert main([*args, str(out), "--model", "glf-updated-E"]) == 0
    assert pl.read_csv(out)["risk"].null_count() == 0
    capsys.readouterr()
    assert main([*args, str(tmp_path / "x.csv"), "--model", "glf-updated-Q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no model named 'glf-updated-Q'" in err
    assert not (tmp_path / "x.csv").exists()


def test_revision_on_the_formulas_model_matrix_equals_glm_with_a_factor_and_an_interaction() -> None:
    """R fixture (meta_fixture.R, part 4): a published model ``age + grp + marker + age:grp`` revised on a centre;
    the model matrix built from the coefficients' R names gives glm's deviances, LR tests, choice and
    coefficients, and every updated model's coefficients reproduce its linear predictor."""
    r = json.loads((Path(__file__).with_name("meta_fixture.json")).read_text())["revision"]
    table = pd.DataFrame({"age": r["age"], "grp": r["grp"], "marker": r["marker"]})
    names, x, ok = design(r["formula"], r["coefficients"], table, {})
    assert ok.all() and names == ["age", "grpb", "grpc", "marker", "age:grpb", "age:grpc"]
    y, lp = np.asarray(r["y"]), np.asarray(r["lp"])
    assert x @ np.array([r["coefficients"][k] for k in names]) + r["coefficients"]["(Intercept)"] == pytest.approx(lp)
    u = update_logistic(y, lp, x)
    assert [u.deviance[m] for m in ("original", "recalibration_in_the_large", "logistic_recalibration",
                                    "revision")] == pytest.approx(r["deviance"], rel=1e-9)
    for reduced, key in (("original", "lr14"), ("recalibration_in_the_large", "lr24"),
                         ("logistic_recalibration", "lr34")):
        step = u.test(reduced, "revision")
        assert (step.statistic, step.df, step.p) == pytest.approx((r[key]["stat"], r[key]["df"], r[key]["p"]),
                                                                   rel=1e-6)
    assert u.choice == r["choice"] == "revision"
    revised = updated_coefficients("revision", r["coefficients"], u.coef["revision"], names)
    assert revised == pytest.approx(r["revised"], rel=1e-6)
    for method in ("recalibration_in_the_large", "logistic_recalibration"):  # the published form of each update
        coef = updated_coefficients(method, r["coefficients"], u.coef[method], names)
        eta = coef["(Intercept)"] + x @ np.array([coef[k] for k in names])
        assert eta == pytest.approx(updated_lp(u, lp, x, method=method), rel=1e-12, abs=1e-12)


def test_an_update_of_an_earlier_fit_is_refused_by_predict(study, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `cohortlab fit` refits the original, its updates are of the old fit until validate runs again."""
    from analytics.models import updated
    from analytics.models.persist import PersistError, read_record

    s, _ = study
    real = read_record

    def refitted(folder: Path, store_path: Path) -> object:
        rec = real(folder, store_path)
        return rec.replace(fit_key="another fit") if rec is not None and folder.name == "glf" else rec

    monkeypatch.setattr(updated, "read_record", refitted)
    with pytest.raises(PersistError, match=r"glf-updated-D: model glf-updated-D updates an earlier fit of model glf; "
                                           r"run `cohortlab validate`"):
        updated.with_updated(s, "glf-updated-D")
