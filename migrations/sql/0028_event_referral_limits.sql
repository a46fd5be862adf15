-- Events and referral bonuses under the limits of their rules, as purchases are: the
-- member's usage of capped rules is read under the member's wallet lock, and campaign
-- budgets are taken under the rule's row lock, which serialises a campaign.

-- Takes up to p_points from rule p_rule's campaign budget and returns what it gave:
-- all of it, or what was left (a budget removed meanwhile gives all).
CREATE FUNCTION earning_rule_take_budget(p_rule uuid, p_points bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint;
    v_given bigint := p_points;
BEGIN
    SELECT budget - budget_used INTO v_left FROM earning_rules WHERE id = p_rule
       FOR NO KEY UPDATE;
    IF v_left IS NOT NULL AND v_left < p_points THEN
        v_given := greatest(v_left, 0);
    END IF;
    IF v_given > 0 THEN
        UPDATE earning_rules SET budget_used = budget_used + v_given WHERE id = p_rule;
    END IF;
    RETURN v_given;
END $$;

-- Step 1 of an event (0013), now also with the member's usage of the capped rules
-- (p_capped_rules) today and this month, read under the wallet lock by the same
-- definition purchases use.
DROP FUNCTION event_begin(uuid, text, text, uuid, text, text, text, text, timestamptz,
                          timestamptz, timestamptz);

CREATE FUNCTION event_begin(
    p_partner uuid, p_idem_key text, p_request_hash text, p_member uuid, p_card text,
    p_customer text, p_event_type text, p_reference text, p_day_start timestamptz,
    p_month_start timestamptz, p_year_start timestamptz, p_capped_rules uuid[],
    OUT proceed boolean, OUT status int, OUT body text, OUT member_id uuid, OUT counts jsonb,
    OUT usage jsonb)
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
    IF body IS NULL AND EXISTS (
            SELECT 1 FROM member_events e WHERE e.partner_id = p_partner
               AND e.member_id = event_begin.member_id AND e.event_type = p_event_type
               AND e.reference = p_reference) THEN
        body := ledger_problem(409, 'event-already-recorded', 'Event already recorded',
            'This member already has an event of this type with this reference.',
            jsonb_build_object('field', 'reference'));
    END IF;
    IF body IS NOT NULL THEN
        status := (body::jsonb ->> 'status')::int;
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;
    PERFORM 1 FROM accounts a WHERE a.member_id = event_begin.member_id FOR NO KEY UPDATE;
    -- Limits count the member's events of this type at any partner: "sign-up once".
    SELECT jsonb_build_object(
               'ever', count(*),
               'year', count(*) FILTER (WHERE occurred_at >= p_year_start),
               'month', count(*) FILTER (WHERE occurred_at >= p_month_start),
               'day', count(*) FILTER (WHERE occurred_at >= p_day_start))
      INTO counts FROM member_events e
     WHERE e.member_id = event_begin.member_id AND e.event_type = p_event_type AND e.points > 0;
    usage := '{}';
    IF cardinality(p_capped_rules) > 0 THEN
        SELECT f.usage INTO usage
          FROM purchase_member_facts(p_partner, event_begin.member_id, p_capped_rules,
                                     p_day_start, p_month_start) f;
    END IF;
    proceed := true;
END $$;

-- Step 2 of an event (0013). p_hits as purchase_post takes them: a hit whose `budget`
-- is true takes its points from the campaign budget, and one the budget no longer
-- covers (since the rules decided) is trimmed, with capped_by 'budget' and a note.
CREATE OR REPLACE FUNCTION event_post(
    p_partner uuid, p_member uuid, p_idem_key text, p_actor text, p_event_type text,
    p_reference text, p_occurred_at timestamptz, p_hits jsonb, p_skipped jsonb,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    v_hits jsonb := '[]';
    v_hit jsonb;
    v_points bigint;
    v_given bigint;
    v_partner_points bigint := 0;
    v_coalition_points bigint := 0;
    v_entry bigint;
    v_event bigint;
BEGIN
    FOR v_hit IN SELECT * FROM jsonb_array_elements(p_hits) LOOP
        v_points := (v_hit ->> 'points')::bigint;
        IF coalesce((v_hit ->> 'budget')::boolean, false) THEN
            v_given := earning_rule_take_budget((v_hit ->> 'rule_id')::uuid, v_points);
            IF v_given < v_points THEN
                v_points := v_given;
                v_hit := v_hit || jsonb_build_object('points', v_points, 'capped_by', 'budget',
                    'explanation', (v_hit ->> 'explanation')
                        || format(' (campaign budget left only %s points)', v_points));
            END IF;
        END IF;
        v_hits := v_hits || jsonb_build_array(v_hit - 'budget');
        IF v_hit ->> 'funding' = 'coalition' THEN
            v_coalition_points := v_coalition_points + v_points;
        ELSE
            v_partner_points := v_partner_points + v_points;
        END IF;
    END LOOP;
    IF v_partner_points + v_coalition_points > 0 THEN
        INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                     idempotency_key, actor, metadata, occurred_at)
        VALUES ('earn', p_partner, p_member, NULL, initcap(replace(p_event_type, '_', ' ')),
                p_idem_key, p_actor, jsonb_build_object('event', p_event_type,
                                                        'reference', p_reference),
                p_occurred_at)
        RETURNING id INTO v_entry;
        PERFORM ledger_credit_lots(v_entry, p_partner, p_member, v_partner_points,
                                   v_coalition_points, p_occurred_at, NULL);
        INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id, rule_version, points,
                               funding, occurred_at)
        SELECT v_entry, p_partner, p_member, (h ->> 'rule_id')::uuid, (h ->> 'version')::int,
               (h ->> 'points')::bigint, h ->> 'funding', p_occurred_at
          FROM jsonb_array_elements(v_hits) h WHERE (h ->> 'points')::bigint > 0;
    END IF;
    INSERT INTO member_events (partner_id, member_id, event_type, reference, points, entry_id,
                               occurred_at)
    VALUES (p_partner, p_member, p_event_type, p_reference,
            v_partner_points + v_coalition_points, v_entry, p_occurred_at)
    RETURNING id INTO v_event;
    status := 201;
    body := jsonb_build_object(
        'id', v_event, 'member_id', p_member, 'event_type', p_event_type,
        'reference', p_reference, 'occurred_at', p_occurred_at,
        'points', v_partner_points + v_coalition_points, 'entry_id', v_entry,
        'rules', v_hits, 'skipped', coalesce(p_skipped, '[]'),
        'balance', (SELECT jsonb_build_object('available', balance) FROM accounts
                     WHERE accounts.member_id = p_member))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- The referral bonuses (0021), now from the rule's campaign budget when p_referral's
