-- Business time as a parameter (issue 15): the functions below decided by the database's
-- own now(); they now take the platform clock's reading (coalition/clock.py) from their
-- caller, or read it from the entry their caller wrote, so COALITION_NOW and the tests'
-- clock reach every decision. now() stays only where it stamps audit columns.
--
-- * ledger_withdraw, event_post and purchase_commit take p_posted_at: the moment their
--   entry is posted (occurred_at and created_at of a withdrawal, created_at of an event's
--   entry, what purchase_commit hands purchase_post, whose fall-back was now()).
-- * ledger_credit_lots decides "pending" against its entry's created_at.
-- * ledger_hold, ledger_hold_close and ledger_hold_settle take p_now: a hold's default
--   expiry, whether it has expired, and the moment of its entries; ledger_expire_holds
--   hands its p_now on.
-- * prepaid_draw takes the rate card in force when the entries were posted.
-- * ledger_activate_due and ledger_expire_due date their entries' created_at by p_now,
--   as every posting function does (a journal entry's created_at is its posting moment).
-- * member_find_or_create takes p_now for a new member's created_at (the member counts as
--   new in that month's figures); callers always pass it, the default keeps old callers.

DROP FUNCTION ledger_withdraw(uuid, uuid, bigint, text, text, jsonb, text, text, text);
DROP FUNCTION ledger_hold(uuid, uuid, bigint, text, text, text, text, text, timestamptz);
DROP FUNCTION ledger_hold_close(uuid, uuid, bigint, text, text, text);
DROP FUNCTION ledger_hold_settle(uuid, bigint, text, text, text);
DROP FUNCTION event_post(uuid, uuid, text, text, text, text, timestamptz, jsonb, jsonb);
DROP FUNCTION member_find_or_create(text, text, text, date, text, text, text);
DROP FUNCTION purchase_commit(uuid, text, text, uuid, text, text, text, uuid[], timestamptz,
                              timestamptz, jsonb, text, timestamptz, text, bigint, text, text,
                              jsonb, jsonb, jsonb, jsonb, jsonb);

CREATE FUNCTION ledger_withdraw(
    p_partner uuid, p_member uuid, p_points bigint, p_order_id text, p_description text,
    p_metadata jsonb, p_idem_key text, p_request_hash text, p_actor text,
    p_posted_at timestamptz, OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    gate record;
    v_wallet bigint;
    v_balance bigint;
    v_own bigint;
    v_issuance bigint;
    v_entry bigint;
    v_created timestamptz;
BEGIN
    SELECT * INTO gate FROM ledger_admit(p_partner, p_member, p_idem_key, p_request_hash);
    IF NOT gate.proceed THEN
        status := gate.status; body := gate.body; RETURN;
    END IF;
    SELECT id INTO v_wallet FROM accounts WHERE member_id = p_member FOR NO KEY UPDATE;
    SELECT coalesce(sum(l.remaining), 0) INTO v_own FROM lots l
     WHERE l.member_id = p_member AND l.partner_id = p_partner AND l.status = 'active';
    IF v_own < p_points THEN
        status := 422;
        body := ledger_problem(422, 'insufficient-points', 'Insufficient points',
            format('The member holds %s points issued by your brand; %s were requested.', v_own, p_points),
            jsonb_build_object('field', 'points', 'available', v_own, 'requested', p_points));
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;
    UPDATE accounts SET balance = balance - p_points, version = version + 1
     WHERE id = v_wallet RETURNING balance INTO v_balance;
    SELECT id INTO STRICT v_issuance FROM accounts
     WHERE partner_id = p_partner AND kind = 'partner_issuance';
    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, actor, metadata, occurred_at, created_at)
    VALUES ('adjust', p_partner, p_member, p_order_id, p_description, p_idem_key, p_actor,
            coalesce(p_metadata, '{}'), p_posted_at, p_posted_at)
    RETURNING id, created_at INTO v_entry, v_created;
    INSERT INTO postings (entry_id, account_id, amount)
    VALUES (v_entry, v_wallet, -p_points), (v_entry, v_issuance, p_points);
    PERFORM ledger_take_from_lots(p_member, v_entry, p_points, p_partner, 'cancel');

    status := 201;
    body := jsonb_build_object(
        'id', v_entry, 'kind', 'adjust', 'member_id', p_member, 'points', -p_points,
        'order_id', p_order_id, 'description', p_description,
        'metadata', coalesce(p_metadata, '{}'), 'created_at', v_created,
        'balance', jsonb_build_object('available', v_balance))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

CREATE OR REPLACE FUNCTION ledger_credit_lots(
    p_entry bigint, p_partner uuid, p_member uuid, p_partner_points bigint,
    p_coalition_points bigint, p_earned timestamptz, p_available_at timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_total bigint := p_partner_points + p_coalition_points;
    -- Pending while the points become available after the entry's posting moment, the
    -- platform clock's reading its caller wrote (never the database's own now()).
    v_pending boolean := p_available_at IS NOT NULL AND p_available_at >
        (SELECT created_at FROM journal_entries WHERE id = p_entry);
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

CREATE FUNCTION ledger_hold_settle(p_hold uuid, p_capture bigint, p_outcome text,
                                   p_idem_key text, p_actor text, p_now timestamptz)
RETURNS bigint
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
                                 idempotency_key, actor, metadata, occurred_at, created_at)
    VALUES (CASE WHEN v_capture > 0 THEN 'capture' ELSE 'release' END, h.partner_id,
            h.member_id, h.order_id,
            CASE WHEN v_capture > 0 THEN 'Checkout hold captured'
                 WHEN p_outcome = 'expired' THEN 'Checkout hold expired'
                 ELSE 'Checkout hold voided' END,
            p_idem_key, p_actor, jsonb_build_object('hold', h.id), p_now, p_now)
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
                        status = CASE WHEN status IN ('spent', 'cancelled', 'expired')
                                      THEN 'active' ELSE status END
         WHERE id = m.lot_id;
        INSERT INTO lot_movements (lot_id, entry_id, kind, points)
        VALUES (m.lot_id, v_entry, 'release', -v_take);
        v_left := v_left - v_take;
    END LOOP;
    PERFORM ledger_repay_debt(h.member_id, v_entry, v_balance - v_release, v_release);
    UPDATE point_holds
       SET status = CASE WHEN v_capture > 0 THEN 'captured' ELSE p_outcome END,
           captured = v_capture, closed_at = p_now
     WHERE id = h.id;
    RETURN v_balance;
