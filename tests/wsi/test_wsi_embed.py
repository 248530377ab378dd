"""The embedding runner end to end on real slides: outcomes, provenance, pooling, determinism."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import store
from pipeline.config import ConfigError
from pipeline.embed import embed, shard_of
from pipeline.source import Source
from pipeline.wsi.embedder import make_embedder

BROKEN = [
    ("s2", "p1", "small.svs", None),
    ("s4", "p2", "unreadable.svs", None),
    ("s5", "p3", "unopenable.tiff", 0.5),
    ("s6", "p3", "not-a-tiff.svs", 0.5),
]


def _items(study) -> pl.DataFrame:
    con = store.connect(study.store_path, read_only=True)
    try:
        return store.query(
            con, "SELECT source_id, patient_id, status, n_instances, error, path, fingerprint FROM embed_items ORDER BY source_id"
        )
    finally:
        con.close()


def _instances(study, fs: str, sid: str) -> pl.DataFrame:
    return pl.read_parquet(store.instance_path(study.store_path, fs, sid))


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory, make_study, fs_dict):
    root = tmp_path_factory.mktemp("broken")
    study = make_study(root, [("s1", "p1", "CMU-1-Small-Region.svs", None), *BROKEN], [fs_dict(mpp=1.0)])
    result = embed(study, device="cpu", progress=False)
    return study, result


def test_broken_slides_are_recorded_and_the_run_completes(broken_run):
    study, result = broken_run
    run = result.feature_sets[0]
    assert (run.done, run.failed, run.skipped, run.instances) == (1, 4, 0, 13)
    items = {r["source_id"]: r for r in _items(study).to_dicts()}
    assert items["s1"]["status"] == "done" and items["s1"]["n_instances"] == 13
    assert items["s1"]["path"] == "instances/feature_set=r18/s1.parquet"
    reasons = {sid: items[sid]["error"] for sid in ("s2", "s4", "s5", "s6")}
    assert all(items[s]["status"] == "failed" and items[s]["path"] is None for s in reasons)
    assert "small.svs: no tissue tiles" in reasons["s2"]
    assert "unreadable.svs" in reasons["s4"] and "Bogus marker length" in reasons["s4"]
    assert "unopenable.tiff" in reasons["s5"] and "Unsupported TIFF compression" in reasons["s5"]
    assert "not-a-tiff.svs" in reasons["s6"] and "not a slide" in reasons["s6"]
    text = str(result)
    assert "1 done, 4 failed, 0 skipped; 13 instances" in text and "failed s4:" in text
    # nothing but finished files in the instance folder: no temporaries, no unfolded status files
    folder = store.instance_path(study.store_path, "r18", "s1").parent
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["s1.mask.png", "s1.parquet", "s1.thumb.png", "s2.mask.png", "s2.thumb.png"]


def test_instances_are_tiles_with_level0_coordinates_and_finite_features(broken_run):
    study, _ = broken_run
    inst = _instances(study, "r18", "s1")
    assert inst.columns == list(store.INSTANCE_COLUMNS)
    assert inst["instance"].to_list() == list(range(13))
    emb = store.embeddings_matrix(inst["embedding"])
    assert emb.shape == (13, 512) and np.isfinite(emb).all()
    assert ((inst["x"] % 449) == 0).all() and (inst["x"] + 449 <= 2220).all() and (inst["y"] + 449 <= 2967).all()
    assert (inst["tissue_fraction"] >= 0.25).all() and (inst["level"] == 0).all() and inst["z"].is_null().all()
    mask = np.asarray(Image.open(store.instance_path(study.store_path, "r18", "s1").with_name("s1.mask.png")))
    thumb = Image.open(store.instance_path(study.store_path, "r18", "s1").with_name("s1.thumb.png"))
    assert mask.shape == (371, 278) and set(np.unique(mask)) == {0, 255} and thumb.size == (278, 371)


def test_feature_set_provenance(broken_run):
    study, _ = broken_run
    con = store.connect(study.store_path, read_only=True)
    try:
        row = store.feature_sets(con).row(0, named=True)
    finally:
        con.close()
    params = json.loads(row["params"])
    assert (row["name"], row["modality"], row["encoder"], row["weights"], row["dim"]) == ("r18", "wsi", "resnet18", "random", 512)
    assert row["code_version"].startswith("0.")
    assert (params["mpp"], params["tile_size"], params["overlap"], params["tissue_threshold"]) == (1.0, 224, 0, 0.25)
    assert params["preprocessing"] == {
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic", "input_size": 224,
        "config_source": "timm pretrained config resnet18.a1_in1k",  # timm's default resnet18 tag
    }
    assert params["weights_spec"] == "random" and params["init_seed"] == 0
    assert (row["done"], row["failed"], row["instances"]) == (1, 4, 13)


def test_pooling_per_patient(broken_run):
    study, result = broken_run
    assert result.feature_sets[0].pooled == {"mean": 1, "max": 1, "meanmax": 1}
    emb = store.embeddings_matrix(_instances(study, "r18", "s1")["embedding"])
    con = store.connect(study.store_path, read_only=True)
    try:
        got = {how: store.read_patient_features(con, "r18", how) for how in ("mean", "max", "meanmax")}
        counts = store.query(con, "SELECT DISTINCT n_instances FROM patient_features")["n_instances"].to_list()
    finally:
        con.close()
    # p1 = CMU (13 tiles) + small.svs (failed, no tiles); p2 and p3 have only failed slides: no row
    assert all(ids == ["p1"] for ids, _ in got.values()) and counts == [13]
    np.testing.assert_allclose(got["mean"][1][0], emb.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(got["max"][1][0], emb.max(axis=0))
    np.testing.assert_array_equal(got["meanmax"][1][0], np.concatenate([got["mean"][1][0], got["max"][1][0]]))


def test_rerun_skips_done_and_retries_failed(broken_run):
    study, _ = broken_run
    before = _items(study)
    again = embed(study, device="cpu", progress=False).feature_sets[0]
    assert (again.done, again.failed, again.skipped) == (0, 4, 1)
    assert again.pooled == {}  # nothing new is done: pooled features are current
    assert _items(study).equals(before)


def test_changed_definition_is_refused(broken_run, tmp_path, make_study, fs_dict):
    study, _ = broken_run
    changed = make_study(tmp_path, [], [fs_dict(mpp=0.5)])
    changed = changed.model_copy(update={"study": study.study, "root": study.root})
    # same name, other mpp, and a source left to do: registration fails before any work
    con = store.connect(study.store_path)
    con.execute("DELETE FROM embed_items WHERE source_id = 's1'")
    con.close()
    with pytest.raises(store.StoreError, match="immutable"):
        embed(changed, device="cpu", progress=False)


def test_same_inputs_give_byte_identical_embeddings(broken_run, tmp_path, make_study, fs_dict):
    study, _ = broken_run
    # a second run in a fresh store, this time reading in two worker processes with smaller batches
    again = make_study(tmp_path, [("s1", "p1", "CMU-1-Small-Region.svs", None)], [fs_dict(mpp=1.0, num_workers=2)])
    embed(again, device="cpu", progress=False)
    one, two = (pq.read_table(store.instance_path(s.store_path, "r18", "s1")) for s in (study, again))
    assert one.equals(two)
    a, b = (store.embeddings_matrix(t.column("embedding")) for t in (one, two))
    assert a.tobytes() == b.tobytes()


def test_multilevel_slide_with_mpp_override_reads_the_best_level(tmp_path, make_study, fs_dict):
    # boxes.tiff has no real mpp; with 2 um/px from the manifest its levels are 2, 4, 8.03, 16.2 um/px
    slides = [("b", "p1", "boxes.tiff", 2.0)]
    fsets = [
        fs_dict("at4", mpp=4.0, tile_size=32, params={"min_area_um2": 0}),
        fs_dict("at8", mpp=8.0, tile_size=32, params={"min_area_um2": 0}),
    ]
    study = make_study(tmp_path, slides, fsets)
    result = embed(study, device="cpu", progress=False)
    assert [r.done for r in result.feature_sets] == [1, 1]
    at4, at8 = _instances(study, "at4", "b"), _instances(study, "at8", "b")
    assert set(at4["level"]) == {1} and set(at8["level"]) == {2}
    # level 1 is 150 x 125: a 4 x 3 grid of 32 px tiles; level 2 is 75 x 62: 2 x 1
    assert at4.height <= 12 and at8.height <= 2 and at8.height >= 1
    assert (at8["x"] % 129 == 0).all()  # 32 level-2 px = round(32 * 4.016) level-0 px


def test_no_mpp_and_no_override_fails_clearly(tmp_path, make_study, fs_dict):
    study = make_study(tmp_path, [("b", "p1", "boxes.tiff", None)], [fs_dict()])
    run = embed(study, device="cpu", progress=False).feature_sets[0]
    assert run.failed == 1 and "no mpp in metadata and no mpp override" in run.failures[0][1]


def test_unusable_encoder_stops_before_any_work(tmp_path, make_study, fs_dict):
    study = make_study(tmp_path, [("a", "p1", "small.svs", None)], [fs_dict(encoder="not_a_net")])
    with pytest.raises(ConfigError, match="feature set 'r18'.*unknown encoder"):
        embed(study, device="cpu", progress=False)
    assert _items(study).height == 0


def test_embedder_alone_and_shards_partition_the_sources(cmu):
    from pipeline.config import FeatureSet

    emb = make_embedder(FeatureSet(name="x", modality="wsi", encoder="resnet18", weights="random", mpp=1.0, num_workers=0), "cpu")
    frame = emb.embed(Source("c", "p", "f", {"path": str(cmu), "mpp": 0.499, "mpp_source": "metadata"}))
    emb.close()
    assert frame.height == 13 and frame["source_id"].unique().to_list() == ["c"]
    sources = [Source(f"s{i}", "p", "f") for i in (3, 1, 4, 0, 2)]
    parts = [[s.source_id for s in shard_of(sources, (i, 2))] for i in range(2)]
    assert parts == [["s0", "s2", "s4"], ["s1", "s3"]]
