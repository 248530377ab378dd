"""``cohortlab predict`` for models that read image features: new patients' slides are embedded with the feature
set's development settings, so a development patient's slide gives its stored score (pooled SVM, pooled logistic,
MIL, ComBat-harmonised SVM); a setting that cannot be reproduced is refused naming it; a bad slide stops only its
patient; an unseen centre of a harmonised model needs enough new patients; a bundle carries the feature sets (and,
with ``--with-weights``, the weights file) and refuses absent or changed weights, naming the file."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from image_study import CENTRES, write, write_weights

import cohortlab
from analytics.cli import main
from analytics.predict import PredictError, predict_frame
from analytics.predict.images import ImageFiles


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the encoder's tiny batches gain nothing from more, and spinning threads cost."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> cohortlab.Study:
    s = cohortlab.load_study(write(tmp_path_factory.mktemp("images")))
    s.ingest(progress=False)
    s.embed(device="cpu", progress=False)
    s.fit(progress=False)
    return s


def _held_out(study: cohortlab.Study, name: str, split: str | None = None) -> pl.DataFrame:
    stored = pl.read_parquet(study.root / "models" / name / "predictions.parquet").filter(pl.col("split") != "train")
    return stored if split is None else stored.filter(pl.col("split") == split)


def _patients(study: cohortlab.Study, ids: list[str]) -> pl.DataFrame:
    """The new-patients file of these development patients: id, centre, age (no outcome)."""
    frame = pl.read_csv(study.root / "patients.csv", infer_schema=False).drop("label")
    return frame.filter(pl.col("patient_id").is_in(ids))


def _slides(study: cohortlab.Study) -> ImageFiles:
    return ImageFiles(slides=study.root / "slides.csv", device="cpu")


def _snapshot(study: cohortlab.Study) -> dict[str, bytes]:
    return {str(p.relative_to(study.root)): p.read_bytes() for p in sorted(study.root.rglob("*")) if p.is_file()}


def test_a_development_patients_slides_give_its_stored_score(study: cohortlab.Study) -> None:
    name = "img_svm"  # the MIL model's round trip is the bundle's (below)
    stored = _held_out(study, name)
    before = _snapshot(study)
    out = predict_frame(study.config, name, _patients(study, stored["patient_id"].to_list()), images=_slides(study))
    joined = stored.join(out, on="patient_id")
    assert joined.height == stored.height >= 10
    assert joined["reason"].null_count() == joined.height
    assert (joined["score"] - joined["risk"]).abs().max() == 0.0
    # the new patients' embeddings went to the scoring area only: nothing of the study folder changed
    assert _snapshot(study) == before


def test_a_harmonised_model_uses_a_seen_centres_estimates_and_estimates_an_unseen_one(study: cohortlab.Study) -> None:
    stored = _held_out(study, "img_combat")
    external = stored.filter(pl.col("split") == "external")["patient_id"].to_list()  # centre B, never trained on
    internal = stored.filter(pl.col("split") == "internal")["patient_id"].to_list()  # centres A and C
    stored = stored.filter((pl.col("split") == "external") | pl.col("patient_id").is_in(internal[:2]))
    new = _patients(study, stored["patient_id"].to_list() + ["P01", "P02"])
    # two development patients said to be of centre D: too few to estimate a new centre from (the minimum is B's)
    new = new.with_columns(pl.when(pl.col("patient_id").is_in(["P01", "P02"])).then(pl.lit("D"))
                           .otherwise(pl.col("center")).alias("center"))
    out = predict_frame(study.config, "img_combat", new, images=_slides(study), combat_min_patients=len(external))
    joined = stored.join(out, on="patient_id")
    assert joined["reason"].null_count() == joined.height == stored.height
    assert (joined["score"] - joined["risk"]).abs().max() == 0.0
    rows = {r["patient_id"]: r for r in out.to_dicts()}
    assert all(rows[p]["flags"] == f"centre B not seen in development: harmonised by ComBat from its "
               f"{len(external)} new patients (unsupervised)" for p in external)
    assert all("ComBat" not in (rows[p]["flags"] or "") for p in internal[:2])  # their centre's own estimates
    assert all(rows[p]["reason"] == "model 'img_combat': centre D was not seen in development; ComBat harmonises a "
               f"new centre from at least {len(external)} of its patients in one call (this call has 2)"
               for p in ("P01", "P02"))
    assert CENTRES[1] == "C" and CENTRES[2] == "A"


def test_a_bad_or_missing_slide_stops_only_its_patient(study: cohortlab.Study, tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[1] / "data" / "wsi"
    manifest = tmp_path / "slides.csv"
    manifest.write_text("slide_id,patient_id,path\n"
                        f"a,P05,{study.root / 'slides' / 'P05.tif'}\n"
                        f"b,P05,{data / 'not-a-tiff.svs'}\n"
                        f"c,P06,{data / 'not-a-tiff.svs'}\n"
                        f"d,P99,{data / 'not-a-tiff.svs'}\n", encoding="utf-8")  # P99: not in this call, skipped
    out = predict_frame(study.config, "img_svm", _patients(study, ["P05", "P06", "P07"]),
                        images=ImageFiles(slides=manifest, device="cpu"))
    rows = {r["patient_id"]: r for r in out.to_dicts()}
    assert rows["P05"]["reason"] is None and 0 <= rows["P05"]["risk"] <= 1
    assert rows["P05"]["flags"].startswith(f"tiny: not embedded: {manifest}, line 3, column 'path': ")
    assert rows["P06"]["reason"].startswith(f"feature set 'tiny': {manifest}, line 4, column 'path': ")
    assert "not-a-tiff.svs" in rows["P06"]["reason"] and rows["P06"]["risk"] is None
    assert rows["P07"]["reason"] == "feature set 'tiny': no slide in slides.csv"


def test_settings_that_cannot_be_reproduced_are_refused_naming_them(study: cohortlab.Study, tmp_path: Path) -> None:
    new = _patients(study, ["P05"])
    fs = study.config.feature_set("tiny")
    other = write_weights(tmp_path / "other.pth", seed=1)
    cases = {
        "tile_size": (fs.model_copy(update={"tile_size": 32}), "params.tile_size: development 64, now 32"),
        "weights": (fs.model_copy(update={"weights": str(other)}), "weights: development 'file:"),
        "backbone": (fs.model_copy(update={"encoder": "no_such_net"}), "its encoder cannot be built here"),
    }
    for what, (changed, message) in cases.items():
        config = study.config.model_copy(update={"feature_sets": [changed]})
        with pytest.raises(PredictError, match="feature set 'tiny'") as caught:
            predict_frame(config, "img_svm", new, images=_slides(study))
        assert message in str(caught.value) and "nothing was scored" in str(caught.value), (what, str(caught.value))
    with pytest.raises(PredictError, match=r"model 'img_mil' reads image features \(feature set 'tiny'\): give the "
                                           r"new patients' slides with --slides slides.csv"):
        predict_frame(study.config, "img_mil", new)
    with pytest.raises(PredictError, match="--explain: model 'img_svm' reads image features"):
        predict_frame(study.config, "img_svm", new, explain=2, images=_slides(study))


def _predict_bundle(bundle: Path, patients: Path, slides: Path, out: Path) -> int:
    return main(["predict", "--bundle", str(bundle), "--patients", str(patients), "--slides", str(slides),
                 "--device", "cpu", "--out", str(out)])


def test_a_bundle_scores_slides_as_the_study_and_needs_the_weights_it_names(
        study: cohortlab.Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(study.root / "study.toml")
    external = _held_out(study, "img_svm", "external").head(3)
    src = tmp_path / "new.csv"
    _patients(study, external["patient_id"].to_list()).write_csv(src)
    slides = study.root / "slides.csv"
    away = tmp_path / "away"
    away.mkdir()
    # without --with-weights the bundle names the file it needs, and refuses one with another sha256
    plain = away / "svm.cohortlab"
    assert main(["export", toml, "--model", "img_svm", "--out", str(plain)]) == 0
    capsys.readouterr()
    out = tmp_path / "risks.csv"
    assert _predict_bundle(plain, src, slides, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feature set 'tiny' needs its weights file tiny.pth (sha256 " in err[0]
    assert "export --with-weights packs it" in err[0] and not out.exists()
    write_weights(away / "tiny.pth", seed=1)
    assert _predict_bundle(plain, src, slides, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"weights file {away / 'tiny.pth'} has sha256 " in err[0] and not out.exists()
    # with it, every image kind scores the external patients as fit stored them
    for name in ("img_svm", "img_mil"):
        bundle = away / f"{name}.cohortlab"
        assert main(["export", toml, "--model", name, "--with-weights", "--out", str(bundle)]) == 0
        with zipfile.ZipFile(bundle) as zf:
            assert "weights/tiny/tiny.pth" in zf.namelist()
            sets = json.loads(zf.read("feature_sets.json"))
            assert sets["tiny"]["weights"]["bundled"] is True and sets["tiny"]["record"]["params"]["tile_size"] == 64
            assert "## Image features" in zf.read("model_card.md").decode("utf-8")
        assert _predict_bundle(bundle, src, slides, out) == 0, capsys.readouterr().err
        got = pl.read_csv(out).join(_held_out(study, name, "external"), on="patient_id")
        assert got.height == external.height and (got["score"] - got["risk"]).abs().max() < 1e-12, name
