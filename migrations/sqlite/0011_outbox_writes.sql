-- The dispatcher's writes to a delivery row made cheap (docs/webhooks.md, "The outbox table"):
-- the acknowledgement changes `state`, so it rewrites an entry in every index that holds the
-- state. Only pending rows are looked up by state: the admin listings page back by id, and
-- a subscription's pending rows (a new URL, a deletion) have an index of their own.
DROP INDEX outbox_state;
DROP INDEX outbox_subscription;
CREATE INDEX outbox_pending_subscription ON outbox (subscription_id) WHERE state = 'PENDING';
