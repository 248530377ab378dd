"""The store: schema versioning and migration, immutability, atomic instance files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from pipeline import store
from pipeline.store import schema as store_schema


def _instances(source: str, n: int, dim: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "source_id": [source] * n, "instance": list(range(n)), "x": list(range(0, 224 * n, 224)), "y": [0] * n,
            "z": [None] * n, "level": [0] * n, "tissue_fraction": [1.0] * n,
            "embedding": rng.standard_normal((n, dim)).astype(np.float32).tolist(),
        }
    )


def test_new_store_has_schema_version(tmp_path: Path) -> None:
    con = store.connect(tmp_path / "s.duckdb")
    assert store._version(con) == store.SCHEMA_VERSION
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema='main'").fetchall()}
    assert {"patients", "clinical", "variables", "slides", "scans", "feature_sets", "embed_items", "patient_features"} <= tables
    con.close()


def test_newer_store_is_refused(tmp_path: Path) -> None:
    con = store.connect(tmp_path / "s.duckdb")
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(store.SCHEMA_VERSION + 1)])
    con.close()
    with pytest.raises(store.StoreError, match="newer than this cohortlab"):
        store.connect(tmp_path / "s.duckdb")


def test_old_store_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at the current version gains what the next version's migration adds, keeping its rows."""
    path = tmp_path / "s.duckdb"
    con = store.connect(path)
    con.execute("INSERT INTO patients VALUES ('P1', 'A', NULL, NULL)")
    con.close()
    sql = tmp_path / "sql"
    (sql / "migrations").mkdir(parents=True)
    (sql / "schema.sql").write_text((store.sql_dir() / "schema.sql").read_text())
    nxt = store.SCHEMA_VERSION + 1
    (sql / "migrations" / f"{nxt:03d}_notes.sql").write_text("ALTER TABLE patients ADD COLUMN note VARCHAR;")
    # replaced where they are defined, which is where opening a store looks them up
    monkeypatch.setattr(store_schema, "sql_dir", lambda: sql)
    monkeypatch.setattr(store_schema, "SCHEMA_VERSION", nxt)
    con = store.connect(path)
    assert store._version(con) == nxt
    assert con.execute("SELECT patient_id, note FROM patients").fetchall() == [("P1", None)]
    con.close()


def test_read_only_missing_store(tmp_path: Path) -> None:
    with pytest.raises(store.StoreError, match="no store here"):
        store.connect(tmp_path / "none.duckdb", read_only=True)


def test_feature_set_is_immutable(tmp_path: Path) -> None:
    con = store.connect(tmp_path / "s.duckdb")
    rec = store.FeatureSetRecord("fs", "wsi", "resnet18", "random", {"mpp": 0.5, "tile": 224}, 512)
    store.register_feature_set(con, rec)
    store.register_feature_set(con, rec)  # same definition: fine
    with pytest.raises(store.StoreError, match=r"params: stored .*'mpp': 0\.5.* now .*'mpp': 1\.0.*new name"):
        store.register_feature_set(con, store.FeatureSetRecord("fs", "wsi", "resnet18", "random", {"mpp": 1.0, "tile": 224}))
    with pytest.raises(store.StoreError, match="weights"):
        store.register_feature_set(con, store.FeatureSetRecord("fs", "wsi", "resnet18", "pretrained", {"mpp": 0.5, "tile": 224}))
    con.close()


def test_instances_view_counts_only_done_items(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    a, b = _instances("slide a", 3, 4, 0), _instances("b", 2, 4, 1)
    pa_ = store.write_instances(store.instance_path(db, "fs", "slide a"), a)
    pb = store.write_instances(store.instance_path(db, "fs", "b"), b)
    store.record_item(con, "fs", "slide a", "P1", "done", 3, None, 0.1, str(pa_.relative_to(tmp_path)), "f1")
    store.record_item(con, "fs", "b", "P2", "failed", None, "boom", 0.1, None, "f2")
    store.refresh_instances_view(con)
    got = store.read_instances(con, "fs")
    assert got.get_column("source_id").unique().to_list() == ["slide a"]
    np.testing.assert_array_equal(store.embeddings_matrix(got.get_column("embedding")), np.array(a["embedding"].to_list(), dtype=np.float32))
    assert pb.exists() and store.done_items(con, "fs") == {"slide a": "f1"}
    con.close()
    # a read-only connection sees the same view
    ro = store.connect(db, read_only=True)
    assert ro.execute("SELECT count(*) FROM instances").fetchone() == (3,)
    ro.close()


def test_write_instances_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.parquet"
    good = _instances("s", 2, 3, 0)
    store.write_instances(target, good)
    original = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError):
        store.write_instances(target, _instances("s", 5, 3, 1))
    assert target.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"] or all(
        not p.name.endswith(".parquet") or p == target for p in tmp_path.iterdir()
    )


def test_patient_features_round_trip(tmp_path: Path) -> None:
    con = store.connect(tmp_path / "s.duckdb")
    rng = np.random.default_rng(3)
    ids = ["P3", "P1", "P2"]
    m = rng.standard_normal((3, 7)).astype(np.float32)
    store.write_patient_features(con, "fs", "mean", ids, m, [4, 5, 6])
    store.write_patient_features(con, "fs", "mean", ids, m, [4, 5, 6])  # replace, not duplicate
    got_ids, got = store.read_patient_features(con, "fs", "mean")
    assert got_ids == ["P1", "P2", "P3"]
    np.testing.assert_array_equal(got, m[[1, 2, 0]])
    with pytest.raises(store.StoreError, match="non-finite"):
        store.write_patient_features(con, "fs", "max", ids, np.full((3, 7), np.nan, np.float32), [1, 1, 1])
    con.close()


def test_transaction_rolls_back(tmp_path: Path) -> None:
    con = store.connect(tmp_path / "s.duckdb")
    with pytest.raises(duckdb.Error):
        with store.transaction(con):
            con.execute("INSERT INTO patients VALUES ('P1', 'A', NULL, NULL)")
            con.execute("INSERT INTO patients VALUES ('P1', 'A', NULL, NULL)")
    assert con.execute("SELECT count(*) FROM patients").fetchone() == (0,)
    con.close()


def test_safe_name_is_unique() -> None:
    names = {store.safe_name(s) for s in ["a/b", "a_b", "a b", "a:b", "ab"]}
    assert len(names) == 5
    assert store.safe_name("S001.svs") == "S001.svs"


def test_failed_items_and_predictions_readers(tmp_path: Path) -> None:
    con = store.connect(tmp_path / "s.duckdb")
    store.record_item(con, "fs", "b", "P2", "failed", None, "boom", 0.1, None, "f")
    store.record_item(con, "fs", "a", "P1", "done", 3, None, 0.1, "x.parquet", "f")
    assert store.failed_items(con).rows() == [("fs", "b", "P2", "boom")]
    con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)",
                    [("m2", "P1", "train", 0.2, 0), ("m1", "P2", "external", 0.9, None), ("m1", "P1", "train", 0.4, 1)])
    assert store.read_predictions(con).select("model", "patient_id").rows() == [("m1", "P1"), ("m1", "P2"), ("m2", "P1")]
    assert store.read_predictions(con, "m2")["score"].to_list() == [0.2]
    con.close()
