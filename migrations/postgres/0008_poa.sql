-- The InStore pay-on-account extension (instore-extensions.md sections 3 and 6.1): a POA
-- account is a cardholder account whose overdraft limit is the credit limit; a Credit is a
-- POA_CHARGE movement of that account against INSTORE_CLEARING, a mistaken charge is
-- reversed once by the issuer (POA_REVERSAL); payonaccountlog records are stored and
-- echoed, no money moves.

CREATE TABLE poa_accounts (
    tenant_id            TEXT    NOT NULL,
    account_number       TEXT    NOT NULL,
    user_id              TEXT    NOT NULL,           -- poa- + 20 hex: the ledger account's user
    currency             TEXT    NOT NULL,
    company_name         TEXT,
    authorized_user_ids  TEXT    NOT NULL,           -- JSON array of strings; [] lets anyone charge
    blocked              BOOLEAN NOT NULL DEFAULT FALSE,
    -- Set when the admin API last lowered the credit limit: owed may then exceed it
    -- (reported by the audit, not an error).
    limit_lowered_at_ms  BIGINT,
    created_at_ms        BIGINT  NOT NULL,
    updated_at_ms        BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, account_number)
);
CREATE UNIQUE INDEX poa_accounts_user ON poa_accounts (user_id);

-- One row per POA_CHARGE movement.
CREATE TABLE poa_charges (
    movement_id          BIGINT  PRIMARY KEY REFERENCES movements (id),
    tenant_id            TEXT    NOT NULL,
    account_number       TEXT    NOT NULL,
    currency             TEXT    NOT NULL,
    amount_minor         BIGINT  NOT NULL,           -- positive: what was charged
    request_key          TEXT    NOT NULL,           -- the envelope requestId or bare:Credit:<x-correlation-id>
    performing_user      TEXT,
    correlation_id       TEXT,
    created_at_ms        BIGINT  NOT NULL
);
CREATE INDEX poa_charges_account ON poa_charges (tenant_id, account_number, created_at_ms);

-- A charge is reversed at most once: the primary key.
CREATE TABLE poa_reversals (
    charge_movement_id   BIGINT  PRIMARY KEY REFERENCES poa_charges (movement_id),
    movement_id          BIGINT  NOT NULL UNIQUE REFERENCES movements (id),
    created_at_ms        BIGINT  NOT NULL
);

-- payonaccountlog records, idempotent on (tenant, account, session, order, action).
CREATE TABLE poa_logs (
    id                   BIGSERIAL PRIMARY KEY,
    tenant_id            TEXT    NOT NULL,
    account_number       TEXT    NOT NULL,
    session_id           TEXT    NOT NULL,           -- '' when absent
    order_id             TEXT    NOT NULL,           -- '' when absent
    action               TEXT    NOT NULL,
    request_hash         TEXT    NOT NULL,           -- SHA-256 of JS(record)
    record               TEXT    NOT NULL,           -- the record as echoed, without requestId
    flags                TEXT    NOT NULL DEFAULT '', -- LOG_WITHOUT_CHARGE
    received_at_ms       BIGINT  NOT NULL
);
CREATE UNIQUE INDEX poa_logs_key ON poa_logs (tenant_id, account_number, session_id, order_id, action);
CREATE INDEX poa_logs_account ON poa_logs (tenant_id, account_number, id);

CREATE TRIGGER poa_charges_immutable BEFORE UPDATE OR DELETE ON poa_charges
    FOR EACH ROW EXECUTE FUNCTION ledger_history_is_immutable();
CREATE TRIGGER poa_reversals_immutable BEFORE UPDATE OR DELETE ON poa_reversals
    FOR EACH ROW EXECUTE FUNCTION ledger_history_is_immutable();
