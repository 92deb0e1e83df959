-- The amount and currency of each presentment a run reconciled (signed from the
-- cardholder's side, minor units): a refund presented on its own on a later date is held
-- against its purchase's presentment of an earlier one, which may have netted the refund
-- off already (the merchant's return cleared twice). NULL for runs made before this
-- migration.
ALTER TABLE recon_presentments ADD COLUMN amount_minor BIGINT;
ALTER TABLE recon_presentments ADD COLUMN currency TEXT;
