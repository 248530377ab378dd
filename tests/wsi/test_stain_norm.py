"""Stain normalisation of WSI tiles: the method against known stain changes and torchstain, the reference rule,
the feature set's identity, and an end-to-end embed of a tiny synthetic two-centre study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torchstain

from pipeline import store
from pipeline.config import ConfigError, StudyConfig, load_config, parse_study
from pipeline.embed import development_sources, embed, list_sources, make_embedder
from pipeline.ingest import ingest
from pipeline.synth import make_study
from pipeline.synth.slides import E_MACENKO, H_MACENKO, SlideSpec, Stain, render_slide
from pipeline.synth.study import CENTRES
from pipeline.wsi.stain import IO, StainError, StainNormalizer, fit_reference
from pipeline.wsi.stain_reference import REFERENCE_FILE, StainReference, pick_tiles, prepare_reference, slide_order
from pipeline.wsi.tiles import TileDataset


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


# the reference stains (Macenko's H&E vectors) and a known other stain: both vectors turned, 30% stronger
HE_REF = np.stack([_unit(H_MACENKO), _unit(E_MACENKO)], 1)
HE_NEW = np.stack([_unit((0.65, 0.70, 0.29)), _unit((0.30, 0.80, 0.52))], 1)


def _concentrations(seed: int, n: int = 4, size: int = 96) -> np.ndarray:
    """H and E concentrations (n, size, size, 2): every mix from pure H to pure E, all pixels stained."""
    rng = np.random.default_rng(seed)
    mix, density = rng.uniform(0, 1, (n, size, size)), rng.uniform(0.8, 2.0, (n, size, size))
    return np.stack([density * mix, density * (1 - mix)], -1)


def _render(conc: np.ndarray, he: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Beer-Lambert tiles, uint8, in the OD convention of Macenko/torchstain (OD = -log((I + 1) / Io))."""
    od = (conc * strength) @ he.T
    return np.clip(np.rint(IO * np.exp(-od) - 1), 0, 255).astype(np.uint8)


def _diff(a: np.ndarray | torch.Tensor, b: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.int64) - b.astype(np.int64))


# --- the method ------------------------------------------------------------------------


def test_macenko_fit_recovers_the_stain_vectors_tiles_were_made_with():
    values = fit_reference("macenko", _render(_concentrations(0), HE_REF))
    fitted = np.asarray(values["stain_matrix"])
    cos = np.sum(fitted * HE_REF, axis=0) / np.linalg.norm(fitted, axis=0)
    assert cos.min() > 0.9999  # haematoxylin first, eosin second, each within 0.8 degrees


# Tolerances, in grey levels on 0-255 per channel. Macenko models exactly this change (other stain
# vectors, scaled concentrations): only rounding and percentile noise remain. Reinhard matches colour
# statistics, not stains, so it gets closer but not all the way.
@pytest.mark.parametrize(("method", "mean_tol"), [("macenko", 1.5), ("reinhard", 4.0)])
def test_known_stain_change_comes_back_to_the_reference(method, mean_tol):
    reference = _render(_concentrations(0), HE_REF)
    norm = StainNormalizer(method, fit_reference(method, reference))
    for seed in (0, 1):  # the tissue the reference was fitted on, and other tissue of the same kind
        conc = _concentrations(seed)
        truth, changed = _render(conc, HE_REF), _render(conc, HE_NEW, strength=1.3)
        out, failed = norm(torch.from_numpy(changed))
        before, after = _diff(changed, truth).mean(), _diff(out, truth).mean()
        assert not failed.any()
        assert before > 15
        assert after <= mean_tol, (seed, before, after)
    if method == "macenko":
        assert _diff(out, truth).max() <= 4


OTHER_STAIN = Stain(hematoxylin=tuple(HE_NEW[:, 0]), eosin=tuple(HE_NEW[:, 1]), strength=1.3, white=0.92)


