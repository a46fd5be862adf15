-- settlement_compute (migrations/sql/0017_settlement.sql) with the affiliate commission
-- line: commissions payable go on the funding partner's statement (coalition/affiliates/
-- commissions.py; settlement/reconcile.py recomputes the line the same way).

CREATE OR REPLACE FUNCTION settlement_compute(p_run bigint) RETURNS void
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
    UPDATE affiliate_commissions SET settlement_run_id = NULL WHERE settlement_run_id = p_run;

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

    -- Affiliate commissions payable, claimed: approved ones (and clawbacks, negative;
    -- and any already paid out) of these partners' programs, approved before the
    -- period's end and on no statement yet. The partner owes them: the operator pays its
    -- affiliates. Approved before the period: late. Commissions are in the coalition
    -- currency, like purchases; the statement's FX rate converts them.
    WITH claimed AS (
        UPDATE affiliate_commissions c SET settlement_run_id = p_run
         WHERE c.settlement_run_id IS NULL AND c.status IN ('approved', 'paid')
           AND c.decided_at < r.period_end
           AND c.partner_id IN (SELECT partner_id FROM st_partner)
        RETURNING c.partner_id, c.amount_minor, c.decided_at < r.period_start AS late)
    INSERT INTO st_line
    SELECT c.partner_id, 'affiliate_commission', 'affiliate', c.late, NULL, NULL, NULL,
           sum(c.amount_minor) * coalesce(sp.fx_rate, 1), NULL, NULL
      FROM claimed c JOIN st_partner sp USING (partner_id)
     GROUP BY c.partner_id, c.late, sp.fx_rate;

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
               WHEN 'affiliate_commission' THEN
                   'Affiliate commissions, paid to your affiliates by the operator'
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
