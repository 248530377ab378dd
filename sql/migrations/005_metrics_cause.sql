-- Schema 5: the metrics table names the cause of interest of a competing-risk study (NULL with one event
-- type). A validation has one cause (`[validation] cause`), so the key stays (model, split, metric).
ALTER TABLE metrics ADD COLUMN IF NOT EXISTS cause VARCHAR;
