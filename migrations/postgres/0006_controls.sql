-- Spending controls (docs/controls.md): a document per account and per card, in the
-- canonical JSON form (`''`: none), with a version bumped by every change; the counters
-- of the windows their limits read; and, with each authorization, the explanation of the
-- checks it ran and what its approval counted (given back by a reversal).

ALTER TABLE accounts ADD COLUMN controls TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN controls_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cards ADD COLUMN controls TEXT NOT NULL DEFAULT '';
ALTER TABLE cards ADD COLUMN controls_version BIGINT NOT NULL DEFAULT 0;

-- One row per owner, window and category filter (`''`: every category). The owner is
-- `ACCOUNT` 'user/currency' or `CARD` 'card id'. A batch reads the rows of its owners in
-- the windows holding its instants: the primary key is that probe.
CREATE TABLE control_counters (
    owner_kind     TEXT   NOT NULL,
    owner_id       TEXT   NOT NULL,
    window_key     TEXT   NOT NULL,
    categories     TEXT   NOT NULL DEFAULT '',
    amount_minor   BIGINT NOT NULL DEFAULT 0 CHECK (amount_minor >= 0),
    count          BIGINT NOT NULL DEFAULT 0 CHECK (count >= 0),
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (owner_kind, owner_id, window_key, categories)
);

-- JSON: the checks the decision ran, in order, with their inputs.
ALTER TABLE processor_transactions ADD COLUMN explanation TEXT;
-- JSON: the counter deltas an approval added, and what was given back since.
ALTER TABLE processor_transactions ADD COLUMN controls_counted TEXT;
