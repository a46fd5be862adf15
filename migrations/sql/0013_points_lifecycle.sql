-- The points lifecycle on top of the ledger of 0001: pending points that wait out a
-- partner's return window, expiry into breakage under the coalition's policy, negative
-- balances left by returns (repaid by the next points), and two-phase checkout holds.
--
-- Invariants `coalition ledger verify` checks after this migration:
--   * a member's wallet balance equals the remaining points of its active lots when it is
--     zero or positive; when it is negative (a debt from a return), no active lot has any
--     points left: every new point repays the debt first (lot movement 'repay');
--   * a partner's pending account holds exactly the remaining points of its pending lots;
--   * a partner's holds account holds exactly the points of its open holds.

-- Accounts created on first use, so partners that never use a feature need no rows.
CREATE FUNCTION ledger_partner_account(p_partner uuid, p_kind text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM accounts WHERE partner_id = p_partner AND kind = p_kind;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    INSERT INTO accounts (code, kind, partner_id)
    SELECT 'partner:' || slug || ':' || split_part(p_kind, '_', 2), p_kind, id
      FROM partners WHERE id = p_partner
    ON CONFLICT DO NOTHING;
    SELECT id INTO STRICT v_id FROM accounts WHERE partner_id = p_partner AND kind = p_kind;
    RETURN v_id;
END $$;

CREATE FUNCTION ledger_operator_account(p_kind text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT id FROM accounts WHERE kind = p_kind AND partner_id IS NULL AND member_id IS NULL
$$;

-- When points earned at p_earned expire under the coalition's policy (NULL: never).
-- Month and year ends are taken in the coalition's time zone.
CREATE FUNCTION ledger_lot_expiry(p_earned timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s record;
    v_base timestamp;
    v_candidate timestamp;
BEGIN
    SELECT points_validity_months AS months, expiry_policy AS policy, timezone AS tz,
           expiry_fixed_month AS fixed_month, expiry_fixed_day AS fixed_day
      INTO s FROM coalition_settings WHERE id = 1;
    IF s.policy = 'never' OR s.months IS NULL THEN
        RETURN NULL;
    END IF;
    IF s.policy = 'rolling' THEN
        RETURN p_earned + make_interval(months => s.months);
    END IF;
    v_base := (p_earned AT TIME ZONE s.tz) + make_interval(months => s.months);
    IF s.policy = 'end_of_month' THEN
        v_candidate := date_trunc('month', v_base) + interval '1 month';
    ELSIF s.policy = 'end_of_year' THEN
        v_candidate := date_trunc('year', v_base) + interval '1 year';
    ELSE  -- fixed_date: the first such day on or after the validity period ends
        v_candidate := make_timestamp(extract(year FROM v_base)::int, s.fixed_month,
                                      least(s.fixed_day, extract(day FROM
                                          date_trunc('month', make_date(extract(year FROM v_base)::int, s.fixed_month, 1))
                                          + interval '1 month - 1 day')::int), 0, 0, 0)
                       + interval '1 day';
        IF v_candidate <= v_base THEN
            v_candidate := v_candidate + interval '1 year';
        END IF;
    END IF;
    -- Points are good through the last day: they expire at the following midnight.
    RETURN v_candidate AT TIME ZONE s.tz;
END $$;

-- A member owes points when a return left the wallet negative. Points credited to the
-- wallet by p_entry (already added to its lots) repay that debt first, taken from the
-- member's active lots and recorded as 'repay' movements.
CREATE FUNCTION ledger_repay_debt(p_member uuid, p_entry bigint, p_balance_before bigint,
                                  p_credit bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := least(-p_balance_before, p_credit);
    v_take bigint;
    lot record;
BEGIN
    IF p_balance_before >= 0 OR v_left <= 0 THEN
        RETURN;
    END IF;
    FOR lot IN
        SELECT l.id, l.remaining FROM lots l
         WHERE l.member_id = p_member AND l.remaining > 0 AND l.status = 'active'
         ORDER BY l.expires_at NULLS LAST, l.earned_at, l.id
    LOOP
        v_take := least(lot.remaining, v_left);
        UPDATE lots SET remaining = remaining - v_take,
                        status = CASE WHEN remaining = v_take THEN 'spent' ELSE status END
         WHERE id = lot.id;
        INSERT INTO lot_movements (lot_id, entry_id, kind, points)
        VALUES (lot.id, p_entry, 'repay', v_take);
        v_left := v_left - v_take;
        EXIT WHEN v_left = 0;
    END LOOP;
END $$;

-- Holds and repayments consume lots like spending does.
CREATE OR REPLACE FUNCTION ledger_take_from_lots(p_member uuid, p_entry bigint, p_points bigint,
                                      p_issuer uuid DEFAULT NULL, p_kind text DEFAULT 'spend')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := p_points;
    v_take bigint;
    lot record;
BEGIN
    FOR lot IN
        SELECT l.id, l.remaining FROM lots l
         WHERE l.member_id = p_member AND l.remaining > 0 AND l.status = 'active'
           AND (p_issuer IS NULL OR l.partner_id = p_issuer)
         ORDER BY l.expires_at NULLS LAST, l.earned_at, l.id
    LOOP
        v_take := least(lot.remaining, v_left);
        UPDATE lots l
           SET remaining = l.remaining - v_take,
               status = CASE WHEN l.remaining > v_take THEN l.status
                             WHEN p_kind IN ('spend', 'hold') THEN 'spent' ELSE 'cancelled' END
         WHERE l.id = lot.id;
        INSERT INTO lot_movements (lot_id, entry_id, kind, points)
        VALUES (lot.id, p_entry, p_kind, v_take);
        v_left := v_left - v_take;
        EXIT WHEN v_left = 0;
    END LOOP;
    IF v_left > 0 THEN
        RAISE EXCEPTION 'lots of member % hold % points fewer than the wallet', p_member, v_left;
    END IF;
END $$;

-- Earn, now with the expiry policy and debt repayment (same signature as 0001).
CREATE OR REPLACE FUNCTION ledger_earn(
    p_partner uuid, p_member uuid, p_points bigint, p_order_id text, p_description text,
    p_metadata jsonb, p_idem_key text, p_request_hash text, p_actor text,
    p_occurred_at timestamptz DEFAULT NULL, p_posted_at timestamptz DEFAULT NULL,
    p_kind text DEFAULT 'earn',
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    gate record;
    v_wallet bigint;
    v_balance bigint;
    v_issuance bigint;
    v_entry bigint;
    v_created timestamptz;
    v_expires timestamptz;
BEGIN
    SELECT * INTO gate FROM ledger_admit(p_partner, p_member, p_idem_key, p_request_hash);
    IF NOT gate.proceed THEN
        status := gate.status; body := gate.body; RETURN;
    END IF;

    UPDATE accounts SET balance = balance + p_points, version = version + 1
     WHERE member_id = p_member
    RETURNING id, balance INTO v_wallet, v_balance;
    SELECT id INTO STRICT v_issuance FROM accounts
     WHERE partner_id = p_partner AND kind = 'partner_issuance';

    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, actor, metadata, occurred_at, created_at)
    VALUES (p_kind, p_partner, p_member, p_order_id, p_description, p_idem_key, p_actor,
            coalesce(p_metadata, '{}'), coalesce(p_occurred_at, p_posted_at, now()),
            coalesce(p_posted_at, now()))
    RETURNING id, created_at INTO v_entry, v_created;
    INSERT INTO postings (entry_id, account_id, amount)
    VALUES (v_entry, v_issuance, -p_points), (v_entry, v_wallet, p_points);

    v_expires := ledger_lot_expiry(coalesce(p_occurred_at, v_created));
    INSERT INTO lots (member_id, partner_id, entry_id, points, remaining, status, earned_at, expires_at)
    VALUES (p_member, p_partner, v_entry, p_points, p_points, 'active',
            coalesce(p_occurred_at, v_created), v_expires);
    PERFORM ledger_repay_debt(p_member, v_entry, v_balance - p_points, p_points);

    status := 201;
    body := jsonb_build_object(
        'id', v_entry, 'kind', p_kind, 'member_id', p_member, 'points', p_points,
        'order_id', p_order_id, 'description', p_description,
        'metadata', coalesce(p_metadata, '{}'), 'created_at', v_created,
        'expires_at', v_expires, 'balance', jsonb_build_object('available', v_balance))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- Purchases ---------------------------------------------------------------------------
-- The member a partner names by coalition id, card number or its own customer id, if
-- linked to that partner; else (or if the member cannot transact) a problem body naming
-- the reference that failed.
CREATE FUNCTION ledger_find_member(p_partner uuid, p_member uuid, p_card text,
                                   p_customer text, OUT member_id uuid, OUT problem text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT l.member_id INTO member_id
      FROM member_links l JOIN members m ON m.id = l.member_id
     WHERE l.partner_id = p_partner
       AND (p_member IS NULL OR l.member_id = p_member)
       AND (p_card IS NULL OR m.card_number = p_card)
       AND (p_customer IS NULL OR l.customer_id = p_customer);
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

-- Step 1 of posting a purchase: claim the idempotency key, find the member (by id, card
-- number or the partner's customer id), check the order id is new, lock the member's
-- wallet (serializing everything that touches this member's points, so per-member caps
-- and "first purchase" are exact), and return what the rules need to know.
CREATE FUNCTION purchase_begin(
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
    first_purchase := NOT EXISTS (SELECT 1 FROM purchases p WHERE p.partner_id = p_partner
                                     AND p.member_id = purchase_begin.member_id);
    coalition_first := NOT EXISTS (SELECT 1 FROM purchases p
                                    WHERE p.member_id = purchase_begin.member_id);
    SELECT r.referrer_id INTO referrer FROM member_referrals r
     WHERE r.referee_id = purchase_begin.member_id AND r.rewarded_entry_id IS NULL;
    IF cardinality(p_capped_rules) > 0 THEN
        SELECT coalesce(jsonb_object_agg(h.rule_id, jsonb_build_array(h.day, h.month)), '{}')
          INTO usage
          FROM (SELECT rule_id,
                       coalesce(sum(points) FILTER (WHERE occurred_at >= p_day_start), 0) AS day,
                       sum(points) AS month
                  FROM rule_hits
                 WHERE rule_hits.member_id = purchase_begin.member_id
                   AND rule_id = ANY (p_capped_rules) AND occurred_at >= p_month_start
                 GROUP BY rule_id) h;
    ELSE
        usage := '{}';
    END IF;
    proceed := true;
END $$;

-- Credits points to a member under one entry: one lot per funding source, pending until
-- p_available_at when that is in the future. Returns the pending flag.
CREATE FUNCTION ledger_credit_lots(
    p_entry bigint, p_partner uuid, p_member uuid, p_partner_points bigint,
    p_coalition_points bigint, p_earned timestamptz, p_available_at timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_total bigint := p_partner_points + p_coalition_points;
    v_pending boolean := p_available_at IS NOT NULL AND p_available_at > now();
    v_target bigint;
    v_balance bigint;
    v_expires timestamptz := ledger_lot_expiry(p_earned);
BEGIN
    IF v_pending THEN
        v_target := ledger_partner_account(p_partner, 'partner_pending');
    ELSE
        UPDATE accounts SET balance = balance + v_total, version = version + 1
         WHERE member_id = p_member RETURNING id, balance INTO v_target, v_balance;
    END IF;
    INSERT INTO postings (entry_id, account_id, amount)
    SELECT p_entry, account, amount FROM (VALUES
        (CASE WHEN p_partner IS NULL THEN NULL
              ELSE (SELECT id FROM accounts WHERE partner_id = p_partner
                       AND kind = 'partner_issuance') END, -p_partner_points),
        (ledger_operator_account('operator_promotions'), -p_coalition_points),
        (v_target, v_total)) AS legs(account, amount)
     WHERE amount <> 0;
    INSERT INTO lots (member_id, partner_id, entry_id, points, remaining, status, earned_at,
                      expires_at, available_at, funding)
    SELECT p_member, p_partner, p_entry, points, points,
           CASE WHEN v_pending THEN 'pending' ELSE 'active' END, p_earned, v_expires,
           CASE WHEN v_pending THEN p_available_at END, funding
      FROM (VALUES (p_partner_points, 'partner'), (p_coalition_points, 'coalition'))
           AS parts(points, funding)
     WHERE points > 0;
    IF NOT v_pending THEN
        PERFORM ledger_repay_debt(p_member, p_entry, v_balance - v_total, v_total);
    END IF;
    RETURN v_pending;
END $$;

-- Step 2: post what the rules decided. p_hits is the evaluation's breakdown, each hit
-- {rule_id, version, points, funding, budget (true when the rule has a campaign budget),
-- ...explanation fields}. A budget that ran out since evaluation trims its hit, and the
-- response shows it (capped_by = 'budget'). p_referral {rule_id, version, referrer,
-- points} pays the referrer's bonus (coalition-funded) on the referee's first purchase.
CREATE FUNCTION purchase_post(
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
    v_referral_entry bigint;
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
        INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description, actor,
                                     metadata, occurred_at, created_at)
        VALUES ('earn', NULL, (p_referral ->> 'referrer')::uuid, NULL,
                'Referral bonus: a member you referred made a first purchase', p_actor,
                jsonb_build_object('referral_of', p_member), p_occurred_at, v_now)
        RETURNING id INTO v_referral_entry;
        PERFORM ledger_credit_lots(v_referral_entry, NULL, (p_referral ->> 'referrer')::uuid,
                                   0, (p_referral ->> 'points')::bigint, p_occurred_at, NULL);
        INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id, rule_version, points,
                               funding, occurred_at)
        VALUES (v_referral_entry, p_partner, (p_referral ->> 'referrer')::uuid,
                (p_referral ->> 'rule_id')::uuid, (p_referral ->> 'version')::int,
                (p_referral ->> 'points')::bigint, 'coalition', p_occurred_at);
        UPDATE member_referrals SET rewarded_entry_id = v_referral_entry
         WHERE referee_id = p_member;
        v_referral := jsonb_build_object('points', (p_referral ->> 'points')::bigint,
                                         'entry_id', v_referral_entry);
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

-- Returns -------------------------------------------------------------------------------
-- A full or partial return of a posted purchase: by amount (minor units), by lines
-- [{sku, quantity}] (each valued at the line's amount × quantity / purchased quantity,
-- floored), or in full when neither is given. The points taken back are proportional and
-- cumulative: after returns totalling R of a total T, floor(points × R / T) have been
-- taken back (an order that earned 70 points, half returned → 35), so partial returns
-- never drift from one full return. The purchase's own lots give the points back first
-- (pending ones before active); what the member already spent is the return policy's:
--   clawback:       take what the member still has (any brand's lots) down to zero and
--                   record the rest as the shortfall;
--   negative_floor: the same, then let the balance go negative down to
--                   -negative_balance_floor; only what lies beyond is a shortfall.
CREATE FUNCTION purchase_return(
    p_partner uuid, p_order_id text, p_amount bigint, p_lines jsonb, p_idem_key text,
    p_request_hash text, p_actor text, p_posted_at timestamptz DEFAULT NULL,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    claim record;
    v_p record;
    v_s record;
    v_line jsonb;
    v_bought record;
    v_returned_qty bigint;
    v_index int := 0;
    v_amount bigint := 0;
    v_new_returned bigint;
    v_target bigint;
    v_now_points bigint;
    v_coalition_points bigint;
    v_need jsonb;
    v_lot record;
    v_take bigint;
    v_wallet bigint;
    v_balance bigint;
    v_taken_pending bigint := 0;
    v_taken_active bigint := 0;
    v_credit_partner bigint := 0;
    v_credit_coalition bigint := 0;
    v_short_partner bigint := 0;
    v_short_coalition bigint := 0;
    v_other bigint := 0;
    v_debt bigint := 0;
    v_recovered bigint;
    v_shortfall bigint;
    v_entry bigint;
    v_return bigint;
    v_now timestamptz := coalesce(p_posted_at, now());
BEGIN
    SELECT * INTO claim FROM idempotency_claim(p_partner, p_idem_key, p_request_hash);
    IF NOT claim.claimed THEN
        status := claim.status; body := claim.body; RETURN;
    END IF;
    SELECT * INTO v_p FROM purchases
     WHERE partner_id = p_partner AND order_id = p_order_id FOR UPDATE;
    IF NOT FOUND THEN
        body := ledger_problem(404, 'order-not-found', 'Order not found',
            'No purchase with this order_id was posted by your partner account.',
            jsonb_build_object('field', 'order_id'));
    ELSIF p_lines IS NOT NULL THEN
        FOR v_line IN SELECT * FROM jsonb_array_elements(p_lines) LOOP
            SELECT (l ->> 'quantity')::bigint AS quantity, (l ->> 'amount')::bigint AS amount
              INTO v_bought FROM jsonb_array_elements(v_p.lines) l
             WHERE l ->> 'sku' = v_line ->> 'sku' LIMIT 1;
            IF NOT FOUND THEN
                body := ledger_problem(422, 'line-not-in-order', 'Line not in the order',
                    format('The order has no line with sku %s.', v_line ->> 'sku'),
                    jsonb_build_object('field', format('lines[%s].sku', v_index)));
                EXIT;
            END IF;
            SELECT coalesce(sum((l ->> 'quantity')::bigint), 0) INTO v_returned_qty
              FROM purchase_returns r, jsonb_array_elements(r.lines) l
             WHERE r.purchase_id = v_p.id AND l ->> 'sku' = v_line ->> 'sku';
            IF (v_line ->> 'quantity')::bigint > v_bought.quantity - v_returned_qty THEN
                body := ledger_problem(422, 'return-exceeds-line', 'Return exceeds the line',
                    format('Only %s of sku %s can still be returned.',
                           v_bought.quantity - v_returned_qty, v_line ->> 'sku'),
                    jsonb_build_object('field', format('lines[%s].quantity', v_index),
                                       'returnable', v_bought.quantity - v_returned_qty));
                EXIT;
            END IF;
            v_amount := v_amount + floor(v_bought.amount::numeric
                                         * (v_line ->> 'quantity')::bigint / v_bought.quantity);
            v_index := v_index + 1;
        END LOOP;
        v_amount := least(v_amount, v_p.total - v_p.returned_total);
    ELSE
        v_amount := coalesce(p_amount, v_p.total - v_p.returned_total);
    END IF;
    IF body IS NULL AND v_p.returned_total = v_p.total THEN
        body := ledger_problem(422, 'order-fully-returned', 'Order already returned',
            'Everything in this order has already been returned.',
            jsonb_build_object('field', 'order_id'));
    ELSIF body IS NULL AND v_amount > v_p.total - v_p.returned_total THEN
        body := ledger_problem(422, 'return-exceeds-order', 'Return exceeds the order',
            format('At most %s can still be returned on this order.', v_p.total - v_p.returned_total),
            jsonb_build_object('field', 'amount', 'returnable', v_p.total - v_p.returned_total));
    ELSIF body IS NULL AND v_amount <= 0 THEN
        body := ledger_problem(422, 'return-amount-zero', 'Nothing to return',
            'The returned lines are worth nothing.', jsonb_build_object('field', 'lines'));
    END IF;
    IF body IS NOT NULL THEN
        status := (body::jsonb ->> 'status')::int;
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;

    SELECT * INTO v_s FROM coalition_settings WHERE id = 1;
    v_new_returned := v_p.returned_total + v_amount;
    v_target := CASE WHEN v_p.total = 0 THEN 0
                     ELSE floor(v_p.points::numeric * v_new_returned / v_p.total) END;
    v_now_points := v_target - v_p.returned_points;
    SELECT coalesce(sum(points), 0) INTO v_coalition_points FROM lots
     WHERE entry_id = v_p.entry_id AND funding = 'coalition';
    v_need := jsonb_build_object(
        'coalition', CASE WHEN v_p.total = 0 THEN 0 ELSE
            floor(v_coalition_points::numeric * v_new_returned / v_p.total)
            - floor(v_coalition_points::numeric * v_p.returned_total / v_p.total) END);
    v_need := v_need || jsonb_build_object('partner', v_now_points - (v_need ->> 'coalition')::bigint);

    SELECT id, balance INTO v_wallet, v_balance FROM accounts
     WHERE member_id = v_p.member_id FOR NO KEY UPDATE;
    IF v_now_points > 0 THEN
        INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                     idempotency_key, reverses_entry_id, actor, metadata,
                                     occurred_at, created_at)
        VALUES ('reverse', p_partner, v_p.member_id, p_order_id, 'Return on ' || p_order_id,
                p_idem_key, v_p.entry_id, p_actor, '{}', v_now, v_now)
        RETURNING id INTO v_entry;
        -- The purchase's own lots first: pending, then active.
        FOR v_lot IN SELECT id, remaining, status, funding FROM lots
                      WHERE entry_id = v_p.entry_id AND remaining > 0
                      ORDER BY status = 'pending' DESC, id FOR UPDATE LOOP
            v_take := least(v_lot.remaining, (v_need ->> v_lot.funding)::bigint);
            CONTINUE WHEN v_take = 0;
            UPDATE lots SET remaining = remaining - v_take,
                            status = CASE WHEN remaining = v_take THEN 'cancelled' ELSE status END
             WHERE id = v_lot.id;
            INSERT INTO lot_movements (lot_id, entry_id, kind, points)
            VALUES (v_lot.id, v_entry, 'cancel', v_take);
            v_need := jsonb_set(v_need, ARRAY[v_lot.funding],
                                to_jsonb((v_need ->> v_lot.funding)::bigint - v_take));
            IF v_lot.status = 'pending' THEN
                v_taken_pending := v_taken_pending + v_take;
            ELSE
                v_taken_active := v_taken_active + v_take;
            END IF;
            IF v_lot.funding = 'coalition' THEN
                v_credit_coalition := v_credit_coalition + v_take;
            ELSE
                v_credit_partner := v_credit_partner + v_take;
            END IF;
        END LOOP;
        v_short_partner := (v_need ->> 'partner')::bigint;
        v_short_coalition := (v_need ->> 'coalition')::bigint;
        v_shortfall := v_short_partner + v_short_coalition;
        -- Points the member already spent: take what is left in the wallet, then (under
        -- the negative-floor policy) let the balance go below zero down to the floor.
        v_balance := v_balance - v_taken_active;
        IF v_shortfall > 0 THEN
            v_other := least(v_shortfall, greatest(v_balance, 0));
            IF v_other > 0 THEN
                PERFORM ledger_take_from_lots(v_p.member_id, v_entry, v_other, NULL, 'cancel');
            END IF;
            IF v_s.return_policy = 'negative_floor' THEN
                v_debt := least(v_shortfall - v_other,
                                greatest(v_balance - v_other + v_s.negative_balance_floor, 0));
            END IF;
            v_recovered := v_other + v_debt;
            -- Recovered points go back to whoever funded them, the partner first.
            v_take := least(v_recovered, v_short_partner);
            v_credit_partner := v_credit_partner + v_take;
            v_credit_coalition := v_credit_coalition + (v_recovered - v_take);
            v_shortfall := v_shortfall - v_recovered;
        END IF;
        UPDATE accounts SET balance = balance - v_taken_active - v_other - v_debt,
                            lower_bound = CASE WHEN v_debt > 0
                                THEN least(coalesce(lower_bound, 0), -v_s.negative_balance_floor)
                                ELSE lower_bound END,
                            version = version + 1
         WHERE id = v_wallet RETURNING balance INTO v_balance;
        INSERT INTO postings (entry_id, account_id, amount)
        SELECT v_entry, account, amount FROM (VALUES
            (v_wallet, -(v_taken_active + v_other + v_debt)),
            (CASE WHEN v_taken_pending > 0
                  THEN ledger_partner_account(p_partner, 'partner_pending') END, -v_taken_pending),
            ((SELECT id FROM accounts WHERE partner_id = p_partner AND kind = 'partner_issuance'),
             v_credit_partner),
            (ledger_operator_account('operator_promotions'), v_credit_coalition))
            AS legs(account, amount)
         WHERE amount <> 0;
    ELSE
        v_shortfall := 0;
    END IF;

    INSERT INTO purchase_returns (partner_id, purchase_id, member_id, amount, lines, points,
                                  shortfall, debt, policy, entry_id, created_at)
    VALUES (p_partner, v_p.id, v_p.member_id, v_amount, p_lines, v_now_points, v_shortfall,
            v_debt, CASE WHEN v_other + v_debt + v_shortfall > 0 THEN v_s.return_policy END,
            v_entry, v_now)
    RETURNING id INTO v_return;
    UPDATE purchases SET returned_total = v_new_returned, returned_points = v_target
     WHERE id = v_p.id;

    status := 201;
    body := jsonb_build_object(
        'id', v_return, 'order_id', p_order_id, 'member_id', v_p.member_id,
        'amount', v_amount, 'lines', p_lines, 'points', v_now_points,
        'covered_by', jsonb_build_object('pending', v_taken_pending, 'active', v_taken_active,
                                         'other_points', v_other, 'negative_balance', v_debt),
        'shortfall', v_shortfall,
        'policy', CASE WHEN v_other + v_debt + v_shortfall > 0 THEN v_s.return_policy END,
        'entry_id', v_entry,
        'order', jsonb_build_object('total', v_p.total, 'returned_total', v_new_returned,
                                    'points', v_p.points, 'returned_points', v_target),
        'balance', jsonb_build_object('available', v_balance), 'created_at', v_now)::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- Pending points ------------------------------------------------------------------------
-- Activates pending lots whose return window has ended: each becomes active through an
-- 'activate' entry moving its points from the partner's pending account to the wallet.
-- Lots emptied by returns while pending are closed as cancelled. Idempotent: a lot is
-- re-checked under the member's wallet lock, so two runs never activate it twice.
CREATE FUNCTION ledger_activate_due(p_now timestamptz, p_limit int DEFAULT 1000)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_candidate record;
    v_lot record;
    v_wallet bigint;
    v_balance bigint;
    v_entry bigint;
    v_done int := 0;
BEGIN
    FOR v_candidate IN SELECT id, member_id FROM lots
                        WHERE status = 'pending' AND available_at <= p_now
                        ORDER BY available_at, id LIMIT p_limit LOOP
        -- The wallet first, like every other writer, then the lot.
        PERFORM 1 FROM accounts WHERE member_id = v_candidate.member_id FOR NO KEY UPDATE;
        SELECT * INTO v_lot FROM lots WHERE id = v_candidate.id AND status = 'pending' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        IF v_lot.remaining = 0 THEN
            UPDATE lots SET status = 'cancelled' WHERE id = v_lot.id;
            CONTINUE;
        END IF;
        UPDATE accounts SET balance = balance + v_lot.remaining, version = version + 1
         WHERE member_id = v_lot.member_id RETURNING id, balance INTO v_wallet, v_balance;
        INSERT INTO journal_entries (kind, partner_id, member_id, description, actor,
                                     metadata, occurred_at, created_at)
        VALUES ('activate', v_lot.partner_id, v_lot.member_id,
                'Points available: the return window ended', 'system:activation',
                jsonb_build_object('lot', v_lot.id, 'earned_by', v_lot.entry_id), p_now, now())
        RETURNING id INTO v_entry;
        INSERT INTO postings (entry_id, account_id, amount)
        VALUES (v_entry, ledger_partner_account(v_lot.partner_id, 'partner_pending'), -v_lot.remaining),
               (v_entry, v_wallet, v_lot.remaining);
        UPDATE lots SET status = 'active' WHERE id = v_lot.id;
        PERFORM ledger_repay_debt(v_lot.member_id, v_entry, v_balance - v_lot.remaining,
                                  v_lot.remaining);
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END $$;

-- Expiry --------------------------------------------------------------------------------
-- Moves what remains of lots past their expiry date to the operator's breakage account:
-- one 'expire' entry per member. Idempotent: expired lots no longer match.
CREATE FUNCTION ledger_expire_due(p_now timestamptz, p_limit int DEFAULT 1000)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_member uuid;
    v_points bigint;
    v_wallet bigint;
    v_entry bigint;
    v_done int := 0;
BEGIN
    FOR v_member IN SELECT DISTINCT member_id FROM lots
                     WHERE status = 'active' AND remaining > 0 AND expires_at <= p_now
                     LIMIT p_limit LOOP
        SELECT id INTO v_wallet FROM accounts WHERE member_id = v_member FOR NO KEY UPDATE;
        SELECT coalesce(sum(remaining), 0) INTO v_points FROM lots
         WHERE member_id = v_member AND status = 'active' AND remaining > 0
           AND expires_at <= p_now;
        CONTINUE WHEN v_points = 0;
        UPDATE accounts SET balance = balance - v_points, version = version + 1
         WHERE id = v_wallet;
        INSERT INTO journal_entries (kind, partner_id, member_id, description, actor,
                                     occurred_at, created_at)
        VALUES ('expire', NULL, v_member, 'Points expired', 'system:expiry', p_now, now())
        RETURNING id INTO v_entry;
        INSERT INTO postings (entry_id, account_id, amount)
        VALUES (v_entry, v_wallet, -v_points),
               (v_entry, ledger_operator_account('operator_breakage'), v_points);
        INSERT INTO lot_movements (lot_id, entry_id, kind, points)
        SELECT id, v_entry, 'expire', remaining FROM lots
         WHERE member_id = v_member AND status = 'active' AND remaining > 0
           AND expires_at <= p_now;
        UPDATE lots SET remaining = 0, status = 'expired'
         WHERE member_id = v_member AND status = 'active' AND remaining > 0
           AND expires_at <= p_now;
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END $$;

-- Checkout holds (two-phase redemption) -------------------------------------------------
-- Authorize: the points leave `available` (wallet → the partner's holds account) and the
-- lots they came from are marked, but nothing is spent until capture.
CREATE FUNCTION ledger_hold(
    p_partner uuid, p_member uuid, p_points bigint, p_order_id text, p_description text,
    p_idem_key text, p_request_hash text, p_actor text, p_expires_at timestamptz,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    gate record;
    v_wallet bigint;
    v_balance bigint;
    v_entry bigint;
    v_hold uuid;
    v_expires timestamptz;
BEGIN
    SELECT * INTO gate FROM ledger_admit(p_partner, p_member, p_idem_key, p_request_hash);
    IF NOT gate.proceed THEN
        status := gate.status; body := gate.body; RETURN;
    END IF;
    UPDATE accounts SET balance = balance - p_points, version = version + 1
     WHERE member_id = p_member AND balance >= p_points
    RETURNING id, balance INTO v_wallet, v_balance;
    IF NOT FOUND THEN
        SELECT balance INTO v_balance FROM accounts WHERE member_id = p_member;
        status := 422;
        body := ledger_problem(422, 'insufficient-points', 'Insufficient points',
            format('The member has %s points available; %s were requested.', v_balance, p_points),
            jsonb_build_object('field', 'points', 'available', v_balance, 'requested', p_points));
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;
    v_expires := coalesce(p_expires_at, now() + make_interval(secs =>
                     (SELECT hold_timeout_seconds FROM coalition_settings WHERE id = 1)));
    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, actor, occurred_at)
    VALUES ('hold', p_partner, p_member, p_order_id, p_description, p_idem_key, p_actor, now())
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, account_id, amount)
    VALUES (v_entry, v_wallet, -p_points),
           (v_entry, ledger_partner_account(p_partner, 'partner_holds'), p_points);
    PERFORM ledger_take_from_lots(p_member, v_entry, p_points, NULL, 'hold');
    INSERT INTO point_holds (partner_id, member_id, points, order_id, hold_entry_id, expires_at)
    VALUES (p_partner, p_member, p_points, p_order_id, v_entry, v_expires)
    RETURNING id INTO v_hold;
    status := 201;
    body := ledger_hold_body(v_hold, v_balance);
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

CREATE FUNCTION ledger_hold_body(p_hold uuid, p_balance bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', h.id, 'status', h.status, 'member_id', h.member_id, 'points', h.points,
        'captured', h.captured,
        'released', CASE WHEN h.status = 'held' THEN 0 ELSE h.points - h.captured END,
        'order_id', h.order_id, 'expires_at', h.expires_at, 'created_at', h.created_at,
        'closed_at', h.closed_at, 'balance', jsonb_build_object('available', p_balance))::text
      FROM point_holds h WHERE h.id = p_hold
$$;

-- Closes an open hold: capture p_capture points (the rest goes back to the member) or,
-- with p_capture NULL, release everything (p_outcome 'voided' or 'expired'). The caller
-- holds the hold row's lock.
CREATE FUNCTION ledger_hold_settle(p_hold uuid, p_capture bigint, p_outcome text,
                                   p_idem_key text, p_actor text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    h record;
    v_capture bigint := coalesce(p_capture, 0);
    v_release bigint;
    v_left bigint;
    v_take bigint;
    v_wallet bigint;
    v_balance bigint;
    v_entry bigint;
    m record;
BEGIN
    SELECT * INTO h FROM point_holds WHERE id = p_hold;
    v_release := h.points - v_capture;
    UPDATE accounts SET balance = balance + v_release, version = version + 1
     WHERE member_id = h.member_id RETURNING id, balance INTO v_wallet, v_balance;
    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, actor, metadata, occurred_at)
    VALUES (CASE WHEN v_capture > 0 THEN 'capture' ELSE 'release' END, h.partner_id,
            h.member_id, h.order_id,
            CASE WHEN v_capture > 0 THEN 'Checkout hold captured'
                 WHEN p_outcome = 'expired' THEN 'Checkout hold expired'
                 ELSE 'Checkout hold voided' END,
            p_idem_key, p_actor, jsonb_build_object('hold', h.id), now())
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, account_id, amount)
    SELECT v_entry, account, amount FROM (VALUES
        (ledger_partner_account(h.partner_id, 'partner_holds'), -h.points),
        ((SELECT id FROM accounts WHERE partner_id = h.partner_id AND kind = 'partner_redemption'),
         v_capture),
        (v_wallet, v_release)) AS legs(account, amount)
     WHERE amount <> 0;
    -- Give released points back to the lots the hold took them from, last taken first.
    v_left := v_release;
    FOR m IN SELECT lot_id, points FROM lot_movements
              WHERE entry_id = h.hold_entry_id AND kind = 'hold' ORDER BY id DESC LOOP
        EXIT WHEN v_left = 0;
        v_take := least(m.points, v_left);
        UPDATE lots SET remaining = remaining + v_take,
                        status = CASE WHEN status = 'spent' THEN 'active' ELSE status END
         WHERE id = m.lot_id;
        INSERT INTO lot_movements (lot_id, entry_id, kind, points)
        VALUES (m.lot_id, v_entry, 'release', -v_take);
        v_left := v_left - v_take;
    END LOOP;
    PERFORM ledger_repay_debt(h.member_id, v_entry, v_balance - v_release, v_release);
    UPDATE point_holds
       SET status = CASE WHEN v_capture > 0 THEN 'captured' ELSE p_outcome END,
           captured = v_capture, closed_at = now()
     WHERE id = h.id;
    RETURN v_balance;
END $$;

CREATE FUNCTION ledger_hold_close(
    p_partner uuid, p_hold uuid, p_capture bigint, p_idem_key text, p_request_hash text,
    p_actor text, OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    claim record;
    h record;
    v_balance bigint;
BEGIN
    SELECT * INTO claim FROM idempotency_claim(p_partner, p_idem_key, p_request_hash);
    IF NOT claim.claimed THEN
        status := claim.status; body := claim.body; RETURN;
    END IF;
    -- Wallet before hold row, the order every writer uses.
    PERFORM 1 FROM accounts a JOIN point_holds ph ON ph.member_id = a.member_id
     WHERE ph.id = p_hold AND ph.partner_id = p_partner FOR NO KEY UPDATE OF a;
    SELECT * INTO h FROM point_holds WHERE id = p_hold AND partner_id = p_partner FOR UPDATE;
    IF NOT FOUND THEN
        body := ledger_problem(404, 'authorization-not-found', 'Authorization not found',
            'No authorization with this id was made by your partner account.');
    ELSIF h.status = 'held' AND h.expires_at <= now() THEN
        PERFORM ledger_hold_settle(h.id, NULL, 'expired', NULL, 'system:hold-expiry');
        body := ledger_problem(409, 'authorization-expired', 'Authorization expired',
            format('The authorization expired at %s and its points went back to the member.',
                   h.expires_at));
    ELSIF h.status <> 'held' THEN
        body := ledger_problem(409, 'authorization-closed', 'Authorization already closed',
            format('The authorization is already %s.', h.status),
            jsonb_build_object('authorization_status', h.status));
    ELSIF p_capture IS NOT NULL AND p_capture > h.points THEN
        body := ledger_problem(422, 'capture-exceeds-authorization', 'Capture exceeds the authorization',
            format('At most %s points can be captured.', h.points),
            jsonb_build_object('field', 'points', 'authorized', h.points));
    END IF;
    IF body IS NOT NULL THEN
        status := (body::jsonb ->> 'status')::int;
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;
    v_balance := ledger_hold_settle(h.id, CASE WHEN p_capture IS NULL THEN NULL
                                               ELSE p_capture END,
                                    'voided', p_idem_key, p_actor);
    status := 200;
    body := ledger_hold_body(h.id, v_balance);
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- Releases holds past their expiry. Idempotent; skips holds another transaction is
-- closing right now (they are not open any more when it commits).
CREATE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit int DEFAULT 1000)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_hold record;
    v_done int := 0;
BEGIN
    FOR v_hold IN SELECT id, member_id FROM point_holds
                   WHERE status = 'held' AND expires_at <= p_now
                   ORDER BY expires_at LIMIT p_limit LOOP
        PERFORM 1 FROM accounts WHERE member_id = v_hold.member_id FOR NO KEY UPDATE;
        PERFORM 1 FROM point_holds WHERE id = v_hold.id AND status = 'held' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        PERFORM ledger_hold_settle(v_hold.id, NULL, 'expired', NULL, 'system:hold-expiry');
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END $$;

-- Events (non-purchase earning) -----------------------------------------------------------
-- Step 1: claim the key, find the member, refuse a reference already recorded, lock the
-- wallet, and count the member's earlier events of this type (for frequency limits).
CREATE FUNCTION event_begin(
    p_partner uuid, p_idem_key text, p_request_hash text, p_member uuid, p_card text,
    p_customer text, p_event_type text, p_reference text, p_day_start timestamptz,
    p_month_start timestamptz, p_year_start timestamptz,
    OUT proceed boolean, OUT status int, OUT body text, OUT member_id uuid, OUT counts jsonb)
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
    proceed := true;
END $$;

-- Step 2: record the event and post its points (never pending: nothing can be returned).
CREATE FUNCTION event_post(
    p_partner uuid, p_member uuid, p_idem_key text, p_actor text, p_event_type text,
    p_reference text, p_occurred_at timestamptz, p_hits jsonb, p_skipped jsonb,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    v_partner_points bigint;
    v_coalition_points bigint;
    v_entry bigint;
    v_event bigint;
BEGIN
    SELECT coalesce(sum((h ->> 'points')::bigint) FILTER (WHERE h ->> 'funding' <> 'coalition'), 0),
           coalesce(sum((h ->> 'points')::bigint) FILTER (WHERE h ->> 'funding' = 'coalition'), 0)
      INTO v_partner_points, v_coalition_points FROM jsonb_array_elements(p_hits) h;
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
          FROM jsonb_array_elements(p_hits) h WHERE (h ->> 'points')::bigint > 0;
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
        'rules', p_hits, 'skipped', coalesce(p_skipped, '[]'),
        'balance', (SELECT jsonb_build_object('available', balance) FROM accounts
                     WHERE accounts.member_id = p_member))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- Referrals -----------------------------------------------------------------------------
-- Records who referred a newly enrolled member, by the referrer's card number. SECURITY
-- DEFINER because the referrer is usually not linked to the enrolling partner, so a
-- tenant session cannot see it; the function reveals nothing but 'ok', 'unknown' or
-- 'self' about the card.
CREATE FUNCTION member_referral_record(p_referee uuid, p_card text, p_partner uuid)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    v_referrer uuid;
BEGIN
    SELECT id INTO v_referrer FROM members WHERE card_number = p_card AND status = 'active';
    IF v_referrer IS NULL THEN
        RETURN 'unknown';
    ELSIF v_referrer = p_referee THEN
        RETURN 'self';
    END IF;
    INSERT INTO member_referrals (referee_id, referrer_id, partner_id)
    VALUES (p_referee, v_referrer, p_partner) ON CONFLICT DO NOTHING;
    RETURN 'ok';
END $$;
