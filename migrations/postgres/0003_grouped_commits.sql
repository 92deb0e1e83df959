-- Grouped commits write a batch in one statement without holding row locks between the
-- read and the write: the write names the version and balance each account had when it
-- was read, and this guard aborts the whole statement when one of them moved meanwhile.
CREATE FUNCTION ledger_expect_rows(expected BIGINT, actual BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
BEGIN
    IF expected <> actual THEN
        RAISE EXCEPTION 'grouped commit lost a race: % of % accounts unchanged', actual, expected
            USING ERRCODE = '40001';
    END IF;
    RETURN actual;
END
$$;
