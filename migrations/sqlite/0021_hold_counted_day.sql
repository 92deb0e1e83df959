-- The UTC day (days since the epoch) whose daily counter took a hold's reservation. It is
-- the day of created_at_ms, except for a reservation stamped just before midnight that
-- reached its account after a request of the new day had moved the counter on: the new
-- day's counter took it, and a release gives it back there. NULL for holds reserved before
-- this migration (the day of created_at_ms).
ALTER TABLE holds ADD COLUMN counted_day BIGINT;
