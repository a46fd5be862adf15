-- Member-get-member referrals (coalition/referrals.py has the whole story).

-- What the rules need about a member (as in 0019), except that the referrer is the one
-- of an open referral: one the referee's first qualifying purchase has not closed yet.
CREATE OR REPLACE FUNCTION purchase_member_facts(
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
     WHERE r.referee_id = p_member AND r.qualified_at IS NULL;
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

-- Closes the referee's open referral on a qualifying purchase (p_purchase), in the
-- purchase's transaction, and pays what the rule version decided. p_referral {rule_id,
-- version, name, funding, referrer, points (the referrer's), welcome_points,
-- monthly_limit (null: none), explanation}. The referee's wallet is locked since
-- purchase_begin, so the referral closes at most once; the referrer's wallet lock
-- serialises the referrer's rewards, so the monthly count (calendar months of the
-- coalition's time zone, by the qualifying purchase's time) is exact under concurrency.
-- Over the limit the referrer gets nothing and the referee still gets the welcome
-- bonus. Funding: 'partner' is the purchase's partner (its issuance account, its lots),
-- 'coalition' the operator's promotions account. Returns the response's referral_bonus,
-- or NULL when the referral was not open.
CREATE FUNCTION referral_reward(
    p_partner uuid, p_referee uuid, p_purchase bigint, p_actor text,
    p_occurred_at timestamptz, p_now timestamptz, p_referral jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_referrer uuid := (p_referral ->> 'referrer')::uuid;
    v_points bigint := (p_referral ->> 'points')::bigint;
    v_welcome bigint := coalesce((p_referral ->> 'welcome_points')::bigint, 0);
    v_limit int := (p_referral ->> 'monthly_limit')::int;
    v_funding text := p_referral ->> 'funding';
    v_funder uuid := CASE WHEN p_referral ->> 'funding' = 'partner' THEN p_partner END;
    v_local timestamp;
    v_used int;
    v_outcome text := 'rewarded';
    v_entry bigint;
    v_welcome_entry bigint;
BEGIN
    PERFORM 1 FROM accounts WHERE member_id = v_referrer FOR NO KEY UPDATE;
    PERFORM 1 FROM member_referrals
     WHERE referee_id = p_referee AND referrer_id = v_referrer AND qualified_at IS NULL;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_limit IS NOT NULL THEN
        SELECT p_occurred_at AT TIME ZONE timezone INTO v_local
          FROM coalition_settings WHERE id = 1;
        SELECT count(*) INTO v_used
          FROM member_referrals r, coalition_settings s
         WHERE s.id = 1 AND r.referrer_id = v_referrer AND r.outcome = 'rewarded'
           AND r.qualified_at >= date_trunc('month', v_local) AT TIME ZONE s.timezone
           AND r.qualified_at < (date_trunc('month', v_local) + interval '1 month')
                                AT TIME ZONE s.timezone;
        IF v_used >= v_limit THEN
            v_outcome := 'limit';
            v_points := 0;
        END IF;
    END IF;

    IF v_points > 0 THEN
        INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description, actor,
                                     metadata, occurred_at, created_at)
        VALUES ('earn', v_funder, v_referrer, NULL,
                'Referral bonus: a member you referred made a first qualifying purchase',
                p_actor, jsonb_build_object('referral_of', p_referee), p_occurred_at, p_now)
        RETURNING id INTO v_entry;
        PERFORM ledger_credit_lots(v_entry, v_funder, v_referrer,
                                   CASE WHEN v_funder IS NULL THEN 0 ELSE v_points END,
                                   CASE WHEN v_funder IS NULL THEN v_points ELSE 0 END,
                                   p_occurred_at, NULL);
        INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id, rule_version, points,
                               funding, occurred_at)
        VALUES (v_entry, p_partner, v_referrer, (p_referral ->> 'rule_id')::uuid,
                (p_referral ->> 'version')::int, v_points, v_funding, p_occurred_at);
    END IF;
    IF v_welcome > 0 THEN
        INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description, actor,
                                     metadata, occurred_at, created_at)
        VALUES ('earn', v_funder, p_referee, NULL,
                'Welcome bonus: you joined through a friend''s referral', p_actor,
                jsonb_build_object('referral_welcome', true), p_occurred_at, p_now)
        RETURNING id INTO v_welcome_entry;
        PERFORM ledger_credit_lots(v_welcome_entry, v_funder, p_referee,
                                   CASE WHEN v_funder IS NULL THEN 0 ELSE v_welcome END,
                                   CASE WHEN v_funder IS NULL THEN v_welcome ELSE 0 END,
                                   p_occurred_at, NULL);
        INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id, rule_version, points,
                               funding, occurred_at)
        VALUES (v_welcome_entry, p_partner, p_referee, (p_referral ->> 'rule_id')::uuid,
                (p_referral ->> 'version')::int, v_welcome, v_funding, p_occurred_at);
    END IF;
    UPDATE member_referrals
       SET qualified_at = p_occurred_at, purchase_id = p_purchase, outcome = v_outcome,
           rewarded_entry_id = v_entry, welcome_entry_id = v_welcome_entry
     WHERE referee_id = p_referee;
    RETURN jsonb_build_object(
        'rule_id', p_referral ->> 'rule_id', 'version', (p_referral ->> 'version')::int,
        'name', p_referral ->> 'name', 'funding', v_funding,
        'points', v_points, 'entry_id', v_entry,
        'welcome_points', v_welcome, 'welcome_entry_id', v_welcome_entry,
        'capped_by', CASE WHEN v_outcome = 'limit' THEN 'monthly_limit' END,
        'explanation', CASE WHEN v_outcome = 'limit' THEN
            format('the referrer already had %s rewarded referral(s) this month (limit %s):'
                   ' no referrer bonus', v_used, v_limit)
            ELSE p_referral ->> 'explanation' END);
