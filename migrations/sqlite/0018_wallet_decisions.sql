-- Every fresh decision on a wallet payment (pay_wallet) whose barcode names an account,
-- approved or declined, with why: the wallet's answer, and the explanation of the spending
-- controls when they decided (the checks run, in order, with their inputs, in the stored
-- form an authorization keeps in `processor_transactions.explanation`). Written in the
-- transaction of the decision, so `GET /v1/accounts/{user_id}/{currency}/wallet-payments`
-- can say why a payment was declined. Only the barcode's last four digits are kept: a
-- declined payment leaves its barcode usable.
CREATE TABLE wallet_decisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      BIGINT  NOT NULL REFERENCES accounts (id),
    tenant_id       TEXT    NOT NULL,
    barcode_last4   TEXT    NOT NULL,
    transaction_id  TEXT,                            -- the payment, when approved
    currency        TEXT    NOT NULL,
    total_minor     BIGINT,                          -- asked, tip included; NULL: not
    tip_minor       BIGINT,                          -- readable in the account's currency
    outcome         TEXT    NOT NULL,                -- APPROVED, or the wallet's reason
    explanation     TEXT,                            -- NULL: the wallet's own rules decided
    created_at_ms   BIGINT  NOT NULL
);
CREATE INDEX wallet_decisions_account ON wallet_decisions (account_id, id);
