-- An authorization's delivery sent on its first attempt is written once (docs/webhooks.md,
-- "Senders and marks"): inserted HANDED to the sender of the instance whose commit wrote it,
-- and never updated when sent. The sender's mark says how far its sends have come: every
-- HANDED row of it below `sent_below` is settled (delivered, or made PENDING when an attempt
-- failed). A sender whose instance stopped keeping it alive is taken over by another: its
-- HANDED rows from its mark on become PENDING, for the claims, and the sender row is deleted.
CREATE TABLE outbox_senders (
    id              BIGSERIAL PRIMARY KEY,
    sent_below      BIGINT NOT NULL,
    alive_until_ms  BIGINT NOT NULL,
    started_at_ms   BIGINT NOT NULL
);

-- The sender a HANDED row was given to (no foreign key: the money's commit never waits on it).
ALTER TABLE outbox ADD COLUMN sender BIGINT;

-- An authorization's event rows are unique by construction: written by the statement that
-- inserts the authorization's record, itself unique. Their event ids are random text, and a
-- unique index over them was most of what a subscriber cost the database per authorization
-- (docs/perf/README.md, "Senders and marks"); `authorizer audit` checks instead that no event
-- has two rows for one subscription. The other events keep the index.
DROP INDEX outbox_event_subscription;
CREATE UNIQUE INDEX outbox_event_subscription ON outbox (event_id, subscription_id)
    WHERE subscription_id IS NOT NULL AND event_type <> 'authorization.decided';

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
