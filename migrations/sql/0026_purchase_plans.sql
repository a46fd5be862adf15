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

-- The facts' queries (0021) and the qualifying value read one member's rows by index.
-- Left to choose, the planner re-planned the usage sum over "rule_id = ANY (array)" on
-- every call; and a generic plan made while a table is still small (a new coalition,
-- the benchmark's first seconds) would keep a sequential scan as the table grows, until
-- the next ANALYZE. So: one generic plan, made with the indexes.
ALTER FUNCTION purchase_member_facts(uuid, uuid, uuid[], timestamptz, timestamptz)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
ALTER FUNCTION tier_qualifying_value(uuid, text, timestamptz, timestamptz, text, timestamptz)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;

-- As in 0013, as PL/pgSQL: a SQL function that is not inlined is planned on every call.
CREATE OR REPLACE FUNCTION ledger_operator_account(p_kind text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT id FROM accounts
             WHERE kind = p_kind AND partner_id IS NULL AND member_id IS NULL);
END $$;

-- Order lines, rule breakdowns and stored responses are a few kB each and are written on
-- every purchase: LZ4 compresses them several times faster than the default pglz.
-- A server built without LZ4 keeps pglz.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
                  AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE purchases ALTER COLUMN lines SET COMPRESSION lz4,
                              ALTER COLUMN breakdown SET COMPRESSION lz4;
        ALTER TABLE idempotency_keys ALTER COLUMN response SET COMPRESSION lz4;
    END IF;
END $$;

-- As in 0019, with the check of the stored tier state split by whether the decision saw
-- one: as a single CASE it was planned afresh on every purchase.
CREATE OR REPLACE FUNCTION purchase_commit(
    p_partner uuid, p_idem_key text, p_request_hash text,
    p_member uuid, p_card text, p_customer text, p_order_id text,
    p_capped_rules uuid[], p_day_start timestamptz, p_month_start timestamptz,
    p_expected jsonb, p_actor text, p_occurred_at timestamptz, p_currency text,
    p_total bigint, p_channel text, p_store text, p_lines jsonb, p_hits jsonb,
    p_skipped jsonb, p_referral jsonb, p_tier jsonb,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    v_value record;
    v_stale boolean;
    v_change jsonb := p_tier -> 'change';
BEGIN
    SELECT * INTO b FROM purchase_begin(p_partner, p_idem_key, p_request_hash, p_member,
                                        p_card, p_customer, p_order_id, p_capped_rules,
                                        p_day_start, p_month_start);
    IF NOT b.proceed THEN
        status := b.status; body := b.body; RETURN;
    END IF;
    IF b.member_id IS DISTINCT FROM (p_expected ->> 'member_id')::uuid
       OR b.first_purchase IS DISTINCT FROM (p_expected ->> 'first_purchase')::boolean
       OR b.coalition_first IS DISTINCT FROM (p_expected ->> 'coalition_first')::boolean
       OR b.referrer IS DISTINCT FROM (p_expected ->> 'referrer')::uuid
       OR b.usage IS DISTINCT FROM p_expected -> 'usage' THEN
        RAISE EXCEPTION 'the member''s facts changed since they were read'
            USING ERRCODE = 'CL001';
    END IF;
    SELECT * INTO status, body
      FROM purchase_post(p_partner, b.member_id, p_idem_key, p_actor, p_order_id,
                         p_occurred_at, p_currency, p_total, p_channel, p_store, p_lines,
                         p_hits, p_skipped, p_referral);
    IF status <> 201 OR p_tier IS NULL THEN
        RETURN;
    END IF;

    -- The tier lock, after the wallet lock: the order every path takes them in.
    PERFORM pg_advisory_xact_lock(hashtextextended(b.member_id::text, 7401));
    IF jsonb_typeof(p_tier -> 'state') = 'object' THEN
        v_stale := NOT EXISTS (
            SELECT 1 FROM member_tiers t,
                   jsonb_populate_record(NULL::member_tiers, p_tier -> 'state') e
             WHERE t.member_id = b.member_id
               AND (t.tier_code, t.since, t.earned_code, t.earned_since, t.review_at,
                    t.manual_code, t.manual_until, t.manual_reason, t.manual_by)
                   IS NOT DISTINCT FROM
                   (e.tier_code, e.since, e.earned_code, e.earned_since, e.review_at,
                    e.manual_code, e.manual_until, e.manual_reason, e.manual_by));
    ELSE
        v_stale := EXISTS (SELECT 1 FROM member_tiers t WHERE t.member_id = b.member_id);
    END IF;
    SELECT * INTO v_value
      FROM tier_qualifying_value(b.member_id, p_tier ->> 'basis',
                                 (p_tier ->> 'start')::timestamptz,
                                 (p_tier ->> 'earlier')::timestamptz, p_tier ->> 'currency',
                                 (p_tier ->> 'now')::timestamptz);
    IF v_stale OR v_value.value <> (p_tier ->> 'value')::bigint
       OR v_value.previous <> (p_tier ->> 'previous')::bigint THEN
        RAISE EXCEPTION 'the member''s tier facts changed since they were read'
            USING ERRCODE = 'CL001';
    END IF;
    IF jsonb_typeof(p_tier -> 'new_state') = 'object' THEN
        INSERT INTO member_tiers AS t (member_id, tier_code, since, earned_code, earned_since,
                                       review_at, manual_code, manual_until, manual_reason,
                                       manual_by)
        SELECT b.member_id, n.tier_code, n.since, n.earned_code, n.earned_since, n.review_at,
               n.manual_code, n.manual_until, n.manual_reason, n.manual_by
          FROM jsonb_populate_record(NULL::member_tiers, p_tier -> 'new_state') n
        ON CONFLICT (member_id) DO UPDATE SET
            tier_code = excluded.tier_code, since = excluded.since,
            earned_code = excluded.earned_code, earned_since = excluded.earned_since,
            review_at = excluded.review_at, manual_code = excluded.manual_code,
            manual_until = excluded.manual_until, manual_reason = excluded.manual_reason,
            manual_by = excluded.manual_by;
    END IF;
    IF jsonb_typeof(v_change) = 'object' THEN
        INSERT INTO tier_history (member_id, from_code, to_code, reason, value, actor,
                                  occurred_at)
        VALUES (b.member_id, v_change ->> 'from_code', v_change ->> 'to_code',
                v_change ->> 'reason', (v_change ->> 'value')::bigint, 'system',
                p_occurred_at);
        body := (body::jsonb || jsonb_build_object('tier_change', v_change))::text;
        IF p_idem_key IS NOT NULL THEN
            UPDATE idempotency_keys SET response = body
             WHERE partner_id = p_partner AND key = p_idem_key;
        END IF;
    END IF;
END $$;