def _slide_tiles(stain: Stain) -> np.ndarray:
    """Four 112-pixel tiles from the middle of a rendered synthetic slide (seeded: the same tissue for any stain)."""
    img, _ = render_slide(np.random.default_rng(7), 0.5, stain, SlideSpec(448, 448))
    return np.stack([img[y:y + 112, x:x + 112] for y in (112, 224) for x in (112, 224)])


@pytest.mark.parametrize(("stain", "he"), [(Stain(), HE_REF), (OTHER_STAIN, HE_NEW)], ids=["reference", "other"])
def test_macenko_fit_on_rendered_slide_tiles_finds_their_stain(stain, he):
    fitted = np.asarray(fit_reference("macenko", _slide_tiles(stain))["stain_matrix"])
    cos = np.sum(fitted * he, axis=0) / np.linalg.norm(fitted, axis=0)
    assert cos.min() > 0.99  # within 8 degrees; the renderer adds grain and JPEG-free noise around the stains


def test_reinhard_gives_rendered_tiles_the_same_colours_whatever_the_stain():
    """The same tissue rendered with centre B's stain and scanner, and with a stronger, turned stain."""
    here = _slide_tiles(Stain())
    norm = StainNormalizer("reinhard", fit_reference("reinhard", here))
    ours, failed = norm(torch.from_numpy(here))
    assert not failed.any()
    for stain in (CENTRES["B"].stain, OTHER_STAIN):
        there = _slide_tiles(stain)
        theirs, failed = norm(torch.from_numpy(there))
        assert not failed.any()
        before, after = _diff(there, here).mean(axis=(1, 2, 3)), _diff(theirs, ours.numpy()).mean(axis=(1, 2, 3))
        assert (before > 3.5).all() and (after < 2.0).all(), (before, after)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_batches_match_torchstain_tile_by_tile(method):
    reference = _render(_concentrations(0), HE_REF)
    values = fit_reference(method, reference)
    spec = SlideSpec(448, 448)
    slide, _ = render_slide(np.random.default_rng(3), 0.0, Stain(strength=1.1, white=0.93), spec)
    batch = np.stack([slide[y:y + 96, x:x + 96] for y in (150, 250) for x in (150, 250)]
                     + list(_render(_concentrations(5, n=2), HE_NEW, 1.2)))
    ours, failed = StainNormalizer(method, values)(torch.from_numpy(batch))
    assert not failed.any()
    if method == "macenko":
        ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
        ts.HERef = torch.tensor(values["stain_matrix"], dtype=torch.float32)
        ts.maxCRef = torch.tensor(values["max_concentrations"], dtype=torch.float32)
    else:
        ts = torchstain.normalizers.ReinhardNormalizer(backend="torch")
        ts.target_means = torch.tensor(values["lab_mean"], dtype=torch.float32)
        ts.target_stds = torch.tensor(values["lab_std"], dtype=torch.float32)
    for tile, mine in zip(batch, ours):
        theirs = ts.normalize(torch.from_numpy(tile).permute(2, 0, 1))
        theirs = theirs[0] if isinstance(theirs, tuple) else theirs
        assert _diff(mine, theirs.numpy()).max() <= 1


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_tiles_the_method_cannot_handle_go_through_unchanged_and_are_flagged(method):
    reference = _render(_concentrations(0), HE_REF)
    norm = StainNormalizer(method, fit_reference(method, reference))
    good = _render(_concentrations(2, n=1), HE_NEW, 1.3)[0]
    blank = np.full_like(good, 241)  # glass: no stained pixel, no colour spread
    flat = np.empty_like(good)
    flat[:] = (150, 60, 120)  # one colour: a single stain direction, no spread
    out, failed = norm(torch.from_numpy(np.stack([blank, good, flat])))
    assert failed.tolist() == [True, False, True]
    np.testing.assert_array_equal(out[0].numpy(), blank)
    np.testing.assert_array_equal(out[2].numpy(), flat)
    alone, _ = norm(torch.from_numpy(good[None]))
    np.testing.assert_array_equal(out[1].numpy(), alone[0].numpy())  # a tile's result does not depend on its batch


