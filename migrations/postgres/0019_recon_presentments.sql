-- The presentments a business date's run reconciled (first occurrences in its file), kept
-- with the run and replaced with it: a later date's presentment of an id presented before
-- is a second clearing of one authorization, which that day's file alone cannot show
-- (break class `presented_again`).
CREATE TABLE recon_presentments (
    business_date   TEXT    NOT NULL REFERENCES recon_runs (business_date) ON DELETE CASCADE,
    transaction_id  TEXT    NOT NULL,
    line            BIGINT  NOT NULL,               -- in that date's presentments file
    PRIMARY KEY (business_date, transaction_id)
);
CREATE INDEX recon_presentments_id ON recon_presentments (transaction_id, business_date);
