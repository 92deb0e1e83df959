-- The InStore digital wallet extension (instore-extensions.md sections 4 and 6): barcodes
-- the admin API issues for one of our accounts, the payments `pay_wallet` booked with them,
-- the refunds and reversals given back, and the answers of the requests replayed on an
-- identical body. Money moves as ordinary movements (WALLET_PAYMENT, WALLET_REFUND,
-- WALLET_REVERSAL) of the account against INSTORE_CLEARING, in the one writer's commit.

-- A single-use token for (user, currency), optionally one card whose status decides. The
-- barcode is a key here and in request bodies only; logs never carry it.
CREATE TABLE wallet_barcodes (
    barcode         TEXT    PRIMARY KEY,             -- 24 digits from the OS random source
    user_id         TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    card_id         TEXT,                            -- cards.card_id; NULL: the account alone
    expires_at_ms   BIGINT  NOT NULL,
    created_at_ms   BIGINT  NOT NULL
);

-- One approved pay_wallet per barcode: its answer is replayed to an identical body.
CREATE TABLE wallet_payments (
    transaction_id  TEXT    PRIMARY KEY,             -- wtx- and 20 hex digits
    tenant_id       TEXT    NOT NULL,
    barcode         TEXT    NOT NULL UNIQUE REFERENCES wallet_barcodes (barcode),
    account_id      BIGINT  NOT NULL REFERENCES accounts (id),
    movement_id     BIGINT  NOT NULL REFERENCES movements (id),
    currency        TEXT    NOT NULL,
    total_minor     BIGINT  NOT NULL,                -- debited, tip included
    tip_minor       BIGINT  NOT NULL,
    request_hash    TEXT    NOT NULL,                -- SHA-256 of JS(body), hex
    response_body   BLOB    NOT NULL,
    correlation_id  TEXT,
    created_at_ms   BIGINT  NOT NULL
);

-- What was given back of a payment: refunds (everything still standing) and at most one
-- reversal. refunded + reversed <= total (the decision; the audit checks it).
CREATE TABLE wallet_returns (
    transaction_id          TEXT    PRIMARY KEY,     -- wtx- of the refund or reversal
    payment_transaction_id  TEXT    NOT NULL REFERENCES wallet_payments (transaction_id),
    kind                    TEXT    NOT NULL,        -- WALLET_REFUND | WALLET_REVERSAL
    amount_minor            BIGINT  NOT NULL,        -- credited back, > 0
    movement_id             BIGINT  NOT NULL REFERENCES movements (id),
    tenant_id               TEXT    NOT NULL,
    correlation_id          TEXT,
    created_at_ms           BIGINT  NOT NULL
);
CREATE INDEX wallet_returns_payment ON wallet_returns (payment_transaction_id);
CREATE UNIQUE INDEX wallet_returns_one_reversal ON wallet_returns (payment_transaction_id)
    WHERE kind = 'WALLET_REVERSAL';

-- The bare requests that have no key but their body (refund_wallet_payment,
-- cancel_wallet_payment, log_cancel_wallet): an identical body replays the answer. A
-- log_cancel_wallet is stored here with the reference it recorded for its payment.
CREATE TABLE wallet_requests (
    tenant_id               TEXT    NOT NULL,
    action                  TEXT    NOT NULL,
    request_hash            TEXT    NOT NULL,
    response_body           BLOB    NOT NULL,
    payment_transaction_id  TEXT,
    reference               TEXT,
    correlation_id          TEXT,
    created_at_ms           BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, action, request_hash)
);
CREATE INDEX wallet_requests_payment ON wallet_requests (payment_transaction_id);

CREATE TRIGGER wallet_payments_no_update BEFORE UPDATE ON wallet_payments
BEGIN SELECT RAISE(ABORT, 'wallet_payments rows are immutable'); END;
CREATE TRIGGER wallet_payments_no_delete BEFORE DELETE ON wallet_payments
BEGIN SELECT RAISE(ABORT, 'wallet_payments rows are immutable'); END;
CREATE TRIGGER wallet_returns_no_update BEFORE UPDATE ON wallet_returns
BEGIN SELECT RAISE(ABORT, 'wallet_returns rows are immutable'); END;
CREATE TRIGGER wallet_returns_no_delete BEFORE DELETE ON wallet_returns
BEGIN SELECT RAISE(ABORT, 'wallet_returns rows are immutable'); END;
