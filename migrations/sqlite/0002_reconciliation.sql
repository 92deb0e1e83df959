-- Reconciliation: the processor's files as received, and one run per business date.

CREATE TABLE recon_files (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT   NOT NULL,
    business_date   TEXT   NOT NULL,              -- YYYY-MM-DD
    role            TEXT   NOT NULL,              -- transactions | presentments
    version         INTEGER NOT NULL,             -- 1, 2, ... when the same name arrives with new content
    size_bytes      BIGINT NOT NULL,
    sha256          BLOB  NOT NULL,
    source          TEXT   NOT NULL,              -- sftp://host/dir or dir:/path
    fetched_at_ms   BIGINT NOT NULL,
    UNIQUE (name, business_date, version),
    UNIQUE (name, business_date, sha256)
);

CREATE TABLE recon_runs (
    business_date     TEXT PRIMARY KEY,           -- re-running a date replaces its run
    status            TEXT   NOT NULL,            -- clean | breaks
    started_at_ms     BIGINT NOT NULL,
    finished_at_ms    BIGINT NOT NULL,
    matched           BIGINT NOT NULL,
    pending           BIGINT NOT NULL,
    presentments_matched BIGINT NOT NULL,
    break_count       BIGINT NOT NULL,
    malformed_rows    BIGINT NOT NULL,
    summary           TEXT   NOT NULL             -- JSON: counts per class, totals per currency, files
);

CREATE TABLE recon_breaks (
    business_date        TEXT   NOT NULL REFERENCES recon_runs (business_date) ON DELETE CASCADE,
    seq                  BIGINT NOT NULL,
    class                TEXT   NOT NULL,
    transaction_id       TEXT   NOT NULL,
    kind                 TEXT,
    currency             TEXT,
    ledger_amount_minor  BIGINT,
    file_amount_minor    BIGINT,
    difference_minor     BIGINT,
    file                 TEXT,
    line                 BIGINT,
    detail               TEXT   NOT NULL,
    PRIMARY KEY (business_date, seq)
);
CREATE INDEX recon_breaks_class ON recon_breaks (business_date, class);
