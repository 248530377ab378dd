-- Schema 2: embed_items records what each instance file was when written, so that
-- a missing, truncated or replaced file is found and embedded again.
-- Slide and scan paths become relative to the study folder, and source fingerprints
-- hold content instead of absolute paths; `cohortlab ingest` rewrites both (keeping
-- the embeddings of unchanged sources), since the study folder is not known here.
ALTER TABLE embed_items ADD COLUMN checksum VARCHAR;
ALTER TABLE embed_items ADD COLUMN file_bytes BIGINT;
ALTER TABLE embed_items ADD COLUMN file_mtime_ns BIGINT;
