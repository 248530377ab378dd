-- Schema 3: embed_items records where each source was embedded: the node (a Ray
-- node's address, or this host's name for the local runner) and the torch device.
-- Rows embedded before stay NULL (not recorded).
ALTER TABLE embed_items ADD COLUMN node VARCHAR;
ALTER TABLE embed_items ADD COLUMN device VARCHAR;