END $$;

CREATE FUNCTION ledger_hold(
    p_partner uuid, p_member uuid, p_points bigint, p_order_id text, p_description text,
    p_idem_key text, p_request_hash text, p_actor text, p_expires_at timestamptz,
    p_now timestamptz, OUT status int, OUT body text)
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
    v_expires := coalesce(p_expires_at, p_now + make_interval(secs =>
                     (SELECT hold_timeout_seconds FROM coalition_settings WHERE id = 1)));
    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, actor, occurred_at, created_at)
    VALUES ('hold', p_partner, p_member, p_order_id, p_description, p_idem_key, p_actor,
            p_now, p_now)
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, account_id, amount)
    VALUES (v_entry, v_wallet, -p_points),
           (v_entry, ledger_partner_account(p_partner, 'partner_holds'), p_points);
    PERFORM ledger_take_from_lots(p_member, v_entry, p_points, NULL, 'hold');
    INSERT INTO point_holds (partner_id, member_id, points, order_id, hold_entry_id, expires_at,
                             created_at)
    VALUES (p_partner, p_member, p_points, p_order_id, v_entry, v_expires, p_now)
    RETURNING id INTO v_hold;
    status := 201;
    body := ledger_hold_body(v_hold, v_balance);
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

CREATE FUNCTION ledger_hold_close(
    p_partner uuid, p_hold uuid, p_capture bigint, p_idem_key text, p_request_hash text,
    p_actor text, p_now timestamptz, OUT status int, OUT body text)
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
    ELSIF h.status = 'held' AND h.expires_at <= p_now THEN
        PERFORM ledger_hold_settle(h.id, NULL, 'expired', NULL, 'system:hold-expiry', p_now);
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
                                    'voided', p_idem_key, p_actor, p_now);
    status := 200;
    body := ledger_hold_body(h.id, v_balance);
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

