-- Purchase hot path, plan by plan (measured with pg_stat_statements on the ledger
-- benchmark). A PL/pgSQL statement whose generic plan looks worse than a custom one is
-- planned afresh on every call; these were, and planning cost more than running them.
-- Each now has one shape per call site, whose cached generic plan is the right one.

-- The member a partner names, as in 0013, with one query per kind of reference
-- instead of "(p IS NULL OR column = p)" for all three, which no generic plan can use
-- an index for.
CREATE OR REPLACE FUNCTION ledger_find_member(p_partner uuid, p_member uuid, p_card text,
                                              p_customer text, OUT member_id uuid,
                                              OUT problem text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_member IS NOT NULL THEN
        SELECT l.member_id INTO member_id FROM member_links l
         WHERE l.partner_id = p_partner AND l.member_id = p_member;
    ELSIF p_card IS NOT NULL THEN
        SELECT l.member_id INTO member_id
          FROM members m JOIN member_links l ON l.member_id = m.id
         WHERE m.card_number = p_card AND l.partner_id = p_partner;
    ELSIF p_customer IS NOT NULL THEN
        SELECT l.member_id INTO member_id FROM member_links l
         WHERE l.partner_id = p_partner AND l.customer_id = p_customer;
    END IF;
    -- Several references given: all must name the same member.
    IF member_id IS NOT NULL AND p_member IS NOT NULL AND p_card IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM members m WHERE m.id = ledger_find_member.member_id
                          AND m.card_number = p_card) THEN
            member_id := NULL;
        END IF;
    END IF;
    IF member_id IS NOT NULL AND (p_member IS NOT NULL OR p_card IS NOT NULL)
       AND p_customer IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM member_links l WHERE l.partner_id = p_partner
                          AND l.member_id = ledger_find_member.member_id
                          AND l.customer_id = p_customer) THEN
            member_id := NULL;
        END IF;
    END IF;
    IF member_id IS NULL THEN
        problem := ledger_problem(404, 'member-not-found', 'Member not found',
            'No member linked to your partner account matches this reference.',
            jsonb_build_object('field', CASE WHEN p_member IS NOT NULL THEN 'member.id'
                                             WHEN p_card IS NOT NULL THEN 'member.card_number'
                                             ELSE 'member.customer_id' END));
    ELSE
        problem := ledger_member_problem(p_partner, member_id);
    END IF;
END $$;

-- As in 0019, one query per basis: a SQL function holding both was inlined into its
-- caller and planned on every call, since only a custom plan drops the other basis.
CREATE OR REPLACE FUNCTION tier_qualifying_value(
    p_member uuid, p_basis text, p_start timestamptz, p_earlier timestamptz,
    p_currency text, p_now timestamptz, OUT value bigint, OUT previous bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_basis = 'spend' THEN
        SELECT coalesce(sum(total - returned_total) FILTER (WHERE occurred_at >= p_start), 0),
               coalesce(sum(total - returned_total) FILTER (WHERE occurred_at < p_start), 0)
          INTO value, previous
          FROM purchases
         WHERE member_id = p_member AND currency = p_currency
           AND occurred_at >= p_earlier AND occurred_at <= p_now;
    ELSE
        SELECT coalesce(sum(v) FILTER (WHERE at >= p_start), 0),
               coalesce(sum(v) FILTER (WHERE at < p_start), 0)
          INTO value, previous
          FROM (SELECT l.points - coalesce((SELECT sum(m.points) FROM lot_movements m
                                             WHERE m.lot_id = l.id AND m.kind = 'cancel'), 0)
                       AS v, e.occurred_at AS at
                  FROM journal_entries e JOIN lots l ON l.entry_id = e.id
                 WHERE e.member_id = p_member AND e.kind = 'earn'
                   AND e.occurred_at >= p_earlier AND e.occurred_at <= p_now) x;
    END IF;
END $$;

-- The facts' queries (0021) all have good generic plans (one member's rows by index);
-- the usage sum over "rule_id = ANY (array)" was re-planned on every call without this.
ALTER FUNCTION purchase_member_facts(uuid, uuid, uuid[], timestamptz, timestamptz)
    SET plan_cache_mode = force_generic_plan;

-- As in 0013, as PL/pgSQL: a SQL function that is not inlined is planned on every call.
CREATE OR REPLACE FUNCTION ledger_operator_account(p_kind text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT id FROM accounts
             WHERE kind = p_kind AND partner_id IS NULL AND member_id IS NULL);
END $$;
