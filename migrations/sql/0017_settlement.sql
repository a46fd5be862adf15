-- Settlement runs: statements per partner computed set-based from the ledger.
--
-- Valuation (README "Settlement"): a run values the postings of the journal entries it
-- claims (settlement_entries):
--   * partner_issuance postings: points issued (earn, purchase) or credited back
--     (return, reversal, withdrawal), at the issuing partner's issue price in force when
--     the points were earned (the reversed entry's occurred_at for a reversal);
--   * partner_redemption postings: points redeemed at the partner (redeem, capture) or
--     given back (reversal), at its reimbursement in force at the redemption;
--   * operator_promotions postings: coalition-funded points, shown on the statement of
--     the partner where they were earned, billed to nobody (amount 0).
-- A line's exact amount = points x price (x FX rate), rounded once, half away from zero
-- (PostgreSQL round(numeric)), to the minor unit. Positive: the partner owes.
-- Errors: SQLSTATE SE001 (run state), SE002 (no rate card in force), SE003 (no FX
-- rate), SE010 (immutable).

CREATE FUNCTION settlement_compute(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r settlement_runs;
    v_currency text;
    v_tz text;
    v_problem text;
    v_skipped text[];
BEGIN
    SELECT * INTO r FROM settlement_runs WHERE id = p_run FOR UPDATE;
    IF NOT FOUND OR r.status <> 'draft' THEN
        RAISE EXCEPTION 'settlement run % is %, only a draft can be computed', r.period,
            coalesce(r.status, 'missing') USING ERRCODE = 'SE001';
    END IF;
    SELECT currency, timezone INTO v_currency, v_tz FROM coalition_settings WHERE id = 1;

    -- A re-run replaces everything the previous computation wrote, except that a
    -- partner's statement keeps its id (updated below; dropped if it has no line now).
    DELETE FROM settlement_flows WHERE run_id = p_run;
    DELETE FROM settlement_lines WHERE run_id = p_run;
    DELETE FROM settlement_entries WHERE run_id = p_run;
    UPDATE settlement_adjustments SET run_id = NULL WHERE run_id = p_run;

    -- Rate cards as [effective_from, effective_to) ranges; cards that start after the
    -- period are ignored, so a re-run gives the same lines whatever was added since.
    DROP TABLE IF EXISTS pg_temp.st_terms, pg_temp.st_partner, pg_temp.st_claim, pg_temp.st_val,
                         pg_temp.st_line;
    CREATE TEMP TABLE st_terms ON COMMIT DROP AS
    SELECT t.id, t.partner_id, t.effective_from, t.issue_price, t.reimbursement,
           t.fee_percent, coalesce(lead(t.effective_from) OVER w, 'infinity') AS effective_to
      FROM settlement_terms t WHERE t.effective_from < r.period_end
    WINDOW w AS (PARTITION BY t.partner_id ORDER BY t.effective_from);

    -- The partners this run settles: a rate card in force by the period's end, whose
    -- cycle (the latest card's) is the run's. Their statement currency and FX rate.
    CREATE TEMP TABLE st_partner ON COMMIT DROP AS
    SELECT cur.partner_id, cur.id AS terms_id, cur.currency, cur.fee_fixed,
           CASE WHEN cur.currency = v_currency THEN NULL ELSE fx.rate END AS fx_rate
      FROM (SELECT DISTINCT ON (partner_id) * FROM settlement_terms
             WHERE effective_from < r.period_end
             ORDER BY partner_id, effective_from DESC) cur
      LEFT JOIN LATERAL (
          SELECT f.rate FROM fx_rates f
           WHERE f.base = v_currency AND f.quote = cur.currency
             AND f.effective_from <= ((r.period_end AT TIME ZONE v_tz) - interval '1 day')::date
           ORDER BY f.effective_from DESC LIMIT 1) fx ON true
     WHERE cur.cycle = r.cycle;
    ALTER TABLE st_partner ADD PRIMARY KEY (partner_id);
    -- Fresh statistics for the tables this function just filled: without them the
    -- planner takes them for empty and picks nested loops over millions of rows.
    ANALYZE st_terms;
    ANALYZE st_partner;
    SELECT string_agg(format('%s/%s', v_currency, currency), ', ') INTO v_problem
      FROM (SELECT DISTINCT currency FROM st_partner
             WHERE currency <> v_currency AND fx_rate IS NULL) missing;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'no FX rate in force for % on %', v_problem,
            ((r.period_end AT TIME ZONE v_tz) - interval '1 day')::date USING ERRCODE = 'SE003';
    END IF;

    -- Claim every entry of these partners (and the coalition's own, on monthly runs)
    -- that happened before the period's end and no run has claimed: entries of earlier
    -- periods committed after their run was computed land here, marked late.
    -- (Selected first, inserted after: an anti-join against the table being filled
    -- rescans its growing pages for every row.)
    CREATE TEMP TABLE st_claim ON COMMIT DROP AS
    SELECT e.id FROM journal_entries e
     WHERE e.occurred_at < r.period_end
       AND (e.partner_id IN (SELECT partner_id FROM st_partner)
            OR (e.partner_id IS NULL AND r.cycle = 'monthly'))
       AND NOT EXISTS (SELECT 1 FROM settlement_entries s WHERE s.entry_id = e.id);
    INSERT INTO settlement_entries (entry_id, run_id) SELECT id, p_run FROM st_claim;
    ANALYZE settlement_entries;

    -- Partners with activity but no rate card at all are not settled (their entries
    -- stay unclaimed); the run names them.
    IF r.cycle = 'monthly' THEN
        SELECT coalesce(array_agg(p.slug ORDER BY p.slug), '{}') INTO v_skipped
          FROM partners p
         WHERE NOT EXISTS (SELECT 1 FROM settlement_terms t
                            WHERE t.partner_id = p.id AND t.effective_from < r.period_end)
           AND EXISTS (SELECT 1 FROM journal_entries e
                        WHERE e.partner_id = p.id AND e.occurred_at < r.period_end
                          AND NOT EXISTS (SELECT 1 FROM settlement_entries s
                                           WHERE s.entry_id = e.id));
    END IF;

    -- Valued postings: points from the partner's point of view and when they are priced.
    CREATE TEMP TABLE st_val ON COMMIT DROP AS
    SELECT coalesce(a.partner_id, e.partner_id) AS partner_id, a.kind,
           sum(CASE a.kind WHEN 'partner_redemption' THEN p.amount ELSE -p.amount END) AS points,
           coalesce(o.occurred_at, e.occurred_at) AS priced_at,
           e.occurred_at < r.period_start AS late, sign(p.amount) AS direction
      FROM settlement_entries s
      JOIN journal_entries e ON e.id = s.entry_id
      JOIN postings p ON p.entry_id = s.entry_id
      JOIN accounts a ON a.id = p.account_id
      LEFT JOIN journal_entries o ON o.id = e.reverses_entry_id
     WHERE s.run_id = p_run
       AND a.kind IN ('partner_issuance', 'partner_redemption', 'operator_promotions')
       AND coalesce(a.partner_id, e.partner_id) IN (SELECT partner_id FROM st_partner)
     GROUP BY 1, 2, 4, 5, 6;
    ANALYZE st_val;

    SELECT string_agg(DISTINCT format('%s (earliest %s)', pa.slug, v.first_at), ', ')
      INTO v_problem
      FROM (SELECT v.partner_id, min(v.priced_at) AS first_at FROM st_val v
             WHERE v.kind <> 'operator_promotions'
               AND NOT EXISTS (SELECT 1 FROM st_terms t WHERE t.partner_id = v.partner_id
                                AND v.priced_at >= t.effective_from
                                AND v.priced_at < t.effective_to)
             GROUP BY v.partner_id) v
      JOIN partners pa ON pa.id = v.partner_id;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'no rate card in force when points were earned or spent: %',
            v_problem USING ERRCODE = 'SE002';
    END IF;

    -- Lines before rounding: one per partner, type, rate card and late flag.
    CREATE TEMP TABLE st_line ON COMMIT DROP AS
    WITH priced AS (
        SELECT v.partner_id, v.late, v.points, t.id AS terms_id, t.fee_percent,
               CASE WHEN v.kind = 'operator_promotions' THEN 'coalition_funded_bonus'
                    WHEN v.points < 0 THEN 'reversal'
                    WHEN v.kind = 'partner_issuance' THEN 'issuance'
                    ELSE 'reimbursement' END AS type,
               CASE v.kind WHEN 'partner_issuance' THEN t.issue_price
                           WHEN 'partner_redemption' THEN t.reimbursement END AS unit_price,
               CASE v.kind WHEN 'partner_issuance' THEN 1
                           WHEN 'partner_redemption' THEN -1 ELSE 0 END AS sign,
               v.kind
          FROM st_val v
          LEFT JOIN st_terms t ON v.kind <> 'operator_promotions'
               AND t.partner_id = v.partner_id
               AND v.priced_at >= t.effective_from AND v.priced_at < t.effective_to
    ), grouped AS (
        SELECT partner_id, type, kind, late, terms_id, unit_price, fee_percent,
               sum(points) AS points, sum(points) * unit_price * sign AS base
          FROM priced GROUP BY partner_id, type, kind, late, terms_id, unit_price,
                                fee_percent, sign
    )
    SELECT g.partner_id, g.type, g.kind, g.late, g.terms_id, g.unit_price, g.points,
           coalesce(g.base, 0) * coalesce(sp.fx_rate, 1) AS exact, NULL::bigint AS adjustment_id,
           NULL::text AS reason
      FROM grouped g JOIN st_partner sp USING (partner_id)
    UNION ALL  -- platform fee: a percentage of the issuance value, net of returns
    SELECT g.partner_id, 'platform_fee_percent', 'fee', g.late, g.terms_id, g.fee_percent,
           sum(g.points), sum(g.base) * g.fee_percent / 100 * coalesce(sp.fx_rate, 1), NULL, NULL
      FROM grouped g JOIN st_partner sp USING (partner_id)
     WHERE g.kind = 'partner_issuance' AND g.fee_percent > 0
     GROUP BY g.partner_id, g.late, g.terms_id, g.fee_percent, sp.fx_rate
    UNION ALL  -- fixed fee per cycle (settlement currency), active partners only
    SELECT sp.partner_id, 'platform_fee_fixed', 'fee', false, sp.terms_id, NULL, NULL,
           sp.fee_fixed, NULL, NULL
      FROM st_partner sp JOIN partners pa ON pa.id = sp.partner_id
     WHERE sp.fee_fixed > 0 AND pa.status = 'active';
    ANALYZE st_line;

    -- Operator adjustments waiting for a run (from dispute resolutions), claimed.
    WITH claimed AS (
        UPDATE settlement_adjustments a SET run_id = p_run
         WHERE a.run_id IS NULL AND a.partner_id IN (SELECT partner_id FROM st_partner)
        RETURNING a.id, a.partner_id, a.amount, a.reason)
    INSERT INTO st_line
    SELECT partner_id, 'adjustment', 'adjustment', false, NULL, NULL, NULL, amount, id, reason
      FROM claimed;

    INSERT INTO settlement_statements (run_id, partner_id, currency, fx_rate, total_debit,
                                       total_credit, net, line_count, late_lines,
                                       payment_status)
    SELECT p_run, sp.partner_id, sp.currency, sp.fx_rate,
           coalesce(sum(round(l.exact)) FILTER (WHERE round(l.exact) > 0), 0),
           coalesce(sum(round(l.exact)) FILTER (WHERE round(l.exact) < 0), 0),
           sum(round(l.exact)), count(*), count(*) FILTER (WHERE l.late),
           CASE WHEN sum(round(l.exact)) = 0 THEN 'nothing_due' ELSE 'pending' END
      FROM st_line l JOIN st_partner sp USING (partner_id)
     GROUP BY sp.partner_id, sp.currency, sp.fx_rate
    ON CONFLICT (run_id, partner_id) DO UPDATE SET
        currency = EXCLUDED.currency, fx_rate = EXCLUDED.fx_rate,
        total_debit = EXCLUDED.total_debit, total_credit = EXCLUDED.total_credit,
        net = EXCLUDED.net, line_count = EXCLUDED.line_count,
        late_lines = EXCLUDED.late_lines, payment_status = EXCLUDED.payment_status;
    DELETE FROM settlement_statements s WHERE s.run_id = p_run
       AND NOT EXISTS (SELECT 1 FROM st_line l WHERE l.partner_id = s.partner_id);

    INSERT INTO settlement_lines (statement_id, run_id, partner_id, line_no, type,
                                  description, late, points, unit_price, terms_id, fx_rate,
                                  amount_exact, amount, adjustment_id)
    SELECT s.id, p_run, l.partner_id,
           row_number() OVER (PARTITION BY l.partner_id ORDER BY
               array_position(ARRAY['issuance', 'reversal', 'reimbursement',
                                    'coalition_funded_bonus', 'affiliate_commission',
                                    'platform_fee_percent', 'platform_fee_fixed',
                                    'adjustment'], l.type),
               l.kind, l.late, l.terms_id, l.adjustment_id),
           l.type,
           CASE WHEN l.late THEN 'Late (earlier period): ' ELSE '' END ||
           CASE l.type
               WHEN 'issuance' THEN 'Points issued to members'
               WHEN 'reversal' THEN CASE l.kind
                   WHEN 'partner_issuance' THEN 'Points returned or reversed, credited at the issue price'
                   ELSE 'Redemptions reversed, reimbursement taken back' END
               WHEN 'reimbursement' THEN 'Points redeemed at your brand, reimbursed'
               WHEN 'coalition_funded_bonus' THEN CASE WHEN l.points < 0
                   THEN 'Coalition-funded points returned (the operator''s)'
                   ELSE 'Coalition-funded bonus points, paid by the operator' END
               WHEN 'platform_fee_percent' THEN 'Platform fee, percent of the issuance value'
               WHEN 'platform_fee_fixed' THEN 'Platform fee, fixed per cycle'
               WHEN 'adjustment' THEN 'Adjustment: ' || l.reason
           END,
           l.late, l.points, l.unit_price, l.terms_id,
           CASE WHEN l.type IN ('platform_fee_fixed', 'adjustment') THEN NULL ELSE s.fx_rate END,
           l.exact, round(l.exact), l.adjustment_id
      FROM st_line l JOIN settlement_statements s
        ON s.run_id = p_run AND s.partner_id = l.partner_id;

    -- The flow matrix: lots consumed by redemptions (and holds) in the claimed entries,
    -- issuer x redeemer, valued at the redeemer's reimbursement (coalition currency).
    INSERT INTO settlement_flows (run_id, issuer_partner_id, redeemer_partner_id, funding,
                                  points, value)
    SELECT p_run, l.partner_id, e.partner_id, l.funding, sum(m.points),
           coalesce(round(sum(m.points * t.reimbursement)), 0)
      FROM settlement_entries s
      JOIN journal_entries e ON e.id = s.entry_id
      JOIN lot_movements m ON m.entry_id = s.entry_id
      JOIN lots l ON l.id = m.lot_id
      LEFT JOIN journal_entries o ON o.id = e.reverses_entry_id
      LEFT JOIN st_terms t ON t.partner_id = e.partner_id
           AND coalesce(o.occurred_at, e.occurred_at) >= t.effective_from
           AND coalesce(o.occurred_at, e.occurred_at) < t.effective_to
     WHERE s.run_id = p_run AND m.kind IN ('spend', 'unspend', 'hold', 'release')
     GROUP BY l.partner_id, e.partner_id, l.funding
    HAVING sum(m.points) <> 0;

    UPDATE settlement_runs SET computed_at = clock_timestamp(), currency = v_currency,
                               skipped_partners = coalesce(v_skipped, '{}')
     WHERE id = p_run;
END $$;

-- The run's content as text, hashed: everything a statement says except payment state.
-- Timestamps as epoch numbers so the session's time zone cannot change the hash.
CREATE FUNCTION settlement_content_hash(p_run bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws(E'\n',
        (SELECT concat_ws('|', r.id, r.period, r.cycle, extract(epoch FROM r.period_start),
                          extract(epoch FROM r.period_end), r.currency)
           FROM settlement_runs r WHERE r.id = p_run),
        (SELECT string_agg(concat_ws('|', s.id, s.partner_id, s.currency,
                                     quote_nullable(s.fx_rate), s.total_debit, s.total_credit,
                                     s.net, s.line_count, s.late_lines), E'\n' ORDER BY s.id)
           FROM settlement_statements s WHERE s.run_id = p_run),
        (SELECT string_agg(concat_ws('|', l.id, l.statement_id, l.partner_id, l.line_no,
                                     l.type, l.description, l.late, quote_nullable(l.points),
                                     quote_nullable(l.unit_price), quote_nullable(l.terms_id),
                                     quote_nullable(l.fx_rate), l.amount_exact, l.amount,
                                     quote_nullable(l.adjustment_id)), E'\n' ORDER BY l.id)
           FROM settlement_lines l WHERE l.run_id = p_run),
        (SELECT string_agg(concat_ws('|', f.id, quote_nullable(f.issuer_partner_id),
                                     quote_nullable(f.redeemer_partner_id), f.funding,
                                     f.points, f.value), E'\n' ORDER BY f.id)
           FROM settlement_flows f WHERE f.run_id = p_run)), 'UTF8')), 'hex')
$$;

-- Immutability ------------------------------------------------------------------------
-- Statements, lines and flows change only while their run is a draft (a run being
-- deleted, a discarded draft, takes its rows with it).
CREATE FUNCTION settlement_guard_draft() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_row record := CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    SELECT status INTO v_status FROM settlement_runs WHERE id = v_row.run_id;
    IF FOUND AND v_status <> 'draft' THEN
        -- After finalization only a statement's payment state may move (nested IFs:
        -- other tables have no such columns).
        IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'settlement_statements' THEN
            IF (NEW.id, NEW.run_id, NEW.partner_id, NEW.currency, NEW.fx_rate,
                NEW.total_debit, NEW.total_credit, NEW.net, NEW.line_count, NEW.late_lines)
               IS NOT DISTINCT FROM
               (OLD.id, OLD.run_id, OLD.partner_id, OLD.currency, OLD.fx_rate,
                OLD.total_debit, OLD.total_credit, OLD.net, OLD.line_count, OLD.late_lines)
            THEN
                RETURN NEW;
            END IF;
        END IF;
        RAISE EXCEPTION '% of a % settlement run cannot change', TG_TABLE_NAME, v_status
            USING ERRCODE = 'SE010';
    END IF;
    RETURN v_row;
END $$;

CREATE TRIGGER settlement_statements_guard BEFORE INSERT OR UPDATE OR DELETE
    ON settlement_statements FOR EACH ROW EXECUTE FUNCTION settlement_guard_draft();
CREATE TRIGGER settlement_lines_guard BEFORE INSERT OR UPDATE OR DELETE
    ON settlement_lines FOR EACH ROW EXECUTE FUNCTION settlement_guard_draft();
CREATE TRIGGER settlement_flows_guard BEFORE INSERT OR UPDATE OR DELETE
    ON settlement_flows FOR EACH ROW EXECUTE FUNCTION settlement_guard_draft();

-- Claims: hundreds of thousands of rows per run, so checked once per statement.
CREATE FUNCTION settlement_guard_claims() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'settlement claims are never rewritten' USING ERRCODE = 'SE010';
    END IF;
    IF EXISTS (SELECT 1 FROM changed c JOIN settlement_runs r ON r.id = c.run_id
                WHERE r.status <> 'draft') THEN
        RAISE EXCEPTION 'the entries of a finalized settlement run stay settled'
            USING ERRCODE = 'SE010';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER settlement_entries_insert AFTER INSERT ON settlement_entries
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION settlement_guard_claims();
CREATE TRIGGER settlement_entries_delete AFTER DELETE ON settlement_entries
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION settlement_guard_claims();
CREATE TRIGGER settlement_entries_update BEFORE UPDATE ON settlement_entries
    FOR EACH STATEMENT EXECUTE FUNCTION settlement_guard_claims();

-- Runs: the lifecycle's transitions only; the period and the hash never change after
-- the draft; finalizing stores the hash of exactly what was reviewed.
CREATE FUNCTION settlement_guard_run() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'a % settlement run cannot be deleted', OLD.status
                USING ERRCODE = 'SE010';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.status <> OLD.status AND NOT (OLD.status, NEW.status) IN (
           ('draft', 'in_review'), ('in_review', 'draft'), ('in_review', 'finalized'),
           ('finalized', 'invoiced'), ('finalized', 'paid'), ('finalized', 'closed'),
           ('invoiced', 'paid'), ('invoiced', 'closed'), ('paid', 'closed')) THEN
        RAISE EXCEPTION 'a settlement run cannot go from % to %', OLD.status, NEW.status
            USING ERRCODE = 'SE001';
    END IF;
    IF OLD.status NOT IN ('draft', 'in_review')
       AND ((NEW.period, NEW.cycle, NEW.period_start, NEW.period_end, NEW.currency,
             NEW.computed_at, NEW.content_hash, NEW.finalized_at)
            IS DISTINCT FROM
            (OLD.period, OLD.cycle, OLD.period_start, OLD.period_end, OLD.currency,
             OLD.computed_at, OLD.content_hash, OLD.finalized_at)) THEN
        RAISE EXCEPTION 'a finalized settlement run cannot change' USING ERRCODE = 'SE010';
    END IF;
    IF OLD.status = 'in_review' AND NEW.status = 'finalized'
       AND NEW.content_hash IS DISTINCT FROM settlement_content_hash(NEW.id) THEN
        RAISE EXCEPTION 'finalizing needs the content hash of the run'
            USING ERRCODE = 'SE010';
    END IF;
    IF NEW.status IN ('draft', 'in_review') AND NEW.content_hash IS NOT NULL THEN
        RAISE EXCEPTION 'only a finalized run has a content hash' USING ERRCODE = 'SE010';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER settlement_runs_guard BEFORE UPDATE OR DELETE ON settlement_runs
    FOR EACH ROW EXECUTE FUNCTION settlement_guard_run();
