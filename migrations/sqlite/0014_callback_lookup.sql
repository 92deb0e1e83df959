-- A duplicate InStore request sends its callback again: the writer finds the callback's row
-- by its event id (`subscription_id IS NULL`). The embedded store's unique index on
-- (event_id, subscription_id) already serves that lookup; this index keeps the two stores'
-- schemas alike.
CREATE INDEX outbox_callback_event ON outbox (event_id) WHERE subscription_id IS NULL;
