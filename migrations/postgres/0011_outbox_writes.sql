-- The dispatcher's writes to a delivery row made cheap (docs/webhooks.md, "The outbox table").
-- Each delivery is written three times: inserted with its change, leased, acknowledged.
--
-- Half of each page is left free on insert, so that the lease (which changes no indexed
-- column) is a heap-only update on the row's own page: no index entry, and a WAL record of
-- the changed bytes instead of a copy of the row with its body.
ALTER TABLE outbox SET (fillfactor = 50);

-- The acknowledgement changes `state`, so it adds an entry to every index that holds the
-- state. Only pending rows are looked up by state: the admin listings page back by id, and
-- a subscription's pending rows (a new URL, a deletion) have an index of their own.
DROP INDEX outbox_state;
DROP INDEX outbox_subscription;
CREATE INDEX outbox_pending_subscription ON outbox (subscription_id) WHERE state = 'PENDING';