def test_an_autocast_region_does_not_change_the_normalisation():
    reference = _render(_concentrations(0), HE_REF)
    batch = torch.from_numpy(_render(_concentrations(4), HE_NEW, 1.3))
    for method in ("macenko", "reinhard"):
        norm = StainNormalizer(method, fit_reference(method, reference))
        plain, _ = norm(batch)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            inside, _ = norm(batch)
        assert torch.equal(plain, inside)


def test_bad_reference_values_and_tiles_are_refused():
    with pytest.raises(StainError, match="macenko reference values"):
        StainNormalizer("macenko", {"stain_matrix": [[1, 0], [0, 1], [0, 0]]})
    with pytest.raises(StainError, match="wrong shape"):
        StainNormalizer("reinhard", {"lab_mean": [1, 2], "lab_std": [1, 2, 3]})
    with pytest.raises(StainError, match="cannot be fitted"):
        fit_reference("macenko", np.full((2, 16, 16, 3), 241, np.uint8))
    with pytest.raises(StainError, match="degenerate"):
        fit_reference("reinhard", np.full((2, 16, 16, 3), 128, np.uint8))


# --- configuration -----------------------------------------------------------------------


def _parse(**fs: object) -> StudyConfig:
    data = {"study": {"name": "s"}, "manifests": {"patients": "p.csv"},
            "feature_sets": [{"name": "tiles", "modality": "wsi", "encoder": "resnet18", **fs}]}
    return parse_study(data, Path("."), source="/x/study.toml")


def test_stain_norm_config():
    assert _parse().feature_sets[0].stain_norm == "none"
    assert _parse(stain_norm="reinhard").feature_sets[0].stain_norm == "reinhard"
    with pytest.raises(ConfigError) as err:
        _parse(stain_norm="Macenko")
    msg = str(err.value)
    assert "/x/study.toml" in msg and "feature_sets[0].stain_norm" in msg and "feature set 'tiles'" in msg
    assert "'macenko', 'reinhard', 'none'" in msg
    with pytest.raises(ConfigError, match=r"\['stain_norm'\] do not apply to modality 'ct'"):
        parse_study({"study": {"name": "s"}, "manifests": {"patients": "p.csv"},
                     "feature_sets": [{"name": "c", "modality": "ct", "encoder": "r3d_18", "stain_norm": "macenko"}]},
                    Path("."))


# --- the tiny two-centre study ------------------------------------------------------------

FEATURE_SET = """[[feature_sets]]
name = "r18_stain"
modality = "wsi"
encoder = "resnet18"
weights = "random"
mpp = 2.0
tile_size = 64
batch_size = 8
num_workers = 0
stain_norm = "macenko"
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The tiny synthetic study (centre A develops, centre B is external), ingested, not embedded."""
    folder = tmp_path_factory.mktemp("stain") / "study"
    toml = make_study(folder, n_patients=10, small=True)
    head, rest = toml.read_text().split("[[feature_sets]]", 1)
    tail = rest[rest.index("[cohort]"):]
    toml.write_text(head + FEATURE_SET + "\n" + tail[:tail.index("[[models]]")])
    ingest(load_config(toml))
    return folder


def _copy(template: Path, dest: Path, replace: tuple[str, str] | None = None) -> StudyConfig:
    shutil.copytree(template, dest)
    if replace is not None:
        toml = dest / "study.toml"
        toml.write_text(toml.read_text().replace(*replace))
    return load_config(dest / "study.toml")


def _centres(study: StudyConfig) -> dict[str, str]:
    """Patient and slide ids -> centre, from the manifests."""
    patients = pl.read_csv(study.root / "manifests" / "patients.csv")
    slides = pl.read_csv(study.root / "manifests" / "slides.csv")
    centre = dict(zip(patients["patient_id"], patients["center"]))
    return {**centre, **{sid: centre[pid] for sid, pid in zip(slides["slide_id"], slides["patient_id"])}}