-- `budget` is true: the referrer's bonus first, then the welcome bonus; what the budget
-- no longer covers (since the rules decided) is not paid, with capped_by 'budget' and a
-- note. A referrer left with nothing closes the referral with outcome 'limit', as the
-- monthly limit does. p_referral's `capped_by` is the engine's (the referrer's day or
-- month cap, read under the referrer's wallet lock, or the budget it saw).
CREATE OR REPLACE FUNCTION referral_reward(
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
    v_capped_by text := p_referral ->> 'capped_by';
    v_note text := '';
    v_given bigint;
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
            v_capped_by := 'monthly_limit';
            v_points := 0;
        END IF;
    END IF;
    IF coalesce((p_referral ->> 'budget')::boolean, false) AND v_points + v_welcome > 0 THEN
        v_given := earning_rule_take_budget((p_referral ->> 'rule_id')::uuid,
                                            v_points + v_welcome);
        IF v_given < v_points + v_welcome THEN
            v_points := least(v_points, v_given);
            v_welcome := v_given - v_points;
            IF v_capped_by IS DISTINCT FROM 'monthly_limit' THEN
                v_capped_by := 'budget';
            END IF;
            v_note := format(' (campaign budget left only %s points: %s to the referrer,'
                             ' %s welcome bonus)', v_given, v_points, v_welcome);
            IF v_points = 0 THEN
                v_outcome := 'limit';
            END IF;
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
        'capped_by', v_capped_by,
        'explanation', CASE WHEN v_capped_by = 'monthly_limit' THEN
            format('the referrer already had %s rewarded referral(s) this month (limit %s):'
                   ' no referrer bonus', v_used, v_limit)
            ELSE p_referral ->> 'explanation' END || v_note);
END $$;
