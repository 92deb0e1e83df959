-- Senders and their marks: see migrations/postgres/0012_outbox_senders.sql.
CREATE TABLE outbox_senders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sent_below      BIGINT NOT NULL,
    alive_until_ms  BIGINT NOT NULL,
    started_at_ms   BIGINT NOT NULL
);

-- The sender a HANDED row was given to (no foreign key: the money's commit never waits on it).
ALTER TABLE outbox ADD COLUMN sender BIGINT;

-- The deliveries as the admin API shows them: a HANDED row is DELIVERED (on its first
-- attempt) below its sender's mark, or once its sender was taken over (what it had not sent
-- was made PENDING then), and PENDING while it is being sent.
CREATE VIEW deliveries AS
SELECT o.id, o.event_id, o.event_type, o.subscription_id, o.url, o.body,
       CASE WHEN o.state <> 'HANDED' THEN o.state
            WHEN w.id IS NULL OR o.id < w.sent_below THEN 'DELIVERED'
            ELSE 'PENDING' END AS state,
       CASE WHEN o.state = 'HANDED' AND (w.id IS NULL OR o.id < w.sent_below) THEN 1
            ELSE o.attempts END AS attempts,
       o.next_attempt_at_ms, o.last_error, o.created_at_ms, o.updated_at_ms, o.delivered_at_ms
  FROM outbox o LEFT JOIN outbox_senders w ON w.id = o.sender;
