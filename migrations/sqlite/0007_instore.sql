-- The InStore stored-value extension (instore-extensions.md sections 2 and 6): the numbers
-- store tills present, the requests they sent (idempotent on tenant and requestId), and
-- the movements booked for them. Money moves as ordinary movements (SV_LOAD, SV_REDEEM,
-- SV_CANCEL) of the card's account against INSTORE_CLEARING; the callback each request
-- owes is an outbox row written in the same commit.

-- A stored-value number bound to one of our cards and the account (user, currency) it
-- spends: one balance for card purchases and in-store stored value. The number is a key
-- here and in request bodies only; logs and admin paths never carry it.
CREATE TABLE instore_cards (
    number            TEXT    PRIMARY KEY,
    card_id           TEXT    NOT NULL,              -- cards.card_id: its status is the card's (ACTIVE = Active)
    user_id           TEXT    NOT NULL,
    currency          TEXT    NOT NULL,
    card_type         TEXT    NOT NULL,              -- GiftCard | ReturnCard | Promotional
    tenants           TEXT    NOT NULL,              -- comma-separated tenant ids that may use it
    linked            BOOLEAN NOT NULL,              -- linked to an existing account by the admin API
    pin_hash          BLOB,                         -- HMAC-SHA256(instore secret hash key, PIN)
    cvc_hash          BLOB,                         -- HMAC-SHA256(instore secret hash key, CVC)
    pin_tries         INTEGER NOT NULL DEFAULT 0,
    issuer            TEXT,
    customer_id       TEXT,
    location_id       TEXT,
    workstation_id    TEXT,
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL
);
CREATE UNIQUE INDEX instore_cards_card ON instore_cards (card_id, currency);

-- Every processed enveloped request: replayed byte for byte on a duplicate (same action
-- and payload hash), 409 otherwise. Written in the transaction of its movements.
CREATE TABLE instore_requests (
    tenant_id            TEXT    NOT NULL,
    request_id           TEXT    NOT NULL,
    action               TEXT    NOT NULL,           -- Create | Lookup | Load | Redeem | Cancel
    request_hash         TEXT    NOT NULL,           -- SHA-256 of JS(payload), hex
    ack_body             BLOB    NOT NULL,
    callback_body        BLOB    NOT NULL,
    callback_event_id    TEXT    NOT NULL,           -- the outbox row of its callback
    external_payment_id  TEXT,
    correlation_id       TEXT,
    created_at_ms        BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);

-- One row per card leg of a movement: the InStore ids and context of the posting.
CREATE TABLE instore_movements (
    external_transaction_id  TEXT    PRIMARY KEY,
    -- The operation: a Load or Redeem; a reversal carries the id of the operation it reverses.
    external_payment_id      TEXT    NOT NULL,
    kind                     TEXT    NOT NULL,       -- SV_LOAD | SV_REDEEM | SV_CANCEL
    reverses_payment_id      TEXT,                   -- SV_CANCEL only
    tenant_id                TEXT    NOT NULL,
    request_id               TEXT    NOT NULL,
    number                   TEXT    NOT NULL,
    movement_id              BIGINT  NOT NULL REFERENCES movements (id),
    currency                 TEXT    NOT NULL,
    amount_minor             BIGINT  NOT NULL,       -- signed from the card's side
    balance_after_minor      BIGINT  NOT NULL,       -- posted - held after
    location_id              TEXT    NOT NULL,
    workstation_id           TEXT,
    session_id               TEXT,
    reference                TEXT,
    correlation_id           TEXT,
    flags                    TEXT    NOT NULL DEFAULT '',
    created_at_ms            BIGINT  NOT NULL
);
CREATE INDEX instore_movements_payment ON instore_movements (external_payment_id);
CREATE INDEX instore_movements_number ON instore_movements (number, created_at_ms);
CREATE INDEX instore_movements_tenant_day ON instore_movements (tenant_id, created_at_ms);
-- An operation is reversed at most once, whatever the requestId.
CREATE UNIQUE INDEX instore_movements_reversal ON instore_movements (reverses_payment_id, number)
    WHERE reverses_payment_id IS NOT NULL;

CREATE TRIGGER instore_movements_no_update BEFORE UPDATE ON instore_movements
BEGIN SELECT RAISE(ABORT, 'instore_movements rows are immutable'); END;
CREATE TRIGGER instore_movements_no_delete BEFORE DELETE ON instore_movements
BEGIN SELECT RAISE(ABORT, 'instore_movements rows are immutable'); END;
