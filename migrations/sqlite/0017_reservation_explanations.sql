-- A channel's reservation keeps the explanation of its decision (the checks run, in order,
-- with their inputs, in the stored form an authorization keeps in
-- `processor_transactions.explanation`), with the answer recorded under its reservation id,
-- so that `GET /v1/channels/{channel}/reservations/{reservation_id}` can say why it was
-- declined. Other idempotency records leave it empty.
ALTER TABLE idempotency_keys ADD COLUMN explanation TEXT;
