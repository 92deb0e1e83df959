-- An authorization's deliveries are owed by its record, not by rows written with it
-- (docs/webhooks.md, "Senders and marks"). The commit that inserts the record names the sender
-- it was handed to and the subscriptions owed its `authorization.decided`; the sender's
-- dispatcher sends the event from memory and then writes the delivery row (DELIVERED, or
-- PENDING after a failed attempt). A sender's mark (`sent_below`) is now an instant: every
-- record of it created before the mark has its delivery rows. The takeover of a stopped
-- sender writes the rows still missing from its mark on, PENDING.
ALTER TABLE processor_transactions ADD COLUMN webhook_sender BIGINT;
-- Comma-separated subscription ids (NULL: none handed over).
ALTER TABLE processor_transactions ADD COLUMN webhook_subscriptions TEXT;

-- The rows of the former marks (row ids): below a sender's mark, or of a sender gone,
-- DELIVERED on their first attempt; the rest PENDING, for the claims.
UPDATE outbox o SET state = 'DELIVERED', attempts = 1, delivered_at_ms = o.updated_at_ms
 WHERE o.state = 'HANDED'
   AND NOT EXISTS (SELECT 1 FROM outbox_senders w WHERE w.id = o.sender AND o.id >= w.sent_below);
UPDATE outbox SET state = 'PENDING' WHERE state = 'HANDED';
DELETE FROM outbox_senders;

DROP VIEW deliveries;
CREATE VIEW deliveries AS
SELECT id, event_id, event_type, subscription_id, url, body, state, attempts,
       next_attempt_at_ms, last_error, created_at_ms, updated_at_ms, delivered_at_ms
  FROM outbox;
ALTER TABLE outbox DROP COLUMN sender;

-- Every event row unique per subscription again: the dispatcher's and the takeover's writes
-- of the same delivery meet here (the first one stays). Off the authorizations' commits, the
-- index costs them nothing.
DROP INDEX outbox_event_subscription;
CREATE UNIQUE INDEX outbox_event_subscription ON outbox (event_id, subscription_id)
    WHERE subscription_id IS NOT NULL;
