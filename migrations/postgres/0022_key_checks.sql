-- A check value of each key whose outputs the database keeps (the InStore PIN and CVC hash
-- key): SHA-256 of a fixed label and the key, hex. The first instance to start once the key
-- is in use writes it; an instance started with another key finds it different and refuses
-- to start, instead of failing every PIN check (and blocking cards) with hashes made under
-- another key.
CREATE TABLE key_checks (
    name TEXT PRIMARY KEY,
    check_value TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