def _sources(study: StudyConfig) -> list:
    con = store.connect(study.store_path, read_only=True)
    try:
        return list_sources(con, study, "wsi")
    finally:
        con.close()


@pytest.fixture(scope="module")
def embedded(template, tmp_path_factory) -> StudyConfig:
    study = _copy(template, tmp_path_factory.mktemp("embedded") / "study")
    result = embed(study, device="cpu", progress=False).feature_sets[0]
    assert (result.done, result.failed) == (len(_sources(study)), 0)
    return study


def test_reference_rule_is_seeded_and_reads_only_development_centres(template, tmp_path):
    study = load_config(template / "study.toml")
    fs = study.feature_set("r18_stain")
    embedder = make_embedder(fs, "cpu")
    sources = _sources(study)
    centres = _centres(study)
    dev = development_sources(study, sources)
    assert {centres[s.patient_id] for s in dev} == {"A"}
    assert {s.source_id for s in dev} == {s.source_id for s in sources if centres[s.patient_id] == "A"}
    refs = [prepare_reference(embedder, dev, seed, ["B"], tmp_path / name)
            for seed, name in ((0, "one"), (0, "two"), (1, "three"))]
    assert refs[0].payload() == refs[1].payload()
    assert (tmp_path / "one" / REFERENCE_FILE).read_bytes() == (tmp_path / "two" / REFERENCE_FILE).read_bytes()
    assert refs[0].tiles != refs[2].tiles  # another seed draws other tiles
    for ref in refs:
        assert {centres[t["slide_id"]] for t in ref.tiles} == {"A"}
        assert len(ref.tiles) >= 32
    # the draw does not depend on the order the candidates come in
    assert [s.source_id for s in slide_order(dev, 0)] == [s.source_id for s in slide_order(dev[::-1], 0)]
    grid = pl.DataFrame({"tissue_fraction": np.linspace(0.3, 1.0, 40)})
    picks = pick_tiles(grid, 6, 0, "s1")
    assert picks.tolist() == pick_tiles(grid, 6, 0, "s1").tolist()
    assert (grid["tissue_fraction"].to_numpy()[picks] >= 0.75).all()


def test_no_development_slide_is_a_clear_error(template, tmp_path):
    study = _copy(template, tmp_path / "study", ('external_centers = ["B"]', 'external_centers = ["A", "B"]'))
    with pytest.raises(ConfigError, match=r"study\.toml: feature set 'r18_stain': stain reference: no development"):
        embed(study, device="cpu", progress=False)
    assert not (store.instance_path(study.store_path, "r18_stain", "x").parent / REFERENCE_FILE).exists()


def test_stain_norm_is_part_of_the_feature_set_identity(template, tmp_path):
    study = load_config(template / "study.toml")
    base = study.feature_set("r18_stain")
    dev = development_sources(study, _sources(study))
    records = {}
    for method in ("none", "macenko", "reinhard"):
        embedder = make_embedder(base.model_copy(update={"stain_norm": method}), "cpu")
        embedder.prepare_stain(dev, 0, ["B"], tmp_path / method)
        records[method] = embedder.record()
    plain = make_embedder(base.model_copy(update={"stain_norm": "none"}), "cpu").record()
    assert records["none"].params == plain.params and "stain_norm" not in plain.params  # older stores keep theirs
    mac, rei = records["macenko"].params["stain_norm"], records["reinhard"].params["stain_norm"]
    assert (mac["method"], rei["method"]) == ("macenko", "reinhard")
    ref = StainReference.read(tmp_path / "macenko" / REFERENCE_FILE)
    assert ref is not None and mac["reference_sha256"] == ref.digest
    assert len({json.dumps(r.params, sort_keys=True) for r in records.values()}) == 3
    con = store.connect(tmp_path / "store.duckdb")
    try:
        store.register_feature_set(con, records["none"])
        for method in ("macenko", "reinhard"):
            with pytest.raises(store.StoreError, match="immutable"):
                store.register_feature_set(con, records[method])
    finally:
        con.close()


