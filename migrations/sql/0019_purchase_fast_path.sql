-- A purchase in two round trips instead of five (see coalition/purchases.py):
--   1. purchase_facts reads, without a lock or an idempotency claim, what the rules and
--      the tier decision need to know about the member;
--   2. the rules decide in Python; purchase_commit then claims the key, locks the wallet,
--      checks that every fact the decision assumed still holds, posts, and writes the
--      tier change the decision predicted, all in one statement.
-- When a fact changed in between (a concurrent posting for the same member, the tier
-- job), purchase_commit raises SQLSTATE CL001 and nothing is written; the caller then
-- takes the locked path (purchase_begin, decide, purchase_post), so the result is
-- always the one the locked path would give.

-- What the rules need about a member, for purchase_begin (under the wallet lock) and for
-- purchase_facts (without it): one definition, so the check in purchase_commit compares
-- like with like.
CREATE FUNCTION purchase_member_facts(
    p_partner uuid, p_member uuid, p_capped_rules uuid[], p_day_start timestamptz,
    p_month_start timestamptz,
    OUT first_purchase boolean, OUT coalition_first boolean, OUT referrer uuid,
    OUT usage jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    first_purchase := NOT EXISTS (SELECT 1 FROM purchases p WHERE p.partner_id = p_partner
                                     AND p.member_id = p_member);
    coalition_first := NOT EXISTS (SELECT 1 FROM purchases p WHERE p.member_id = p_member);
    SELECT r.referrer_id INTO referrer FROM member_referrals r
     WHERE r.referee_id = p_member AND r.rewarded_entry_id IS NULL;
    IF cardinality(p_capped_rules) > 0 THEN
        SELECT coalesce(jsonb_object_agg(h.rule_id, jsonb_build_array(h.day, h.month)), '{}')
          INTO usage
          FROM (SELECT rule_id,
                       coalesce(sum(points) FILTER (WHERE occurred_at >= p_day_start), 0) AS day,
                       sum(points) AS month
                  FROM rule_hits
                 WHERE rule_hits.member_id = p_member
                   AND rule_id = ANY (p_capped_rules) AND occurred_at >= p_month_start
                 GROUP BY rule_id) h;
    ELSE
        usage := '{}';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION purchase_begin(
    p_partner uuid, p_idem_key text, p_request_hash text,
    p_member uuid, p_card text, p_customer text, p_order_id text,
    p_capped_rules uuid[], p_day_start timestamptz, p_month_start timestamptz,
    OUT proceed boolean, OUT status int, OUT body text, OUT member_id uuid,
    OUT first_purchase boolean, OUT coalition_first boolean, OUT referrer uuid,
    OUT usage jsonb, OUT balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
    claim record;
BEGIN
    proceed := false;
    SELECT * INTO claim FROM idempotency_claim(p_partner, p_idem_key, p_request_hash);
    IF NOT claim.claimed THEN
        status := claim.status; body := claim.body; RETURN;
    END IF;
    SELECT f.member_id, f.problem INTO member_id, body
      FROM ledger_find_member(p_partner, p_member, p_card, p_customer) f;
    IF body IS NULL AND EXISTS (SELECT 1 FROM purchases p
                                 WHERE p.partner_id = p_partner AND p.order_id = p_order_id) THEN
        body := ledger_problem(409, 'order-already-posted', 'Order already posted',
            'A purchase with this order_id was already posted; post a return to change it.',
            jsonb_build_object('field', 'order_id'));
    END IF;
    IF body IS NOT NULL THEN
        status := (body::jsonb ->> 'status')::int;
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;

    SELECT a.balance INTO balance FROM accounts a WHERE a.member_id = purchase_begin.member_id
       FOR NO KEY UPDATE;
    SELECT f.first_purchase, f.coalition_first, f.referrer, f.usage
      INTO first_purchase, coalition_first, referrer, usage
      FROM purchase_member_facts(p_partner, purchase_begin.member_id, p_capped_rules,
                                 p_day_start, p_month_start) f;
    proceed := true;
END $$;

-- Step 1 of the fast path: the member (NULL when the reference matches nobody; the
-- locked path then records the problem) and its facts, read without locks.
CREATE FUNCTION purchase_facts(
    p_partner uuid, p_member uuid, p_card text, p_customer text,
    p_capped_rules uuid[], p_day_start timestamptz, p_month_start timestamptz,
    OUT member_id uuid, OUT first_purchase boolean, OUT coalition_first boolean,
    OUT referrer uuid, OUT usage jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT f.member_id INTO member_id
      FROM ledger_find_member(p_partner, p_member, p_card, p_customer) f
     WHERE f.problem IS NULL;
    IF member_id IS NULL THEN
        RETURN;
    END IF;
    SELECT f.first_purchase, f.coalition_first, f.referrer, f.usage
      INTO first_purchase, coalition_first, referrer, usage
      FROM purchase_member_facts(p_partner, member_id, p_capped_rules, p_day_start,
                                 p_month_start) f;
END $$;

-- A member's qualifying value for tiers: in the window [p_start, p_now] and in the
-- earlier window [p_earlier, p_start) (calendar years). Spend: net of returns, in the
-- coalition currency. Points: earned lots minus what reversals and returns cancelled.
-- coalition/tiers/service.py groups the same sums over all members for the job.
CREATE FUNCTION tier_qualifying_value(
    p_member uuid, p_basis text, p_start timestamptz, p_earlier timestamptz,
    p_currency text, p_now timestamptz, OUT value bigint, OUT previous bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(v) FILTER (WHERE at >= p_start), 0)::bigint,
           coalesce(sum(v) FILTER (WHERE at < p_start), 0)::bigint
      FROM (SELECT total - returned_total AS v, occurred_at AS at
              FROM purchases
             WHERE p_basis = 'spend' AND member_id = p_member AND currency = p_currency
               AND occurred_at >= p_earlier AND occurred_at <= p_now
            UNION ALL
            SELECT l.points - coalesce((SELECT sum(m.points) FROM lot_movements m
                                         WHERE m.lot_id = l.id AND m.kind = 'cancel'), 0),
                   e.occurred_at
              FROM journal_entries e JOIN lots l ON l.entry_id = e.id
             WHERE p_basis = 'points' AND e.member_id = p_member AND e.kind = 'earn'
               AND e.occurred_at >= p_earlier AND e.occurred_at <= p_now) x
$$;

-- Step 3 of the fast path. p_expected: the facts the rules assumed ({member_id,
-- first_purchase, coalition_first, referrer, usage}). p_tier (NULL without a ladder):
-- {basis, start, earlier, currency, now, value, previous: the qualifying value after
-- this purchase as predicted; state: the member_tiers row the decision read (null:
-- none); new_state: the row to store (null: keep); change: the tier_change for the
-- response and the history (null: none)}.
CREATE FUNCTION purchase_commit(
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
    SELECT CASE WHEN jsonb_typeof(p_tier -> 'state') = 'object' THEN
                    NOT EXISTS (SELECT 1 FROM member_tiers t,
                                       jsonb_populate_record(NULL::member_tiers,
                                                             p_tier -> 'state') e
                                 WHERE t.member_id = b.member_id
                                   AND (t.tier_code, t.since, t.earned_code, t.earned_since,
                                        t.review_at, t.manual_code, t.manual_until,
                                        t.manual_reason, t.manual_by)
                                       IS NOT DISTINCT FROM
                                       (e.tier_code, e.since, e.earned_code, e.earned_since,
                                        e.review_at, e.manual_code, e.manual_until,
                                        e.manual_reason, e.manual_by))
                ELSE EXISTS (SELECT 1 FROM member_tiers t WHERE t.member_id = b.member_id)
           END INTO v_stale;
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
