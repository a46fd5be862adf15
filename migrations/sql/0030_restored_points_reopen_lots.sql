-- Points given back to lots (a reversed redemption, a released checkout hold) make the
-- lot active again whatever emptied it meanwhile. A lot emptied by its issuer's partial
-- earn reversal was left cancelled, an expired one expired, each with points no
-- redemption could take ("lot status" in ledger verify); an active lot past its expiry
-- date is expired by the next expiry run. A reversed redemption also repays a debt a
-- return left, as every other credit to the wallet does ("wallet vs lots").

CREATE OR REPLACE FUNCTION ledger_reverse(
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
                              status = CASE WHEN l.status IN ('spent', 'cancelled', 'expired')
                                            THEN 'active' ELSE l.status END
             WHERE l.id = v_lot.lot_id;
            INSERT INTO lot_movements (lot_id, entry_id, kind, points)
            VALUES (v_lot.lot_id, v_entry, 'unspend', -v_take);
            v_left := v_left - v_take;
            EXIT WHEN v_left = 0;
        END LOOP;
        IF v_left > 0 THEN
            RAISE EXCEPTION 'redemption % consumed % points fewer than it posted', orig.id, v_left;
        END IF;
        -- Points back in a wallet a return left negative repay that debt first, as
        -- every other credit does.
        PERFORM ledger_repay_debt(orig.member_id, v_entry, v_balance - v_points, v_points);
    END IF;

    status := 201;
    body := jsonb_build_object(
        'id', v_entry, 'kind', 'reverse', 'reverses', orig.id, 'member_id', orig.member_id,
        'points', v_points, 'order_id', orig.order_id, 'description', p_description,
        'created_at', v_created, 'balance', jsonb_build_object('available', v_balance))::text;
    PERFORM idempotency_finish(p_partner, p_idem_key, status, body);
END $$;

CREATE OR REPLACE FUNCTION ledger_hold_settle(p_hold uuid, p_capture bigint, p_outcome text,
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
           captured = v_capture, closed_at = now()
     WHERE id = h.id;
    RETURN v_balance;
END $$;

-- Lots the old functions left holding points under a closed status.
UPDATE lots SET status = 'active'
 WHERE status IN ('spent', 'cancelled', 'expired') AND remaining > 0;
