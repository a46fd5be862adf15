DROP FUNCTION member_find_or_create(text, text, text, date, text, text, text);

CREATE FUNCTION member_find_or_create(p_email text, p_name text, p_card text,
                                      OUT member_id uuid, OUT created boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO members (email, name, card_number) VALUES (p_email, p_name, p_card)
    ON CONFLICT ((lower(email))) DO NOTHING
    RETURNING id INTO member_id;
    created := member_id IS NOT NULL;
    IF created THEN
        INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
        VALUES ('member:' || member_id, 'member_wallet', member_id, 0, 0);
    ELSE
        SELECT m.id INTO STRICT member_id FROM members m WHERE lower(m.email) = lower(p_email);
    END IF;
END $$;

REVOKE ALL ON FUNCTION member_find_or_create(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION member_find_or_create(text, text, text) TO coalition_tenant;
