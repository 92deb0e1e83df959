-- A check value of each key whose outputs the database keeps (the InStore PIN and CVC hash
-- key): HMAC-SHA256(key, a fixed label), hex. The first instance to start writes it; an
-- instance started with another key finds it different and refuses to start, instead of
-- failing every PIN check (and blocking cards) with hashes made under another key.
CREATE TABLE key_checks (
    name TEXT PRIMARY KEY,
    check_value TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
