-- Subscribers' delivery rows are deleted once settled (DELIVERED or DEAD) and older than
-- `webhooks.retention_days` (docs/webhooks.md, "Retention"). Callbacks (rows without a
-- subscription) are kept: a duplicate InStore request sends its callback again, however old.
-- One row: where the dispatchers' deleting pass has got to.
CREATE TABLE outbox_retention (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    -- Every subscriber's row deleted was created before this instant; the audit checks that
    -- each event owed has its row from here on only.
    pruned_before_ms  BIGINT  NOT NULL,
    -- Every outbox row with a smaller id has been looked at (and deleted, or kept for good).
    next_id           BIGINT  NOT NULL
);
INSERT INTO outbox_retention (id, pruned_before_ms, next_id) VALUES (1, 0, 0);
