"""The study store: one DuckDB file plus per-source instance Parquet files.

Layout beside ``store.duckdb``::

    store.duckdb
    instances/feature_set=<name>/<source_id>.parquet   one file per slide or scan

The schema lives in ``sql/schema.sql``; its version is kept in ``meta`` and
older stores are migrated by ``sql/migrations/NNN_*.sql``. Instance files are
written to a temporary name and renamed when complete, so a file that exists is
whole; whether it *counts* is decided by its ``embed_items`` row, which also
records the file's sha256, size and modification time: a file that is missing,
unreadable, another source's or no longer the one recorded is left out of the
``instances`` view (listed in the TEMP table ``instances_left_out``, and
logged), and embedded again by the next ``embed``. Two checks, by cost: the
cheap one (:func:`check_instance_file`: size, footer, the ``source_id`` in the
footer's statistics) on every connection, and the content one
(:func:`verify_instance_file`: the sha256 of every byte too) wherever files
are about to be read for results (``refresh_instances_view(content=...)``).

The store is relocatable: ``embed_items.path`` is relative to the store's
folder, slide and scan paths are relative to the study folder (as the
manifests give them), and source fingerprints hold file content, never a path.

The package's modules, bottom to top (pyproject.toml's contract keeps the order):

* :mod:`~pipeline.store.base`: the error, identifier quoting, transactions, queries;
* :mod:`~pipeline.store.version`, :mod:`~pipeline.store.hashing`, :mod:`~pipeline.store.instance_files`: the
  code version, file digests and fingerprints, instance file names and writes;
* :mod:`~pipeline.store.embed_items`, :mod:`~pipeline.store.sources`, :mod:`~pipeline.store.pooled`: feature
  sets and their embedding items, patients and sources, pooled patient features;
* :mod:`~pipeline.store.checks`: the cheap and the content check of instance files;
* :mod:`~pipeline.store.instances_view`, :mod:`~pipeline.store.schema`: the ``instances`` view; the schema,
  its version and migrations;
* :mod:`~pipeline.store.connection`: opening a store;
* :mod:`~pipeline.store.results`: model file digests and predictions that the analytics stages write back.

Every name is imported from here (``from pipeline import store``); a test that replaces one replaces it in the
module that defines it (``schema.sql_dir``, ``hashing.sha256_file``, ``version.__file__``), where its callers
look it up.
"""

from pipeline.store.base import CONTROL_CHARACTER, StoreError, query, quote_ident, store_dir, transaction
from pipeline.store.checks import _workers as _workers  # the benchmark reports the thread count
from pipeline.store.checks import check_done_files, check_instance_file, verified_once, verify_instance_file
from pipeline.store.connection import connect
from pipeline.store.embed_items import (
    DoneFile,
    FeatureSetRecord,
    done_files,
    done_items,
    embedded_items,
    failed_items,
    feature_set_params,
    feature_set_record,
    feature_sets,
    record_item,
    record_stamps,
    register_feature_set,
)
from pipeline.store.hashing import (
    SAMPLE_ABOVE,
    FileStamp,
    content_digest,
    file_fingerprint,
    json_digest,
    sha256_file,
    stamp_file,
)
from pipeline.store.instance_files import (
    INSTANCE_COLUMNS,
    MAX_FILE_NAME_BYTES,
    embeddings_matrix,
    file_name_problem,
    instance_path,
    safe_name,
    write_instances,
)
from pipeline.store.instances_view import (
    LEFT_OUT_TABLE,
    InstanceProblem,
    left_out_instances,
    read_instances,
    refresh_instances_view,
    unreadable_instances,
)
from pipeline.store.pooled import read_patient_features, write_patient_features
from pipeline.store.results import (
    PREDICTION_COLUMNS,
    model_artifacts,
    read_predictions,
    record_model_artifacts,
    recorded_model_artifacts,
    replace_predictions,
)
from pipeline.store.schema import SCHEMA_VERSION, sql_dir
from pipeline.store.schema import _version as _version  # tests read a store's schema version
from pipeline.store.sources import SOURCE_TABLES, patient_ids, source_rows
from pipeline.store.version import SOURCE_DIRS, code_version

__all__ = [
    "CONTROL_CHARACTER", "INSTANCE_COLUMNS", "LEFT_OUT_TABLE", "MAX_FILE_NAME_BYTES", "PREDICTION_COLUMNS",
    "SAMPLE_ABOVE", "SCHEMA_VERSION", "SOURCE_DIRS", "SOURCE_TABLES",
    "DoneFile", "FeatureSetRecord", "FileStamp", "InstanceProblem", "StoreError",
    "check_done_files", "check_instance_file", "code_version", "connect", "content_digest", "done_files",
    "done_items", "embedded_items", "embeddings_matrix", "failed_items", "feature_set_params", "feature_set_record",
    "feature_sets", "file_fingerprint", "file_name_problem", "instance_path", "json_digest", "left_out_instances",
    "model_artifacts", "patient_ids", "query", "quote_ident", "read_instances", "read_patient_features",
    "read_predictions", "record_item", "record_model_artifacts", "record_stamps", "recorded_model_artifacts",
    "refresh_instances_view", "register_feature_set", "replace_predictions", "safe_name", "sha256_file",
    "source_rows", "sql_dir", "stamp_file", "store_dir", "transaction", "unreadable_instances", "verified_once",
    "verify_instance_file", "write_instances", "write_patient_features",
]