def test_an_embedder_without_its_reference_refuses_to_record_or_embed(template):
    study = load_config(template / "study.toml")
    embedder = make_embedder(study.feature_set("r18_stain"), "cpu")
    with pytest.raises(StainError, match="'r18_stain': stain_norm = 'macenko' needs its stain reference"):
        embedder.record()
    with pytest.raises(StainError, match="needs its stain reference"):
        embedder.embed(_sources(study)[0])


def test_embed_normalises_tiles_and_records_the_reference(embedded):
    study = embedded
    fs = study.feature_set("r18_stain")
    folder = store.instance_path(study.store_path, fs.name, "x").parent
    ref = StainReference.read(folder / REFERENCE_FILE)
    assert ref is not None and ref.method == "macenko"
    centres = _centres(study)
    assert {centres[t["slide_id"]] for t in ref.tiles} == {"A"}
    con = store.connect(study.store_path, read_only=True)
    try:
        params = store.feature_set_params(store.query(con, "SELECT * FROM feature_sets").to_dicts()[0])
    finally:
        con.close()
    assert params["stain_norm"]["reference_sha256"] == ref.digest
    assert params["stain_norm"]["tiles"] == len(ref.tiles)
    # each slide's tiles, recomputed by hand: cut as the embedder cuts them, normalised, then encoded
    embedder = make_embedder(fs, "cpu")
    src = next(s for s in _sources(study) if centres[s.patient_id] == "B")
    side = json.loads((folder / f"{src.source_id}.stain.json").read_text())
    frame = pl.read_parquet(store.instance_path(study.store_path, fs.name, src.source_id))
    assert side["tiles"] == frame.height and side["reference_sha256"] == ref.digest
    with embedder.slide_for(src) as slide:
        tiled = embedder._tile_cache.tiling(slide, embedder.tiling_settings, src.fingerprint, src.source_id)
        mpp = slide.mpp
    spec = tiled.spec
    data = TileDataset(src.row["path"], mpp, frame["x"].to_numpy(), frame["y"].to_numpy(), spec.level, spec.read_size,
                       embedder.tile, frame.height, embedder.encoder.resample, spec.downsample)
    tiles = torch.from_numpy(data.read_batch(0, frame.height))
    data.close()
    normalised, failed = ref.normalizer("cpu")(tiles)
    assert side["unnormalised"] == int(failed.sum())
    expect = np.concatenate([embedder.encoder.embed(normalised[i:i + 8]) for i in range(0, frame.height, 8)])
    raw = np.concatenate([embedder.encoder.embed(tiles[i:i + 8]) for i in range(0, frame.height, 8)])
    got = store.embeddings_matrix(frame["embedding"])
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, raw, rtol=1e-3, atol=1e-3)


def test_rerun_reuses_the_reference_and_a_changed_one_is_refused(embedded, tmp_path):
    study = _copy(embedded.root, tmp_path / "study")
    folder = store.instance_path(study.store_path, "r18_stain", "x").parent
    path = folder / REFERENCE_FILE
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    con = store.connect(study.store_path)
    con.execute("DELETE FROM embed_items WHERE source_id = 'P002-S1'")
    con.close()
    again = embed(study, device="cpu", progress=False).feature_sets[0]
    assert (again.done, again.failed) == (1, 0)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # reused, not fitted again
    # a reference that is not the one the feature set was made with: another feature set, refused
    data = json.loads(path.read_text())
    data["values"]["max_concentrations"][0] *= 1.01
    path.write_text(json.dumps(data))
    con = store.connect(study.store_path)
    con.execute("DELETE FROM embed_items WHERE source_id = 'P002-S1'")
    con.close()
    with pytest.raises(store.StoreError, match="immutable"):
        embed(study, device="cpu", progress=False)