END $$;

-- Step 2 of posting a purchase (0013), the referral now by referral_reward.
CREATE OR REPLACE FUNCTION purchase_post(
    p_partner uuid, p_member uuid, p_idem_key text, p_actor text, p_order_id text,
    p_occurred_at timestamptz, p_currency text, p_total bigint, p_channel text, p_store text,
    p_lines jsonb, p_hits jsonb, p_skipped jsonb, p_referral jsonb,
    p_posted_at timestamptz DEFAULT NULL,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    v_hits jsonb := '[]';
    v_hit jsonb;
    v_points bigint;
    v_left bigint;
    v_partner_points bigint := 0;
    v_coalition_points bigint := 0;
    v_entry bigint;
    v_referral jsonb;
    v_purchase bigint;
    v_available_at timestamptz;
    v_pending boolean := false;
    v_now timestamptz := coalesce(p_posted_at, now());
BEGIN
    FOR v_hit IN SELECT * FROM jsonb_array_elements(p_hits) LOOP
        v_points := (v_hit ->> 'points')::bigint;
        IF coalesce((v_hit ->> 'budget')::boolean, false) THEN
            SELECT r.budget - r.budget_used INTO v_left FROM earning_rules r
             WHERE r.id = (v_hit ->> 'rule_id')::uuid FOR NO KEY UPDATE;
            IF v_left IS NOT NULL AND v_left < v_points THEN
                v_points := greatest(v_left, 0);
                v_hit := v_hit || jsonb_build_object('points', v_points, 'capped_by', 'budget',
                    'explanation', (v_hit ->> 'explanation')
                        || format(' (campaign budget left only %s points)', v_points));
            END IF;
            UPDATE earning_rules SET budget_used = budget_used + v_points
             WHERE id = (v_hit ->> 'rule_id')::uuid;
        END IF;
        v_hits := v_hits || jsonb_build_array(v_hit - 'budget');
        IF v_hit ->> 'funding' = 'coalition' THEN
            v_coalition_points := v_coalition_points + v_points;
        ELSE
            v_partner_points := v_partner_points + v_points;
        END IF;
    END LOOP;

    SELECT p_occurred_at + make_interval(days => pending_days) INTO v_available_at
      FROM partners WHERE id = p_partner;
    IF v_partner_points + v_coalition_points > 0 THEN
        INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                     idempotency_key, actor, metadata, occurred_at, created_at)
        VALUES ('earn', p_partner, p_member, p_order_id, 'Purchase ' || p_order_id, p_idem_key,
                p_actor, jsonb_build_object('purchase', true, 'total', p_total,
                                            'currency', p_currency),
                p_occurred_at, v_now)
        RETURNING id INTO v_entry;
        v_pending := ledger_credit_lots(v_entry, p_partner, p_member, v_partner_points,
                                        v_coalition_points, p_occurred_at, v_available_at);
        INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id, rule_version, points,
                               funding, occurred_at)
        SELECT v_entry, p_partner, p_member, (h ->> 'rule_id')::uuid, (h ->> 'version')::int,
               (h ->> 'points')::bigint, h ->> 'funding', p_occurred_at
          FROM jsonb_array_elements(v_hits) h WHERE (h ->> 'points')::bigint > 0;
    END IF;

    INSERT INTO purchases (partner_id, member_id, order_id, occurred_at, currency, total,
                           channel, store_id, lines, points, entry_id, breakdown, created_at)
    VALUES (p_partner, p_member, p_order_id, p_occurred_at, p_currency, p_total, p_channel,
            p_store, p_lines, v_partner_points + v_coalition_points, v_entry, v_hits, v_now)
    RETURNING id INTO v_purchase;

    IF p_referral IS NOT NULL THEN
        v_referral := referral_reward(p_partner, p_member, v_purchase, p_actor, p_occurred_at,
                                      v_now, p_referral);
        UPDATE purchases SET referral = v_referral WHERE id = v_purchase;
    END IF;

    status := 201;
    body := jsonb_build_object(
        'id', v_purchase, 'order_id', p_order_id, 'member_id', p_member,
        'occurred_at', p_occurred_at, 'total', p_total, 'currency', p_currency,
        'channel', p_channel, 'points', v_partner_points + v_coalition_points,
        'funding', jsonb_build_object('partner', v_partner_points,
                                      'coalition', v_coalition_points),
        'status', CASE WHEN v_entry IS NULL THEN 'no_points'
                       WHEN v_pending THEN 'pending' ELSE 'active' END,
        'available_at', CASE WHEN v_pending THEN v_available_at END,
        'entry_id', v_entry, 'rules', v_hits, 'skipped', coalesce(p_skipped, '[]'),
        'referral_bonus', v_referral,
        'balance', (SELECT jsonb_build_object(
                        'available', a.balance,
                        'pending', coalesce((SELECT sum(remaining) FROM lots
                                              WHERE lots.member_id = p_member
                                                AND lots.status = 'pending'), 0))
                      FROM accounts a WHERE a.member_id = p_member))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;


