-- Two-phase money: holds reserved by a channel (a PoS wallet), captured, cancelled,
-- expired or refunded. A hold moves no money: it raises the account's held amount, and
-- every debit decision spends posted - held (+ overdraft). Money moves only at capture
-- (HOLD_CAPTURE) and refund (HOLD_REFUND), against the per-currency POS_CLEARING account
-- (created on first use, like the other system accounts).

-- The sum of the account's RESERVED holds (cardholder accounts only).
ALTER TABLE accounts ADD COLUMN held_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD CONSTRAINT accounts_held_not_negative CHECK (held_minor >= 0);

CREATE TABLE holds (
    id                        BIGSERIAL PRIMARY KEY,
    channel                   TEXT    NOT NULL,         -- the channel key's name
    reservation_id            TEXT    NOT NULL,
    account_id                BIGINT  NOT NULL REFERENCES accounts (id),
    card_id                   TEXT,
    currency                  TEXT    NOT NULL,
    amount_minor              BIGINT  NOT NULL CHECK (amount_minor > 0),
    state                     TEXT    NOT NULL,         -- RESERVED | CAPTURED | CANCELLED | EXPIRED
    captured_minor            BIGINT  NOT NULL DEFAULT 0,
    refunded_minor            BIGINT  NOT NULL DEFAULT 0,
    capture_movement_id       BIGINT  REFERENCES movements (id),
    partial_capture_possible  BOOLEAN NOT NULL,
    expires_at_ms             BIGINT  NOT NULL,
    captured_at_ms            BIGINT,
    merchant                  TEXT,                     -- JSON {id, name, mcc} as received
    reference                 TEXT,
    request_hash              BYTEA   NOT NULL,
    -- The answer to the capture or cancel that ended the hold, replayed byte for byte.
    final_response            BYTEA,
    created_at_ms             BIGINT  NOT NULL,
    updated_at_ms             BIGINT  NOT NULL,
    UNIQUE (channel, reservation_id),
    CHECK (captured_minor >= 0 AND captured_minor <= amount_minor),
    CHECK (refunded_minor >= 0 AND refunded_minor <= captured_minor)
);
CREATE INDEX holds_account ON holds (account_id, id);
-- The sweeper's work list: due RESERVED holds.
CREATE INDEX holds_reserved_expiry ON holds (expires_at_ms) WHERE state = 'RESERVED';

-- One row per transition; explains held_minor the way postings explain the balance.
CREATE TABLE hold_events (
    id               BIGSERIAL PRIMARY KEY,
    hold_id          BIGINT NOT NULL REFERENCES holds (id),
    kind             TEXT   NOT NULL,   -- RESERVED | CAPTURED | CANCELLED | EXPIRED | REFUNDED
    amount_minor     BIGINT NOT NULL,
    refund_id        TEXT,              -- REFUNDED only
    movement_id      BIGINT REFERENCES movements (id),
    idempotency_key  TEXT,              -- NULL for the sweeper's expiries
    created_at_ms    BIGINT NOT NULL
);
CREATE INDEX hold_events_hold ON hold_events (hold_id, id);
CREATE UNIQUE INDEX hold_events_refund ON hold_events (hold_id, refund_id) WHERE refund_id IS NOT NULL;

CREATE TRIGGER hold_events_immutable BEFORE UPDATE OR DELETE ON hold_events
    FOR EACH ROW EXECUTE FUNCTION ledger_history_is_immutable();
