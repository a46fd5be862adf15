-- Ledger guarantees enforced by the database itself, and the one-round-trip posting
-- functions the API calls. Each posting function returns (status, body): an HTTP status
-- and the JSON response, so a request costs the API exactly one statement.

-- Append-only tables ---------------------------------------------------------------
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation',
              HINT = 'Correct the ledger with a new journal entry.';
END $$;

CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER lot_movements_append_only BEFORE UPDATE OR DELETE ON lot_movements
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER lot_movements_no_truncate BEFORE TRUNCATE ON lot_movements
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- The postings each INSERT statement writes must balance to zero per entry, over at
-- least two postings. Every writer puts an entry's postings in one statement, so this
-- makes every entry balanced; checking only the statement's own rows keeps the check
-- cheap for bulk imports (no look-ups into the postings table).
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT entry_id, sum(amount) AS total, count(*) AS n INTO bad
      FROM new_postings
     GROUP BY entry_id
    HAVING sum(amount) <> 0 OR count(*) < 2
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % is unbalanced: % postings summing to %',
            bad.entry_id, bad.n, bad.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER postings_balanced AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_balanced();

-- Helpers ---------------------------------------------------------------------------
CREATE FUNCTION ledger_problem(p_status int, p_slug text, p_title text, p_detail text,
                               p_extra jsonb DEFAULT '{}') RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT (jsonb_build_object('type', '/problems/' || p_slug, 'title', p_title,
                               'status', p_status, 'detail', p_detail) || p_extra)::text
$$;

