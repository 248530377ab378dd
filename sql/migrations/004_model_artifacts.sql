-- Schema 4: the sha256 of every file of a fitted model's folder (models/<model>/), recorded by
-- `cohortlab fit` and checked before anything in the folder is read back. Models fitted before
-- have no rows: they were saved as pickles, are never loaded, and are refitted by `cohortlab fit`.
CREATE TABLE IF NOT EXISTS model_artifacts (
    model       VARCHAR NOT NULL,
    file        VARCHAR NOT NULL,
    sha256      VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (model, file)
);