-- Records who referred a newly enrolled member: by the referrer's card number, referral
-- code, or both (then they must name the same member). Returns 'ok', 'unknown_card',
-- 'unknown_code', 'mismatch', 'self' or 'bound' (the referee already has a referrer:
-- a referral is never re-bound). SECURITY DEFINER because the referrer is usually not
-- linked to the enrolling partner, so a tenant session cannot see it; nothing about
-- the referrer comes back but these words.
CREATE FUNCTION member_referral_bind(p_referee uuid, p_card text, p_code text,
                                     p_partner uuid)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    v_by_card uuid;
    v_by_code uuid;
BEGIN
    IF p_card IS NOT NULL THEN
        SELECT id INTO v_by_card FROM members WHERE card_number = p_card AND status = 'active';
        IF v_by_card IS NULL THEN
            RETURN 'unknown_card';
        END IF;
    END IF;
    IF p_code IS NOT NULL THEN
        SELECT id INTO v_by_code FROM members
         WHERE referral_code = upper(p_code) AND status = 'active';
        IF v_by_code IS NULL THEN
            RETURN 'unknown_code';
        END IF;
    END IF;
    IF v_by_card IS NOT NULL AND v_by_code IS NOT NULL AND v_by_card <> v_by_code THEN
        RETURN 'mismatch';
    END IF;
    IF coalesce(v_by_card, v_by_code) = p_referee THEN
        RETURN 'self';
    END IF;
    INSERT INTO member_referrals (referee_id, referrer_id, partner_id)
    VALUES (p_referee, coalesce(v_by_card, v_by_code), p_partner) ON CONFLICT DO NOTHING;
    RETURN CASE WHEN FOUND THEN 'ok' ELSE 'bound' END;
END $$;

DROP FUNCTION member_referral_record(uuid, text, uuid);

-- Referral figures for [p_from, p_to): the new members (coalition-wide: members created;
-- for a partner: members linked to it), how many of them were referred, how many of
-- those have made their qualifying purchase (by now), how many of those earned the
-- referrer's bonus, and how many distinct members referred them. Counts only.
CREATE FUNCTION referral_figures(p_partner uuid, p_from timestamptz, p_to timestamptz,
    OUT new_members bigint, OUT referred bigint, OUT qualified bigint, OUT rewarded bigint,
    OUT referrers bigint)
LANGUAGE sql STABLE AS $$
    SELECT count(*), count(r.referee_id), count(r.qualified_at),
           count(*) FILTER (WHERE r.outcome = 'rewarded'), count(DISTINCT r.referrer_id)
      FROM (SELECT m.id FROM members m
             WHERE p_partner IS NULL AND m.created_at >= p_from AND m.created_at < p_to
            UNION ALL
            SELECT l.member_id FROM member_links l
             WHERE l.partner_id = p_partner AND l.created_at >= p_from
               AND l.created_at < p_to) n
      LEFT JOIN member_referrals r ON r.referee_id = n.id
$$;

-- The same for the partner of the calling tenant session, restricted to its own members:
-- their referrals may have been recorded by another partner or the member portal,
-- which the session cannot see, hence SECURITY DEFINER; it answers counts only and
-- refuses to run without a partner in scope.
CREATE FUNCTION referral_figures_mine(p_from timestamptz, p_to timestamptz,
    OUT new_members bigint, OUT referred bigint, OUT qualified bigint, OUT rewarded bigint,
    OUT referrers bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
DECLARE
    v_partner uuid := nullif(current_setting('coalition.partner_id', true), '')::uuid;
BEGIN
    IF v_partner IS NULL THEN
        RAISE EXCEPTION 'no partner in scope' USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO new_members, referred, qualified, rewarded, referrers
      FROM referral_figures(v_partner, p_from, p_to);
END $$;
