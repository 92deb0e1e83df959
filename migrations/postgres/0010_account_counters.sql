-- An account's control counters move onto its row (docs/controls.md, "Counters"): an
-- approval writes them with the balance it moves, instead of one row of its own per window.
-- One line per counter, `window[|categories] amount count`. A card's counters stay in
-- control_counters.
ALTER TABLE accounts ADD COLUMN counters TEXT NOT NULL DEFAULT '';

UPDATE accounts a SET counters = c.text
  FROM (SELECT owner_id,
               string_agg(window_key
                          || CASE WHEN categories = '' THEN '' ELSE '|' || categories END
                          || ' ' || amount_minor || ' ' || count,
                          E'\n' ORDER BY window_key, categories) AS text
          FROM control_counters
         WHERE owner_kind = 'ACCOUNT' AND (amount_minor <> 0 OR count <> 0)
         GROUP BY owner_id) c
 WHERE a.kind = 'USER' AND a.user_id || '/' || a.currency = c.owner_id;

DELETE FROM control_counters WHERE owner_kind = 'ACCOUNT';
