-- A channel's reservation and an InStore wallet payment are decided with the spending
-- controls of their account and card, as an authorization is, and count in their windows.
-- Each keeps what it counted (the same text an authorization keeps in
-- `processor_transactions.controls_counted`), so that what later releases it (a hold's
-- cancel, expiry, partial capture or refunds; a payment's refunds and reversals) gives back
-- exactly that, once.
ALTER TABLE holds ADD COLUMN controls_counted TEXT;
ALTER TABLE wallet_payments ADD COLUMN controls_counted TEXT;