CREATE OR REPLACE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit int DEFAULT 1000)
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
        PERFORM ledger_hold_settle(v_hold.id, NULL, 'expired', NULL, 'system:hold-expiry', p_now);
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END $$;

CREATE FUNCTION event_post(
    p_partner uuid, p_member uuid, p_idem_key text, p_actor text, p_event_type text,
    p_reference text, p_occurred_at timestamptz, p_hits jsonb, p_skipped jsonb,
    p_posted_at timestamptz, OUT status int, OUT body text)
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
                                     idempotency_key, actor, metadata, occurred_at,
                                     created_at)
        VALUES ('earn', p_partner, p_member, NULL, initcap(replace(p_event_type, '_', ' ')),
                p_idem_key, p_actor, jsonb_build_object('event', p_event_type,
                                                        'reference', p_reference),
                p_occurred_at, p_posted_at)
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

CREATE FUNCTION purchase_commit(
    p_partner uuid, p_idem_key text, p_request_hash text,
    p_member uuid, p_card text, p_customer text, p_order_id text,
    p_capped_rules uuid[], p_day_start timestamptz, p_month_start timestamptz,
    p_expected jsonb, p_actor text, p_occurred_at timestamptz, p_currency text,
    p_total bigint, p_channel text, p_store text, p_lines jsonb, p_hits jsonb,
    p_skipped jsonb, p_referral jsonb, p_tier jsonb, p_posted_at timestamptz,
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
                         p_hits, p_skipped, p_referral, p_posted_at);
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

CREATE OR REPLACE FUNCTION prepaid_draw() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t settlement_terms;
BEGIN
    FOR r IN
        WITH drawn AS (
            SELECT n.partner_id, sum(n.points) AS points, max(e.created_at) AS posted_at
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
        RETURNING b.partner_id, b.available, d.points, b.low_since, d.posted_at
    LOOP
        t := settlement_terms_at(r.partner_id, r.posted_at);
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
            UPDATE prepaid_balances SET low_since = r.posted_at, alert_sent_at = NULL
             WHERE partner_id = r.partner_id;
            PERFORM pg_notify('coalition_prepaid', r.partner_id::text);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_activate_due(p_now timestamptz, p_limit int DEFAULT 1000)
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
                jsonb_build_object('lot', v_lot.id, 'earned_by', v_lot.entry_id), p_now, p_now)
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

CREATE OR REPLACE FUNCTION ledger_expire_due(p_now timestamptz, p_limit int DEFAULT 1000)
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
        VALUES ('expire', NULL, v_member, 'Points expired', 'system:expiry', p_now, p_now)
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

CREATE FUNCTION member_find_or_create(p_email text, p_name text, p_card text,
                                      p_birth_date date DEFAULT NULL,
                                      p_kind text DEFAULT 'person',
                                      p_company_name text DEFAULT NULL,
                                      p_tax_id text DEFAULT NULL,
                                      p_now timestamptz DEFAULT NULL,
                                      OUT member_id uuid, OUT created boolean,
                                      OUT kind text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO members (email, name, card_number, birth_date, kind, company_name, tax_id,
                         created_at)
    VALUES (p_email, p_name, p_card, p_birth_date, p_kind, p_company_name, p_tax_id,
            coalesce(p_now, now()))
    ON CONFLICT ((lower(email))) DO NOTHING
    RETURNING id INTO member_id;
    created := member_id IS NOT NULL;
    IF created THEN
        INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
        VALUES ('member:' || member_id, 'member_wallet', member_id, 0, 0);
        kind := p_kind;
    ELSE
        SELECT m.id, m.kind INTO STRICT member_id, kind FROM members m
         WHERE lower(m.email) = lower(p_email);
        IF p_birth_date IS NOT NULL AND kind = p_kind THEN
            UPDATE members m SET birth_date = p_birth_date
             WHERE m.id = member_id AND m.birth_date IS NULL;
        END IF;
    END IF;
END $$;

REVOKE ALL ON FUNCTION member_find_or_create(text, text, text, date, text, text, text,
                                             timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION member_find_or_create(text, text, text, date, text, text, text,
                                                timestamptz) TO coalition_tenant;
