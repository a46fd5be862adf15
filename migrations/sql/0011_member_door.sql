-- The member door of migration 0007, now also setting what enrolment may give a new
-- member: birth date, and for a company member its name and tax id. An existing member
-- keeps its data (a missing birth date is filled in) and the caller learns its kind, so
-- enrolling a company under a person's email address (or the reverse) is refused.
DROP FUNCTION member_find_or_create(text, text, text);

CREATE FUNCTION member_find_or_create(p_email text, p_name text, p_card text,
                                      p_birth_date date DEFAULT NULL,
                                      p_kind text DEFAULT 'person',
                                      p_company_name text DEFAULT NULL,
                                      p_tax_id text DEFAULT NULL,
                                      OUT member_id uuid, OUT created boolean,
                                      OUT kind text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO members (email, name, card_number, birth_date, kind, company_name, tax_id)
    VALUES (p_email, p_name, p_card, p_birth_date, p_kind, p_company_name, p_tax_id)
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

REVOKE ALL ON FUNCTION member_find_or_create(text, text, text, date, text, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION member_find_or_create(text, text, text, date, text, text, text)
    TO coalition_tenant;
