-- Ledger, processor transactions, idempotency and notifications.
-- Amounts are integer minor units (ISO 4217 exponent of the account's currency).
-- Times are unix epoch milliseconds (UTC).

CREATE TABLE accounts (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                   TEXT    NOT NULL,              -- USER | PROCESSOR_CLEARING | FUNDING | SUSPENSE
    user_id                TEXT,                          -- NULL for system accounts
    currency               TEXT    NOT NULL,
    -- Running balance and version exist for cardholder accounts only: system accounts
    -- are touched by every movement and derive their balance from postings instead.
    balance_minor          BIGINT  NOT NULL DEFAULT 0,
    version                BIGINT  NOT NULL DEFAULT 0,
    overdraft_limit_minor  BIGINT  NOT NULL DEFAULT 0,
    per_transaction_limit_minor BIGINT,
    daily_limit_minor      BIGINT,
    daily_spent_day        BIGINT  NOT NULL DEFAULT 0,    -- days since epoch (UTC) of daily_spent_minor
    daily_spent_minor      BIGINT  NOT NULL DEFAULT 0,
    blocked_mccs           TEXT    NOT NULL DEFAULT '',
    created_at_ms          BIGINT  NOT NULL,
    updated_at_ms          BIGINT  NOT NULL
);
CREATE UNIQUE INDEX accounts_user_currency ON accounts (user_id, currency) WHERE kind = 'USER';
CREATE UNIQUE INDEX accounts_system_currency ON accounts (kind, currency) WHERE kind <> 'USER';

CREATE TABLE cards (
    card_id        TEXT PRIMARY KEY,
    user_id        TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    blocked_mccs   TEXT   NOT NULL DEFAULT '',
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);

-- A movement is one balanced set of postings.
CREATE TABLE movements (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    kind               TEXT   NOT NULL,   -- AUTHORIZATION | ADJUSTMENT | REVERSAL | FORCED | DEPOSIT | WITHDRAWAL
    currency           TEXT   NOT NULL,
    processor_kind     TEXT,              -- AUTHORIZATION | ADJUSTMENT for processor movements
    transaction_id     TEXT,              -- the processor's transaction.id
    reference          TEXT,
    created_at_ms      BIGINT NOT NULL
);
CREATE INDEX movements_transaction ON movements (transaction_id) WHERE transaction_id IS NOT NULL;

CREATE TABLE postings (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    movement_id          BIGINT NOT NULL REFERENCES movements (id),
    account_id           BIGINT NOT NULL REFERENCES accounts (id),
    amount_minor         BIGINT NOT NULL,      -- signed: positive raises the account's balance
    balance_after_minor  BIGINT,               -- cardholder accounts only
    account_version      BIGINT,               -- cardholder accounts only
    created_at_ms        BIGINT NOT NULL
);
CREATE INDEX postings_account ON postings (account_id, id);
CREATE INDEX postings_movement ON postings (movement_id);

-- What the processor sent us and what we answered, one row per transaction id and kind.
CREATE TABLE processor_transactions (
    kind                     TEXT   NOT NULL,   -- AUTHORIZATION | ADJUSTMENT
    transaction_id           TEXT   NOT NULL,
    endpoint                 TEXT,
    direction                TEXT,              -- DEBIT | CREDIT | NULL (balance inquiry)
    tx_type                  TEXT,
    user_id                  TEXT,
    card_id                  TEXT,
    currency                 TEXT,
    amount_text              TEXT,              -- amount.local.total exactly as received
    amount_minor             BIGINT,            -- signed from the cardholder's side
    status                   TEXT,              -- APPROVED | REJECTED; NULL when first seen through a notification
    status_detail            TEXT,
    flags                    TEXT   NOT NULL DEFAULT '',
    original_transaction_id  TEXT,
    idempotency_key          TEXT,
    movement_id              BIGINT REFERENCES movements (id),
    request_body             BLOB,
    response_status          INTEGER,
    response_body            BLOB,
    verdict                  TEXT,              -- processor's final word from a notification
    verdict_detail           TEXT,
    verdict_movement_id      BIGINT REFERENCES movements (id),
    created_at_ms            BIGINT NOT NULL,
    updated_at_ms            BIGINT NOT NULL,
    PRIMARY KEY (kind, transaction_id)
);
CREATE INDEX processor_transactions_original ON processor_transactions (original_transaction_id)
    WHERE original_transaction_id IS NOT NULL;
CREATE INDEX processor_transactions_created ON processor_transactions (created_at_ms);

-- Finished requests, replayed byte for byte on a duplicate. Scope separates the
-- processor's x-idempotency-key from the admin API's Idempotency-Key.
CREATE TABLE idempotency_keys (
    scope            TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    request_hash     BLOB   NOT NULL,
    endpoint         TEXT    NOT NULL,
    response_status  INTEGER NOT NULL,
    response_body    BLOB   NOT NULL,
    created_at_ms    BIGINT  NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE notifications (
    idempotency_key  TEXT PRIMARY KEY,
    event_id         TEXT   NOT NULL,
    transaction_id   TEXT,
    verdict          TEXT,
    status_detail    TEXT,
    effect           TEXT   NOT NULL,   -- REVERSED | FORCED | NOOP | REVIEW
    flags            TEXT   NOT NULL DEFAULT '',
    movement_id      BIGINT REFERENCES movements (id),
    request_hash     BLOB  NOT NULL,
    request_body     BLOB  NOT NULL,
    response_body    BLOB  NOT NULL,
    received_at_ms   BIGINT NOT NULL
);
CREATE INDEX notifications_transaction ON notifications (transaction_id);

-- History is append-only: a correction is a new movement, never an edit.
CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'postings rows are immutable'); END;
CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'postings rows are immutable'); END;
CREATE TRIGGER movements_no_update BEFORE UPDATE ON movements
BEGIN SELECT RAISE(ABORT, 'movements rows are immutable'); END;
CREATE TRIGGER movements_no_delete BEFORE DELETE ON movements
BEGIN SELECT RAISE(ABORT, 'movements rows are immutable'); END;