-- Claims an idempotency key. Returns claimed = true for a new key; otherwise the
-- stored response, or a 409 problem when the key was used with a different request.
-- A concurrent request with the same key waits here until the first one commits.
CREATE FUNCTION idempotency_claim(p_partner uuid, p_key text, p_hash text,
                                  OUT claimed boolean, OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    stored record;
BEGIN
    claimed := false;
    IF p_key IS NULL THEN
        claimed := true;
        RETURN;
    END IF;
    INSERT INTO idempotency_keys (partner_id, key, request_hash)
    VALUES (p_partner, p_key, p_hash)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        -- A key that outlived its stored response must not post a second time.
        IF EXISTS (SELECT 1 FROM journal_entries
                    WHERE partner_id = p_partner AND idempotency_key = p_key) THEN
            DELETE FROM idempotency_keys WHERE partner_id = p_partner AND key = p_key;
            status := 409;
            body := ledger_problem(409, 'idempotency-key-reused', 'Idempotency key already used',
                'This Idempotency-Key was used for an earlier write whose stored response has expired; use a new key.',
                jsonb_build_object('field', 'Idempotency-Key'));
            RETURN;
        END IF;
        claimed := true;
        RETURN;
    END IF;
    SELECT k.request_hash, k.status_code, k.response INTO stored
      FROM idempotency_keys k WHERE k.partner_id = p_partner AND k.key = p_key;
    IF stored.request_hash <> p_hash THEN
        status := 409;
        body := ledger_problem(409, 'idempotency-key-mismatch', 'Idempotency key reused with a different request',
            'This Idempotency-Key was already used with a different method, path or body.',
            jsonb_build_object('field', 'Idempotency-Key'));
        RETURN;
    END IF;
    status := stored.status_code;
    body := stored.response;
END $$;

CREATE FUNCTION idempotency_finish(p_partner uuid, p_key text, p_status int, p_body text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_key IS NULL THEN
        RETURN;
    END IF;
    IF p_status < 300 THEN
        UPDATE idempotency_keys SET status_code = p_status, response = p_body
         WHERE partner_id = p_partner AND key = p_key;
    ELSE
        -- Failed requests leave no trace: a retry with the same key is evaluated afresh.
        DELETE FROM idempotency_keys WHERE partner_id = p_partner AND key = p_key;
    END IF;
END $$;

-- NULL when the member is visible to the partner and can transact; else a problem body.
CREATE FUNCTION ledger_member_problem(p_partner uuid, p_member uuid) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_status text;
BEGIN
    SELECT m.status INTO v_status
      FROM member_links l JOIN members m ON m.id = l.member_id
     WHERE l.partner_id = p_partner AND l.member_id = p_member;
    IF NOT FOUND THEN
        RETURN ledger_problem(404, 'member-not-found', 'Member not found',
            'No member with this id is linked to your partner account.',
            jsonb_build_object('field', 'member_id'));
    END IF;
    IF v_status <> 'active' THEN
        RETURN ledger_problem(422, 'member-not-active', 'Member is not active',
            format('The member''s account is %s.', v_status),
            jsonb_build_object('field', 'member_id'));
    END IF;
    RETURN NULL;
END $$;

-- The common start of a member posting: claim the idempotency key (or replay what it
-- stored) and check the member is linked to the partner and active. proceed = false
-- means (status, body) is the answer.
CREATE FUNCTION ledger_admit(p_partner uuid, p_member uuid, p_key text, p_hash text,
                             OUT proceed boolean, OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    claim record;
BEGIN
    proceed := false;
    SELECT * INTO claim FROM idempotency_claim(p_partner, p_key, p_hash);
    IF NOT claim.claimed THEN
        status := claim.status; body := claim.body; RETURN;
    END IF;
    body := ledger_member_problem(p_partner, p_member);
    IF body IS NOT NULL THEN
        status := (body::jsonb ->> 'status')::int;
        PERFORM idempotency_finish(p_partner, p_key, status, body);
        RETURN;
    END IF;
    proceed := true;
END $$;

-- Takes points from a member's spendable lots, first-expiring first, then oldest, and
-- records each take as a lot movement. `p_issuer` limits it to one partner's lots;
-- `p_kind` is 'spend' (a redemption) or 'cancel' (points taken back by their issuer).
-- The caller holds the member's wallet row lock, which serializes all lot changes.
CREATE FUNCTION ledger_take_from_lots(p_member uuid, p_entry bigint, p_points bigint,
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
                             WHEN p_kind = 'spend' THEN 'spent' ELSE 'cancelled' END
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

-- Earn ------------------------------------------------------------------------------
CREATE FUNCTION ledger_earn(
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
    v_validity int;
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
    SELECT points_validity_months INTO v_validity FROM coalition_settings WHERE id = 1;

    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, actor, metadata, occurred_at, created_at)
    VALUES (p_kind, p_partner, p_member, p_order_id, p_description, p_idem_key, p_actor,
            coalesce(p_metadata, '{}'), coalesce(p_occurred_at, p_posted_at, now()),
            coalesce(p_posted_at, now()))
    RETURNING id, created_at INTO v_entry, v_created;
    INSERT INTO postings (entry_id, account_id, amount)
    VALUES (v_entry, v_issuance, -p_points), (v_entry, v_wallet, p_points);

    IF v_validity IS NOT NULL THEN
        v_expires := coalesce(p_occurred_at, v_created) + make_interval(months => v_validity);
    END IF;
    INSERT INTO lots (member_id, partner_id, entry_id, points, remaining, status, earned_at, expires_at)
    VALUES (p_member, p_partner, v_entry, p_points, p_points, 'active',
            coalesce(p_occurred_at, v_created), v_expires);

    status := 201;
    body := jsonb_build_object(
        'id', v_entry, 'kind', p_kind, 'member_id', p_member, 'points', p_points,
        'order_id', p_order_id, 'description', p_description,
        'metadata', coalesce(p_metadata, '{}'), 'created_at', v_created,
        'expires_at', v_expires, 'balance', jsonb_build_object('available', v_balance))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- Redeem ----------------------------------------------------------------------------
CREATE FUNCTION ledger_redeem(
    p_partner uuid, p_member uuid, p_points bigint, p_order_id text, p_description text,
    p_metadata jsonb, p_idem_key text, p_request_hash text, p_actor text,
    p_occurred_at timestamptz DEFAULT NULL, p_posted_at timestamptz DEFAULT NULL,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    gate record;
    v_wallet bigint;
    v_balance bigint;
    v_redemption bigint;
    v_entry bigint;
    v_created timestamptz;
BEGIN
    SELECT * INTO gate FROM ledger_admit(p_partner, p_member, p_idem_key, p_request_hash);
    IF NOT gate.proceed THEN
        status := gate.status; body := gate.body; RETURN;
    END IF;

    -- The conditional update locks the wallet and re-checks the balance after any
    -- concurrent writer commits, so concurrent redemptions can never overdraw it.
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
    SELECT id INTO STRICT v_redemption FROM accounts
     WHERE partner_id = p_partner AND kind = 'partner_redemption';

    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, actor, metadata, occurred_at, created_at)
    VALUES ('redeem', p_partner, p_member, p_order_id, p_description, p_idem_key, p_actor,
            coalesce(p_metadata, '{}'), coalesce(p_occurred_at, p_posted_at, now()),
            coalesce(p_posted_at, now()))
    RETURNING id, created_at INTO v_entry, v_created;
    INSERT INTO postings (entry_id, account_id, amount)
    VALUES (v_entry, v_wallet, -p_points), (v_entry, v_redemption, p_points);
    PERFORM ledger_take_from_lots(p_member, v_entry, p_points);

    status := 201;
    body := jsonb_build_object(
        'id', v_entry, 'kind', 'redeem', 'member_id', p_member, 'points', p_points,
        'order_id', p_order_id, 'description', p_description,
        'metadata', coalesce(p_metadata, '{}'), 'created_at', v_created,
        'balance', jsonb_build_object('available', v_balance))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- Reverse ---------------------------------------------------------------------------
-- Full or partial reversal of the calling partner's own earn or redemption. An earn is
-- reversed out of the lot it created; points the member already spent cannot be
-- reversed here (the returns policy decides those cases).
CREATE FUNCTION ledger_reverse(
    p_partner uuid, p_entry bigint, p_points bigint, p_description text,
    p_idem_key text, p_request_hash text, p_actor text, p_allowed_kinds text[],
    p_posted_at timestamptz DEFAULT NULL,
    OUT status int, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    claim record;
    orig record;
    v_wallet bigint;
    v_balance bigint;
    v_original bigint;
    v_reversed bigint;
    v_points bigint;
    v_partner_account bigint;
    v_entry bigint;
    v_created timestamptz;
    v_lot record;
    v_left bigint;
    v_take bigint;
BEGIN
    SELECT * INTO claim FROM idempotency_claim(p_partner, p_idem_key, p_request_hash);
    IF NOT claim.claimed THEN
        status := claim.status; body := claim.body; RETURN;
    END IF;

    SELECT e.id, e.kind, e.member_id, e.order_id INTO orig
      FROM journal_entries e WHERE e.id = p_entry AND e.partner_id = p_partner;
    IF NOT FOUND THEN
        status := 404;
        body := ledger_problem(404, 'transaction-not-found', 'Transaction not found',
            'No transaction with this id was posted by your partner account.');
    ELSIF orig.kind NOT IN ('earn', 'redeem') THEN
        status := 422;
        body := ledger_problem(422, 'not-reversible', 'Transaction cannot be reversed',
            format('Only earn and redeem transactions can be reversed; this one is %s.', orig.kind));
    ELSIF NOT orig.kind = ANY (p_allowed_kinds) THEN
        status := 403;
        body := ledger_problem(403, 'insufficient-scope', 'Insufficient scope',
            format('Reversing a %s transaction needs the points:%s scope.', orig.kind, orig.kind));
    END IF;
    IF status IS NOT NULL THEN
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;

    -- Locking the wallet first serializes every change to this member's points.
    SELECT id, balance INTO v_wallet, v_balance FROM accounts
     WHERE member_id = orig.member_id FOR NO KEY UPDATE;
    SELECT abs(amount) INTO v_original FROM postings
     WHERE entry_id = orig.id AND account_id = v_wallet;
    SELECT coalesce(sum(abs(p.amount)), 0) INTO v_reversed
      FROM journal_entries r JOIN postings p ON p.entry_id = r.id AND p.account_id = v_wallet
     WHERE r.reverses_entry_id = orig.id;
    v_points := coalesce(p_points, v_original - v_reversed);

    IF v_original = v_reversed THEN
        status := 422;
        body := ledger_problem(422, 'already-reversed', 'Transaction already reversed',
            'This transaction has already been reversed in full.');
    ELSIF v_points > v_original - v_reversed THEN
        status := 422;
        body := ledger_problem(422, 'reversal-exceeds-original', 'Reversal exceeds the original',
            format('At most %s points of this transaction can still be reversed.', v_original - v_reversed),
            jsonb_build_object('field', 'points', 'reversible', v_original - v_reversed));
    END IF;
    IF orig.kind = 'earn' AND status IS NULL THEN
        SELECT id, remaining INTO v_lot FROM lots WHERE entry_id = orig.id;
        IF v_lot.remaining < v_points THEN
            status := 422;
            body := ledger_problem(422, 'points-already-spent', 'Points already spent',
                format('The member has already spent or lost part of these points; %s can be reversed now.', v_lot.remaining),
                jsonb_build_object('field', 'points', 'reversible', v_lot.remaining));
        END IF;
    END IF;
    IF status IS NOT NULL THEN
        PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
        RETURN;
    END IF;

    SELECT id INTO STRICT v_partner_account FROM accounts
     WHERE partner_id = p_partner
       AND kind = CASE orig.kind WHEN 'earn' THEN 'partner_issuance' ELSE 'partner_redemption' END;
    UPDATE accounts
       SET balance = balance + CASE orig.kind WHEN 'earn' THEN -v_points ELSE v_points END,
           version = version + 1
     WHERE id = v_wallet
    RETURNING balance INTO v_balance;

    INSERT INTO journal_entries (kind, partner_id, member_id, order_id, description,
                                 idempotency_key, reverses_entry_id, actor, occurred_at, created_at)
    VALUES ('reverse', p_partner, orig.member_id, orig.order_id, p_description, p_idem_key,
            orig.id, p_actor, coalesce(p_posted_at, now()), coalesce(p_posted_at, now()))
    RETURNING id, created_at INTO v_entry, v_created;

    IF orig.kind = 'earn' THEN
        INSERT INTO postings (entry_id, account_id, amount)
        VALUES (v_entry, v_wallet, -v_points), (v_entry, v_partner_account, v_points);
        UPDATE lots l SET remaining = l.remaining - v_points,
                          status = CASE WHEN l.remaining = v_points THEN 'cancelled' ELSE l.status END
         WHERE l.id = v_lot.id;
        INSERT INTO lot_movements (lot_id, entry_id, kind, points)
        VALUES (v_lot.id, v_entry, 'cancel', v_points);
    ELSE
        INSERT INTO postings (entry_id, account_id, amount)
        VALUES (v_entry, v_wallet, v_points), (v_entry, v_partner_account, -v_points);
        -- Give points back to the lots the redemption consumed, latest consumed first.
        v_left := v_points;
        FOR v_lot IN
            SELECT m.lot_id, sum(m.points) AS net
              FROM lot_movements m
             WHERE m.entry_id = orig.id
                OR m.entry_id IN (SELECT id FROM journal_entries WHERE reverses_entry_id = orig.id)
             GROUP BY m.lot_id
            HAVING sum(m.points) > 0
             ORDER BY min(m.id) DESC
        LOOP
            v_take := least(v_lot.net, v_left);
            UPDATE lots l SET remaining = l.remaining + v_take,
                              status = CASE WHEN l.status = 'spent' THEN 'active' ELSE l.status END
             WHERE l.id = v_lot.lot_id;
            INSERT INTO lot_movements (lot_id, entry_id, kind, points)
            VALUES (v_lot.lot_id, v_entry, 'unspend', -v_take);
            v_left := v_left - v_take;
            EXIT WHEN v_left = 0;
        END LOOP;
        IF v_left > 0 THEN
            RAISE EXCEPTION 'redemption % consumed % points fewer than it posted', orig.id, v_left;
        END IF;
    END IF;

    status := 201;
    body := jsonb_build_object(
        'id', v_entry, 'kind', 'reverse', 'reverses', orig.id, 'member_id', orig.member_id,
        'points', v_points, 'order_id', orig.order_id, 'description', p_description,
        'created_at', v_created, 'balance', jsonb_build_object('available', v_balance))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

-- Debit adjustment ------------------------------------------------------------------
-- A partner takes back points it issued (a correction with a reason). Only the
-- partner's own lots are touched: a brand cannot claw back another brand's points.
CREATE FUNCTION ledger_withdraw(
    p_partner uuid, p_member uuid, p_points bigint, p_order_id text, p_description text,
    p_metadata jsonb, p_idem_key text, p_request_hash text, p_actor text,
    OUT status int, OUT body text)
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
                                 idempotency_key, actor, metadata, occurred_at)
    VALUES ('adjust', p_partner, p_member, p_order_id, p_description, p_idem_key, p_actor,
            coalesce(p_metadata, '{}'), now())
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
