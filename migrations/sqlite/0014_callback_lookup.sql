-- A duplicate InStore request sends its callback again: the writer finds the callback's row
-- by its event id (`subscription_id IS NULL`), inside the batch's transaction. The unique
-- index on (event_id, subscription_id) covers subscribers' rows only, so that lookup read the
-- whole outbox, which keeps every event ever owed.
CREATE INDEX outbox_callback_event ON outbox (event_id) WHERE subscription_id IS NULL;
