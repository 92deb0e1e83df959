-- Subscriptions and the outbox: see migrations/postgres/0005_outbox.sql.
--
-- A subscription receives nothing until its URL answered the challenge
-- (point-integration section 3): `state` is PENDING_VALIDATION until then, and a new URL
-- puts it back there. The secret is kept as given because every delivery is signed with
-- it (HMAC needs the key itself); the admin API shows it once, at creation.
CREATE TABLE webhook_subscriptions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    url              TEXT   NOT NULL,
    secret           TEXT   NOT NULL,
    -- Comma-separated event types, or '*' for every type.
    event_types      TEXT   NOT NULL,
    state            TEXT   NOT NULL,   -- PENDING_VALIDATION | ACTIVE
    -- When the current URL passed its challenge (NULL while PENDING_VALIDATION).
    active_since_ms  BIGINT,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL
);

-- One row per delivery: written in the transaction of the change it reports, so an event
-- exists exactly when its change does. The body bytes and `headers` never change between
-- attempts; rows of a subscription are signed at each attempt with its secret (a fresh
-- `ts`), rows without one carry every header they need (callbacks to configured URLs).
CREATE TABLE outbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            TEXT   NOT NULL,   -- stable: the receiver dedupes on it
    event_type          TEXT   NOT NULL,
    subscription_id     BIGINT,            -- no foreign key: deleting a subscription never blocks a money commit
    url                 TEXT   NOT NULL,
    body                BLOB   NOT NULL,
    headers             TEXT   NOT NULL,   -- JSON object of header name to value
    state               TEXT   NOT NULL,   -- PENDING | DELIVERED | DEAD
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    leased_until_ms     BIGINT,
    last_error          TEXT,
    -- Give-up age counts from here: the commit, or the last redelivery.
    pending_since_ms    BIGINT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL,
    delivered_at_ms     BIGINT
);
CREATE UNIQUE INDEX outbox_event_subscription ON outbox (event_id, subscription_id)
    WHERE subscription_id IS NOT NULL;
-- The dispatcher's work list.
CREATE INDEX outbox_due ON outbox (next_attempt_at_ms) WHERE state = 'PENDING';
CREATE INDEX outbox_state ON outbox (state, id);
CREATE INDEX outbox_subscription ON outbox (subscription_id, state);
