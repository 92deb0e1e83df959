-- An account's control counters move onto its row (docs/controls.md, "Counters"): an
-- approval writes them with the balance it moves, instead of one row of its own per window.
-- One line per counter, `window[|categories] amount count`. A card's counters stay in
-- control_counters.
ALTER TABLE accounts ADD COLUMN counters TEXT NOT NULL DEFAULT '';

UPDATE accounts SET counters = (
    SELECT group_concat(window_key
                        || CASE WHEN categories = '' THEN '' ELSE '|' || categories END
                        || ' ' || amount_minor || ' ' || count, char(10))
      FROM control_counters c
     WHERE c.owner_kind = 'ACCOUNT' AND c.owner_id = accounts.user_id || '/' || accounts.currency
       AND (c.amount_minor <> 0 OR c.count <> 0))
 WHERE kind = 'USER' AND EXISTS (
    SELECT 1 FROM control_counters c
     WHERE c.owner_kind = 'ACCOUNT' AND c.owner_id = accounts.user_id || '/' || accounts.currency
       AND (c.amount_minor <> 0 OR c.count <> 0));

DELETE FROM control_counters WHERE owner_kind = 'ACCOUNT';
