-- Prepaid point blocks (settlement/prepaid.py). A prepaid partner's balance lives in
-- prepaid_balances: paid blocks add to it, every point its customers earn on its own
-- funding (a lot with funding 'partner') draws it down, every such point cancelled (a
-- lot movement 'cancel': earn reversals, purchase returns, debit adjustments) credits it
-- back. Coalition-funded lots never touch it. Both triggers run inside the posting's own
-- transaction, so every earning path (earn, purchases, events, the importer, adjustments)
-- is covered, and a refusal rolls the whole posting back: nothing is written.
--
-- Which lots count: those issued while the terms in force said 'prepaid', judged at the
-- lot's journal entry's created_at (for API postings, the moment of posting). A lot issued
-- under postpaid terms is billed by the statement, and its cancellation credits nothing.
--
-- Cost for postpaid partners: one statement-level trigger per INSERT into lots that joins
-- the inserted lots to prepaid_balances (a handful of rows) and finds nothing; no row lock.

-- The rate card in force for a partner at an instant (NULL when none).
CREATE FUNCTION settlement_terms_at(p_partner uuid, p_at timestamptz)
RETURNS settlement_terms LANGUAGE sql STABLE AS $$
    SELECT * FROM settlement_terms
     WHERE partner_id = p_partner AND effective_from <= p_at
     ORDER BY effective_from DESC LIMIT 1
$$;

-- A partner gets a balance row with its first prepaid rate card, so the draw trigger
-- only ever needs to look at partners that have one.
CREATE FUNCTION prepaid_open_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO prepaid_balances (partner_id) VALUES (NEW.partner_id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER settlement_terms_prepaid AFTER INSERT ON settlement_terms
    FOR EACH ROW WHEN (NEW.billing = 'prepaid') EXECUTE FUNCTION prepaid_open_balance();

-- Prepaid rate cards written before this migration get their (empty) balance too.
INSERT INTO prepaid_balances (partner_id)
SELECT DISTINCT partner_id FROM settlement_terms WHERE billing = 'prepaid'
ON CONFLICT DO NOTHING;

-- Draws the issued points from each prepaid partner's balance, one UPDATE per statement
-- (the importer inserts thousands of lots at once). The row lock serialises a prepaid
-- partner's concurrent issuances, so two of them can never overdraw the balance together.
-- Beyond the credit limit of the terms in force now: SQLSTATE CPB01, whose DETAIL is a
-- JSON object (partner_id, available, credit_limit, requested) the API turns into the
-- problem prepaid-balance-exhausted.
CREATE FUNCTION prepaid_draw() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t settlement_terms;
BEGIN
    FOR r IN
        WITH drawn AS (
            SELECT n.partner_id, sum(n.points) AS points
              FROM new_lots n
              JOIN prepaid_balances b ON b.partner_id = n.partner_id
              JOIN journal_entries e ON e.id = n.entry_id
             WHERE n.funding = 'partner'
               AND (settlement_terms_at(n.partner_id, e.created_at)).billing = 'prepaid'
             GROUP BY n.partner_id)
        UPDATE prepaid_balances b
           SET available = b.available - d.points, drawn = b.drawn + d.points,
               updated_at = now()
          FROM drawn d
         WHERE b.partner_id = d.partner_id
        RETURNING b.partner_id, b.available, d.points, b.low_since
    LOOP
        t := settlement_terms_at(r.partner_id, now());
        IF r.available < -coalesce(t.credit_limit, 0) THEN
            RAISE EXCEPTION 'prepaid balance exhausted: partner % has % points left and a credit limit of %; % points were to be issued',
                r.partner_id, r.available + r.points, coalesce(t.credit_limit, 0), r.points
                USING ERRCODE = 'CPB01',
                      DETAIL = jsonb_build_object(
                          'partner_id', r.partner_id, 'available', r.available + r.points,
                          'credit_limit', coalesce(t.credit_limit, 0),
                          'requested', r.points)::text;
        END IF;
        -- Once per crossing: the flag stays until a paid block lifts the balance again.
        IF r.low_since IS NULL AND t.low_balance_alert IS NOT NULL
           AND r.available <= t.low_balance_alert THEN
            UPDATE prepaid_balances SET low_since = now(), alert_sent_at = NULL
             WHERE partner_id = r.partner_id;
            PERFORM pg_notify('coalition_prepaid', r.partner_id::text);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER lots_prepaid_draw AFTER INSERT ON lots
    REFERENCING NEW TABLE AS new_lots
    FOR EACH STATEMENT EXECUTE FUNCTION prepaid_draw();

-- Cancelled points go back to the balance of the partner that issued the lot, if the lot
-- drew from it. Row-level with a WHEN clause: spending and expiry movements never call it.
CREATE FUNCTION prepaid_credit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE prepaid_balances b
       SET available = b.available + NEW.points, credited = b.credited + NEW.points,
           updated_at = now()
      FROM lots l JOIN journal_entries e ON e.id = l.entry_id
     WHERE l.id = NEW.lot_id AND l.funding = 'partner' AND b.partner_id = l.partner_id
       AND (settlement_terms_at(l.partner_id, e.created_at)).billing = 'prepaid';
    RETURN NULL;
END $$;

CREATE TRIGGER lot_movements_prepaid_credit AFTER INSERT ON lot_movements
    FOR EACH ROW WHEN (NEW.kind = 'cancel') EXECUTE FUNCTION prepaid_credit();
