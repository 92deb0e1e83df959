-- An authorization's deliveries are owed by its record: see
-- migrations/postgres/0013_owed_deliveries.sql.
ALTER TABLE processor_transactions ADD COLUMN webhook_sender BIGINT;
ALTER TABLE processor_transactions ADD COLUMN webhook_subscriptions TEXT;

UPDATE outbox SET state = 'DELIVERED', attempts = 1, delivered_at_ms = updated_at_ms
 WHERE state = 'HANDED'
   AND NOT EXISTS (SELECT 1 FROM outbox_senders w WHERE w.id = outbox.sender AND outbox.id >= w.sent_below);
UPDATE outbox SET state = 'PENDING' WHERE state = 'HANDED';
DELETE FROM outbox_senders;

DROP VIEW deliveries;
CREATE VIEW deliveries AS
SELECT id, event_id, event_type, subscription_id, url, body, state, attempts,
       next_attempt_at_ms, last_error, created_at_ms, updated_at_ms, delivered_at_ms
  FROM outbox;
ALTER TABLE outbox DROP COLUMN sender;
