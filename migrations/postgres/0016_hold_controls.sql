-- A reservation is decided with the spending controls of its account and card, as an
-- authorization is, and counts in their windows. The hold keeps what it counted (the same
-- text an authorization keeps in `processor_transactions.controls_counted`), so that its
-- cancel, expiry, partial capture or refunds give back exactly that, once.
ALTER TABLE holds ADD COLUMN controls_counted TEXT;
