-- cohortlab store schema. The version lives in meta('schema_version');
-- older stores are brought up to date by sql/migrations/NNN_*.sql, applied in order.
-- Wide `clinical` columns are added at ingest, one typed column per manifest column.

CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS patients (
    patient_id  VARCHAR PRIMARY KEY,
    center      VARCHAR NOT NULL,
    source_file VARCHAR,
    source_row  INTEGER
);

CREATE TABLE IF NOT EXISTS clinical (
    patient_id VARCHAR PRIMARY KEY
);

-- One row per clinical column: how to read it and what it is for.
CREATE TABLE IF NOT EXISTS variables (
    name      VARCHAR PRIMARY KEY,
    type      VARCHAR NOT NULL,   -- numeric | integer | binary | categorical | text | date
    unit      VARCHAR,
    role      VARCHAR NOT NULL,   -- predictor | outcome | time | event | id | strata | other
    label     VARCHAR,
    n_missing INTEGER NOT NULL,
    levels    VARCHAR[]           -- categorical levels: the declared order ([variables] x.levels), else sorted
);

CREATE TABLE IF NOT EXISTS slides (
    slide_id    VARCHAR PRIMARY KEY,
    patient_id  VARCHAR NOT NULL,
    path        VARCHAR NOT NULL,  -- relative to the study folder, as in the manifest (absolute only if given so)
    vendor      VARCHAR,
    width       BIGINT,
    height      BIGINT,
    mpp         DOUBLE,            -- level-0 microns per pixel actually used
    mpp_source  VARCHAR,           -- metadata | manifest
    objective   DOUBLE,
    levels      INTEGER,
    downsamples DOUBLE[],
    fingerprint VARCHAR NOT NULL   -- changes when the file or its manifest row changes
);

CREATE TABLE IF NOT EXISTS scans (
    scan_id     VARCHAR PRIMARY KEY,
    patient_id  VARCHAR NOT NULL,
    image_path  VARCHAR NOT NULL,  -- relative to the study folder, like slides.path
    mask_path   VARCHAR,
    mask_label  INTEGER,
    size        INTEGER[],         -- x, y, z voxels
    spacing     DOUBLE[],          -- x, y, z mm
    origin      DOUBLE[],
    direction   DOUBLE[],
    roi_voxels  BIGINT,
    fingerprint VARCHAR NOT NULL
);

-- A feature set is immutable: changing any parameter means a new name.
CREATE TABLE IF NOT EXISTS feature_sets (
    name         VARCHAR PRIMARY KEY,
    modality     VARCHAR NOT NULL,  -- wsi | ct
    encoder      VARCHAR NOT NULL,
    weights      VARCHAR NOT NULL,  -- timm tag, hf-hub name, sha256 of a local file, or "random"
    params       JSON NOT NULL,
    dim          INTEGER,
    code_version VARCHAR NOT NULL,
    created_at   TIMESTAMP NOT NULL
);

-- One row per source (slide or scan) per feature set; `done` rows are skipped on re-run.
CREATE TABLE IF NOT EXISTS embed_items (
    feature_set VARCHAR NOT NULL,
    source_id   VARCHAR NOT NULL,
    patient_id  VARCHAR NOT NULL,
    status      VARCHAR NOT NULL,   -- done | failed
    n_instances INTEGER,
    error       VARCHAR,
    seconds     DOUBLE,
    path        VARCHAR,            -- instance Parquet, relative to the store's folder
    fingerprint VARCHAR,            -- the source's fingerprint when it was embedded
    updated_at  TIMESTAMP NOT NULL,
    checksum    VARCHAR,            -- sha256 of the instance Parquet as written (done only)
    file_bytes  BIGINT,             -- its size,
    file_mtime_ns BIGINT,           -- and modification time: unchanged size and time skip the sha256 check
    node        VARCHAR,            -- where it was embedded: a Ray node's address, or the host's name
    device      VARCHAR,            -- and on which torch device (cpu, cuda, ...)
    PRIMARY KEY (feature_set, source_id)
);

CREATE TABLE IF NOT EXISTS patient_features (
    feature_set VARCHAR NOT NULL,
    pooling     VARCHAR NOT NULL,   -- mean | max | meanmax | none
    patient_id  VARCHAR NOT NULL,
    n_instances INTEGER NOT NULL,
    embedding   FLOAT[] NOT NULL,
    PRIMARY KEY (feature_set, pooling, patient_id)
);

-- Results written by fit / validate (read by the report).
CREATE TABLE IF NOT EXISTS predictions (
    model      VARCHAR NOT NULL,
    patient_id VARCHAR NOT NULL,
    split      VARCHAR NOT NULL,    -- train (out-of-fold) | internal | external
    score      DOUBLE NOT NULL,
    fold       INTEGER,             -- outer fold for out-of-fold scores, NULL for held-out splits
    PRIMARY KEY (model, patient_id)
);

CREATE TABLE IF NOT EXISTS metrics (
    model     VARCHAR NOT NULL,
    split     VARCHAR NOT NULL,
    metric    VARCHAR NOT NULL,
    estimate  DOUBLE,
    low       DOUBLE,
    high      DOUBLE,
    method    VARCHAR,
    cause     VARCHAR,             -- the cause of interest in a competing-risk study; NULL with one event type
    PRIMARY KEY (model, split, metric)
);

-- sha256 of every file of a fitted model's folder (models/<model>/), recorded by fit and checked
-- before anything in the folder is read back.
CREATE TABLE IF NOT EXISTS model_artifacts (
    model       VARCHAR NOT NULL,
    file        VARCHAR NOT NULL,   -- the file's name inside the folder
    sha256      VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (model, file)
);
