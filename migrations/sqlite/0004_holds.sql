-- Two-phase money: see migrations/postgres/0004_holds.sql.

ALTER TABLE accounts ADD COLUMN held_minor BIGINT NOT NULL DEFAULT 0 CHECK (held_minor >= 0);

CREATE TABLE holds (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    channel                   TEXT    NOT NULL,
    reservation_id            TEXT    NOT NULL,
    account_id                BIGINT  NOT NULL REFERENCES accounts (id),
    card_id                   TEXT,
    currency                  TEXT    NOT NULL,
    amount_minor              BIGINT  NOT NULL CHECK (amount_minor > 0),
    state                     TEXT    NOT NULL,
    captured_minor            BIGINT  NOT NULL DEFAULT 0,
    refunded_minor            BIGINT  NOT NULL DEFAULT 0,
    capture_movement_id       BIGINT  REFERENCES movements (id),
    partial_capture_possible  BOOLEAN NOT NULL,
    expires_at_ms             BIGINT  NOT NULL,
    captured_at_ms            BIGINT,
    merchant                  TEXT,
    reference                 TEXT,
    request_hash              BLOB    NOT NULL,
    final_response            BLOB,
    created_at_ms             BIGINT  NOT NULL,
    updated_at_ms             BIGINT  NOT NULL,
    UNIQUE (channel, reservation_id),
    CHECK (captured_minor >= 0 AND captured_minor <= amount_minor),
    CHECK (refunded_minor >= 0 AND refunded_minor <= captured_minor)
);
CREATE INDEX holds_account ON holds (account_id, id);
CREATE INDEX holds_reserved_expiry ON holds (expires_at_ms) WHERE state = 'RESERVED';

CREATE TABLE hold_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    hold_id          BIGINT NOT NULL REFERENCES holds (id),
    kind             TEXT   NOT NULL,
    amount_minor     BIGINT NOT NULL,
    refund_id        TEXT,
    movement_id      BIGINT REFERENCES movements (id),
    idempotency_key  TEXT,
    created_at_ms    BIGINT NOT NULL
);
CREATE INDEX hold_events_hold ON hold_events (hold_id, id);
CREATE UNIQUE INDEX hold_events_refund ON hold_events (hold_id, refund_id) WHERE refund_id IS NOT NULL;

CREATE TRIGGER hold_events_no_update BEFORE UPDATE ON hold_events
    BEGIN SELECT RAISE(ABORT, 'hold_events rows are immutable'); END;
CREATE TRIGGER hold_events_no_delete BEFORE DELETE ON hold_events
    BEGIN SELECT RAISE(ABORT, 'hold_events rows are immutable'); END;
